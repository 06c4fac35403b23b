# Board-time stamps for MQTT: each PUBLISH an MQTT client writes is reported to the host with the
# board's clock (sim.publishes, telemetry clock="board"). Used by socket.py for plain sockets and
# by ssl.py for the plaintext written through TLS: the one parser both streams are fed to.
import _simcore
import _simclock


class MqttPublishes:
    """Reports each PUBLISH in an MQTT client's outgoing byte stream with the board's clock.

    Fed the plaintext as it is written, in pieces of any size; stops looking at a stream whose
    first byte is not a CONNECT (it is not MQTT)."""

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
            raise _simcore.bug("MQTT publish stamping", e)

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
