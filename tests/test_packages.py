"""MicroPython package cache: local index servers over real sockets, and the real umqtt in MicroPython."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from micropython_hil.deploy import packages
from micropython_hil.deploy.packages import PackageError


def sdist(root: str, files: dict[str, bytes], symlinks: dict[str, str] = {}) -> bytes:  # noqa: B006
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in symlinks.items():
            info = tarfile.TarInfo(f"{root}/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def index_server():
    """A local HTTP server answering from a dict {path: bytes} (404 otherwise)."""
    routes: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A fresh cache, with no mip index and PyPI pointing at a closed port."""
    monkeypatch.setenv("MICROPYTHON_HIL_PACKAGES", str(tmp_path / "cache"))
    monkeypatch.setenv("MICROPYTHON_HIL_MIP_INDEX", "")
    monkeypatch.setattr(packages, "PYPI", "http://127.0.0.1:1/pypi")
    return tmp_path / "cache"


@pytest.mark.parametrize("spec, expected", [
    ("umqtt.simple", ("umqtt.simple", None)), ("umqtt.simple==1.3.4", ("umqtt.simple", "1.3.4")),
    ("micropython-umqtt.robust@1.0", ("umqtt.robust", "1.0")), (" logging ", ("logging", None)),
])
def test_parse_spec(spec, expected):
    assert packages.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "umqtt simple", "../evil", "x==1 2"])
def test_bad_spec_is_a_clear_error(spec):
    with pytest.raises(PackageError, match="bad package spec"):
        packages.parse_spec(spec)


def test_pypi_sdist_keeps_only_modules_and_works_offline_after(offline, index_server, monkeypatch, tmp_path):
    base, routes = index_server
    archive = sdist("micropython-demo.pkg-2.1", {
        "setup.py": b"setup(install_requires=['micropython-demo.dep'])",
        "demo/pkg.py": b"VALUE = 42\n", "demo/tests/test_pkg.py": b"", "PKG-INFO": b"",
        "micropython_demo.pkg.egg-info/x.py": b"",
    }, symlinks={"demo/linked.py": "../../elsewhere.py"})
    dep = sdist("micropython-demo.dep-1.0", {"demo/dep.py": b"DEP = 1\n"})
    for project, version, data in (("demo.pkg", "2.1", archive), ("demo.dep", "1.0", dep)):
        name = f"micropython-{project}-{version}.tar.gz"
        routes[f"/files/{name}"] = data
        routes[f"/pypi/micropython-{project}/json"] = json.dumps({"info": {"version": version}, "urls": [{
            "packagetype": "sdist", "filename": name, "url": f"{base}/files/{name}",
            "digests": {"sha256": hashlib.sha256(data).hexdigest()}}]}).encode()
    monkeypatch.setattr(packages, "PYPI", f"{base}/pypi")

    written = packages.install(["demo.pkg"], tmp_path / "lib")
    assert sorted(p.relative_to(tmp_path / "lib").as_posix() for p in written) == ["demo/dep.py", "demo/pkg.py"]
    assert (offline / "demo.pkg" / "2.1" / "demo" / "pkg.py").read_bytes() == b"VALUE = 42\n"

    routes.clear()  # the index is gone: the cache must do
    lib = packages.ensure(["demo.pkg"])
    assert (lib / "demo" / "dep.py").exists() and packages.ensure(["demo.dep", "demo.pkg"]) == lib
    with pytest.raises(PackageError, match=r"unknown MicroPython package 'demo.other'.*firmware manifest"):
        packages.fetch("demo.other")


def test_mip_index_is_used_when_reachable(offline, index_server, monkeypatch):
    base, routes = index_server
    module = b"def hello():\n    return 'mip'\n"
    digest = hashlib.sha256(module).hexdigest()[:8]
    routes["/package/py/hello/latest.json"] = json.dumps(
        {"version": "0.3", "hashes": [["hello.py", digest]], "deps": []}).encode()
    routes[f"/file/{digest[:2]}/{digest}"] = module
    monkeypatch.setenv("MICROPYTHON_HIL_MIP_INDEX", base)
    folder = packages.fetch("hello")
    assert folder.name == "0.3" and (folder / "hello.py").read_bytes() == module


def test_uncached_package_without_network_says_what_to_do(offline):
    with pytest.raises(PackageError, match=r"'umqtt.simple' is not cached in .* unreachable .*network access"):
        packages.ensure(["umqtt.simple"])


def test_real_umqtt_runs_in_micropython():
    lib = packages.ensure(["umqtt.robust"])  # from the user cache, filled from PyPI on first use
    result = subprocess.run(["micropython", "-c", "from umqtt.robust import MQTTClient; print(MQTTClient.DELAY)"],
                            env=dict(os.environ, MICROPYPATH=f".frozen:{lib}"), capture_output=True, timeout=10)
    assert result.stdout.strip() == b"2", result


def test_manifest_formats(tmp_path):
    (tmp_path / "a.json").write_text('{"packages": ["umqtt.simple", ["umqtt.robust", "1.0"]]}')
    (tmp_path / "b.txt").write_text("umqtt.simple  # mqtt\n\nlogging==0.5\n")
    assert packages.read_manifest(tmp_path / "a.json") == ["umqtt.simple", "umqtt.robust==1.0"]
    assert packages.read_manifest(tmp_path / "b.txt") == ["umqtt.simple", "logging==0.5"]
    (tmp_path / "c.json").write_text("{nope")
    with pytest.raises(PackageError, match="c.json is not valid JSON"):
        packages.read_manifest(tmp_path / "c.json")
