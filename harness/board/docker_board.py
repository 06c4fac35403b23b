"""DockerBoard: a simulated board whose MicroPython process runs inside a container
(`--board docker:PROFILE`), driven through the same pty REPL and simulator channel as a unix board.

One container per board, from the image of board_image.py, holds the board: its first process
sleeps, and each launch of the unix port (the first, and each relaunch after a reset) is a
`docker exec` with a tty, whose bytes a pump thread carries to and from the master of a pty on
this machine. The harness opens that pty's slave as it opens a local board's, so the board
layer above (UnixBoard: resets, relaunches, crashes, the raw REPL) is unchanged; ContainerPort
is a UnixPort whose launches happen in the container.

The container has no network of docker's (`network_mode none`): its own namespace, which the
opener's `network` hook wires given the container's first pid (netfault/container_board.py gives
it a KernelLink: 127.0.0.1 reaches the host's broker and simulator, and kernel faults apply). The
board's flash folder and the simulator's files are bind-mounted at their host paths, so the
engine must be on this machine (a unix socket, or tcp:// on loopback); signals reach the
process by its pid here. Every container carries the run's label (containers/ownership.py): a
killed run's boards are removed by the next run's first docker board on that engine.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from .. import tempdirs
from ..containers.engine import Engine
from ..containers.ownership import run_labels
from ..errors import BoardConnectionError, BoardError
from .board import DEFAULT_TIMEOUT
from .board_image import LAUNCHER, READY, board_image, launcher_argv
from .transport import ReplTransport
from .unix_board import UnixBoard
from .unix_port import Launch, UnixPort

_names = itertools.count(1)
_CLEANED: set[str] = set()  # engines whose leftovers this process has removed
_CLEANING = threading.Lock()
# How a board opened from its spec (open_board("docker:PROFILE"), and so `hil` and roles) wires its
# network: factory(sim, name) gives DockerBoard.open's `network` hook. This layer has no network
# of its own to give; netfault/container_board.py registers a KernelLink's when imported (the
# package's __init__ imports it, so any import of micropython_hil does).
_spec_network: Callable[[Any, str], Callable[[int], Network]] | None = None


class Network(Protocol):
    """What a docker board's `network` hook returns: the wiring of the container's namespace."""

    def close(self) -> None: ...


def wire_spec_boards(factory: Callable[[Any, str], Callable[[int], Network]]) -> None:
    """Register how docker boards opened from a spec wire their namespace: `factory(sim, name)`
    returns the `network` hook DockerBoard.open takes (netfault/container_board.py's link_container)."""
    global _spec_network
    _spec_network = factory


class ExecProcess:
    """One process started in a container by `docker exec` with a tty, its bytes pumped to and
    from a pty master here: the Popen-like object a ContainerPort holds (pid, poll, wait, kill)."""

    def __init__(self, engine: Engine, container_id: str, argv: list[str], env: dict[str, str], workdir: str,
                 master: int, name: str) -> None:
        self.name = name
        self.returncode: int | None = None
        self._api = engine.client.api
        self._master = master
        self._pid = 0
        self._done = threading.Event()
        self.id = self._api.exec_create(container_id, argv, stdin=True, tty=True, environment=env,
                                        workdir=workdir)["Id"]
        raw = self._api.exec_start(self.id, tty=True, socket=True)
        # The SDK's socket object is read-only: a socket of our own on the same connection.
        self._sock = socket.socket(fileno=os.dup(raw.fileno()))
        self._raw = raw
        self._sock.setblocking(True)
        threading.Thread(target=self._pump, name=f"{name}-pump", daemon=True).start()

    # -- Popen's interface, as UnixPort uses it
    @property
    def pid(self) -> int | None:
        """The process's pid on this machine (the engine's own view), once docker knows it."""
        deadline = time.monotonic() + 5
        while not self._pid and self.returncode is None and time.monotonic() < deadline:
            try:
                self._pid = int(self._api.exec_inspect(self.id).get("Pid") or 0)
            except Exception:  # noqa: BLE001 - the container is gone: so is the process
                break
            if not self._pid:
                time.sleep(0.002)
        return self._pid or None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        pid = self.pid if self.returncode is None else None
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        if self.returncode is None and not self.pid:
            self._sock.shutdown(socket.SHUT_RDWR)  # never started: the pump ends on its own

    # -- the pump
    def _pump(self) -> None:
        try:
            self._carry()
        except OSError:
            pass  # the connection or the pty went away: the process's end follows
        finally:
            self.returncode = self._exit_code()
            for closing in (self._sock.close, self._raw.close):
                try:
                    closing()
                except OSError:
                    pass
            self._done.set()

    def _carry(self) -> None:
        sock, master = self._sock, self._master
        seen = b""
        while READY not in seen:  # nothing the host typed goes in before the tty is raw
            chunk = sock.recv(4096)
            if not chunk:
                os.write(master, seen)  # it ended before its tty was raw: show why on the console
                return
            seen += chunk
        sock.sendall(b"g")
        rest = seen.partition(READY)[2]
        if rest:
            os.write(master, rest)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(master, select.POLLIN)
        reading_master = True
        while True:
            for fd, event in poller.poll():
                if fd == master:
                    if event & (select.POLLNVAL | select.POLLHUP | select.POLLERR):
                        poller.unregister(master)  # hung up: the board is closing
                        reading_master = False
                        continue
                    sock.sendall(os.read(master, 65536))
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                if reading_master:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(master, view):]

    def _exit_code(self) -> int:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                state = self._api.exec_inspect(self.id)
            except Exception:  # noqa: BLE001 - the container was removed under it
                return -signal.SIGKILL
            if not state.get("Running"):
                code = state.get("ExitCode")
                return -signal.SIGKILL if code is None else int(code)
            time.sleep(0.005)
        return -signal.SIGKILL


