"""TLS for a broker and its clients: a certificate authority made for the broker's run, or the
files a user gave for an external broker.

Cloud brokers (AWS IoT, Azure IoT Hub, HiveMQ Cloud) refuse plain MQTT, and most want a client
certificate too, so firmware is tested over TLS as it will run. `GeneratedTls` makes a CA, a
server certificate for the addresses the broker is dialled on, and a client certificate per name
on demand (`client_cert("weather-1")`), into a marked temp folder removed by `close()`. Keys are
EC P-256: generated in about a millisecond (RSA-2048 takes tens), and mbedTLS on the ESP32
verifies them. `ProvidedTls` holds an external broker's CA and the one client certificate the
user has for it.

Private keys are `Secret`s and the files holding them are readable by their owner only; no repr
here shows key material.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ..errors import BrokerError
from ..secret import Secret, reveal
from ..tempdirs import make_temp_dir, remove as remove_temp_dir

MODES = ("server", "mutual")  # server: clients verify the broker; mutual: the broker verifies them too

# A board that never set its clock starts at the ESP32 port's epoch (2000-01-01), and mbedTLS
# refuses a certificate that is "not yet valid" there: session certificates are valid from then.
_VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_VALID_FOR = datetime.timedelta(days=30)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.+?)-----END \1-----", re.S)


def pem_to_der(pem: str | bytes) -> bytes:
    """The first PEM block's content as DER (MicroPython's unix port reads only DER)."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    found = _PEM_BLOCK.search(text)
    if found is None:
        raise BrokerError("TLS: not PEM text (no -----BEGIN ...----- block)")
    return base64.b64decode("".join(found.group(2).split()))


@dataclass(frozen=True, repr=False)
class ClientCert:
    """A client certificate and its key, as PEM text and as files (for ssl.SSLContext)."""

    name: str
    cert_pem: str
    key_pem: Secret
    cert_file: Path
    key_file: Path

    def __repr__(self) -> str:
        return f"<ClientCert {self.name!r} {self.cert_file}>"


class BrokerTls:
    """What a broker's clients need for TLS: the CA to verify it and, under mutual TLS, a
    certificate of their own."""

    mutual: bool = False
    ca_pem: str | None = None
    ca_file: Path | None = None

    @property
    def mode(self) -> str:
        return "mutual" if self.mutual else "server"

    def client_cert(self, name: str = "hil") -> ClientCert | None:
        """A client certificate for `name` (None when the broker needs none and none was given)."""
        raise NotImplementedError

    def client_context(self, cert: ClientCert | None = None) -> ssl.SSLContext:
        """A client-side context: verifies the broker against the CA; presents `cert` if given."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None)
        if cert is not None:
            context.load_cert_chain(cert.cert_file, cert.key_file)
        return context

    def close(self) -> None:
        """Remove what was written for this broker (nothing for given files)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.mode}, CA {self.ca_file}>"


