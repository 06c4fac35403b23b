"""MicroPython packages (micropython-lib's umqtt.simple, umqtt.robust, ...) installed onto boards.

Firmware declares the packages it needs; the harness installs them at deploy time, the way
`mpremote mip install` does, and never commits their code. Packages come from a local cache
(default ``~/.cache/micropython-hil/packages``, or ``$MICROPYTHON_HIL_PACKAGES``), which is filled
on a miss from a mip index when one is reachable (``$MICROPYTHON_HIL_MIP_INDEX``, default
micropython.org's; set it empty to skip) and otherwise from PyPI, where micropython-lib publishes
sdists without ``setup.py`` metadata that pip cannot build: we fetch the archive through PyPI's
JSON API and keep only the ``.py`` modules. A cached package never touches the network again, so
reruns work offline.

Cache layout: ``<cache>/<name>/<version>/<files as they go under lib/>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import ssl
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import PackageError

DEFAULT_CACHE = Path.home() / ".cache" / "micropython-hil" / "packages"
DEFAULT_MIP_INDEX = "https://micropython.org/pi/v2"
PYPI = "https://pypi.org/pypi"  # JSON API: {PYPI}/{project}[/{version}]/json
TIMEOUT_S = 20.0
# Dependencies the old PyPI sdists do not declare (robust imports umqtt.simple).
KNOWN_DEPENDENCIES = {"umqtt.robust": ["umqtt.simple"]}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_dir(cache: Path | str | None = None) -> Path:
    """The cache folder: the argument, else $MICROPYTHON_HIL_PACKAGES, else the default."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("MICROPYTHON_HIL_PACKAGES")
    return Path(env) if env else DEFAULT_CACHE


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'umqtt.simple', 'umqtt.simple==1.3.4', 'umqtt.simple@1.3.4' or 'micropython-umqtt.simple'."""
    name, version = re.split(r"==|@", spec.strip(), maxsplit=1) if re.search(r"==|@", spec) else (spec.strip(), None)
    name = name.strip()
    if name.startswith("micropython-"):
        name = name[len("micropython-"):]
    if not _NAME.match(name) or (version is not None and not _NAME.match(version.strip())):
        raise PackageError(f"bad package spec {spec!r}: write NAME or NAME==VERSION, e.g. 'umqtt.simple==1.3.4'")
    return name, version.strip() if version else None


def _version_key(version: str) -> list:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+]", version)]


def _cached_version(root: Path, name: str, version: str | None) -> Path | None:
    folder = root / name
    if version is not None:
        return folder / version if (folder / version / ".complete").exists() else None
    done = [p for p in folder.glob("*") if (p / ".complete").exists()] if folder.is_dir() else []
    return max(done, key=lambda p: _version_key(p.name)) if done else None


def _get(url: str, timeout: float = TIMEOUT_S) -> bytes:
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310 (https only)
        return response.read()


def _safe_relpath(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PackageError(f"refusing unsafe file path {path!r} in a package archive")
    return rel


def _modules_from_sdist(archive: bytes, filename: str) -> dict[str, bytes]:
    """The .py modules of a micropython-lib sdist, keyed by their path under lib/."""
    files: dict[str, bytes] = {}
    if filename.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            members = [(m.filename, lambda m=m: zf.read(m)) for m in zf.infolist() if not m.is_dir()]
    else:
        tf = tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
        # Symlinks point outside the archive (robust's sdist links to ../../umqtt.simple): skip them.
        members = [(m.name, lambda m=m: tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
    for name, read in members:
        parts = PurePosixPath(name).parts[1:]  # drop the "<project>-<version>/" folder
        if not parts or not parts[-1].endswith(".py") or parts == ("setup.py",):
            continue
        if any(p.endswith(".egg-info") or p in ("test", "tests", "example", "examples") for p in parts):
            continue
        if parts[-1].startswith("test_") or parts[-1].startswith("example"):
            continue
        files[str(_safe_relpath("/".join(parts)))] = read()
    return files


def _declared_dependencies(archive: bytes, filename: str) -> list[str]:
    """install_requires of the sdist's setup.py, as harness package names."""
    if not filename.endswith((".tar.gz", ".tgz")):
        return []
    tf = tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
    for member in tf.getmembers():
        if member.isfile() and PurePosixPath(member.name).parts[1:] == ("setup.py",):
            text = tf.extractfile(member).read().decode("utf-8", "replace")
            match = re.search(r"install_requires\s*=\s*\[([^\]]*)\]", text)
            if match:
                return [parse_spec(s)[0] for s in re.findall(r"['\"]([^'\"]+)['\"]", match.group(1))]
    return []


def _fetch_pypi(name: str, version: str | None) -> tuple[str, dict[str, bytes], list[str]]:
    project = f"micropython-{name}"
    url = f"{PYPI}/{project}/json" if version is None else f"{PYPI}/{project}/{version}/json"
    try:
        meta = json.loads(_get(url))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            what = f"{name}=={version}" if version else name
            raise PackageError(f"unknown MicroPython package {what!r}: PyPI has no {project}"
                               f"{' version ' + version if version else ''}; check the name in the firmware manifest") from None
        raise
    release = meta["info"]["version"]
    sdists = [u for u in meta["urls"] if u["packagetype"] == "sdist"]
    if not sdists:
        raise PackageError(f"MicroPython package {name!r} {release}: PyPI lists no source archive to install")
    archive = _get(sdists[0]["url"])
    if hashlib.sha256(archive).hexdigest() != sdists[0]["digests"]["sha256"]:
        raise PackageError(f"MicroPython package {name!r}: download of {sdists[0]['filename']} failed its sha256 check; retry")
    files = _modules_from_sdist(archive, sdists[0]["filename"])
    if not files:
        raise PackageError(f"MicroPython package {name!r} {release}: its archive holds no .py modules")
    deps = _declared_dependencies(archive, sdists[0]["filename"])
    return release, files, deps


