"""Simulated I2C parts: the BME280 against Bosch's datasheet formulas and worked example, real
third-party drivers from the package index, and the SHT3x against Sensirion's datasheet."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.errors import SimulatorError
from micropython_hil.sim.inputs import Signal
from micropython_hil.sim.simulator import Simulator

# Bosch's worked example (BMP280 datasheet 3.12; the BME280 uses the same T and P formulas).
EXAMPLE_T = (27504, 26435, -1000)
EXAMPLE_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
EXAMPLE_ADC_T, EXAMPLE_ADC_P = 519888, 415148
EXAMPLE_TEMP_C, EXAMPLE_PRESS_PA = 25.08, 100653.27


def comp_float(adc_t, adc_p, adc_h, cal_t, cal_p, cal_h):
    """The datasheet's floating-point compensation (BME280 datasheet 8.1), written from it."""
    t1, t2, t3 = cal_t
    v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    v2 = ((adc_t / 131072.0 - t1 / 8192.0) ** 2) * t3
    t_fine = v1 + v2
    temp = t_fine / 5120.0
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal_p
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * p6 / 32768.0 + v1 * p5 * 2.0
    v2 = v2 / 4.0 + p4 * 65536.0
    v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = p9 * p * p / 2147483648.0
    v2 = p * p8 / 32768.0
    press = p + (v1 + v2 + p7) / 16.0
    hum = None
    if adc_h is not None:
        h1, h2, h3, h4, h5, h6 = cal_h
        h = t_fine - 76800.0
        h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
            h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h)))
        hum = min(max(h * (1.0 - h1 * h / 524288.0), 0.0), 100.0)
    return temp, press, hum


def int_temperature(adc_t, t1, t2, t3):
    """The datasheet's integer temperature (0.01 degC), written from it (BME280 4.2.3)."""
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    return ((var1 + var2) * 5 + 128) >> 8


def test_host_formulas_reproduce_the_datasheet_worked_example():
    temp, press, _ = comp_float(EXAMPLE_ADC_T, EXAMPLE_ADC_P, None, EXAMPLE_T, EXAMPLE_P, None)
    assert round(temp, 2) == EXAMPLE_TEMP_C
    assert round(press, 2) == EXAMPLE_PRESS_PA
    assert int_temperature(EXAMPLE_ADC_T, *EXAMPLE_T) == 2508


# Reads the raw registers in forced mode and the calibration words, as a minimal driver does.
READ_RAW = """
import machine, json, struct, time
i2c = machine.I2C(0)
A = %d
cal = i2c.readfrom_mem(A, 0x88, 26) + i2c.readfrom_mem(A, 0xE1, 7)
out = {"chip": i2c.readfrom_mem(A, 0xD0, 1)[0], "sleep_data": list(i2c.readfrom_mem(A, 0xF7, 8))}
t = struct.unpack("<HhhHhhhhhhhh", cal[:24])
e = cal[26:]
h4 = (struct.unpack("<b", e[3:4])[0] << 4) | (e[4] & 0xF)
h5 = (struct.unpack("<b", e[5:6])[0] << 4) | (e[4] >> 4)
out["cal"] = [list(t[:3]), list(t[3:]), [cal[25], struct.unpack("<h", e[0:2])[0], e[2], h4, h5,
              struct.unpack("<b", e[6:7])[0]]]
rows = []
for _ in range(%d):
    i2c.writeto_mem(A, 0xF2, b"\\x01")
    i2c.writeto_mem(A, 0xF4, bytes([0b00100101]))   # osrs_t=1, osrs_p=1, forced
    busy = i2c.readfrom_mem(A, 0xF3, 1)[0]
    time.sleep_ms(10)
    d = i2c.readfrom_mem(A, 0xF7, 8)
    rows.append([(d[3] << 12) | (d[4] << 4) | (d[5] >> 4), (d[0] << 12) | (d[1] << 4) | (d[2] >> 4),
                 (d[6] << 8) | d[7], busy, i2c.readfrom_mem(A, 0xF3, 1)[0], i2c.readfrom_mem(A, 0xF4, 1)[0] & 3])
    time.sleep(1)
out["rows"] = rows
print(json.dumps(out))
"""


