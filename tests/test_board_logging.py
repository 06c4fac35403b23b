"""Board consoles reach the logging system, one logger per board."""

import logging

def test_board_lines_reach_the_log(board, caplog):
    caplog.set_level(logging.INFO, logger="micropython_hil.board")
    board.put_bytes(b"print('hello log')\nprint('second')\n", "main.py")
    board.run().wait(5)
    assert [r.getMessage() for r in caplog.records if r.name == f"micropython_hil.board.{board.name}"][:2] == ["hello log", "second"]
