"""The simulated ESP32's control channel and machine/network/esp32 shims, on real unix-port runs."""

from __future__ import annotations

import json
import threading
import time

import pytest

from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.errors import SimulatorError
from micropython_hil.sim.inputs import Signal
from micropython_hil.sim.protocol import EXIT_BROWNOUT, EXIT_DEEPSLEEP, EXIT_HARD_RESET, EXIT_SOFT_RESET, EXIT_WDT
from micropython_hil.sim.simulator import Simulator


@pytest.fixture
def sim():
    s = Simulator(time_mode="fast")
    yield s
    s.close()


def out_lines(run):
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.splitlines()


def results(run) -> dict:
    """The JSON object the device printed on its last line."""
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_pins_inputs_outputs_and_pulls(sim, sim_process):
    sim.pin(4).set(1)
    sim.pin(5).set(0)
    r = results(sim_process.run(sim, """
import machine, json
P = machine.Pin
a = P(4, P.IN); b = P(5, P.IN, P.PULL_UP); c = P(13, P.IN, P.PULL_UP); d = P(14, P.IN, P.PULL_DOWN)
o = P(2, P.OUT, value=1); o.off(); o.on(); o(0); o.value(1)
od = P(16, P.OPEN_DRAIN, value=0)
s = machine.Signal(P(17, P.OUT), invert=True); s.on()
print(json.dumps({"a": a.value(), "b": b(), "c": c.value(), "d": d.value(), "o": o.value(),
                  "od": od.value(), "mode_consts": [P.IN, P.OUT, P.OPEN_DRAIN, P.PULL_UP, P.PULL_DOWN]}))
"""))
    # Driven by the host wins over the pull; undriven follows the pull.
    assert r == {"a": 1, "b": 0, "c": 1, "d": 0, "o": 1, "od": 0, "mode_consts": [1, 3, 7, 2, 1]}
    assert sim.pin(2).level == 1
    assert [v for _, v in sim.pin(2).history] == [1, 0, 1, 0, 1]
    assert sim.pin(17).level == 0  # inverted Signal on -> pin low


def test_pin_irq_fires_on_host_edges_at_the_next_shim_call(sim, sim_process):
    p = sim_process.start(sim, """
import machine, time
hits = []
pin = machine.Pin(4, machine.Pin.IN)
pin.irq(lambda p: hits.append(p.value()), trigger=machine.Pin.IRQ_RISING)
t0 = time.ticks_ms()
machine.Pin(2, machine.Pin.OUT).on()   # tells the test we are ready
while len(hits) < 2:
    time.sleep_ms(1)
print("hits", hits)
""")
    sim_process_wait(sim, lambda: sim.pin(2).level == 1)
    sim.pin(4).pulse()          # rising then falling: one rising edge
    sim.pin(4).set(1)           # another rising edge
    r = sim_process.finish(p, timeout=20)
    assert out_lines(r)[-1] == "hits [1, 1]"


