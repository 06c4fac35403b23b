"""A stop that tells the truth, and a binary that is not MicroPython named in one line."""

import time

import pytest

from micropython_hil import Board, BoardCrashed, HarnessWarning

# Firmware that swallows every exception around its loop, KeyboardInterrupt included.
STUBBORN = b"""\
import time
print("stubborn up")
while True:
    try:
        time.sleep_ms(20)
    except:
        pass
"""


def test_a_stop_the_firmware_ignores_resets_the_board_says_so_and_the_next_command_works(board):
    board.put_bytes(STUBBORN, "main.py")
    run = board.run()
    board.console.expect("stubborn up", timeout=5)
    started = time.monotonic()
    with pytest.warns(HarnessWarning, match=r"main.py ignored KeyboardInterrupt for 1 s; the board was reset"):
        run.stop(timeout=1)
    assert time.monotonic() - started < 6
    assert not run.running
    assert board.exec("print(6 * 7)") == "42\n"
    assert board.eval("1 + 1") == 2
    assert "[hil] main.py ignored KeyboardInterrupt for 1 s: resetting the board" in board.console.text


def test_a_stop_that_works_raises_no_warning(board, recwarn):
    board.put_bytes(b"import time\nwhile True:\n    time.sleep_ms(20)\n", "main.py")
    run = board.run()
    time.sleep(0.2)
    run.stop(timeout=1)
    assert not [w for w in recwarn if issubclass(w.category, HarnessWarning)]
    assert board.exec("print('ok')") == "ok\n"


@pytest.mark.parametrize("attempt", range(5))
def test_a_binary_that_is_not_micropython_is_named_in_one_error(attempt):
    with pytest.raises(BoardCrashed, match=r"the unix port \(\S*/false\) exited with code 1 before printing "
                                           r"anything: is it MicroPython\?"):
        Board.unix(micropython="/bin/false", timeout=3)
