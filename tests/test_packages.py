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
from micropython_hil.errors import FirmwareError, HarnessWarning, PackageError


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


def serve_pypi(base, routes, project, version, files):
    """Publish an sdist of `files` as PyPI project `project` on the local index."""
    data = sdist(f"{project}-{version}", files)
    name = f"{project}-{version}.tar.gz"
    routes[f"/files/{name}"] = data
    files = [{"packagetype": "sdist", "filename": name, "url": f"{base}/files/{name}",
              "digests": {"sha256": hashlib.sha256(data).hexdigest()}}]
    previous = json.loads(routes.get(f"/pypi/{project}/json", b'{"releases": {}}'))
    releases = {**previous["releases"], version: files}
    routes[f"/pypi/{project}/json"] = json.dumps({"info": {"version": version}, "urls": files,
                                                  "releases": releases}).encode()


DRIVER = {  # laid out as bme280-upy is: the module package, plus tests and host tools
    "bme280/__init__.py": b"from .bme280 import *\n", "bme280/bme280.py": b"class BME280: pass\n",
    "bme280_upy.egg-info/top_level.txt": b"bme280\n", "maintenance/linux-i2c.py": b"import smbus\n",
    "tests/machine.py": b"", "setup.py": b"",
}


def test_a_driver_by_its_own_distribution_name_keeps_only_its_modules(offline, index_server, monkeypatch, tmp_path):
    base, routes = index_server
    serve_pypi(base, routes, "bme280-upy", "2.1.0", DRIVER)
    monkeypatch.setattr(packages, "PYPI", f"{base}/pypi")
    written = packages.install(["bme280-upy"], tmp_path / "lib")
    assert sorted(p.relative_to(tmp_path / "lib").as_posix() for p in written) == \
        ["bme280/__init__.py", "bme280/bme280.py"]
    assert packages.sources("pypi:bme280-upy") == ["pypi:bme280-upy"]
    assert packages.fetch("pypi:bme280-upy==2.1.0").name == "2.1.0"


def test_an_unreachable_mip_index_falls_back_with_a_warning_naming_the_version(offline, index_server, monkeypatch,
                                                                                tmp_path):
    base, routes = index_server
    serve_pypi(base, routes, "micropython-umqtt.simple", "1.3.4", {"umqtt/simple.py": b"# old\n"})
    monkeypatch.setattr(packages, "PYPI", f"{base}/pypi")
    monkeypatch.setenv("MICROPYTHON_HIL_MIP_INDEX", "http://127.0.0.1:1/pi/v2")
    with pytest.warns(HarnessWarning, match=r"umqtt.simple: the mip index .* is unreachable; installed PyPI's "
                                            r"micropython-umqtt.simple 1.3.4 instead"):
        packages.install(["umqtt.simple"], tmp_path / "lib")


def test_a_lock_file_pins_source_version_and_content(offline, index_server, monkeypatch, tmp_path):
    base, routes = index_server
    serve_pypi(base, routes, "micropython-demo.lock", "1.0", {"demo/lock.py": b"V = 1\n"})
    monkeypatch.setattr(packages, "PYPI", f"{base}/pypi")
    lock = tmp_path / "packages.lock.json"
    packages.install(["demo.lock"], tmp_path / "lib1", lock=lock)
    entry = json.loads(lock.read_text())["demo.lock"]
    assert entry["source"] == "pypi:micropython-demo.lock" and entry["version"] == "1.0" and len(entry["sha256"]) == 64

    serve_pypi(base, routes, "micropython-demo.lock", "2.0", {"demo/lock.py": b"V = 2\n"})  # a newer release
    packages.install(["demo.lock"], tmp_path / "lib2", lock=lock)
    assert (tmp_path / "lib2" / "demo" / "lock.py").read_bytes() == b"V = 1\n"  # the locked one

    routes.clear()  # offline: the cache and the lock do
    packages.install(["demo.lock"], tmp_path / "lib3", lock=lock)
    (offline / "demo.lock" / "1.0" / "demo" / "lock.py").write_bytes(b"V = 666\n")  # a tampered cache
    with pytest.raises(PackageError, match=r"demo.lock 1.0 in .* differs from the lock file's sha256"):
        packages.install(["demo.lock"], tmp_path / "lib4", lock=lock)
    lock.write_text("{not json")
    with pytest.raises(PackageError, match=r"lock file .*packages.lock.json is not a valid package lock"):
        packages.install(["demo.lock"], tmp_path / "lib5", lock=lock)


def test_an_unknown_package_names_every_place_looked(offline, index_server, monkeypatch):
    base, _ = index_server
    monkeypatch.setattr(packages, "PYPI", f"{base}/pypi")
    with pytest.raises(PackageError, match=r"unknown MicroPython package 'nosuch': not found on PyPI's "
                                           r"micropython-nosuch nor PyPI's nosuch; check the name"):
        packages.fetch("nosuch")


def test_an_offline_error_is_one_line_without_a_chained_traceback(offline):
    with pytest.raises(PackageError) as caught:
        packages.ensure(["umqtt.simple"])
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "\n" not in str(caught.value)


def test_a_firmware_package_given_as_a_path_is_copied(tmp_path):
    from micropython_hil import Firmware

    fw = tmp_path / "fw"
    (fw / "drivers").mkdir(parents=True)
    (fw / "main.py").write_text("import sensor\n")
    (fw / "drivers" / "sensor.py").write_text("X = 1\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "__init__.py").write_text("")
    (fw / "manifest.json").write_text(json.dumps({"packages": ["./drivers/sensor.py", "../shared", "./nope.py"]}))
    (tmp_path / "out1").mkdir()
    (tmp_path / "out2").mkdir()
    with pytest.raises(FirmwareError, match=r"package ./nope.py is not a file or folder"):
        Firmware(fw).stage(tmp_path / "out1")
    (fw / "manifest.json").write_text(json.dumps({"packages": ["./drivers/sensor.py", "../shared"]}))
    staged = Firmware(fw).stage(tmp_path / "out2")
    assert (staged / "lib" / "sensor.py").read_text() == "X = 1\n" and (staged / "lib" / "shared" / "__init__.py").exists()
    assert not (staged / "packages.lock.json").exists()
