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
import _simclock
import socket


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


class MqttPublishes:
    """Reports each PUBLISH in an MQTT client's outgoing byte stream with the board's clock.

    Fed the plaintext as it is written, in pieces of any size; stops looking at a stream whose
    first byte is not a CONNECT (it is not MQTT). Reports what socket.py reports for plain
    sockets, in the same message."""

    def __init__(self):
        self.mqtt = None    # None: not yet known; False: not MQTT; True: parsing
        self.buf = bytearray()
        self.skip = 0       # bytes of the current packet's body still to come and to ignore

    def feed(self, data):
        if self.mqtt is False or not len(data):
            return
        try:
            self._parse(data)
        except Exception as e:
            self.mqtt = False
            raise _simcore.bug("ssl.py MQTT publish stamping", e)

    def _parse(self, data):
        if self.mqtt is None:
            self.mqtt = data[0] == 0x10
            if not self.mqtt:
                return
        if self.skip:
            k = min(self.skip, len(data))
            self.skip -= k
            data = memoryview(data)[k:]
        buf = self.buf
        buf.extend(data)
        while len(buf) >= 2:
            size, shift, i = 0, 0, 1
            while True:
                if i >= len(buf):
                    return  # the remaining-length field is not complete yet
                b = buf[i]
                size |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if not b & 0x80:
                    break
            if buf[0] >> 4 == 3:
                if len(buf) < i + 2:
                    return
                tlen = (buf[i] << 8) | buf[i + 1]
                if len(buf) < i + 2 + tlen:
                    return
                qos = (buf[0] >> 1) & 3
                _simcore.send({"t": "pub", "topic": bytes(buf[i + 2:i + 2 + tlen]).decode(),
                               "c": _simclock.now_us(), "len": size - 2 - tlen - (2 if qos else 0),
                               "qos": qos, "retain": buf[0] & 1})
            end = i + size
            if len(buf) >= end:
                buf[:] = buf[end:]
            else:
                # The rest of this packet (a long payload) is only skipped: no need to hold it.
                self.skip = end - len(buf)
                buf[:] = b""
                return


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