@pytest.fixture
def sim():
    s = Simulator(time_mode="fast")
    yield s
    s.close()


def run_json(sim_process, sim, code):
    r = sim_process.run(sim, code)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bme280_registers_follow_the_datasheet_and_invert_its_example(sim, sim_process):
    sim.sensor("bme280").set(temperature=EXAMPLE_TEMP_C, pressure=EXAMPLE_PRESS_PA / 100, humidity=40)
    out = run_json(sim_process, sim, READ_RAW % (0x76, 1))
    assert out["chip"] == 0x60
    assert out["sleep_data"] == [0x80, 0, 0, 0x80, 0, 0, 0x80, 0]  # reset values, no measurement yet
    cal_t, cal_p, cal_h = out["cal"]
    assert tuple(cal_t) == EXAMPLE_T and tuple(cal_p) == EXAMPLE_P
    adc_t, adc_p, adc_h, busy, done, mode = out["rows"][0]
    assert (busy, done, mode) == (0x08, 0x00, 0)  # measuring, then done and back to sleep mode
    # The raw values the model chose are the example's: the same 0.01 degC step of the
    # integer formula (about 20 raw counts wide here) and the nearest raw pressure count.
    assert int_temperature(adc_t, *EXAMPLE_T) == int_temperature(EXAMPLE_ADC_T, *EXAMPLE_T)
    assert abs(adc_t - EXAMPLE_ADC_T) <= 10
    assert abs(adc_p - EXAMPLE_ADC_P) <= 1
    temp, press, hum = comp_float(adc_t, adc_p, adc_h, cal_t, cal_p, cal_h)
    assert abs(temp - EXAMPLE_TEMP_C) < 0.01
    assert abs(press - EXAMPLE_PRESS_PA) < 1.0
    assert abs(hum - 40) < 0.05


@pytest.mark.parametrize("temp,press,hum", [(-40.0, 300.0, 0.0), (0.0, 950.5, 12.3),
                                             (21.5, 1013.2, 40.0), (85.0, 1100.0, 100.0)])
def test_bme280_datasheet_formulas_give_back_what_the_test_set(sim, sim_process, temp, press, hum):
    sim.sensor("bme280", address=0x77).set(temperature=temp, pressure=press, humidity=hum)
    out = run_json(sim_process, sim, READ_RAW % (0x77, 1))
    adc_t, adc_p, adc_h = out["rows"][0][:3]
    t, p, h = comp_float(adc_t, adc_p, adc_h, *out["cal"])
    assert abs(t - temp) < 0.01
    assert abs(p / 100 - press) < 0.01
    assert abs(h - hum) < 0.05


def test_bme280_values_follow_a_signal_in_board_time(sim_process):
    with Simulator(time_mode="stepped") as sim:   # stepped: code takes no board time, exact
        sim.sensor("bme280").set(temperature=Signal.ramp(10.0, 20.0, 10.0))
        p = sim_process.start(sim, READ_RAW % (0x76, 3))   # one forced read per board second
        sim.wait_for_board()
        sim.advance(seconds=60)
        r = sim_process.finish(p)
    assert r.returncode == 0, r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    temps = [round(comp_float(r[0], r[1], r[2], *out["cal"])[0], 1) for r in out["rows"]]
    assert temps == [10.0, 11.0, 12.0]


