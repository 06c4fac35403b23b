"""MicroPython packages (micropython-lib's umqtt.simple, drivers such as bme280-upy) installed
onto boards at deploy time, the way `mpremote mip install` does; their code is never committed.

A firmware names them in its manifest:
- `umqtt.simple`, `umqtt.simple==1.3.4`: a micropython-lib name, from the mip index when one is
  reachable (``$MICROPYTHON_HIL_MIP_INDEX``, default micropython.org's; empty to skip), else
  PyPI's `micropython-<name>` upload (older: a warning names the version taken), else a PyPI
  distribution of that very name (`bme280-upy`);
- `pypi:DIST[==VERSION]`: exactly that PyPI distribution;
- a path (`./drivers/foo.py`, `../shared/lib`): copied as it is (Firmware handles these).

PyPI archives are sdists that pip cannot build (no setup.py metadata): we fetch them through the
JSON API, check their sha256, and keep the modules (those `top_level.txt` names, when the sdist
says). Packages land in a local cache (default ``~/.cache/micropython-hil/packages``, or
``$MICROPYTHON_HIL_PACKAGES``) and never touch the network again. A lock file (`install(...,
lock=PATH)`, a firmware's `packages.lock.json`) records each package's source, version and
content hash: reruns install exactly those, offline, and refuse a cached copy that differs.

Cache layout: ``<cache>/<name>/<version>/<files as they go under lib/>`` plus `.source`,
`.deps.json` and `.complete`.
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
import threading
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import HarnessWarning, PackageError

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
    """'umqtt.simple', 'umqtt.simple==1.3.4', 'umqtt.simple@1.3.4', 'micropython-umqtt.simple' or
    'pypi:bme280-upy' -> (name in the cache, version or None)."""
    text = spec.strip()
    if text.startswith("pypi:"):
        text = text[len("pypi:"):]
    name, version = re.split(r"==|@", text, maxsplit=1) if re.search(r"==|@", text) else (text, None)
    name = name.strip()
    if name.startswith("micropython-"):
        name = name[len("micropython-"):]
    if not _NAME.match(name) or (version is not None and not _NAME.match(version.strip())):
        raise PackageError(f"bad package spec {spec!r}: write NAME or NAME==VERSION, e.g. 'umqtt.simple==1.3.4'")
    return name, version.strip() if version else None


def sources(spec: str) -> list[str]:
    """Where a spec may come from, in the order tried: 'mip:NAME', 'pypi:PROJECT'."""
    name, _ = parse_spec(spec)
    text = spec.strip()
    if text.startswith("pypi:"):
        return [f"pypi:{re.split(r'==|@', text[5:])[0].strip()}"]
    if text.startswith("micropython-"):
        return [f"pypi:micropython-{name}"]
    return [f"mip:{name}", f"pypi:micropython-{name}", f"pypi:{name}"]


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
    # An sdist made by setuptools names its importable modules in egg-info/top_level.txt: keep
    # those (a driver's sdist may also carry tests, examples and host-side tools).
    top_level = None
    for name, read in members:
        parts = PurePosixPath(name).parts[1:]
        if len(parts) == 2 and parts[0].endswith(".egg-info") and parts[1] == "top_level.txt":
            top_level = {line.strip() for line in read().decode("utf-8", "replace").splitlines() if line.strip()}
    for name, read in members:
        parts = PurePosixPath(name).parts[1:]  # drop the "<project>-<version>/" folder
        if not parts or not parts[-1].endswith(".py") or parts == ("setup.py",):
            continue
        if top_level is not None and parts[0] not in top_level and parts[0][:-3] not in top_level:
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


def _fetch_pypi(project: str, version: str | None) -> tuple[str, dict[str, bytes], list[str]] | None:
    """A PyPI project's modules, declared dependencies and version; None if PyPI has no such
    project (or version)."""
    # The project's JSON lists every release: one request whether a version is asked for or not
    # (the per-version URL is not served by every index).
    try:
        meta = json.loads(_get(f"{PYPI}/{project}/json"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    release = meta["info"]["version"] if version is None else version
    files = meta["urls"] if version is None else meta.get("releases", {}).get(version)
    if files is None:
        return None
    sdists = [u for u in files if u["packagetype"] == "sdist"]
    if not sdists:
        raise PackageError(f"MicroPython package {project!r} {release}: PyPI lists no source archive to install")
    archive = _get(sdists[0]["url"])
    if hashlib.sha256(archive).hexdigest() != sdists[0]["digests"]["sha256"]:
        raise PackageError(f"MicroPython package {project!r}: download of {sdists[0]['filename']} failed its sha256 check; retry")
    files = _modules_from_sdist(archive, sdists[0]["filename"])
    if not files:
        raise PackageError(f"MicroPython package {project!r} {release}: its archive holds no .py modules")
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


def _fetch(spec: str, version: str | None, only: str | None = None) -> tuple[str, str, dict[str, bytes], list[str]]:
    """(source, version, files, dependencies) of a package: from `only` (a source a lock file
    recorded), else from the first of its sources that has it."""
    name = parse_spec(spec)[0]
    index = os.environ.get("MICROPYTHON_HIL_MIP_INDEX", DEFAULT_MIP_INDEX).rstrip("/")
    index_error = None
    tried = []
    for source in [only] if only else sources(spec):
        kind, _, project = source.partition(":")
        if kind == "mip":
            if not index:
                continue
            try:
                return (source, *_fetch_mip(index, project, version))
            except (OSError, ValueError, KeyError) as exc:
                index_error = exc  # no mip index reachable, or it lacks the package: PyPI next
                tried.append(f"the mip index {index}")
                continue
        try:
            found = _fetch_pypi(project, version)
        except (urllib.error.URLError, OSError) as exc:
            raise PackageError(f"MicroPython package {name!r} is not cached in {cache_dir()} and the package "
                               f"index is unreachable ({exc}); run once with network access to fill the "
                               "cache") from None
        if found is None:
            tried.append(f"PyPI's {project}")
            continue
        release, files, deps = found
        if index_error is not None and not only:
            # Not silent: the index was meant to answer, and what PyPI has may differ from it.
            if isinstance(index_error, urllib.error.HTTPError):
                why = f"{name} is not on the mip index {index} (not a micropython-lib package)"
            else:
                why = f"the mip index {index} is unreachable"
            warnings.warn(HarnessWarning(f"MicroPython package {name}: {why}; installed PyPI's {project} "
                                         f"{release} instead (recorded in the lock file; write "
                                         "'pypi:DISTRIBUTION' in the manifest to choose)"), stacklevel=4)
        return source, release, files, deps
    what = f"{name}=={version}" if version else name
    raise PackageError(f"unknown MicroPython package {what!r}: not found on {' nor '.join(tried) or 'any index'}; "
                       "check the name in the firmware manifest")


def _store(root: Path, name: str, version: str, files: dict[str, bytes], deps: list[str], source: str) -> Path:
    folder = root / name / version
    # Named by process and thread: two threads of one run (a fleet starting) may fetch at once.
    tmp = root / name / f".{version}.partial-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    (tmp / ".deps.json").write_text(json.dumps(deps))
    (tmp / ".source").write_text(source)
    (tmp / ".complete").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a half-written package is never seen as cached
    return folder


def fetch(spec: str, cache: Path | str | None = None, refresh: bool = False,
          locked: dict | None = None) -> Path:
    """The cached folder of one package (fetching it on a miss, or always when `refresh`).
    `locked`: the lock file's entry for it (source, version, sha256), which must match."""
    name, version = parse_spec(spec)
    if locked is not None:
        version = locked["version"]
    root = cache_dir(cache)
    cached = None if refresh else _cached_version(root, name, version)
    if cached is None:
        recorded = locked["source"] if locked and locked["source"] != "unknown" else None
        source, release, files, deps = _fetch(spec, version, only=recorded)
        deps = sorted(set(deps) | set(KNOWN_DEPENDENCIES.get(name, [])))
        cached = _store(root, name, release, files, deps, source)
    if locked is not None and content_hash(cached) != locked["sha256"]:
        raise PackageError(f"MicroPython package {name} {version} in {cached} differs from the lock file's "
                           "sha256; delete that folder to fetch it again, or its entry in the lock file")
    return cached