class GeneratedTls(BrokerTls):
    """A CA made for one broker run, its server certificate, and client certificates on demand.

    `hosts`: the names and addresses clients dial the broker on (its certificate's subject
    alternative names); 127.0.0.1, ::1 and localhost are always among them.
    """

    def __init__(self, hosts: list[str] | tuple[str, ...] = (), mutual: bool = False) -> None:
        c = _crypto()
        self.mutual = mutual
        self.hosts = list(dict.fromkeys(["127.0.0.1", "::1", "localhost", *hosts]))
        self._lock = threading.Lock()
        self._clients: dict[str, ClientCert] = {}
        self.dir: Path | None = make_temp_dir("tls")
        try:
            self._ca_key = c.ec.generate_private_key(c.ec.SECP256R1())
            self._ca_name = _name("pytest-micropython-hil test CA")
            ca = (_builder(self._ca_name, self._ca_name, self._ca_key.public_key())
                  .add_extension(c.x509.BasicConstraints(ca=True, path_length=0), critical=True)
                  .add_extension(_key_usage(cert_sign=True), critical=True)
                  .sign(self._ca_key, c.hashes.SHA256()))
            self.ca_pem = _cert_pem(ca)
            self.ca_file = self._write("ca.pem", self.ca_pem)
            names = [c.x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else c.x509.DNSName(h) for h in self.hosts]
            cert, key = self._leaf("hil-broker", c.ExtendedKeyUsageOID.SERVER_AUTH, c.x509.SubjectAlternativeName(names))
            self.server_cert_file = self._write("server.pem", cert)
            self.server_key_file = self._write("server.key", key, private=True)
        except BaseException:
            self.close()
            raise

    def _leaf(self, common_name: str, usage, alt_names=None) -> tuple[str, Secret]:
        """A certificate signed by the CA and its new key, as PEM."""
        c = _crypto()
        key = c.ec.generate_private_key(c.ec.SECP256R1())
        builder = (_builder(_name(common_name), self._ca_name, key.public_key())
                   .add_extension(c.x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(), critical=True)
                   .add_extension(c.x509.ExtendedKeyUsage([usage]), critical=False))
        if alt_names is not None:
            builder = builder.add_extension(alt_names, critical=False)
        return _cert_pem(builder.sign(self._ca_key, c.hashes.SHA256())), Secret(_key_pem(key))

    def client_cert(self, name: str = "hil") -> ClientCert:
        """The client certificate for `name` (its common name), made on first use."""
        with self._lock:
            if name not in self._clients:
                if self.dir is None:
                    raise BrokerError("TLS: the broker was stopped, its CA is gone; start it again")
                cert, key = self._leaf(name, _crypto().ExtendedKeyUsageOID.CLIENT_AUTH)
                stem = f"client-{len(self._clients)}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
                self._clients[name] = ClientCert(name, cert, key, self._write(stem + ".pem", cert),
                                                 self._write(stem + ".key", key, private=True))
            return self._clients[name]

    def server_context(self) -> ssl.SSLContext:
        """The broker's side: presents the server certificate; under mutual TLS requires a
        client certificate signed by the CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert_file, self.server_key_file)
        if self.mutual:
            context.load_verify_locations(cafile=str(self.ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _write(self, name: str, text: str, private: bool = False) -> Path:
        path = self.dir / name
        # A key file is created owner-only: it is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(reveal(text))
        return path

    def close(self) -> None:
        if self.dir is not None:
            remove_temp_dir(self.dir)
            self.dir = None


class ProvidedTls(BrokerTls):
    """An external broker's TLS, from the user's files: the CA that signed the broker's
    certificate and, for mutual TLS, the client certificate and key it accepts (every client of
    the harness and every board presents that one)."""

    def __init__(self, ca_file: str | Path, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None) -> None:
        if (cert_file is None) != (key_file is None):
            raise BrokerError("--broker-cert and --broker-key go together: give both files or neither")
        self.ca_file = Path(ca_file)
        self.ca_pem = _read_pem(self.ca_file, "--broker-ca", "CERTIFICATE")
        self.mutual = cert_file is not None
        self._client = None
        if cert_file is not None:
            cert_file, key_file = Path(cert_file), Path(key_file)
            self._client = ClientCert(cert_file.stem, _read_pem(cert_file, "--broker-cert", "CERTIFICATE"),
                                      Secret(_read_pem(key_file, "--broker-key", "PRIVATE KEY")), cert_file, key_file)

    def client_cert(self, name: str = "hil") -> ClientCert | None:
        return self._client


def _read_pem(path: Path, option: str, kind: str) -> str:
    """A PEM file's text, checked to hold a `kind` block (errors never quote the content)."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerError(f"{option} {path}: cannot read it ({getattr(exc, 'strerror', None) or exc.__class__.__name__})") from None
    blocks = [m.group(1) for m in _PEM_BLOCK.finditer(text)]
    if not any(b.endswith(kind) for b in blocks):
        raise BrokerError(f"{option} {path}: no PEM {kind} in it")
    return text


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _crypto() -> SimpleNamespace:
    """The cryptography modules used here, imported on first use: a session without TLS does
    not pay for them (some 20 ms)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return SimpleNamespace(x509=x509, hashes=hashes, serialization=serialization, ec=ec,
                           ExtendedKeyUsageOID=ExtendedKeyUsageOID, NameOID=NameOID)


def _name(common_name: str):
    c = _crypto()
    return c.x509.Name([c.x509.NameAttribute(c.NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, public_key):
    return (_crypto().x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(_crypto().x509.random_serial_number())
            .not_valid_before(_VALID_FROM)
            .not_valid_after(datetime.datetime.now(datetime.timezone.utc) + _VALID_FOR))


def _key_usage(cert_sign: bool = False):
    return _crypto().x509.KeyUsage(digital_signature=True, key_cert_sign=cert_sign, crl_sign=cert_sign,
                                   content_commitment=False, key_encipherment=False, data_encipherment=False,
                                   key_agreement=False, encipher_only=False, decipher_only=False)


def _cert_pem(cert) -> str:
    return cert.public_bytes(_crypto().serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    s = _crypto().serialization
    return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode()
