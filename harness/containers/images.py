"""Images the harness builds locally, from what this machine has installed: no registry, no
download. `import_rootfs` turns files of the host (a binary and the libraries `ldd` names, plus
small generated files) into an image with `docker import`; `mosquitto_image` does so for Debian's
mosquitto (`apt-get install mosquitto`), whose image is then `--broker docker:micropython-hil/mosquitto`.

The tag is the mosquitto version and a digest of every file in the image, so an upgraded host
package makes a new image and an unchanged one is built once per engine.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence, Union

from ..errors import HarnessError
from .engine import Engine

MOSQUITTO_REPOSITORY = "micropython-hil/mosquitto"
MOSQUITTO_PORT = 1883
MOSQUITTO_UID = 1883
IMAGE_LABEL = "micropython-hil.image"

# The image's own config: every interface (it is reached through a published port), anonymous
# clients, sessions saved on SIGTERM (a restart keeps them), what the harness's mosquitto sets.
# A test replaces it by copying its own file to this path (DockerBroker(files=...)).
MOSQUITTO_CONF_PATH = "/mosquitto/config/mosquitto.conf"
MOSQUITTO_CONF = f"""\
listener {MOSQUITTO_PORT} 0.0.0.0
allow_anonymous true
persistence true
persistence_location /mosquitto/data/
log_dest stderr
log_type error
log_type warning
log_type notice
set_tcp_nodelay true
max_queued_messages 100000
max_inflight_messages 0
"""

# A file of the image: the host file to copy (its symlinks followed; executable stays
# executable), or its text or bytes (mode 0644).
Content = Union[Path, bytes, str]


def host_libraries(binary: Path) -> list[Path]:
    """The shared libraries and loader a host binary needs, as `ldd` lists them."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        raise HarnessError("ldd is not installed (Debian's libc-bin): it lists what a binary needs") from None
    except subprocess.CalledProcessError as exc:
        raise HarnessError(f"ldd {binary}: {exc.stderr.strip() or 'not a dynamic executable'}") from None
    return [Path(p) for p in re.findall(r"(/\S+)\s+\(0x[0-9a-f]+\)", out)]


def _rootfs_tar(files: Mapping[str, Content], dirs: Mapping[str, int]) -> tuple[bytes, str]:
    """A tar of the image's files (symlinks of the host followed) and its digest."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    parents = {str(p) for path in [*files, *dirs] for p in PurePosixPath(path).parents if str(p) != "/"}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in sorted(parents | set(dirs)):
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            info.uid = info.gid = dirs.get(folder, 0)
            tar.addfile(info)
        for path in sorted(files):
            content = files[path]
            if isinstance(content, Path):
                data = content.resolve().read_bytes()
                stat = content.resolve().stat()
                mode = 0o755 if stat.st_mode & 0o111 else 0o644
                mtime = int(stat.st_mtime)  # kept: CPython checks its cached bytecode against it
            else:
                data = content.encode() if isinstance(content, str) else content
                mode, mtime = 0o644, 0
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, mtime
            tar.addfile(info, io.BytesIO(data))
            digest.update(path.encode() + b"\0" + data)
    return buffer.getvalue(), digest.hexdigest()


def import_rootfs(engine: Engine, repository: str, version: str, files: Mapping[str, Content],
                  dirs: Mapping[str, int] | None = None, changes: Sequence[str] = ()) -> str:
    """An image holding exactly `files` (image path -> host file or bytes) and `dirs` (image path
    -> owner uid), imported once under `repository:VERSION-DIGEST`; its reference."""
    data, digest = _rootfs_tar(files, dict(dirs or {}))
    digest = hashlib.sha256("\n".join([digest, *changes]).encode()).hexdigest()
    reference = f"{repository}:{version}-{digest[:12]}"
    if engine.has_image(reference):
        return reference
    try:
        engine.client.api.import_image_from_data(data, repository=repository, tag=reference.rpartition(":")[2],
                                                 changes=[*changes, f"LABEL {IMAGE_LABEL}={repository}"])
    except engine.errors.APIError as exc:
        raise HarnessError(f"docker engine {engine.url}: importing image {reference} failed "
                           f"({exc.explanation or exc})") from None
    return reference


def _mosquitto_binary() -> Path:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise HarnessError("mosquitto is not installed on this machine (apt-get install mosquitto): the local "
                           f"{MOSQUITTO_REPOSITORY} image is built from it")
    return Path(found)


def mosquitto_version(binary: Path) -> str:
    """The version mosquitto reports (`mosquitto -h`'s first line), e.g. 2.0.11."""
    out = subprocess.run([str(binary), "-h"], capture_output=True, text=True).stdout
    found = re.search(r"version (\S+)", out)
    return found.group(1) if found else "unknown"


def mosquitto_available() -> str | None:
    """None when the mosquitto image can be built here, else why not (for a skip)."""
    try:
        _mosquitto_binary()
    except HarnessError as exc:
        return str(exc)
    return None


# (engine URL, binary, its mtime) -> the reference made: later starts skip reading and hashing.
_MADE: dict[tuple[str, str, float], str] = {}


def mosquitto_image(engine: Engine) -> str:
    """The reference of an image of this machine's mosquitto on `engine`, imported if missing:
    the binary, its libraries, users root and mosquitto, and MOSQUITTO_CONF."""
    binary = _mosquitto_binary()
    key = (engine.url, str(binary.resolve()), binary.resolve().stat().st_mtime)
    if key in _MADE and engine.has_image(_MADE[key]):
        return _MADE[key]
    _MADE[key] = _build_mosquitto(engine, binary)
    return _MADE[key]


def _build_mosquitto(engine: Engine, binary: Path) -> str:
    files: dict[str, Content] = {"/usr/sbin/mosquitto": binary}
    files.update({str(lib): lib for lib in host_libraries(binary)})
    files["/etc/passwd"] = (f"root:x:0:0:root:/root:/bin/false\n"
                            f"mosquitto:x:{MOSQUITTO_UID}:{MOSQUITTO_UID}:mosquitto:/mosquitto:/bin/false\n")
    files["/etc/group"] = f"root:x:0:\nmosquitto:x:{MOSQUITTO_UID}:\n"
    files[MOSQUITTO_CONF_PATH] = MOSQUITTO_CONF
    dirs = {"/mosquitto/data": MOSQUITTO_UID}
    return import_rootfs(engine, MOSQUITTO_REPOSITORY, mosquitto_version(binary), files, dirs, changes=[
        'ENTRYPOINT ["/usr/sbin/mosquitto"]', f'CMD ["-c", "{MOSQUITTO_CONF_PATH}"]',
        f"EXPOSE {MOSQUITTO_PORT}/tcp"])
