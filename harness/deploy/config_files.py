"""Config files in the firmware's own format, filled from the test's endpoints.

Teams do not rewrite their config handling to be tested: the firmware keeps reading its own
`station.json`, `secrets.py` or `settings.txt`, and the test (or the firmware's manifest) gives a
template for each, filled with where this test's broker, WiFi and cloud are:

    start_firmware(files={
        "station.json": {"broker": "{host}", "port": "{port}", "id": "{client_id}", "every": 600},
        "secrets.py": "SSID = {wifi_ssid!r}\\nPASSWORD = {wifi_password!r}\\n",
    })

- a dict or list is written as JSON; a string in it that is exactly one placeholder ("{port}")
  takes the value with its type (an int stays an int), other strings are formatted;
- a string is formatted with str.format (so `{host!r}` gives a Python literal) and written as text;
- bytes are written as they are; a callable gets the values (a dict) and returns one of the above.

Placeholders: host, port, user, password, client_id, keepalive, topic_prefix, wifi_ssid,
wifi_password, cloud_url, and every key of the test's `extra` settings. For a TLS broker
(--broker-tls): tls (true/false), tls_server_name (the name in the broker's certificate, to verify
it by, also when the board dials a proxy), tls_ca, tls_cert, tls_key (PEM text: the CA, and the
board's own certificate and key under mutual TLS, else None), and tls_ca_der, tls_cert_der,
tls_key_der (bytes, for a callable template: the unix port's mbedTLS reads only DER). Firmware
that reads certificate files gets them as files, its config naming their paths:

    start_firmware(files={
        "certs/ca.pem": "{tls_ca}", "certs/client.key": "{tls_key}",
        "certs/ca.der": lambda v: v["tls_ca_der"],
        "station.json": {"broker": "{host}", "port": "{port}", "tls": "{tls}", "ca": "certs/ca.pem"},
    })
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from ..errors import FirmwareError
from ..mqtt.tls import pem_to_der
from ..secret import Secret, reveal

Template = Union[dict, list, str, bytes, Callable[[dict], Any]]


@dataclass(frozen=True, repr=False)
class DeviceTls:
    """What one board needs to reach a TLS broker: the CA, its own certificate and key (mutual
    TLS), and the name in the broker's certificate."""

    ca_cert: str
    server_name: str
    client_cert: str | None = None
    client_key: Secret | None = None

    def __repr__(self) -> str:
        return f"<DeviceTls {'mutual' if self.client_cert else 'server'} TLS, broker {self.server_name}>"


@dataclass(frozen=True)
class Endpoints:
    """What a board under test must know: its broker, its client id, its WiFi, its cloud."""

    host: str
    port: int
    client_id: str
    user: str | None = None
    password: Secret | None = None
    keepalive: int = 30
    topic_prefix: str = ""
    wifi_ssid: str | None = None
    wifi_password: Secret | None = None
    cloud_url: str | None = None
    extra: dict = field(default_factory=dict)
    tls: DeviceTls | None = None

    def values(self) -> "_Values":
        """The placeholders' values (passwords and keys revealed: they go into the board's files)."""
        values = _Values(self.extra)
        values.update(host=self.host, port=self.port, client_id=self.client_id, user=self.user,
                      password=reveal(self.password), keepalive=self.keepalive,
                      topic_prefix=self.topic_prefix, wifi_ssid=self.wifi_ssid,
                      wifi_password=reveal(self.wifi_password), cloud_url=self.cloud_url)
        tls = self.tls
        values.update(tls=tls is not None, tls_server_name=tls.server_name if tls else None,
                      tls_ca=tls.ca_cert if tls else None,
                      tls_cert=tls.client_cert if tls else None,
                      tls_key=reveal(tls.client_key) if tls else None,
                      tls_ca_der=_der(tls.ca_cert) if tls else None,
                      tls_cert_der=_der(tls.client_cert) if tls else None,
                      tls_key_der=_der(reveal(tls.client_key)) if tls else None)
        return values


def _der(pem: str | None) -> bytes | None:
    return pem_to_der(pem) if pem else None


class _Values(dict):
    """The placeholder values; printed (in a traceback's locals, say) without their content."""

    def __repr__(self) -> str:
        return f"<config values: {', '.join(sorted(self))}>"


def render(name: str, template: Template, endpoints: Endpoints) -> bytes:
    """The content of config file `name` for these endpoints."""
    values = endpoints.values()
    if callable(template):
        template = template(values)
    if isinstance(template, bytes):
        return template
    if isinstance(template, str):
        return _format(name, template, values).encode()
    if isinstance(template, (dict, list)):
        return json.dumps(_fill(name, template, values)).encode()
    raise FirmwareError(f"config file {name}: a template is a dict, list, str, bytes or callable, "
                        f"not {type(template).__name__}")


def _fill(name: str, node: Any, values: dict) -> Any:
    if isinstance(node, dict):
        return {key: _fill(name, value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(name, value, values) for value in node]
    if isinstance(node, str):
        parsed = list(string.Formatter().parse(node))
        if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] and not parsed[0][2] and not parsed[0][3]:
            return _lookup(name, parsed[0][1], values)  # "{port}": the value itself, typed
        return _format(name, node, values)
    return node


def _lookup(name: str, key: str, values: dict) -> Any:
    if key not in values:
        raise _unknown(name, key, values)
    return values[key]


def _format(name: str, text: str, values: dict) -> str:
    try:
        return text.format_map(values)
    except KeyError as e:
        raise _unknown(name, e.args[0], values) from None
    except (ValueError, IndexError, AttributeError) as e:
        raise FirmwareError(f"config file {name}: bad template ({e}); write literal braces as {{{{ }}}}") from None


def _unknown(name: str, key: str, values: dict) -> FirmwareError:
    return FirmwareError(f"config file {name}: unknown placeholder {{{key}}}; known: {', '.join(sorted(values))}")
