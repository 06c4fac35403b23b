"""The HTTP cloud endpoint, driven by MicroPython's requests (unix port) and CPython's urllib."""

from __future__ import annotations

import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from micropython_hil.cloud import Cloud, CloudError

DEVICE = """
import requests, sys
base = sys.argv[1]
r = requests.post(base + "/upload?batch=1", json={"mean": 1.5, "n": 3}, headers={"X-Device": "dev-1"})
print("upload", r.status_code, r.text)
r = requests.get(base + "/config")
print("config", r.status_code, r.json()["interval"])
try:
    requests.get(base + "/gone")
    print("gone answered")
except OSError as exc:
    print("gone dropped")
"""


def run_device(cloud: Cloud) -> list[str]:
    result = subprocess.run(["micropython", "-c", DEVICE, cloud.url], capture_output=True, timeout=20)
    assert result.returncode == 0, result
    return result.stdout.decode().splitlines()


def test_records_device_requests_and_answers_as_configured():
    with Cloud() as cloud:
        cloud.respond("/upload", method="POST", status=503, body="busy", times=1)
        cloud.respond("/config", body={"interval": 30})
        cloud.respond("/gone", drop=True)
        assert run_device(cloud) == ["upload 503 busy", "config 200 30", "gone dropped"]
        upload = cloud.wait_for(1, path="/upload", method="POST")[0]
        assert upload.path == "/upload?batch=1" and upload.json() == {"mean": 1.5, "n": 3}
        assert upload.headers["X-Device"] == "dev-1" and upload.arrival > 0
        assert [r.method for r in cloud.requests] == ["POST", "GET", "GET"]
        assert run_device(cloud)[0] == "upload 200 "  # the 503 was for one request only


def test_slow_responses_and_waiting_errors():
    with Cloud() as cloud:
        cloud.respond("/slow*", delay=0.5)
        with pytest.raises((TimeoutError, urllib.error.URLError, socket.timeout)):
            urllib.request.urlopen(cloud.url + "/slow/x", timeout=0.1)
        with urllib.request.urlopen(cloud.url + "/other", timeout=2) as reply:
            assert reply.status == 200
        with pytest.raises(CloudError, match=r"expected 1 request\(s\) to ANY /never .* got 0; recent:\n  GET /slow/x"):
            cloud.wait_for(path="/never", timeout=0.1)


def test_port_taken_is_a_clear_error():
    with Cloud() as first, pytest.raises(CloudError, match=f"cannot listen on 127.0.0.1:{first.port}.*port=0"):
        Cloud(port=first.port).start()
