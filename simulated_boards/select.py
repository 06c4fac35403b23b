# select, in the board's clock: poll objects whose timeouts follow virtual time, so asyncio
# sleeps (which wait in poll) jump in fast time and wait for sim.advance in stepped time.
# Real I/O stays real: ready sockets are returned at once in every mode. In fast time a poll
# with sockets registered first waits up to FAST_IO_WINDOW_MS of real time for them, then jumps
# the clock by the rest of its timeout (a peer slower than that looks like a timeout there).
# The control channel is watched alongside, so host commands and Timer callbacks run while the
# firmware waits. A registered connection the WiFi link's loss killed is ready at once, and on
# every poll until unregistered (POLLERR | POLLHUP with what it was registered for), as lwIP
# reports an aborted socket: its next read or write raises the error (see socket).
import _simcore
import _simclock as _c
import _siminputs

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
        self._objs = {}     # firmware objects registered -> [what the port polls, event mask]
        self._fds = {}      # descriptor numbers polled in their place -> the objects
        self._chan = None   # the control channel socket while it is registered here
        self._cuts = 0      # the link's cut count when _lost was last worked out
        self._lost = ()     # registered connections the link's loss killed

    def register(self, obj, eventmask=POLLIN | POLLOUT):
        # The port's poll takes a subclass of its socket (the shim's) for its own C struct and
        # polls a wrong descriptor: it polls the object's descriptor number instead.
        key = obj
        try:
            fd = obj.fileno()
            if fd >= 0:
                key = fd
                self._fds[fd] = obj
        except (AttributeError, OSError):
            pass
        self._p.register(key, eventmask)
        self._objs[obj] = [key, eventmask]
        self._cuts = -1

    def unregister(self, obj):
        key = self._objs.pop(obj, (obj,))[0]
        self._p.unregister(key)
        if key is not obj:
            self._fds.pop(key, None)
        self._cuts = -1

    def modify(self, obj, eventmask):
        e = self._objs.get(obj) or [obj, 0]
        self._p.modify(e[0], eventmask)
        e[1] = eventmask
        self._cuts = -1

    def _find_lost(self):
        # Worked out again after each cut and each change of what is registered.
        cuts = self._cuts = _siminputs.cuts
        self._lost = [o for o in self._objs if _siminputs.lost(o)] if cuts else ()

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
        if self._cuts != _siminputs.cuts:
            self._find_lost()
        res = self._p.poll(0 if self._lost else timeout_ms)
        if s is not None:
            out = [e for e in res if e[0] is not s]
            if len(out) != len(res):
                _simcore.read()  # may cut the link
            res = out
        if self._fds and res:
            fds = self._fds
            res = [(fds.get(e[0], e[0]), e[1]) for e in res]
        if self._cuts != _siminputs.cuts:
            self._find_lost()
        lost = self._lost
        if lost:
            res = [e for e in res if e[0] not in lost] + [
                (o, self._objs[o][1] & (POLLIN | POLLOUT) | POLLERR | POLLHUP) for o in lost]
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
                wait = FAST_IO_WINDOW_MS if self._objs else 0
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
