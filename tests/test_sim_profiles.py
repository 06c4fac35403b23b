"""Board profiles of the simulated ESP32: data files, what the board enforces from them, and
the chip's heap (MemoryError where the chip would fail, not where a laptop would)."""

from __future__ import annotations

import json

import pytest

from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.sim.profiles import PROFILE_DIR, ProfileError, known_profiles, load_profile
from micropython_hil.sim.simulator import Simulator, SimulatorError, chip_heap_on_host

PROBE = """
import machine, network, esp, esp32, json, gc
r = {"uid": machine.unique_id().hex(), "mac": network.WLAN(network.STA_IF).config("mac").hex(),
     "ap_mac": network.WLAN(network.AP_IF).config("mac").hex(), "freq": machine.freq(),
     "flash": esp.flash_size(), "mcu": esp32.mcu_temperature()}
bad = []
for pin in range(0, 49):
    try:
        machine.Pin(pin)
    except ValueError:
        bad.append(pin)
r["no_pin"] = bad
r["input_only"] = []
for pin in range(0, 49):
    if pin in bad:
        continue
    try:
        machine.Pin(pin, machine.Pin.OUT)
    except ValueError:
        r["input_only"].append(pin)
r["adc"] = []
for pin in range(0, 49):
    try:
        machine.ADC(machine.Pin(pin))
        r["adc"].append(pin)
    except ValueError:
        pass
try:
    machine.ADC(machine.Pin(r["adc"][0])).width(machine.ADC.WIDTH_10BIT)
    r["width10"] = True
except ValueError:
    r["width10"] = False
machine.freq(240000000)
r["freq2"] = machine.freq()
try:
    machine.freq(100000000)
except ValueError as e:
    r["bad_freq"] = str(e)
gc.collect()
r["free"] = gc.mem_free()
print(json.dumps(r))
"""


def test_known_profiles_are_data_files():
    assert {"esp32", "esp32s3"} <= set(known_profiles())
    for name in known_profiles():
        p = load_profile(name)
        data = json.loads((PROFILE_DIR / f"{name}.json").read_text())
        assert p.heapsize == data["heapsize"] and set(p.input_only) <= set(p.pins)
        assert set(p.strapping) <= set(p.pins) and set(p.adc) <= set(p.pins)
        assert len(p.unique_id) == 6


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown board profile 'esp8266': known profiles are "
                                           r"esp32, esp32s3"):
        Simulator(profile="esp8266")
    with pytest.raises(SimulatorError, match="unknown board profile"):
        load_profile("../esp32")


@pytest.mark.parametrize("name", ["esp32", "esp32s3"])
def test_board_enforces_its_profile(sim_process, name):
    prof = load_profile(name)
    with Simulator(profile=name, time_mode="fast") as sim:
        r = sim_process.run(sim, PROBE)
    assert r.returncode == 0, r.stdout + r.stderr
    r = json.loads(r.stdout.strip().splitlines()[-1])
    assert r["uid"] == r["mac"] == prof.mac.hex()
    assert int(r["ap_mac"], 16) == int(prof.mac.hex(), 16) + 1
    assert r["freq"] == prof.cpu_freq and r["freq2"] == 240000000 and "MHz" in r["bad_freq"]
    assert r["flash"] == prof.flash_size
    assert r["no_pin"] == [p for p in range(49) if p not in prof.pins]
    assert r["input_only"] == list(prof.input_only)
    assert r["adc"] == sorted(prof.adc)
    assert r["width10"] is (name == "esp32")   # the S3's ADC has 12 bits only
    # The firmware sees about the chip's heap in GC blocks (bytes x word-size ratio on a
    # 64-bit host), not the laptop's (this probe holds a few KB itself). Interned names live in
    # pools that double as they fill: whether the probe's names start a new one (about 7 KB
    # here) depends on how many the shims interned before, so a name added to a shim can move
    # the figure by that much.
    chip = chip_heap_on_host(prof.heapsize)
    assert chip - 24 * 1024 <= r["free"] <= chip + 8 * 1024, (r["free"], chip)


def test_profiles_differ_where_the_chips_do():
    esp32, s3 = load_profile("esp32"), load_profile("esp32s3")
    assert 34 in esp32.input_only and 34 not in s3.input_only
    assert 20 not in esp32.pins and 20 in s3.pins
    assert 0 in esp32.strapping and 46 in s3.strapping
    with pytest.raises(ProfileError, match="esp32: the chip has no GPIO40"):
        esp32.check_pin(40)
    with pytest.raises(ProfileError, match="GPIO36 is input-only"):
        esp32.check_pin(36, output=True)


ALLOC = """
import gc
gc.collect()
try:
    blob = bytearray(300 * 1024)
    print("allocated", len(blob))
except MemoryError as e:
    print("MemoryError", e)
"""


def test_allocation_beyond_the_chip_heap_fails_on_the_board_but_not_on_a_plain_unix_port(sim_process):
    with Simulator(profile="esp32") as sim:
        on_board = sim_process.run(sim, ALLOC)
    plain = sim_process.run(None, ALLOC)
    assert on_board.stdout.startswith("MemoryError"), on_board.stdout
    assert plain.stdout.strip() == "allocated 307200", plain.stdout
    # The S3 profile (more heap) holds it.
    with Simulator(profile="esp32s3") as sim:
        assert sim_process.run(sim, ALLOC).stdout.strip() == "allocated 307200"


def test_launch_contract():
    with Simulator(profile="esp32s3", time_mode="stepped") as sim:
        args = sim.launch_args()
        assert args[0] == "-X" and args[1].startswith("heapsize=") and args[1].endswith("K")
        assert int(args[1][len("heapsize="):-1]) > 200   # the S3's heap plus the shims'
        env = sim.env()
        assert env["MPSIM_PROFILE"] == "esp32s3" and env["MPSIM_TIME"] == "stepped"
        host, port = env["MPSIM_CHANNEL"].split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert sim.micropypath()[0].endswith("simulated_boards")
        assert sim.startup_code() == "import _simboot\n"
        assert sim.on_board_exit(0) is False and sim.on_board_exit(1) is False
