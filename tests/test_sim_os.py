"""The simulated board's `os` (simulated_boards/os.py): listings with file sizes and a flash
filesystem's statvfs, as the ESP32's littlefs gives them, on a real simulated unix board."""

from __future__ import annotations

import pytest

from micropython_hil.board.unix_board import UnixBoard
from micropython_hil.sim.simulator import Simulator


@pytest.fixture(params=["esp32", "esp32s3"])
def board(request):
    sim = Simulator(profile=request.param)
    b = UnixBoard.open(sim=sim, timeout=10)
    yield b, sim.profile
    b.close()
    sim.close()


def test_ilistdir_gives_sizes_and_statvfs_the_flash_partition(board):
    b, profile = board
    b.put_bytes(b"x" * 5000, "data.bin")
    b.mkdir("logs")
    b.put_bytes(b"hello", "logs/today.txt")
    entries = b.eval("sorted(__import__('os').ilistdir())")
    assert entries == [("data.bin", 0x8000, 0, 5000), ("lib", 0x4000, 0, 0), ("logs", 0x4000, 0, 0)]
    assert b.eval("list(__import__('os').ilistdir(b'logs'))") == [(b"today.txt", 0x8000, 0, 5)]

    bsize, frsize, blocks, bfree, bavail, *rest = b.eval("__import__('os').statvfs('/')")
    # The vfs partition runs from 2 MiB to the end of flash (MicroPython's partition tables).
    assert (bsize, frsize, blocks) == (4096, 4096, (profile.flash_size - 0x200000) // 4096)
    assert rest == [0, 0, 0, 0, 255]
    # root, lib and logs take a metadata pair each; data.bin two blocks, today.txt one.
    assert bfree == bavail == blocks - (3 * 2 + 2 + 1)

    b.put_bytes(b"y" * 4097, "more.bin")
    assert b.eval("__import__('os').statvfs('')[3]") == bfree - 2
    b.rm("data.bin")
    assert b.eval("__import__('os').statvfs('')[3]") == bfree


def test_firmware_sees_the_rest_of_os_unchanged_and_uos_is_the_shim(board):
    b, _ = board
    b.put_bytes(b"abc", "a.txt")
    out = b.exec("import os, uos\n"
                 "print(uos is os, os.stat('a.txt')[6], sorted(os.listdir()), os.sep)\n"
                 "os.rename('a.txt', 'b.txt'); os.remove('b.txt'); os.mkdir('d'); os.rmdir('d')\n"
                 "print(sorted(os.listdir()), len(os.urandom(4)), os.getenv('MPSIM_PROFILE') is not None)")
    assert out.splitlines() == ["True 3 ['a.txt', 'lib'] /", "['lib'] 4 True"]
