"""Docker boards opened from their spec (`open_board("docker:PROFILE")`): the `hil` command with
`--board docker:esp32`, and a role of a multi-board test on `--board ROLE=docker:PROFILE` beside
a local one. Real engine, real containers, run as users run them (a child `hil`, a child
pytest); each run's containers are watched by its ownership label while it runs, and none is left
after it. Skips, in one line, where no engine answers or the container's namespace cannot be wired."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from micropython_hil.containers import LABEL, ROLE_LABEL, Engine, run_id
from micropython_hil.deploy import packages
from micropython_hil.fleet.assign import BoardAssignment
from micropython_hil.netfault.kernel import unavailable

REPO = Path(__file__).resolve().parents[1]
_WHY = Engine.unavailable() or (f"kernel link: {unavailable()}" if unavailable() else None)
needs_docker = pytest.mark.skipif(bool(_WHY), reason=f"docker board: {_WHY}")


class RunContainers:
    """The containers a child process's run makes, seen by their label while it runs; whatever
    it leaves (a failed or killed run) is removed at the end."""

    def __init__(self, engine: Engine, child: subprocess.Popen) -> None:
        self.engine, self.child = engine, child
        self.filters = {"label": f"{LABEL}={run_id(child.pid)}"}  # read while the child lives
        self.seen: dict[str, str] = {}  # container name -> its role label
        self._watch = threading.Thread(target=self._poll, daemon=True)
        self._watch.start()

    def _poll(self) -> None:
        while self.child.poll() is None:
            for container in self.engine.client.containers.list(all=True, filters=self.filters):
                self.seen[container.name] = container.labels.get(ROLE_LABEL, "")
            time.sleep(0.02)

    def left(self) -> list[str]:
        self._watch.join(10)
        return [c.name for c in self.engine.client.containers.list(all=True, filters=self.filters)]

    def remove(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        for container in self.engine.client.containers.list(all=True, filters=self.filters):
            container.remove(force=True, v=True)


def run_watched(engine: Engine, argv: list[str], timeout: float, **popen) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `argv` to its end; (its result, the containers its run had: name -> role), asserting
    none is left once it exited."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    watched = RunContainers(engine, child)
    try:
        out, err = child.communicate(timeout=timeout)
        left = watched.left()
    finally:
        watched.remove()
    assert not left, f"containers left behind: {left}"
    return subprocess.CompletedProcess(argv, child.returncode, out, err), dict(watched.seen)


@needs_docker
def test_hil_exec_runs_on_a_docker_board_and_removes_its_container(docker_engine):
    code = "import machine; print(machine.freq()); print(open('/proc/1/cmdline').read().split(chr(0))[0])"
    result, seen = run_watched(docker_engine, [sys.executable, "-m", "micropython_hil.cli", "exec", "--board",
                                               "docker:esp32", code], timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    # The simulated chip's clock, printed from a process whose pid 1 is the container's sleeper.
    assert result.stdout == "160000000\n/usr/bin/sleep\n", result.stdout
    assert list(seen.values()) == ["board"], seen


def test_hil_exec_on_a_docker_board_without_an_engine_is_one_line():
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = subprocess.run([sys.executable, "-m", "micropython_hil.cli", "exec", "--board", "docker:esp32", "1"],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "hil: docker engine unix:///nonexistent/docker.sock: no such socket;"), result.stderr


def test_roles_without_a_board_of_their_own_run_where_a_docker_run_board_does():
    run = BoardAssignment.parse(["docker:esp32s3", "relay=unix"])
    assert str(run.spec_for("switch")) == "docker:esp32s3" and run.spec_for("switch").simulated
    assert str(run.spec_for("relay")) == "unix"


ROLES = f"""
import time

import pytest

@pytest.mark.boards(switch="{REPO}/firmware_under_test/wall_switch",
                    relay="{REPO}/firmware_under_test/home_automation")
def test_a_press_on_the_switch_in_its_container_switches_the_local_relay(boards, telemetry):
    relay, switch = boards.relay, boards.switch
    assert (switch.board.kind, relay.board.kind) == ("docker", "unix")
    assert switch.board.container.status == "running" and switch.board.network is not None
    assert switch.sim.profile.name == "esp32s3" and relay.sim.profile.name == "esp32"
    relay.start()
    switch.start(extra={{"target_topic": relay.topic("cmd"), "state_topic": relay.topic("state")}})
    for role in (relay, switch):
        telemetry.expect(role.topic("status"), where=lambda m: m.payload == b"online", timeout=20)
    telemetry.expect(relay.topic("state"), where={{"relays": [False, False]}}, timeout=10)
    mark = telemetry.mark()
    time.sleep(0.2)  # past the switch's debounce
    switch.sim.pin(4).pulse(0)  # its button, pressed over the container's wire
    telemetry.expect(switch.topic("press"), since=mark, timeout=5)
    telemetry.expect(relay.topic("state"), where={{"relays": [True, False]}}, since=mark, timeout=5)
    relay.sim.sync()
    assert relay.sim.pin(26).level == 1
    # The relay's new state, back over the broker to the container: the switch lights its LED.
    assert switch.sim.wait_until(lambda: switch.sim.pin(2).level == 1, 5), "the switch's LED stayed off"
"""


@needs_docker
def test_a_role_on_a_docker_board_beside_a_local_one(docker_engine, tmp_path):
    (tmp_path / "test_docker_role.py").write_text(ROLES)
    env = {**os.environ, "MICROPYTHON_HIL_PACKAGES": str(packages.cache_dir())}
    result, seen = run_watched(docker_engine, [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "test_docker_role.py",
        "--board", "switch=docker:esp32s3", "--board", "relay=unix:esp32", "--hil-artifacts", str(tmp_path / "arts")],
        timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
    assert list(seen.values()) == ["board"], seen  # the switch's container; the relay ran here
    folder = next((tmp_path / "arts").glob("*a_press_on_the_switch_in_its_container*"))
    assert "wall switch switch-r" in (folder / "console-switch.log").read_text()