def sim_process_wait(sim, cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "board did not get there"
        time.sleep(0.005)


def test_invalid_and_input_only_pins_raise_as_the_port_does(sim, sim_process):
    lines = out_lines(sim_process.run(sim, """
import machine
for args in ((20,), (40,), (34, machine.Pin.OUT), (36, machine.Pin.OPEN_DRAIN)):
    try:
        machine.Pin(*args)
        print("ok", args)
    except ValueError as e:
        print("ValueError", e)
try:
    machine.PWM(machine.Pin(35))
except ValueError as e:
    print("ValueError", e)
"""))
    assert lines == ["ValueError invalid pin", "ValueError invalid pin",
                     "ValueError pin can only be input", "ValueError pin can only be input",
                     "ValueError pin can only be input"]
    with pytest.raises(SimulatorError, match="no GPIO20"):
        sim.pin(20)


def test_adc_voltage_attenuation_width_and_signal(sim, sim_process):
    sim.adc(34).set(0.5)
    sim.adc(35).set(3.3)
    sim.adc(32).set(Signal.steps([(0, 0.2), (100, 0.8)]))
    r = results(sim_process.run(sim, """
import machine, json, time
a = machine.ADC(machine.Pin(34))            # ATTN_0DB: full scale 0.95 V
b = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)  # 2.45 V, clipped
c = machine.ADC(machine.Pin(32))
r = {"uv": a.read_uv(), "raw": a.read(), "u16": a.read_u16(), "clip": b.read_uv(), "c0": c.read_uv()}
a.width(machine.ADC.WIDTH_9BIT); r["raw9"] = a.read()
time.sleep(150)
r["c1"] = c.read_uv()
try:
    machine.ADC(machine.Pin(5))
except ValueError as e:
    r["bad"] = str(e)
print(json.dumps(r))
"""))
    assert r["uv"] == 500000 and r["clip"] == 2450000
    assert r["raw"] == round(0.5 / 0.95 * 4095) and r["raw9"] == round(0.5 / 0.95 * 511)
    assert abs(r["u16"] - 0.5 / 0.95 * 65535) < 20
    assert (r["c0"], r["c1"]) == (200000, 800000)   # the signal stepped in board time
    assert r["bad"] == "invalid pin"
    with pytest.raises(SimulatorError, match="outside 0..3.6 V"):
        sim.adc(34).set(5.0)
    with pytest.raises(SimulatorError, match="no ADC channel"):
        sim.adc(5)


def test_i2c_errors_writes_and_part_faults(sim, sim_process):
    bme = sim.sensor("bme280", address=0x77)
    r = results(sim_process.run(sim, """
import machine, json
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=400000)
r = {"scan": i2c.scan(), "id": i2c.readfrom_mem(0x77, 0xD0, 1)[0]}
try:
    i2c.readfrom(0x42, 1)
except OSError as e:
    r["absent"] = e.errno
i2c.writeto_mem(0x77, 0xF5, b"\\xa0")
r["cfg"] = i2c.readfrom_mem(0x77, 0xF5, 1)[0]
buf = bytearray(2); i2c.readfrom_mem_into(0x77, 0x88, buf); r["t1"] = buf[0] | buf[1] << 8
s = machine.SoftI2C(scl=machine.Pin(22), sda=machine.Pin(21))
r["soft"] = [s.scan(), s.readfrom_mem(0x77, 0xD0, 1)[0]]
try:
    machine.I2C(2)
except ValueError as e:
    r["bad"] = str(e)
print(json.dumps(r))
"""))
    assert r == {"scan": [0x77], "id": 0x60, "absent": 19, "cfg": 0xA0, "t1": 27504,
                 "soft": [[0x77], 0x60], "bad": "I2C(2) doesn't exist"}
    assert (0, 0x77, b"\xf5\xa0") in sim.i2c_writes
    bme.fail()
    r = results(sim_process.run(sim, """
import machine, json
i2c = machine.I2C(0)
r = {"scan": i2c.scan()}
try:
    i2c.readfrom_mem(0x77, 0xD0, 1)
except OSError as e:
    r["err"] = e.errno
print(json.dumps(r))
"""))
    assert r == {"scan": [], "err": 19}
    bme.fail("timeout")
    assert "OSError: 116" in sim_process.run(sim, "import machine\nmachine.I2C(0).readfrom(0x77, 1)").stdout
    bme.recover()
    assert out_lines(sim_process.run(sim, "import machine\nprint(machine.I2C(1).scan())")) == ["[119]"]


def test_pwm_uart_spi_outputs_and_inputs(sim, sim_process):
    sim.uart(1).feed(b"hello\nworld")
    sim.spi(2).feed(b"\x01\x02")
    r = results(sim_process.run(sim, """
import machine, json
pwm = machine.PWM(machine.Pin(2), freq=1000, duty_u16=16384)
r = {"freq": pwm.freq(), "duty": pwm.duty_u16(), "ns": pwm.duty_ns()}
pwm.duty(1023)
u = machine.UART(1, baudrate=9600, tx=17, rx=16)
r["any"] = u.any(); r["line"] = u.readline().decode(); r["rest"] = u.read().decode(); r["none"] = u.read()
u.write(b"AT\\r\\n")
spi = machine.SPI(2, baudrate=1000000, sck=machine.Pin(18), mosi=machine.Pin(23), miso=machine.Pin(19))
r["spi"] = list(spi.read(3, 0xff)); spi.write(b"\\x9f")
print(json.dumps(r))
"""))
    assert abs(r.pop("ns") - 250000) < 10
    assert r == {"freq": 1000, "duty": 16384, "any": 11, "line": "hello\n",
                 "rest": "world", "none": None, "spi": [1, 2, 255]}
    assert sim.pin(2).pwm == {"freq": 1000, "duty_u16": 65535}
    assert sim.uart(1).written == b"AT\r\n"
    assert sim.spi(2).written == b"\x9f"


def test_wlan_connect_drop_and_refusal_in_board_time(sim, sim_process):
    sim.wifi.configure(networks={"lab": "secret"}, connect_s=2.0)
    p = sim_process.start(sim, """
import network, time, machine, json
w = network.WLAN(network.STA_IF)
r = {"inactive": w.status(), "mac": w.config("mac").hex()}
try:
    w.connect("lab", "secret")
except OSError as e:
    r["not_active"] = str(e)
w.active(True)
w.connect("lab", "wrong"); time.sleep(3); r["wrong"] = w.status()
w.connect("nope", "x"); time.sleep(3); r["noap"] = w.status()
w.connect("lab", "secret"); r["connecting"] = w.status(); t0 = time.ticks_ms()
while not w.isconnected():
    time.sleep_ms(100)
r["took_ms"] = time.ticks_diff(time.ticks_ms(), t0); r["ip"] = w.ifconfig()[0]
machine.Pin(2, machine.Pin.OUT).on()
while w.isconnected():
    time.sleep_ms(1)
t_drop = time.ticks_ms(); r["dropped"] = w.status()
while not w.isconnected():
    time.sleep_ms(100)
r["down_s"] = round(time.ticks_diff(time.ticks_ms(), t_drop) / 1000)
w.disconnect(); r["idle"] = w.status()
print(json.dumps(r))
""")
    sim_process_wait(sim, lambda: sim.pin(2).level == 1)
    sim.wifi.drop(refuse_for=30)
    r = results(sim_process.finish(p))
    assert r["inactive"] == 1000 and r["not_active"] == "STA must be active"
    assert r["mac"] == "a4cf120a0b0c"
    assert (r["wrong"], r["noap"], r["connecting"]) == (202, 201, 1001)
    assert 2000 <= r["took_ms"] <= 2100 and r["ip"] == "192.168.4.2"
    assert r["dropped"] == 201 and r["down_s"] == 32 and r["idle"] == 1000  # 30 s refused + 2 s


def test_nvs_keeps_committed_values_across_launches(sim, sim_process):
    code = """
import esp32, json
n = esp32.NVS("app")
r = {}
for k in ("boots", "pending"):
    try:
        r[k] = n.get_i32(k)
    except OSError as e:
        r[k] = e.args[0]
n.set_i32("boots", r["boots"] + 1 if r["boots"] > 0 else 1)
n.set_blob("cfg", b"\\x01\\x02")
n.commit()
n.set_i32("pending", 7)       # not committed: lost at the end of the run
buf = bytearray(4)
r["blob"] = list(buf[:n.get_blob("cfg", buf)])
print(json.dumps(r))
"""
    first = results(sim_process.run(sim, code))
    second = results(sim_process.run(sim, code))
    assert first == {"boots": -4354, "pending": -4354, "blob": [1, 2]}
    assert second == {"boots": 1, "pending": -4354, "blob": [1, 2]}


def test_reset_protocol_exit_codes_cause_and_rtc_memory(sim, sim_process):
    code = """
import machine, sys, time
rtc = machine.RTC()
mem = rtc.memory()
print("cause", machine.reset_cause(), "wake", machine.wake_reason(), "mem", mem)
step = int(mem or b"0")
rtc.memory(str(step + 1).encode())
if step == 0:
    machine.reset()
elif step == 1:
    machine.soft_reset()
elif step == 2:
    try:
        machine.deepsleep(5000)
    except:          # a bare except cannot swallow a chip reset: the next shim call ends the run
        pass
    time.sleep(1)
    print("still running")
elif step == 3:
    machine.WDT(timeout=100)
    while True:
        machine.idle()
elif step == 4:
    machine.Pin(2, machine.Pin.OUT).on()
    while True:
        machine.idle()
"""
    codes = []
    outs = []
    for _ in range(6):
        p = sim_process.start(sim, code)
        if len(codes) == 4:
            sim_process_wait(sim, lambda: sim.pin(2).level == 1)
            sim.brownout()
        r = sim_process.finish(p)
        codes.append(r.returncode)
        outs.append(r.stdout.splitlines()[0])
        if not sim.on_board_exit(r.returncode):
            break
    assert codes == [EXIT_HARD_RESET, EXIT_SOFT_RESET, EXIT_DEEPSLEEP, EXIT_WDT, EXIT_BROWNOUT,
                     EXIT_HARD_RESET]
    assert outs == ["cause 1 wake 0 mem b''", "cause 2 wake 0 mem b'1'", "cause 5 wake 0 mem b'2'",
                    "cause 4 wake 4 mem b'3'", "cause 3 wake 0 mem b'4'",
                    "cause 1 wake 0 mem b''"]  # brown-out: a power-on reset, RTC memory lost
    assert [x["cause"] for x in sim.resets] == ["hard", "soft", "deepsleep", "wdt", "brownout", "hard"]


def test_deepsleep_without_wake_source_is_refused(sim, sim_process):
    r = sim_process.run(sim, "import machine\nmachine.deepsleep()")
    assert r.returncode == 1 and "would never wake" in r.stdout


def test_board_runs_standalone_without_host(sim_process):
    # No control channel at all: inputs at their defaults, stepped time falls back to fast.
    s = Simulator(time_mode="stepped")
    try:
        r = sim_process.run(s, extra_env={"MPSIM_CHANNEL": ""}, code=(
            "import machine, time\nmachine.Pin(2, machine.Pin.OUT).on()\n"
            "time.sleep(60)\nprint(machine.Pin(4).value(), time.ticks_ms() // 1000)"))
        assert out_lines(r) == ["[sim] stepped time needs the host's control channel: using fast time",
                                "0 60"]
        # A host that goes away while the board sleeps in stepped time: the board carries on
        # in fast time with the inputs it had.
        s.pin(4).set(1)
        p = sim_process.start(s, "import machine, time\nprint(machine.Pin(4).value())\n"
                                 "time.sleep(5)\nprint(machine.Pin(4).value(), time.ticks_ms())")
        s.wait_for_board()
    finally:
        s.close()
    lines = out_lines(sim_process.finish(p))
    assert lines[-1] == "1 5000" and "[sim] host closed the control channel: running standalone" in lines


def test_shim_internal_error_names_the_simulator(tmp_path, sim_process):
    bad = tmp_path / "parts"
    bad.mkdir()
    (bad / "broken.py").write_text('NAME = "broken"\nADDRESSES = (0x10,)\nRANGES = {"x": (0, 1)}\n'
                                   "class Part(Part):\n    def read(self, n):\n        return 1 / 0\n")
    s = Simulator(parts_dirs=[bad])
    try:
        s.sensor("broken").set(x=0.5)
        r = sim_process.run(s, "import machine\nmachine.I2C(0).readfrom(0x10, 1)")
        assert "SimulatorBug" in r.stdout and "simulated part broken at 0x10 (read)" in r.stdout
        assert "not at fault" in r.stdout
        assert any("broken" in e for e in s.errors)
    finally:
        s.close()


def test_bad_host_input_is_refused_with_clear_errors(sim):
    with pytest.raises(SimulatorError, match="known parts are .*bme280.*sht3x"):
        sim.sensor("bme999")
    with pytest.raises(SimulatorError, match="answers at 0x76, 0x77, not 0x40"):
        sim.sensor("bme280", address=0x40)
    with pytest.raises(SimulatorError, match="outside the part's range -40.0..85.0"):
        sim.sensor("bme280").set(temperature=200)
    with pytest.raises(SimulatorError, match="has no value 'co2'"):
        sim.sensor("bme280").set(co2=400)
    with pytest.raises(SimulatorError, match="level must be 0 or 1"):
        sim.pin(4).set(2)
    with pytest.raises(SimulatorError, match="cannot move the board's clock back"):
        sim.advance(seconds=-1)
    with pytest.raises(SimulatorError, match="no board is running"):
        sim.brownout()
    with pytest.raises(SimulatorError, match="unknown time mode 'slow'"):
        Simulator(time_mode="slow")
    with pytest.raises(SimulatorError, match="no UART\\(5\\)"):
        sim.uart(5)


def test_channel_thread_and_sockets_are_released():
    before = threading.active_count()
    s = Simulator()
    s.close()
    s.close()  # idempotent
    assert threading.active_count() == before


def test_rtc_wdt_irq_masking_and_the_rest(sim, sim_process):
    sim.wifi.configure(scan=[("lab", 6, -40, 3), ("cafe", 11, -80, 0)])
    r = results(sim_process.run(sim, """
import machine, time, json, network, esp32
r = {}
rtc = machine.RTC()
rtc.datetime((2030, 12, 31, 1, 23, 59, 58, 0))
time.sleep(3)
r["rtc"] = list(rtc.datetime()[:7]); r["lt"] = list(time.localtime()[:6])
wdt = machine.WDT(timeout=2000)
for _ in range(5):
    time.sleep(1)
    wdt.feed()                     # fed in time: no reset
hits = []
pin = machine.Pin(4, machine.Pin.IN)
pin.irq(lambda p: hits.append(time.ticks_ms()), trigger=machine.Pin.IRQ_RISING)
out = machine.Pin(2, machine.Pin.OUT, value=0)
out.irq(lambda p: hits.append("out"), trigger=machine.Pin.IRQ_RISING)
state = machine.disable_irq()
out.on()                           # an edge while IRQs are off: deferred
r["masked"] = list(hits)
machine.enable_irq(state)
r["unmasked"] = list(hits)
spi = machine.SoftSPI(baudrate=100000, sck=machine.Pin(18), mosi=machine.Pin(23), miso=machine.Pin(19))
spi.write(b"\\x01")
esp32.wake_on_ext0(machine.Pin(33), esp32.WAKEUP_ANY_HIGH)
w = network.WLAN(network.STA_IF); w.active(True)
r["scan"] = [(s[0].decode(), s[2], s[3]) for s in w.scan()]
ap = network.WLAN(network.AP_IF); ap.active(True); ap.config(ssid="node-7")
r["ap"] = [ap.config("ssid"), ap.isconnected(), ap.ifconfig()[0]]
r["raw_temp"] = esp32.raw_temperature()
print(json.dumps(r))
"""))
    assert r["rtc"] == [2031, 1, 1, 2, 0, 0, 1]   # a Wednesday (0 = Monday) and r["lt"] == [2031, 1, 1, 0, 0, 1]
    assert r["masked"] == [] and r["unmasked"] == ["out"]
    assert r["scan"] == [["lab", 6, -40], ["cafe", 11, -80]]
    assert r["ap"] == ["node-7", False, "192.168.4.1"]
    assert r["raw_temp"] == int(45 * 9 / 5 + 32)
    assert sim.spi(1).written == b"" and not sim.errors