def _fetch_mip(index: str, name: str, version: str | None) -> tuple[str, dict[str, bytes], list[str]]:
    """mip's v2 index: package/py/<name>/<version|latest>.json lists files by hash."""
    meta = json.loads(_get(f"{index}/package/py/{name}/{version or 'latest'}.json", timeout=5.0))
    files = {}
    for path, digest in meta.get("hashes", []):
        files[str(_safe_relpath(path))] = _get(f"{index}/file/{digest[:2]}/{digest}")
    for path, url in meta.get("urls", []):
        files[str(_safe_relpath(path))] = _get(url)
    deps = [parse_spec(d[0])[0] for d in meta.get("deps", [])]
    return meta.get("version", version or "0"), files, deps


def _fetch(name: str, version: str | None) -> tuple[str, dict[str, bytes], list[str]]:
    index = os.environ.get("MICROPYTHON_HIL_MIP_INDEX", DEFAULT_MIP_INDEX).rstrip("/")
    if index:
        try:
            return _fetch_mip(index, name, version)
        except (OSError, ValueError, KeyError):
            pass  # no mip index reachable, or it lacks the package: PyPI next
    try:
        return _fetch_pypi(name, version)
    except (urllib.error.URLError, OSError) as exc:
        raise PackageError(f"MicroPython package {name!r} is not cached in {cache_dir()} and the package index "
                           f"is unreachable ({exc}); run once with network access to fill the cache") from None


def _store(root: Path, name: str, version: str, files: dict[str, bytes], deps: list[str]) -> Path:
    folder = root / name / version
    tmp = root / name / f".{version}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    (tmp / ".deps.json").write_text(json.dumps(deps))
    (tmp / ".complete").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a half-written package is never seen as cached
    return folder


def fetch(spec: str, cache: Path | str | None = None, refresh: bool = False) -> Path:
    """The cached folder of one package (fetching it on a miss, or always when `refresh`)."""
    name, version = parse_spec(spec)
    root = cache_dir(cache)
    cached = None if refresh else _cached_version(root, name, version)
    if cached is not None:
        return cached
    release, files, deps = _fetch(name, version)
    deps = sorted(set(deps) | set(KNOWN_DEPENDENCIES.get(name, [])))
    return _store(root, name, release, files, deps)


def resolve(specs: Iterable[str], cache: Path | str | None = None, refresh: bool = False) -> list[Path]:
    """Cached folders of the packages and all their dependencies, dependencies first."""
    order: list[Path] = []
    seen: set[str] = set()

    def visit(spec: str) -> None:
        name = parse_spec(spec)[0]
        if name in seen:
            return
        seen.add(name)
        folder = fetch(spec, cache, refresh)
        for dep in json.loads((folder / ".deps.json").read_text()):
            visit(dep)
        order.append(folder)

    for spec in specs:
        visit(spec)
    return order


def _package_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def install(specs: Iterable[str], dest_lib_dir: Path | str, cache: Path | str | None = None) -> list[Path]:
    """Copy the packages (and dependencies) into a board's lib folder; returns the files written."""
    return _copy_into(resolve(specs, cache), Path(dest_lib_dir))


def _copy_into(folders: list[Path], dest: Path) -> list[Path]:
    written = []
    dest.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for src in _package_files(folder):
            target = dest / src.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            written.append(target)
    return written


def ensure(specs: Iterable[str], cache: Path | str | None = None) -> Path:
    """A lib folder holding exactly these packages, built once in the cache and reused.

    Put it on the unix port's path: MICROPYPATH=".frozen:<this folder>".
    """
    folders = resolve(list(specs), cache)
    key = hashlib.sha256("\n".join(sorted(str(f) for f in folders)).encode()).hexdigest()[:16]
    lib = cache_dir(cache) / ".lib" / key
    if not (lib / ".complete").exists():
        tmp = lib.with_name(f"{key}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        _copy_into(folders, tmp)
        (tmp / ".complete").write_text("")
        shutil.rmtree(lib, ignore_errors=True)
        os.replace(tmp, lib)
    return lib


def read_manifest(path: Path | str) -> list[str]:
    """Package specs a firmware declares: a JSON list, or {"packages": [...]}, or one spec a line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PackageError(f"cannot read package manifest {path}: {exc.strerror}") from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PackageError(f"package manifest {path} is not valid JSON: {exc}") from exc
        specs = data.get("packages", data.get("deps", [])) if isinstance(data, dict) else data
        if not isinstance(specs, list) or not all(isinstance(s, (str, list)) for s in specs):
            raise PackageError(f"package manifest {path}: expected a list of package names under \"packages\"")
        return [s if isinstance(s, str) else "==".join(s) if s[1:] and s[1] != "latest" else s[0] for s in specs]
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