def test_bme280_skipped_channels_reset_and_normal_mode(sim, sim_process):
    sim.sensor("bme280").set(temperature=30.0)
    out = run_json(sim_process, sim, """
import machine, json
i2c = machine.I2C(0)
i2c.writeto_mem(0x76, 0xF2, b"\\x00")            # humidity skipped
i2c.writeto_mem(0x76, 0xF4, bytes([0b00100001]))  # temperature only, forced
skipped = list(i2c.readfrom_mem(0x76, 0xF7, 8))
i2c.writeto_mem(0x76, 0xF4, bytes([0b00100111]))  # normal mode
normal = i2c.readfrom_mem(0x76, 0xF4, 1)[0] & 3
i2c.writeto_mem(0x76, 0xE0, b"\\xb6")             # soft reset
after = [i2c.readfrom_mem(0x76, 0xF4, 1)[0], list(i2c.readfrom_mem(0x76, 0xF7, 3))]
print(json.dumps([skipped, normal, after]))
""")
    skipped, normal, after = out
    assert skipped[0:3] == [0x80, 0, 0] and skipped[6:8] == [0x80, 0]  # pressure, humidity skipped
    assert skipped[3:6] != [0x80, 0, 0]
    assert normal == 3
    assert after == [0, [0x80, 0, 0]]


def _index_or_skip(exc: Exception) -> None:
    pytest.skip(f"package index unreachable, cannot fetch the third-party BME280 driver: {exc}")


def test_third_party_micropython_bme280_driver_reads_back_what_the_test_set(sim, sim_process):
    """micropython-bme280 2.1.3 (PyPI), installed at test time into the board's lib, never
    committed. That release computes var1 with `(dig_T2 >> 11)` where the datasheet has
    `(... * dig_T2) >> 11`: exact only on a chip whose dig_T2 is a multiple of 2048. The
    simulator shows both: exact values on such a chip, the driver's error on the default one."""
    from micropython_hil.deploy import packages
    try:
        packages.install(["bme280==2.1.3"], sim_process.root / "lib")
    except (packages.PackageError, OSError) as exc:
        _index_or_skip(exc)
    code = """
import machine, json, bme280
b = bme280.BME280(i2c=machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21)))
t, p, h = b.read_compensated_data()
print(json.dumps([t, p, h, b.values]))
"""
    bme = sim.sensor("bme280")
    bme.set(temperature=21.5, pressure=1013.2, humidity=40)
    t, _, _, _ = run_json(sim_process, sim, code)
    assert abs(t / 100 - 21.5) > 1.0   # the driver's bug, shown as on a real chip
    bme.trim(dig_T2=13 * 2048)
    t, p, h, values = run_json(sim_process, sim, code)
    assert abs(t / 100 - 21.5) <= 0.01
    assert abs(p / 256 / 100 - 1013.2) <= 0.01
    assert abs(h / 1024 - 40) <= 0.01
    assert values == ["21.5C", "1013.20hPa", "40.00%"]


@pytest.fixture
def sim_s3():
    s = Simulator(profile="esp32s3", time_mode="fast")
    yield s
    s.close()


