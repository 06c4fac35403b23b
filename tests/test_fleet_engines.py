"""Fleets over Docker engines: boards placed in containers on two engines of this machine (the
default dockerd, and a second one this module starts on its own socket, data root, exec root,
pidfile and bridge, without iptables rules, stopped by pid at the end), their telemetry
gathered in the test as for local boards. Real daemons, real containers.

The second daemon gets a bridge of its own, made here: `--bridge=none` would not do, since a
dockerd without a bridge deletes the interface docker0 at its start (measured with 20.10), the
first daemon's, in the namespace they share."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest

from micropython_hil import tempdirs
from micropython_hil.containers import LABEL, Engine, engine_url, run_id
from micropython_hil.netfault.kernel import unavailable
from micropython_hil.tether import Tether

STATION = "firmware_under_test/weather_station"
_WHY = Engine.unavailable() or (f"kernel link: {unavailable()}" if unavailable() else None)
pytestmark = pytest.mark.skipif(bool(_WHY), reason=f"fleets over engines: {_WHY}")


def start_dockerd(folder, bridge: str, tether: Tether) -> tuple[str, subprocess.Popen]:
    """A second dockerd with everything of its own under `folder`, on `bridge`; its URL once it answers."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("a second engine needs dockerd: apt-get install docker.io")
    url = f"unix://{folder}/docker.sock"
    log = open(folder / "dockerd.log", "wb")
    proc = tether.popen([dockerd, "--host", url, "--data-root", str(folder / "data"),
                         "--exec-root", str(folder / "exec"), "--pidfile", str(folder / "dockerd.pid"),
                         "--bridge", bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while Engine.unavailable(url) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_dockerd(proc)
            tail = (folder / "dockerd.log").read_text(errors="replace").strip().splitlines()[-3:]
            pytest.fail(f"the second dockerd did not come up: {' | '.join(tail)}")
        time.sleep(0.1)
    return url, proc


def stop_dockerd(proc: subprocess.Popen) -> None:
    """SIGTERM by pid (dockerd stops its containerd and unmounts its layers), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def second_engine():
    """The URL of a second Docker engine on this machine, stopped and removed after the module."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    folder = tempdirs.make_temp_dir("dockerd")
    tether = Tether("second-dockerd")
    bridge = f"hilbr{secrets.token_hex(3)}"
    proc = None
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True, capture_output=True)
        url, proc = start_dockerd(folder, bridge, tether)
        yield url
        with Engine(url) as engine:  # the fleet removed its boards; nothing of the harness is left
            left = engine.client.containers.list(all=True, filters={"label": LABEL})
            for container in left:
                container.remove(force=True)
        assert not left, f"containers left on the second engine: {[c.name for c in left]}"
    finally:
        if proc is not None:
            stop_dockerd(proc)
        tether.close()
        still_mounted = [line.split()[1] for line in open("/proc/mounts") if str(folder) in line]
        for mount in reversed(still_mounted):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        tempdirs.remove(folder)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def containers_of_this_run(url: str) -> int:
    with Engine(url) as engine:
        return len(engine.client.containers.list(filters={"label": f"{LABEL}={run_id()}"}))


@pytest.mark.firmware(STATION)
def test_a_fleet_is_placed_over_two_engines_and_removed_from_both(fleet, second_engine):
    first = engine_url()
    stations = fleet(4, values=lambda i: {"sensors": {"bme280@0x76": {"temperature": 10.0 + i}}},
                     extra={"interval_s": 1}, engines=[first, second_engine])
    assert stations.placement() == {first: 2, second_engine: 2}
    assert [m.engine for m in stations] == [first, second_engine, first, second_engine]
    assert stations[1].board.kind == "docker" and stations[1].board.engine.url == second_engine
    assert containers_of_this_run(second_engine) == 2
    readings = stations.collect(2, "telemetry", timeout=30)
    assert [r.json()["temperature_c"] for r in readings[1]] == [11.0, 11.0]  # from the second engine
    stations.assert_none_lost("telemetry", min_count=2)
    stations.close()
    assert containers_of_this_run(second_engine) == 0


@pytest.mark.skipif(not os.environ.get("HIL_SLOW"), reason="50 boards over two engines take about 25 s: "
                    "HIL_SLOW=1 runs it (.ci/run does)")
@pytest.mark.firmware(STATION)
def test_a_fleet_of_50_spread_over_two_engines_publishes_with_none_lost(fleet, second_engine):
    first = engine_url()
    started = time.monotonic()
    stations = fleet(50, values=lambda i: {"sensors": {"bme280@0x76": {"temperature": 10.0 + i % 20}}},
                     extra={"interval_s": 1}, engines=[first, second_engine], workers=8)
    start_s = time.monotonic() - started
    assert stations.placement() == {first: 25, second_engine: 25}
    assert containers_of_this_run(second_engine) == 25 and containers_of_this_run(first) >= 25
    stations.expect_online(timeout=60)
    readings = stations.collect(5, "telemetry", timeout=60)
    for member in (stations[0], stations[1], stations[49]):  # each its own values, from either engine
        assert {r.json()["temperature_c"] for r in readings[member.index]} == {10.0 + member.index % 20}
    stations.assert_none_lost("telemetry", min_count=5)
    assert set(stations.lost("telemetry").values()) == {0}
    print(f"50 boards over two engines: started in {start_s:.1f} s, all online and 5 readings each "
          f"{time.monotonic() - started:.1f} s after the start")
    stations.close()
    assert containers_of_this_run(second_engine) == 0
