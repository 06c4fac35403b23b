# socket, as the unix port has it, behind the board's WiFi link, plus one thing the chip does
# not do: each MQTT PUBLISH the firmware writes on a plain TCP socket is reported to the host
# with the board's clock (sim.publishes), so telemetry rates can be asserted in board time.
# Only sockets whose first packet is an MQTT CONNECT are parsed; TLS-wrapped streams are
# encrypted and not stamped.
#
# The link (_siminputs.link_up, cut): while it is down, connect() and DNS fail, and a cut loses
# every connection open at that moment, failing as the esp32 port's lwIP fails them. Errors
# carry the chip's numbers, newlib's, which its lwIP and its errno module use (the unix port's
# errno module has Linux's: ECONNABORTED is 103 there, and 113 is Linux's EHOSTUNREACH):
#   113 ECONNABORTED  first I/O on a lost connection: lwIP aborts the pcb when the station's
#                     IP goes (ERR_ABRT); at once here, where the chip may first retransmit
#   128 ENOTCONN      every later I/O on it: the netconn has no pcb left (ERR_CONN)
#   118 EHOSTUNREACH  connect() or sendto() with the link down: no netif to route by (ERR_RTE)
#   -202              getaddrinfo() of a name with the link down (lwIP's EAI_FAIL, negated as
#                     the port raises it); numeric addresses need no DNS and still resolve
# A lost connection stays quiet on the real network: nothing it writes goes out, nothing the
# peer sends is read, and closing it does not close the real socket (a FIN would tell the
# broker at once, where the chip's abort tells it nothing). The real socket is closed once the
# peer gives up on it (keepalive), so a broker fires the last will after 1.5 x keepalive.
# TLS: the port's C code must not be handed a shim socket (it reads the subclass instance as
# its own struct, and writes to a wrong descriptor); ssl wraps tls_stream(sock) instead, whose
# I/O goes through the methods here, so the link's failures reach TLS too.
import _simcore
import _siminputs
from _simmqtt import MqttPublishes

_s = _simcore.port_socket
# The port's names, copied without leaving a loop variable behind: every global added here
# makes the builtin lookups in the methods below slower (see _simpins).
globals().update((n, getattr(_s, n)) for n in dir(_s) if not n.startswith("__"))
_si = _siminputs
_poll = _simcore.poll
_zombies = []  # lost connections the firmware closed, kept open and quiet (see _reap)


def _str(e):
    return "[Errno %d] %s" % (e.args[0], {113: "ECONNABORTED", 128: "ENOTCONN", 118:
                                          "EHOSTUNREACH", 9: "EBADF"}[e.args[0]])


# OSError(n) as the firmware catches it, printed with the chip's name for n: the unix port
# would print 113 as EHOSTUNREACH (Linux's). Named OSError so tracebacks read as on the chip.
_Err = type("OSError", (OSError,), {"__str__": _str})


class socket(_s.socket):
    _mq = None  # None: not yet known; False: not MQTT; else its MqttPublishes (_simmqtt)
    # The link's cut count when this socket connected (None: never connected, nothing to
    # lose); once lost: -1 after its ECONNABORTED, -2 once the firmware closed it.
    _ep = None

    def connect(self, addr):
        _poll()
        if not _si.link_up():
            raise _Err(118)
        _reap()
        self._ep = _si.cuts  # before: a non-blocking connect raises EINPROGRESS
        return super().connect(addr)

    def _live(self):
        # Reads apply the host's commands first (a drop that came meanwhile), then check.
        # Writes only check: a drop taking effect between the pieces of one MQTT packet (umqtt
        # writes the fixed header first) leaves amqtt waiting mid-packet, where its keepalive
        # never fires. They see a drop from the firmware's next read, sleep or other shim call.
        _poll()
        self._ok()

    def _ok(self):
        e = self._ep
        if e is not None and e != _si.cuts:
            if e >= 0:
                self._ep = -1
                raise _Err(113)
            raise _Err(128 if e == -1 else 9)

    def setblocking(self, flag):
        # As the esp32 port does it: setblocking(True) is settimeout(None), waiting for ever. The
        # unix port's only clears O_NONBLOCK and keeps a timeout set before, so firmware that
        # lost its timeout (umqtt's check_msg ends with setblocking(True)) would still time out
        # here where the chip hangs.
        super().settimeout(None if flag else 0)

    def close(self):
        e = self._ep
        if e is not None and e != _si.cuts:
            if e != -2:
                self._ep = -2
                _zombies.append(self)
        else:
            self._ep = None  # closed while alive: the port's own errors (EBADF) from now on
            super().close()
        _reap()

    # Reads check before and after: what arrives while the link is down is never delivered,
    # even to a call that was already waiting when it dropped.
    def read(self, *args):
        self._live()
        try:
            return super().read(*args)
        finally:
            self._live()

    def readinto(self, *args):
        self._live()
        try:
            return super().readinto(*args)
        finally:
            self._live()

    def readline(self, *args):
        self._live()
        try:
            return super().readline(*args)
        finally:
            self._live()

    def recv(self, *args):
        self._live()
        try:
            return super().recv(*args)
        finally:
            self._live()

    def recvfrom(self, *args):
        self._live()
        try:
            return super().recvfrom(*args)
        finally:
            self._live()

    def sendto(self, buf, addr):
        self._live()  # a datagram goes whole or not at all: no packet to cut in two
        if not _si.link_up():
            raise _Err(118)
        return super().sendto(buf, addr)

    def write(self, buf, *args):
        # stream.write(buf[, max_len]) or write(buf, off, max_len)
        self._ok()
        if self._mq is not False:
            if not args:
                self._feed(buf)
            elif len(args) == 1:
                self._feed(memoryview(buf)[:args[0]])
            else:
                self._feed(memoryview(buf)[args[0]:args[0] + args[1]])
        return super().write(buf, *args)

    def send(self, buf):
        self._ok()
        n = super().send(buf)
        if self._mq is not False and n:
            self._feed(memoryview(buf)[:n])
        return n

    def sendall(self, buf):
        self._ok()
        if self._mq is not False:
            self._feed(buf)
        return super().sendall(buf)

    def _feed(self, data):
        pubs = self._mq
        if pubs is None:
            pubs = self._mq = MqttPublishes()
        pubs.feed(data)
        if pubs.mqtt is False:
            self._mq = False  # not MQTT: the write paths stop feeding at once


