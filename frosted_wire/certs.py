"""Throwaway certificates for loopback TLS: the demo's and the tests'. Never for production use."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey,
           *, ca: bool, usage: x509.ObjectIdentifier | None = None, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return path


def _write_private(path: Path, data: bytes) -> None:
    """Create the file 0600 from the start: a chmod after writing leaves a moment in which others can read it.
    An older file in its place is removed first, since O_CREAT keeps an existing file's mode."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def throwaway_certificates(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                           ca_name: str = "frosted throwaway CA") -> CertFiles:
    """A fresh CA, a server certificate for ``hosts`` and a client certificate, as PEM files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(ca_name, _name(ca_name), ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue("frosted tail", ca_cert.subject, ca_key, server_key, ca=False,
                         usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("frosted edge agent", ca_cert.subject, ca_key, client_key, ca=False,
                         usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return CertFiles(ca=_write(folder / "ca.pem", ca_cert), server_cert=_write(folder / "tail.pem", server_cert),
                     server_key=_write(folder / "tail.key", key=server_key),
                     client_cert=_write(folder / "edge.pem", client_cert),
                     client_key=_write(folder / "edge.key", key=client_key))
