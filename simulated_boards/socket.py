# socket, as the unix port has it, plus one thing the chip does not do: each MQTT PUBLISH the
# firmware writes on a plain TCP socket is reported to the host with the board's clock
# (sim.publishes), so telemetry rates can be asserted in board time. Only sockets whose first
# packet is an MQTT CONNECT are parsed; TLS-wrapped streams are encrypted and not stamped.
import _simcore
import _simclock

_s = _simcore.port_socket
# The port's names, copied without leaving a loop variable behind: every global added here
# makes the builtin lookups in the methods below slower (see _simpins).
globals().update((n, getattr(_s, n)) for n in dir(_s) if not n.startswith("__"))


class socket(_s.socket):
    _mq = None  # None: not yet known; False: not MQTT; else the parser's bytearray

    def write(self, buf, *args):
        # stream.write(buf[, max_len]) or write(buf, off, max_len)
        if self._mq is not False:
            if not args:
                self._feed(buf)
            elif len(args) == 1:
                self._feed(memoryview(buf)[:args[0]])
            else:
                self._feed(memoryview(buf)[args[0]:args[0] + args[1]])
        return super().write(buf, *args)

    def send(self, buf):
        n = super().send(buf)
        if self._mq is not False and n:
            self._feed(memoryview(buf)[:n])
        return n

    def sendall(self, buf):
        if self._mq is not False:
            self._feed(buf)
        return super().sendall(buf)

    def _feed(self, data):
        try:
            self._parse(data)
        except Exception as e:
            self._mq = False
            raise _simcore.bug("socket.py MQTT publish stamping", e)

    def _parse(self, data):
        if self._mq is None:
            if not len(data) or data[0] != 0x10:
                self._mq = False
                return
            self._mq = bytearray()
            self._skip = 0
        if self._skip:
            k = min(self._skip, len(data))
            self._skip -= k
            data = memoryview(data)[k:]
        buf = self._mq
        buf.extend(data)
        while len(buf) >= 2:
            rem, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return
                b = buf[i]
                rem += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            kind = buf[0] >> 4
            if kind == 3:
                if len(buf) < i + 2:
                    return
                tlen = (buf[i] << 8) | buf[i + 1]
                if len(buf) < i + 2 + tlen:
                    return
                qos = (buf[0] >> 1) & 3
                _simcore.send({"t": "pub", "topic": bytes(buf[i + 2:i + 2 + tlen]).decode(),
                               "c": _simclock.now_us(), "len": rem - 2 - tlen - (2 if qos else 0),
                               "qos": qos, "retain": buf[0] & 1})
            total = i + rem
            if len(buf) >= total:
                buf[:] = buf[total:]
            else:
                self._skip = total - len(buf)
                buf[:] = b""
                return


# The u-prefixed aliases (utime, uselect, usocket) are set up by _simboot, which the launch
# runs first. At a REPL launched without it, whichever of these shims the firmware imports
# first sets them up here: the port would resolve `import usocket` to its built-in otherwise.
# This import closes a cycle (_simboot imports this module): see _simboot.
import _simboot  # noqa: E402,F401