def test_third_party_bme280_upy_driver_with_asyncio_polling(sim_s3, sim_process, tmp_path):
    """bme280-upy 2.1.0 (PyPI): forced reads that poll the status register with asyncio
    sleeps, so it also runs on the virtual clock. Its humidity formula multiplies by its
    partial result where the datasheet has (t_fine - 76800): exact when dig_H3 = dig_H6 = 0.
    Runs on the S3 profile: compiling its 30 KB source on the board takes more than what an
    ESP32's heap has left after asyncio (on the chip one would precompile it with mpy-cross)."""
    sim = sim_s3
    dl = tmp_path / "dl"
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "-d", str(dl), "bme280-upy==2.1.0"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        _index_or_skip(RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr else "pip failed"))
    archive = next(dl.glob("bme280*upy-2.1.0.tar.gz"))
    lib = sim_process.root / "lib" / "bme280"
    lib.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".py") and "/bme280/" in m.name:
                (lib / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    code = """
import json, bme280
with bme280.BME280(i2cBus=0, i2cAddr=0x77) as bme:
    t, h, p = bme.readForced(tempOversampling=bme280.OVSMPL_4, humidityOversampling=bme280.OVSMPL_16,
                             pressureOversampling=bme280.OVSMPL_4)
print(json.dumps([t, h, p]))
"""
    bme = sim.sensor("bme280", address=0x77)
    bme.set(temperature=-5.25, pressure=987.65, humidity=77.7)
    t, h, p = run_json(sim_process, sim, code)
    assert abs(t - -5.25) <= 0.01 and abs(p / 100 - 987.65) <= 0.01
    assert abs(h * 100 - 77.7) > 1.0     # the driver's humidity deviation, as on a real chip
    bme.trim(dig_H6=0)
    t, h, p = run_json(sim_process, sim, code)
    assert abs(t - -5.25) <= 0.01
    assert abs(h * 100 - 77.7) <= 0.01
    assert abs(p / 100 - 987.65) <= 0.01


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8 (poly 0x31, init 0xFF), written from the SHT3x datasheet 4.12."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_crc8_matches_the_sht3x_datasheet_example():
    assert crc8(b"\xbe\xef") == 0x92


def test_sht3x_single_shot_periodic_crc_and_nack_before_ready(sim, sim_process):
    sim.sensor("sht3x").set(temperature=23.4, humidity=55.5)
    out = run_json(sim_process, sim, """
import machine, json, time
i2c = machine.I2C(0)
r = {}
try:
    i2c.readfrom(0x44, 6)
except OSError as e:
    r["idle"] = e.errno                        # nothing measured yet: NACK
i2c.writeto(0x44, b"\\x24\\x00")                # single shot, high repeatability
try:
    i2c.readfrom(0x44, 6)
except OSError as e:
    r["early"] = e.errno                       # still measuring: NACK
time.sleep_ms(16)
r["data"] = list(i2c.readfrom(0x44, 6))
i2c.writeto(0x44, b"\\x21\\x30")                # periodic, 1 mps
i2c.writeto(0x44, b"\\xe0\\x00")                # fetch
r["fetch"] = list(i2c.readfrom(0x44, 6))
i2c.writeto(0x44, b"\\xf3\\x2d")
r["status"] = list(i2c.readfrom(0x44, 3))
try:
    i2c.writeto(0x44, b"\\x12\\x34")
except OSError as e:
    r["bad_cmd"] = e.errno
print(json.dumps(r))
""")
    assert out["idle"] == 19 and out["early"] == 19 and out["bad_cmd"] == 19
    for d in (out["data"], out["fetch"]):
        d = bytes(d)
        assert crc8(d[0:2]) == d[2] and crc8(d[3:5]) == d[5]
        st, srh = int.from_bytes(d[0:2], "big"), int.from_bytes(d[3:5], "big")
        assert abs(-45 + 175 * st / 65535 - 23.4) < 0.01
        assert abs(100 * srh / 65535 - 55.5) < 0.01
    assert out["status"] == [0, 0, crc8(b"\x00\x00")]


def test_part_registry_lists_parts_and_takes_user_parts(tmp_path, sim_process):
    parts = tmp_path / "myparts"
    parts.mkdir()
    (parts / "counter.py").write_text(
        'NAME = "counter"\nADDRESSES = (0x30,)\nRANGES = {"count": (0, 255)}\n\n'
        "class Part(RegisterPart):\n"
        '    DEFAULTS = {"count": 0}\n\n'
        "    def before_read(self, reg, n):\n"
        '        self.regs[0] = int(self.value("count"))\n')
    s = Simulator(parts_dirs=[parts])
    try:
        s.sensor("counter").set(count=42)
        with pytest.raises(SimulatorError, match="outside the part's range 0..255"):
            s.sensor("counter").set(count=300)
        with pytest.raises(SimulatorError, match="counter has no trimming words"):
            s.sensor("counter").trim(x=1)
        with pytest.raises(SimulatorError, match="known parts are bme280, counter, sht3x"):
            s.sensor("nope")
        r = sim_process.run(s, "import machine\nprint(machine.I2C(0).readfrom_mem(0x30, 0, 1)[0])")
        assert r.stdout.split() == ["42"], r.stdout
    finally:
        s.close()
