# select, in the board's clock: poll objects whose timeouts follow virtual time, so asyncio
# sleeps (which wait in poll) jump in fast time and wait for sim.advance in stepped time.
# Real I/O stays real: ready sockets are returned at once in every mode. In fast time a poll
# with sockets registered first waits up to FAST_IO_WINDOW_MS of real time for them, then jumps
# the clock by the rest of its timeout (a peer slower than that looks like a timeout there).
# The control channel is watched alongside, so host commands and Timer callbacks run while the
# firmware waits.
import _simcore
import _simclock as _c

_sel = _simcore.port_select
POLLIN = _sel.POLLIN
POLLOUT = _sel.POLLOUT
POLLERR = _sel.POLLERR
POLLHUP = _sel.POLLHUP
FAST_IO_WINDOW_MS = int(_simcore.port_os.getenv("MPSIM_FAST_IO_MS") or 20)


def _patch_asyncio():
    # asyncio's native task queue stamps keyless pushes with the host's ticks, not the board's
    # clock. When asyncio.core builds its event loop (its IOQueue calls poll() right after it
    # made the task queue), swap in a queue that stamps with the board's clock.
    import sys
    core = sys.modules.get("asyncio.core")
    if core is None or getattr(core, "TaskQueue", None) is None:
        return
    native = core.TaskQueue
    if getattr(native, "_board_clock", False):
        return
    import time

    class TaskQueue(native):
        _board_clock = True

        def push(self, v, key=None):
            return super().push(v, time.ticks_ms() if key is None else key)

    core.TaskQueue = TaskQueue
    q = getattr(core, "_task_queue", None)
    if q is not None and type(q) is native and q.peek() is None:
        core._task_queue = TaskQueue()


class poll:
    def __init__(self):
        _patch_asyncio()
        self._p = _sel.poll()
        self._n = 0         # firmware objects registered
        self._chan = None   # the control channel socket while it is registered here

    def register(self, obj, eventmask=POLLIN | POLLOUT):
        self._p.register(obj, eventmask)
        self._n += 1

    def unregister(self, obj):
        self._p.unregister(obj)
        self._n -= 1

    def modify(self, obj, eventmask):
        self._p.modify(obj, eventmask)

    def _raw(self, timeout_ms):
        """One real poll, channel included; applies host commands and returns firmware events."""
        s = _simcore.sock
        if s is not self._chan:
            if self._chan is not None:
                try:
                    self._p.unregister(self._chan)
                except (OSError, KeyError):
                    pass
            if s is not None:
                self._p.register(s, POLLIN)
            self._chan = s
        res = self._p.poll(timeout_ms)
        if s is not None:
            out = [e for e in res if e[0] is not s]
            if len(out) != len(res):
                _simcore.read()
            return out
        return res

    def poll(self, timeout=-1):
        _c.tick()
        res = self._raw(0)
        if res or timeout == 0:
            return res
        deadline = None if timeout < 0 else _c.now_us() + timeout * 1000
        while True:
            _c.fire_due()
            now = _c.now_us()
            if deadline is not None and now >= deadline:
                return []
            nxt = _c.next_wake(deadline)
            mode = _c.MODE
            if mode == "real":
                res = self._raw(-1 if nxt is None else max(0, (nxt - now + 999) // 1000))
            elif mode == "fast":
                wait = FAST_IO_WINDOW_MS if self._n else 0
                if nxt is not None:
                    wait = min(wait, (nxt - now) // 1000)
                res = self._raw(wait)
                if not res:
                    if nxt is None:
                        res = self._raw(-1)  # nothing will ever be due: wait for real I/O
                    else:
                        _c.jump(nxt - _c.now_us())
            else:
                res = _c.stepped_wait(nxt, self._raw)
            if res:
                return res

    def ipoll(self, timeout=-1, flags=0):
        return iter(self.poll(timeout))


def select(rlist, wlist, xlist, timeout=None):
    p = poll()
    for o in rlist:
        p.register(o, POLLIN)
    for o in wlist:
        p.register(o, POLLOUT)
    res = p.poll(-1 if timeout is None else int(timeout * 1000))
    return ([o for o, ev in res if ev & POLLIN], [o for o, ev in res if ev & POLLOUT], [])


# The u-prefixed aliases (utime, uselect, usocket) are set up by _simboot, which the launch
# runs first. At a REPL launched without it, whichever of these shims the firmware imports
# first sets them up here: the port would resolve `import usocket` to its built-in otherwise.
# This import closes a cycle (_simboot imports this module): see _simboot.
import _simboot  # noqa: E402,F401