class ContainerPort(UnixPort):
    """A UnixPort whose launches are processes in a container (ExecProcess), on the same pty."""

    def __init__(self, engine: Engine, container_id: str, root: Path, sim: Any = None, name: str = "docker") -> None:
        super().__init__(root, sim=sim, name=name)
        self.engine = engine
        self.container_id = container_id
        self.binary = f"{LAUNCHER} in container {container_id[:12]}"

    def _spawn(self, launch: Launch) -> ExecProcess:
        # Only what the launch adds to this process's environment goes in (never the host's own).
        env = {key: value for key, value in launch.env.items() if os.environ.get(key) != value}
        try:
            return ExecProcess(self.engine, self.container_id, launcher_argv() + list(launch.argv[1:]), env,
                               str(launch.cwd), self._master, self.name)
        except self.engine.errors.APIError as exc:
            raise BoardConnectionError(self.name, f"cannot start the unix port in container "
                                       f"{self.container_id[:12]}: {exc.explanation or exc}") from None

    def interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)


class DockerBoard(UnixBoard, kind="docker"):
    """A simulated board whose process runs in a container of its own; `container` and `network`
    (what the opener's hook wired, e.g. a KernelLink) are its extras."""

    def __init__(self, transport: ReplTransport, port: ContainerPort, root: Path, container: Any, engine: Engine,
                 sim: Any = None, timeout: float = DEFAULT_TIMEOUT, network: Network | None = None,
                 owns_engine: bool = False) -> None:
        self.container = container
        self.engine = engine
        self.network = network
        self._owns_engine = owns_engine
        super().__init__(transport, port, root, sim=sim, timeout=timeout, owns_root=True)

    @classmethod
    def open(cls, sim: Any = None, engine: Engine | str | None = None, name: str | None = None,
             timeout: float = DEFAULT_TIMEOUT, network: Callable[[int], Network] | None = None) -> "DockerBoard":
        """A fresh board in a new container on `engine` (an Engine, a URL, or DOCKER_HOST's),
        ready in the raw REPL. `network(pid)` wires the container's namespace before the first
        launch (given its first process's pid here) and returns what close() closes."""
        name = name or f"docker#{next(_names)}"
        owns_engine = not isinstance(engine, Engine)
        engine = engine if isinstance(engine, Engine) else Engine(engine)
        folder = container = wired = port = cname = None
        try:
            if not engine.local:
                raise BoardConnectionError(name, f"docker engine {engine.url} is not on this machine: a docker "
                                           "board's flash and network are wired from here; use a local engine")
            remove_leftovers(engine)
            image = board_image(engine)
            folder = tempdirs.make_temp_dir("board")
            root = folder / "flash"
            (root / "lib").mkdir(parents=True)
            cname = _container_name(name)
            container = engine.client.containers.run(
                image, detach=True, network_mode="none", labels=run_labels("board"), name=cname,
                volumes=_mounts(root, sim), stop_signal="SIGKILL")
            container.reload()
            if network is not None:
                wired = network(int(container.attrs["State"]["Pid"]))
            port = ContainerPort(engine, container.id, root, sim=sim, name=name)
            port.start()
            transport = ReplTransport(port.device, name=name, exclusive=False)
        except BaseException as exc:
            if container is None and cname is not None:
                # run() is create then start: a start that failed leaves a created container.
                container = _created(engine, cname)
            _release(port, container, wired, folder, engine if owns_engine else None)
            if isinstance(exc, engine.errors.APIError):
                raise BoardConnectionError(name, f"docker engine {engine.url}: {exc.explanation or exc}") from None
            raise
        return cls(transport, port, root, container, engine, sim=sim, timeout=timeout, network=wired,
                   owns_engine=owns_engine)

    @classmethod
    def open_spec(cls, sim: Any = None, name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> "DockerBoard":
        """What open_board("docker:PROFILE") opens: a board on DOCKER_HOST's engine (else the local
        socket), its namespace wired by the registered network (wire_spec_boards), under `sim`."""
        name = name or f"docker#{next(_names)}"
        if _spec_network is None:
            raise BoardConnectionError(name, "no network is registered for docker boards: import "
                                       "micropython_hil.netfault (it wires them through a KernelLink)")
        return cls.open(sim=sim, name=name, timeout=timeout, network=_spec_network(sim, name))

    def release(self) -> None:
        _release(self.port, self.container, self.network, self.root.parent, self.engine if self._owns_engine else None)

    def crash_reason(self) -> BoardError | None:
        reason = super().crash_reason()
        if reason is None and not self.port.alive and not self._container_running():
            return BoardConnectionError(self.name, f"its container {self.container.name} is gone")
        return reason

    def _container_running(self) -> bool:
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed
            return False
        return self.container.status == "running"


def _created(engine: Engine, cname: str) -> Any:
    """The container named `cname` if the engine has it (a run() whose start failed), else None."""
    try:
        return engine.client.containers.get(cname)
    except engine.errors.NotFound:
        return None
    except engine.errors.DockerException:
        return None  # the engine itself failed: the next run's remove_leftovers takes it


def _container_name(board: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in board).strip("-.") or "board"
    return f"hil-{safe}-{os.getpid()}-{next(_names)}"


def _mounts(root: Path, sim: Any) -> dict[str, dict[str, str]]:
    """The board's flash (read-write) and the simulator's device-side folders (read-only), each
    at its host path."""
    mounts = {str(root): {"bind": str(root), "mode": "rw"}}
    if sim is not None:
        for folder in [*sim.micropypath(), *getattr(sim, "parts_dirs", [])]:
            if Path(folder).is_dir() and str(folder) not in mounts:
                mounts[str(folder)] = {"bind": str(folder), "mode": "ro"}
    return mounts


def remove_leftovers(engine: Engine) -> None:
    """Once per engine and process: remove the containers of ended runs (ownership labels)."""
    with _CLEANING:
        if engine.url not in _CLEANED:
            engine.remove_leftovers()
            _CLEANED.add(engine.url)


def _release(port: UnixPort | None, container: Any, network: Network | None, folder: Path | None,
             engine: Engine | None) -> None:
    """Everything a docker board holds, in order: its process, its container, its network, its
    folder, its engine connection; each step runs whatever the previous did."""
    steps: list[Callable[[], Any]] = []
    if port is not None:
        steps.append(port.close)
    if container is not None:
        steps.append(lambda: container.remove(force=True, v=True))
    if network is not None:
        steps.append(network.close)
    if folder is not None:
        steps.append(lambda: tempdirs.remove(folder))
    if engine is not None:
        steps.append(engine.close)
    first: BaseException | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the rest still runs; the first is raised
            if first is None and not _already_gone(exc):
                first = exc
    if first is not None:
        raise first


def _already_gone(exc: BaseException) -> bool:
    return getattr(getattr(exc, "response", None), "status_code", None) == 404
