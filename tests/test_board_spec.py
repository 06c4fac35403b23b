"""BoardSpec: a `--board` spec parsed once, and open_board taking the parsed value."""

import pytest

from micropython_hil.board import BoardSpec, SerialBoard, UnixBoard, open_board
from micropython_hil.errors import BoardConnectionError


@pytest.mark.parametrize("text, kind, profile, port", [
    ("unix", "unix", None, None),
    ("unix:esp32s3", "unix", "esp32s3", None),
    ("serial:/dev/ttyUSB0", "serial", None, "/dev/ttyUSB0"),
    ("serial:auto", "serial", None, "auto"),
    ("serial:rfc2217://bench-pi:4000", "serial", None, "rfc2217://bench-pi:4000"),
])
def test_specs_parse_into_kind_profile_and_port(text, kind, profile, port):
    spec = BoardSpec.parse(text)
    assert (spec.kind, spec.profile, spec.port, spec.text) == (kind, profile, port, text)
    assert str(spec) == text


@pytest.mark.parametrize("text, message", [
    ("serial", r"^serial: name the port: serial:/dev/ttyUSB0"),
    ("serial:", r"^serial:: name the port"),
    ("jtag:0", r"^jtag:0: unknown board kind; use unix, unix:PROFILE, serial:PORT, serial:auto, labgrid:PLACE or docker:PROFILE$"),
    ("", r"^'': unknown board kind"),
])
def test_a_bad_spec_is_one_line_naming_it(text, message):
    with pytest.raises(BoardConnectionError, match=message) as info:
        BoardSpec.parse(text)
    assert "\n" not in str(info.value)


def test_open_board_takes_a_parsed_spec_or_its_text(pty_board_process):
    with open_board(BoardSpec.parse("unix"), timeout=5) as board:
        assert isinstance(board, UnixBoard) and board.kind == "unix"
        assert board.eval("1 + 1") == 2
    with open_board(f"serial:{pty_board_process.device}") as board:
        assert isinstance(board, SerialBoard) and board.kind == "serial"
        assert board.eval("2 + 2") == 4
