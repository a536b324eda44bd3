"""The agent's TLS files, checked when the config is read.

gRPC reads them only when it first connects, and then reports any fault in them as the same "failed to
connect" as a tail that is down, so a wrong file would have the agent retry forever. Parsed here, a CA that
is not a certificate, a key that is not a key or does not belong to its certificate, or an expired client
certificate stops the agent at start, in one line naming the file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from frosted_wire.pem import read_pem


def check_client_tls(ca: Path | None, cert: Path | None, key: Path | None) -> None:
    """Raises ValueError naming the file at fault; ``cert`` and ``key`` are checked as a pair."""
    if ca is not None:
        _certificates(ca, "ca")
    if cert is None or key is None:
        return
    leaf = _certificates(cert, "cert")[0]  # a chain starts with the agent's own certificate
    private = _private_key(key)
    if _public_der(leaf.public_key()) != _public_der(private.public_key()):
        raise ValueError(f"key {key} does not match cert {cert}: it is the key of another certificate")
    now = dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc < now:
        raise ValueError(f"cert {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ValueError(f"cert {cert} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def _read(path: Path, name: str) -> bytes:
    try:
        return read_pem(path)
    except OSError as exc:
        raise ValueError(f"{name} {path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"{name} {path}: {exc}") from None


def _certificates(path: Path, name: str) -> list[x509.Certificate]:
    data = _read(path, name)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{name} {path}: not a PEM certificate file") from None


def _private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "this key needs a password"
        raise ValueError(f"key {path}: encrypted with a password; the agent needs an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"key {path}: not a PEM private key file") from None


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
