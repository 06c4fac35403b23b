"""`hil serve`: a simulated ESP32 driven by mpremote's own command line, over the pty and RFC 2217."""

import os
import signal
import subprocess
import sys

import pytest

from micropython_hil.board.unix_port import wait_gone


@pytest.fixture
def served():
    server = subprocess.Popen([sys.executable, "-m", "micropython_hil.cli", "serve"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        device = server.stdout.readline().split()[1]
        url = server.stdout.readline().split()[1]
        yield device, url, server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        server.stdout.close()
        server.stderr.close()


def mpremote(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "mpremote", *args], capture_output=True, text=True, timeout=timeout)


def test_mpremote_drives_a_served_board_and_interrupts_a_busy_loop(served):
    device, url, _ = served
    assert mpremote("connect", device, "exec", "import machine; print(machine.freq())").stdout == "160000000\n"
    assert mpremote("connect", device, "exec", "--no-follow", "while True: pass").returncode == 0
    # The next connect's Ctrl-C interrupts the loop, as on a chip; every later command works.
    assert mpremote("connect", device, "exec", "print(6 * 7)").stdout == "42\n"
    assert mpremote("connect", device, "soft-reset", "exec", "print('after soft reset')").stdout == "after soft reset\n"
    assert mpremote("connect", device, "reset").returncode == 0
    result = mpremote("connect", device, "fs", "cp", __file__, ":t.py", "+", "exec", "print(len(open('t.py').read()))")
    assert result.stdout.strip().splitlines()[-1] == str(len(open(__file__).read()))


def test_mpremote_over_rfc2217(served):
    _, url, _ = served
    assert mpremote("connect", url, "exec", "--no-follow", "while True: pass").returncode == 0
    assert mpremote("connect", url, "exec", "print('over rfc2217')").stdout == "over rfc2217\n"


def test_a_stopped_server_leaves_no_board_process(served):
    device, _, server = served
    assert mpremote("connect", device, "exec", "print(1)").stdout == "1\n"
    children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the served board runs as a child of hil serve"
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    assert all(wait_gone(int(pid)) for pid in children)
    assert not os.path.exists(device)



def _df(device):
    """mpremote df's figures for the one filesystem: (size, used, avail)."""
    lines = mpremote("connect", device, "df").stdout.splitlines()
    assert lines[0].split()[:4] == ["filesystem", "size", "used", "avail"] and len(lines) == 2, lines
    return tuple(int(n) for n in lines[1].split()[1:4])


def test_mpremote_fs_ls_and_df_show_the_flash(served, tmp_path):
    device, _, _ = served
    size, used, avail = _df(device)
    # The esp32 profile's vfs partition: 4 MiB of flash from 2 MiB on, in 4096-byte blocks.
    assert size == 2 * 1024 * 1024 and used + avail == size and 0 < used < 64 * 1024
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 40)  # 10240 bytes: three blocks
    assert mpremote("connect", device, "fs", "cp", str(data), ":data.bin").returncode == 0
    listing = mpremote("connect", device, "fs", "ls").stdout.splitlines()
    assert "       10240 data.bin" in listing, listing
    assert _df(device) == (size, used + 3 * 4096, avail - 3 * 4096)
