"""The HTTP "cloud" a device uploads to: records each request and answers what the test set up.

Standard library only (http.server in a thread). Tests configure replies per method and path:
a status, a body, a delay (slow server) or a dropped connection, once or for every request.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import CloudError


@dataclass
class Request:
    """One HTTP request as the device sent it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrival: float  # host time.time()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"{self.method} {self.path} body is not JSON ({exc}): {self.body[:120]!r}") from None


@dataclass
class Reply:
    """What the endpoint answers: status, body, headers, a delay first, or a dropped connection."""

    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    times: int | None = None  # None: every matching request; n: the next n only


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        request = Request(self.command, path, dict(self.headers.items()), body, time.time())
        reply = self.server.cloud._record(request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            # Close without an answer, as a crashed server or a cut link would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.close_connection = True
            self.connection.close()
            return
        data = reply.body
        content_type = "application/octet-stream"
        if isinstance(data, (dict, list)):
            data, content_type = json.dumps(data).encode(), "application/json"
        elif isinstance(data, str):
            data, content_type = data.encode(), "text/plain; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.headers.get("Content-Type", content_type))
        self.send_header("Content-Length", str(len(data)))
        for key, value in reply.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    cloud: "Cloud"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # devices hanging up is what tests provoke
            super().handle_error(request, client_address)


class Cloud:
    """An HTTP server on a free port recording requests; `respond` decides the answers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests: list[Request] = []
        self._rules: list[tuple[str, str, Reply]] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Cloud":
        try:
            self._server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise CloudError(f"cloud endpoint cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                             f"pass port=0 for a free one") from None
        self._server.cloud = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hil-cloud", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> "Cloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def respond(self, path: str = "*", method: str = "*", status: int = 200,
                body: bytes | str | dict | list = b"", headers: dict[str, str] | None = None,
                delay: float = 0.0, drop: bool = False, times: int | None = None) -> None:
        """Answer requests on `path` ('*' any; a trailing '*' a prefix) and `method` like this.

        Later rules win over earlier ones; with `times=n` a rule applies to the next n requests only.
        """
        with self._cond:
            self._rules.insert(0, (method.upper(), path, Reply(status, body, dict(headers or {}), delay, drop, times)))

    def _record(self, request: Request) -> Reply:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
            for i, (method, path, reply) in enumerate(self._rules):
                if method not in ("*", request.method):
                    continue
                bare = request.path.split("?", 1)[0]
                if path == "*" or path == bare or (path.endswith("*") and bare.startswith(path[:-1])):
                    if reply.times is not None:
                        reply.times -= 1
                        if reply.times <= 0:
                            del self._rules[i]
                    return reply
        return Reply()

    def wait_for(self, n: int = 1, path: str | None = None, method: str | None = None,
                 timeout: float = 5.0) -> list[Request]:
        """Wait until `n` requests (on this path/method) have arrived; return them."""
        deadline = time.monotonic() + timeout

        def matching() -> list[Request]:
            return [r for r in self.requests if (path is None or r.path.split("?", 1)[0] == path)
                    and (method is None or r.method == method.upper())]

        with self._cond:
            while len(found := matching()) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(f"  {r.method} {r.path} {r.body[:80]!r}" for r in self.requests[-10:])
                    raise CloudError(f"expected {n} request(s) to {method or 'ANY'} {path or '*'} on {self.url} "
                                     f"within {timeout} s, got {len(found)}; recent:\n{seen or '  (none)'}")
                self._cond.wait(left)
            return found[:n]
