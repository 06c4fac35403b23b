"""A Docker engine, reached through the docker SDK (imported when first needed): the one
`DOCKER_HOST` names (a local socket, tcp://HOST:PORT, ssh://USER@HOST), or a URL given.

An `Engine` knows where the ports its containers publish are reached from here (loopback for an
engine on this machine, the engine's host otherwise), fetches an image it lacks, and removes the
containers a killed run of the harness left on it (ownership.py: only those, never another's).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from ..errors import HarnessError
from .ownership import LABEL, owner_gone

DEFAULT_URL = "unix:///var/run/docker.sock"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _sdk() -> Any:
    try:
        import docker
    except ImportError:
        raise HarnessError("the docker SDK is not installed: pip install 'pytest-micropython-hil[docker]' "
                           "(or pip install 'docker>=7')") from None
    return docker


def engine_url(url: str | None = None) -> str:
    """The engine a URL (else DOCKER_HOST, else the local socket) names."""
    return url or os.environ.get("DOCKER_HOST") or DEFAULT_URL


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


class Engine:
    """One connection to a Docker engine; `close()` when done."""

    def __init__(self, url: str | None = None, timeout: float = 60.0) -> None:
        self.url = engine_url(url)
        docker = _sdk()
        scheme = urlparse(self.url).scheme
        if scheme == "unix":
            path = urlparse(self.url).path
            if not os.path.exists(path):
                raise HarnessError(f"docker engine {self.url}: no such socket; install Docker (apt-get install "
                                   f"docker.io) and start dockerd, or set DOCKER_HOST to a running engine")
        try:
            # Through from_env, so DOCKER_TLS_VERIFY and DOCKER_CERT_PATH apply to a tcp:// engine;
            # ssh:// goes through the ssh command (no paramiko needed).
            self.client = docker.from_env(environment={**os.environ, "DOCKER_HOST": self.url}, timeout=int(timeout),
                                          use_ssh_client=scheme == "ssh")
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds; all mean "unreachable"
            raise HarnessError(f"docker engine {self.url} is unreachable ({_why(exc)}); start dockerd or set "
                               f"DOCKER_HOST to a running engine") from None
        self.errors = docker.errors

    @staticmethod
    def unavailable(url: str | None = None) -> str | None:
        """None when an engine answers at `url` (default DOCKER_HOST), else why not (for a skip)."""
        try:
            Engine(url, timeout=5).close()
        except HarnessError as exc:
            return str(exc)
        return None

    # -- where published ports are reached
    @property
    def local(self) -> bool:
        """True for an engine on this machine (a unix socket, or tcp:// on loopback)."""
        parsed = urlparse(self.url)
        return parsed.scheme in ("unix", "npipe") or (parsed.hostname or "") in _LOOPBACK_NAMES

    @property
    def publish_address(self) -> str:
        """The address containers publish their ports on: loopback here, every interface on a
        remote engine (which this machine reaches over the network)."""
        return "127.0.0.1" if self.local else "0.0.0.0"

    @property
    def host(self) -> str:
        """The host a published port is reached on from here."""
        return "127.0.0.1" if self.local else urlparse(self.url).hostname

    # -- images
    def has_image(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except self.errors.ImageNotFound:
            return False
        return True

    def ensure_image(self, reference: str) -> None:
        """Make sure the engine has an image, pulling it if it is missing."""
        if self.has_image(reference):
            return
        try:
            self.client.images.pull(reference)
        except Exception as exc:  # noqa: BLE001
            raise HarnessError(f"image {reference} is not on docker engine {self.url} and could not be pulled "
                               f"({_why(exc)}); build or load it there first") from None

    # -- what killed runs left
    def remove_leftovers(self) -> list[str]:
        """Remove the containers of ended runs of the harness (labelled, owner gone); their names."""
        removed = []
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            if owner_gone(container.labels.get(LABEL, "")):
                try:
                    container.remove(force=True, v=True)
                except self.errors.APIError:
                    continue  # gone, or being removed by another run's start
                removed.append(container.name)
        return removed

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine({self.url!r})"