def content_hash(folder: Path) -> str:
    """sha256 over a cached package's files (paths and contents), as a lock file records it."""
    digest = hashlib.sha256()
    for path in _package_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _lock_entry(folder: Path) -> dict:
    source = (folder / ".source").read_text() if (folder / ".source").exists() else "unknown"
    return {"source": source, "version": folder.name, "sha256": content_hash(folder)}


def resolve(specs: Iterable[str], cache: Path | str | None = None, refresh: bool = False,
            lock: Path | str | None = None) -> list[Path]:
    """Cached folders of the packages and all their dependencies, dependencies first. With a
    `lock` file: locked packages as recorded there, new ones added to it."""
    lock_path = Path(lock) if lock is not None else None
    entries = _read_lock(lock_path) if lock_path is not None else {}
    order: list[Path] = []
    seen: set[str] = set()
    resolved: dict[str, dict] = {}

    def visit(spec: str) -> None:
        name = parse_spec(spec)[0]
        if name in seen:
            return
        seen.add(name)
        folder = fetch(spec, cache, refresh, locked=entries.get(name))
        resolved[name] = entries.get(name) or _lock_entry(folder)
        for dep in json.loads((folder / ".deps.json").read_text()):
            visit(dep)
        order.append(folder)

    for spec in specs:
        visit(spec)
    if lock_path is not None and resolved != entries:
        lock_path.write_text(json.dumps(dict(sorted(resolved.items())), indent=1) + "\n")
    return order


def _read_lock(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except ValueError:
        entries = None
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and {"source", "version", "sha256"} <= e.keys() for e in entries.values()):
        raise PackageError(f"lock file {path} is not a valid package lock (name -> source, version, "
                           "sha256); delete it to resolve the packages again")
    return entries


def _package_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def install(specs: Iterable[str], dest_lib_dir: Path | str, cache: Path | str | None = None,
            lock: Path | str | None = None) -> list[Path]:
    """Copy the packages (and dependencies) into a board's lib folder; returns the files written.
    `lock`: a lock file to honour and keep (see resolve)."""
    return _copy_into(resolve(specs, cache, lock=lock), Path(dest_lib_dir))


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
        tmp = lib.with_name(f"{key}.partial-{os.getpid()}-{threading.get_ident()}")
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
