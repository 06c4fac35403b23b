"""TlsStream: a TLS session over a connected TCP socket, read by one thread and written by others.

The harness's MQTT client reads on its own thread while tests publish from theirs. An
ssl.SSLSocket must not be used that way: OpenSSL's SSL objects are not thread-safe, and a read
and a write at once can corrupt the session. Here TLS runs on memory BIOs under one lock, and
only the plain socket's own reads happen outside it, so a blocked reader never holds up a writer.
It offers what MqttClient uses of a socket: recv, sendall, settimeout, shutdown, close.
"""

from __future__ import annotations

import socket
import ssl
import threading

_CHUNK = 16 * 1024 + 512  # one TLS record and its overhead


class TlsStream:
    """TLS over `sock` (connected); call `handshake()` before anything else."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._lock = threading.Lock()  # the SSL object, its BIOs, and the socket's send side

    def _flush(self) -> None:
        """Send what TLS queued (called with the lock held, so records leave in order)."""
        data = self._outgoing.read()
        if data:
            self.sock.sendall(data)

    def _feed(self) -> bool:
        """Read ciphertext from the socket into TLS; False at end of stream."""
        data = self.sock.recv(_CHUNK)  # outside the lock: a reader waiting here blocks no writer
        with self._lock:
            if not data:
                self._incoming.write_eof()
                return False
            self._incoming.write(data)
        return True

    def handshake(self) -> None:
        """Run the TLS handshake; ssl.SSLError if the peer or the certificate is refused."""
        while True:
            with self._lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                self._flush()
            if done:
                return
            if not self._feed():
                raise ConnectionError("the peer closed the connection during the TLS handshake")

    def recv(self, n: int) -> bytes:
        """Up to n bytes of plaintext; b"" at the end of the stream."""
        while True:
            with self._lock:
                try:
                    data = self._tls.read(n)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                finally:
                    self._flush()  # reading may make TLS answer (a TLS 1.3 key update)
            if data is not None:
                return data
            if not self._feed():
                continue  # TLS turns the end of stream into SSLEOFError (or a clean close)

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._tls.write(data)
            self._flush()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        """Say close_notify (best effort), then shut the socket down."""
        with self._lock:
            try:
                self._tls.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # the peer's close_notify is not awaited; a broken session has nothing to say
            try:
                self._flush()
            except OSError:
                pass
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
