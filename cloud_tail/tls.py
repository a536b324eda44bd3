"""The tail's TLS material, checked before it is used.

grpc takes any bytes as a certificate or key and fails only later: a client CA that is not a certificate
starts a tail that refuses every client, and a key that does not match its certificate fails the bind as if
the port were taken. Parsing the files here turns each of those into one line naming the file at start.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from facesplit.errors import FrostedError
from frosted_wire.pem import read_pem


class TlsConfigError(FrostedError):
    """A certificate, key or CA file the tail cannot serve TLS with."""


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS, clients must present a certificate signed by it


@dataclass(frozen=True)
class TlsMaterial:
    """The PEM bytes grpc takes, once they have been parsed and found consistent."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


def load_server_tls(tls: ServerTls) -> TlsMaterial:
    """Read and check the server certificate, its key and the client CA; TlsConfigError says what is wrong."""
    cert_pem = _read(tls.cert, "server certificate")
    leaf = _certificates(cert_pem, tls.cert, "server certificate")[0]
    key_pem = _read(tls.key, "server key")
    key = _private_key(key_pem, tls.key)
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise TlsConfigError(f"server key {tls.key} does not match the server certificate {tls.cert} "
                             "(they are not a pair)")
    ca_pem = None
    if tls.client_ca is not None:
        ca_pem = _read(tls.client_ca, "client CA")
        _certificates(ca_pem, tls.client_ca, "client CA")
    return TlsMaterial(cert_pem, key_pem, ca_pem)


def _read(path: Path, what: str) -> bytes:
    try:
        return read_pem(path)
    except FileNotFoundError:
        raise TlsConfigError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise TlsConfigError(f"{what} {path}: {exc}") from None


def _certificates(pem: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsConfigError(f"{what} {path} is not a PEM certificate (no valid '-----BEGIN CERTIFICATE-----' "
                             "block)") from None
    now = datetime.datetime.now(datetime.UTC)
    for certificate in certificates:  # an expired one fails every handshake, long after start
        if certificate.not_valid_after_utc < now:
            raise TlsConfigError(f"{what} {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
        if certificate.not_valid_before_utc > now:
            raise TlsConfigError(f"{what} {path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d}")
    return certificates


def _private_key(pem: bytes, path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # cryptography's way of saying the key is encrypted
        raise TlsConfigError(f"server key {path} is encrypted; the tail needs an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsConfigError(f"server key {path} is not a PEM private key") from None


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
