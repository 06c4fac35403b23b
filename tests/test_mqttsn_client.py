"""The MicroPython MQTT-SN client (firmware_under_test/common/lib/mqttsn.py) on the unix port,
against the harness's gateway and broker over real UDP: discovery, the will handshake, QoS -1
to 2 both ways, topic ids of every kind, sleep and wake, what survives a deep sleep, and
malformed datagrams counted and ignored."""

import json
import subprocess
from pathlib import Path

import pytest

from micropython_hil.board.unix_port import find_micropython
from micropython_hil.mqttsn import Gateway
from micropython_hil.mqttsn import packets as sn
from micropython_hil.mqttsn.packets import Packet
from micropython_hil.tether import Tether

LIB = Path(__file__).resolve().parents[1] / "firmware_under_test" / "common" / "lib"

SCRIPT = r"""
import json, sys
import mqttsn

host, port, bport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def out(**kw):
    print(json.dumps(kw))

def step(name):  # the test answers each step on stdin once it did its part
    out(step=name)
    assert sys.stdin.readline().strip() == name

finder = mqttsn.Client("mp-search", retry_ms=300, retries=3)
out(search=finder.search("127.255.255.255", bport), gw=mqttsn.hostport(finder.gw))
finder.close()

got = []
c = mqttsn.Client("mp-1", (host, port), keepalive=30, retry_ms=300, retries=3)
c.set_callback(lambda t, m, q, r: got.append([t.decode(), m.decode(), q, r]))
c.connect(clean=True, will=("mp/status", "gone", 1, True))
c.register("mp/data")
c.publish("mp/data", "q0", 0)
c.publish("mp/data", "q1", 1)
c.publish("mp/data", "q2", 2)
c.publish("xy", "short", 1)
c.publish(7, "pre", -1)
c.predefined[7] = b"mp/pre"
out(filter=c.subscribe("mp/cmd/#", 2), short=c.subscribe("ab", 1), pre=c.subscribe(7, 1),
    exact=c.subscribe("mp/exact", 1))
step("subscribed")
while len(got) < 4:
    c.check_msg(2000)
out(got=got, malformed=c.malformed, rejected=c.rejected)
c.sleep(60)
step("asleep")
c.ping(wake=True)
out(woke=got[4:])
st = json.loads(json.dumps(c.state()))
c.close()
again = mqttsn.Client("mp-1", retry_ms=300, retries=3)   # as after a deep sleep
again.restore(st)
again.connect(clean=False)
again.publish("mp/data", "after the wake", 1)
out(state=st, ids=again.topics["mp/data".encode()] == st["ids"]["mp/data"])
again.disconnect()
stranger = mqttsn.Client("mp-none", (host, port), retry_ms=300, retries=1)
try:
    stranger.ping(wake=True)
except mqttsn.GatewayLost:
    out(lost=True)
out(done=True)
"""


@pytest.fixture
def run_script(tmp_path):
    tether = Tether("mqttsn-client-test")
    started = []

    def start(*args):
        path = tmp_path / "client.py"
        path.write_text(SCRIPT)
        proc = tether.popen([find_micropython(), str(path), *map(str, args)], cwd=tmp_path,
                            env={"MICROPYPATH": f".frozen:{LIB}"}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stdin.close()
        tether.close()


def read(proc, key):
    """The script's next JSON line holding `key` (its output so far when it ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if key in record:
            return record
    raise AssertionError(f"the script ended without {key!r}:\n{''.join(seen)}")


def answer(proc, step):
    assert read(proc, "step")["step"] == step
    proc.stdin.write(step + "\n")
    proc.stdin.flush()


def test_the_micropython_client_against_the_gateway(broker, telemetry, run_script):
    with Gateway(broker, predefined={7: "mp/pre"}) as gw:
        proc = run_script(gw.host, gw.port, gw.broadcast_address[1])
        found = read(proc, "search")
        assert found["search"] == gw.gw_id and tuple(found["gw"]) == gw.address
        ids = read(proc, "filter")
        assert ids["filter"] == 0 and ids["short"] == 0 and ids["pre"] == 7 and ids["exact"] > 0
        got = telemetry.collect(3, "mp/data")
        assert [(m.payload, m.qos) for m in got] == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
        assert telemetry.expect("xy").payload == b"short" and telemetry.expect("mp/pre").payload == b"pre"
        assert gw.traffic.expect("WILLTOPIC", client_id="mp-1").topic == "mp/status"

        # What the gateway sends that the client must shrug off: a lying length, an unknown
        # type, a PUBLISH with a topic id it never heard of (answered "invalid topic id").
        gw.inject("mp-1", b"\x09\x0c\x00", b"\x02\x77", sn.encode(Packet(sn.PUBLISH, qos=1, topic_id=999, msg_id=5)),
                  when="now")
        answer(proc, "subscribed")
        telemetry.publish("mp/cmd/x", "by filter", qos=2)
        telemetry.publish("ab", "by short name", qos=1)
        telemetry.publish("mp/pre", "by predefined id", qos=1)
        telemetry.publish("mp/exact", "by name", qos=0)
        result = read(proc, "got")
        assert sorted(map(tuple, result["got"])) == sorted([
            ("mp/cmd/x", "by filter", 2, False), ("ab", "by short name", 1, False),
            ("mp/pre", "by predefined id", 1, False), ("mp/exact", "by name", 0, False)])
        assert result["malformed"] == 2 and result["rejected"] == 1
        assert gw.traffic.expect("PUBACK", direction="up", client_id="mp-1", msg_id=5).return_code == \
            sn.INVALID_TOPIC_ID

        assert read(proc, "step")["step"] == "asleep"
        gw.wait_state("mp-1", "asleep")
        telemetry.publish("mp/cmd/late", "while asleep", qos=1)
        gw.wait_buffered("mp-1", 1)
        proc.stdin.write("asleep\n")
        proc.stdin.flush()
        woke = read(proc, "woke")["woke"]
        assert woke == [["mp/cmd/late", "while asleep", 1, False]]
        state = read(proc, "state")
        assert state["ids"] is True and state["state"]["gw"] == list(gw.address)
        assert telemetry.expect("mp/data", where=lambda m: m.payload == b"after the wake").qos == 1
        assert read(proc, "lost")["lost"] is True
        assert read(proc, "done")
        assert proc.wait(5) == 0