def _reap():
    # Close the kept lost connections whose peer has given up on them (end of stream, reset),
    # reading out what it sent meanwhile (never delivered); and the oldest beyond four, so a
    # peer that never gives up cannot exhaust the process's file descriptors.
    for z in _zombies[:]:
        raw = super(socket, z)
        try:
            raw.setblocking(False)
            while raw.recv(256):
                pass
        except OSError as e:
            if e.args[0] == 11:  # EAGAIN (the unix port's): the peer still holds on
                if len(_zombies) <= 4:
                    continue
        _zombies.remove(z)
        raw.close()


_Stream = None  # tls_stream's class, made at its first use: firmware without TLS pays no heap


def tls_stream(sock):
    """sock (a connected shim socket) as a stream for the port's TLS to wrap, for ssl.py:
    `port_ssl.wrap_socket(socket.tls_stream(sock), ...)`. Reads and writes go through sock's
    methods (publish stamping aside: TLS bytes are not MQTT), and their errors are handed to
    TLS as error codes, not raised through its C code, so the firmware gets what the chip's TLS
    raises over lwIP: OSError(113) on a connection the link lost, from then on (named by the
    port's errno table, though: EHOSTUNREACH on the unix port). Polling it reports sock's
    readiness (a lost connection ready at once); closing it closes sock, quietly if lost."""
    global _Stream
    if _Stream is None:
        import io

        class _Stream(io.IOBase):
            def __init__(self, s):
                self.s = s
                self.p = None

            def readinto(self, buf):
                try:
                    return self.s.readinto(buf)
                except OSError as e:
                    return -e.args[0]

            def write(self, buf):
                try:
                    return self.s.write(buf)
                except OSError as e:
                    return -e.args[0]

            def setblocking(self, flag):
                return self.s.setblocking(flag)

            def settimeout(self, t):
                return self.s.settimeout(t)

            def ioctl(self, req, arg):
                if req == 4:  # MP_STREAM_CLOSE
                    self.s.close()
                    return 0
                if req != 3:  # only MP_STREAM_POLL besides: no descriptor to hand out
                    return -1
                ps = _simcore.port_select
                if _si.lost(self.s):
                    return arg & (ps.POLLIN | ps.POLLOUT) | ps.POLLERR | ps.POLLHUP
                if self.p is None:
                    self.p = ps.poll()
                    self.p.register(self.s.fileno(), arg)
                self.p.modify(self.s.fileno(), arg)
                r = self.p.poll(0)
                return r[0][1] if r else 0

    return _Stream(sock)


def getaddrinfo(host, port, *args):
    _poll()
    if not _si.link_up() and not (":" in host or host.replace(".", "").isdigit()):
        raise OSError(-202)
    return _s.getaddrinfo(host, port, *args)


# select asks this to wake the firmware's waits on a lost connection (ready, as lwIP reports
# an aborted socket to select).
_si.watch_connections(lambda o: isinstance(o, socket) and o._ep is not None and o._ep != _si.cuts)


# The u-prefixed aliases (utime, uselect, usocket) are set up by _simboot, which the launch
# runs first. At a REPL launched without it, whichever of these shims the firmware imports
# first sets them up here: the port would resolve `import usocket` to its built-in otherwise.
# This import closes a cycle (_simboot imports this module): see _simboot.
import _simboot  # noqa: E402,F401
