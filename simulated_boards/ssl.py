# ssl, as the unix port has it, plus one thing the chip does not do: each MQTT PUBLISH the
# firmware writes through a TLS socket is reported to the host with the board's clock, as
# socket.py reports those written on plain sockets (sim.publishes, telemetry clock="board"). The
# ciphertext on the wire cannot be parsed, so this reads the plaintext where the firmware hands
# it to TLS: the sockets SSLContext.wrap_socket and wrap_socket return are wrapped.
#
# How `import ssl` gets here: the port's ssl is a frozen module (over the built-in `tls`), and
# `.frozen` comes before this folder on MICROPYPATH, so _simboot imports this file with `.frozen`
# off the path and it stays registered as `ssl`. The built-in `tls` is not extensible (a tls.py
# on the path is never imported under that name), so firmware that wraps sockets with `tls`
# itself is not stamped. `ussl` is not aliased: MicroPython >= 1.23 has none, on the chip too.
import sys
import io
import _simcore
import socket
from _simmqtt import MqttPublishes


def _port_ssl():
    # The port's own ssl. _simcore.builtin empties sys.path, which reaches built-ins only; this
    # one is frozen, so only `.frozen` stays on the path while it is imported.
    saved = sys.path[:]
    mine = sys.modules.pop("ssl", None)
    sys.path[:] = [".frozen"]
    try:
        return __import__("ssl")
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["ssl"] = mine
        else:
            sys.modules.pop("ssl", None)


_p = _port_ssl()
# The port's names (constants, MBEDTLS_VERSION, ...), copied without leaving a loop variable
# behind; SSLContext and wrap_socket are replaced below.
globals().update((n, getattr(_p, n)) for n in dir(_p) if not n.startswith("__"))
_poll = _simcore.port_select.poll
_POLLIN = _simcore.port_select.POLLIN
_POLLOUT = _simcore.port_select.POLLOUT
_STREAM_POLL = 3
_STREAM_CLOSE = 4
_EINVAL = 22


def _written(buf, args, n):
    """The part of buf a write(buf, *args) that returned n actually wrote."""
    if not n:
        return b""
    if len(args) == 2:
        return memoryview(buf)[args[0]:args[0] + n]
    return memoryview(buf)[:n]


class SSLSocket(io.IOBase):
    """The port's SSLSocket with the plaintext written through it stamped; same methods.

    An io.IOBase, so select.poll (and asyncio) take it: its ioctl asks the port's poll about
    the socket inside, which knows about data TLS has decrypted but not yet handed out."""

    def __init__(self, sock):
        self._s = sock
        self._pubs = MqttPublishes()
        self._poller = None

    def write(self, buf, *args):
        n = self._s.write(buf, *args)
        self._pubs.feed(_written(buf, args, n))
        return n

    def send(self, buf):
        n = self._s.send(buf)
        self._pubs.feed(_written(buf, (), n))
        return n

    def sendall(self, buf):
        r = self._s.sendall(buf)
        self._pubs.feed(buf)
        return r

    def read(self, *args):
        return self._s.read(*args)

    def readinto(self, *args):
        return self._s.readinto(*args)

    def readline(self, *args):
        return self._s.readline(*args)

    def recv(self, n):
        return self._s.recv(n)

    def recv_into(self, *args):
        return self._s.recv_into(*args)

    def setblocking(self, flag):
        return self._s.setblocking(flag)

    def cipher(self):
        return self._s.cipher()

    def close(self):
        self._poller = None
        return self._s.close()

    def ioctl(self, request, arg):
        if request == _STREAM_POLL:
            if self._poller is None:
                self._poller = _poll()
                self._poller.register(self._s, _POLLIN | _POLLOUT)
            self._poller.modify(self._s, arg)
            ready = self._poller.poll(0)
            return ready[0][1] if ready else 0
        if request == _STREAM_CLOSE:
            self.close()
            return 0
        return -_EINVAL  # no fd either: readiness is known only through POLL (TLS buffers data)


# The port's TLS is handed socket.tls_stream(sock), never the shim socket itself: its C code
# would take the subclass instance for its own socket struct (see socket.py).
if hasattr(_p, "SSLContext"):  # ports before 1.22 have only wrap_socket
    class SSLContext(_p.SSLContext):
        def wrap_socket(self, sock, *args, **kwargs):
            return SSLSocket(super().wrap_socket(socket.tls_stream(sock), *args, **kwargs))


def wrap_socket(sock, *args, **kwargs):
    return SSLSocket(_p.wrap_socket(socket.tls_stream(sock), *args, **kwargs))
