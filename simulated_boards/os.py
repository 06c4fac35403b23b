# os, as the unix port has it, with the two calls whose answers would describe the host, not
# the chip: tools (mpremote's `fs ls` and `df`, Thonny's file browser) read them to show the
# board's flash.
#   ilistdir  4-tuples (name, type, 0, size) as the ESP32's littlefs gives them; the port's are
#             3-tuples without a size, which mpremote shows as 0.
#   statvfs   the chip's flash filesystem: 4096-byte blocks, as many as the vfs partition
#             holds, the free ones what the files stored in the board's root leave; the port's
#             would be the host disk's hundreds of gigabytes.
# Everything else is the port's own: firmware imports os or uos as before (this module makes
# itself uos: the port resolves `import uos` straight to its built-in otherwise).
# The board's root is the folder the launch starts in (the board layer's contract, as NVS in
# esp32.py relies on): taken when this module is first imported, which _simboot does at launch.
import sys
import _simcore

sys.modules["uos"] = sys.modules["os"]
del sys  # the chip's os has no such attribute

_os = _simcore.port_os
# The port's names, copied without leaving a loop variable behind (see socket).
globals().update((n, getattr(_os, n)) for n in dir(_os) if not n.startswith("__"))

_ROOT = _os.getcwd()
_BLOCK = 4096
_DIR = 0x4000
# MicroPython's ESP32 partition tables put the vfs partition at 2 MiB (esp.flash_user_start())
# and run it to the end of the flash; a profile with another layout says "fs_size".
_VFS_START = 0x200000


def _size(path):
    try:
        return _os.stat(path)[6]
    except OSError:
        return 0  # a dangling link: the chip would not have it, and a listing must not fail


def ilistdir(path="."):
    # A generator, as the port's: a large folder is not listed into the heap at once.
    sep = b"/" if isinstance(path, bytes) else "/"
    for entry in _os.ilistdir(path):
        name, kind = entry[0], entry[1]
        yield (name, kind, 0, 0 if kind == _DIR else _size(path + sep + name))


def _blocks_total():
    prof = _simcore.boot["profile"]
    size = prof.get("fs_size") or prof["flash_size"] - _VFS_START
    return size // _BLOCK


def _blocks_used(folder):
    # littlefs keeps each directory in a metadata pair (two blocks) and a file in whole blocks;
    # small files inlined in their directory's metadata are counted a block each here (an
    # estimate that errs towards less free space, never more than the chip would have).
    used = 2
    for entry in _os.ilistdir(folder):
        path = folder + "/" + entry[0]
        if entry[1] == _DIR:
            used += _blocks_used(path)
        else:
            used += (_size(path) + _BLOCK - 1) // _BLOCK
    return used


def statvfs(path="/"):
    # One filesystem, as on the chip: every path gets the same figures (mpremote asks for "/").
    total = _blocks_total()
    free = max(total - _blocks_used(_ROOT), 0)
    # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax: littlefs's
    # statvfs on the esp32 port leaves the inode counts and flags at 0.
    return (_BLOCK, _BLOCK, total, free, free, 0, 0, 0, 0, 255)
