"""HOST:PORT as gRPC takes it, checked one way for both ends: the agent's tail address and the tail's --listen;
and the agent's tail address, which may point at Triton instead (``triton://HOST:PORT``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# an IPv6 address in brackets ([::1]:50051): unbracketed, its colons are ambiguous with the port's
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):([0-9]{1,5})$")  # [0-9]: \d takes any script's digits


def check_host_port(text: str, *, listening: bool = False) -> str:
    """``text`` if it is HOST:PORT with a port from 1 to 65535; raises ValueError saying what is wrong.

    ``listening``: port 0 is allowed too (the OS picks a free port, which the server logs). Out of range, gRPC
    would not refuse: it listens on some other port, and the operator never learns which.
    """
    match = _HOST_PORT.fullmatch(text)
    if not match:
        raise ValueError(f"expected HOST:PORT (IPv6 in brackets: [::1]:50051), not {text[:80]!r}")
    host = match.group(1)
    if not host.startswith("["):
        try:  # what the resolver will do with it: a label past 63 characters raised UnicodeError there
            host.encode("idna")
        except UnicodeError:
            raise ValueError(f"host {host[:80]!r} is not a host name (labels of 1 to 63 characters, dot-separated)"
                             ) from None
    port, lowest = int(match.group(2)), 0 if listening else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"port {port} is out of range ({lowest}-65535)")
    return text


TRITON_SCHEME = "triton://"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class TailAddress:
    """Where the agent's frames go: our tail (HOST:PORT) or Triton (``triton://HOST:PORT[/MODEL]``)."""

    target: str  # HOST:PORT, as gRPC takes it
    triton: bool  # KServe v2 gRPC to NVIDIA Triton instead of our Detect stream
    model: str | None = None  # the Triton model to call; None: the one named after the agent's profile


def parse_tail_address(text: str) -> TailAddress:
    """``HOST:PORT`` or ``triton://HOST:PORT`` (optionally ``/MODEL``); raises ValueError saying what is wrong."""
    if not text.startswith(TRITON_SCHEME):
        if "://" in text:
            raise ValueError(f"expected HOST:PORT (our tail) or triton://HOST:PORT (Triton), not {text[:80]!r}")
        return TailAddress(check_host_port(text), triton=False)
    target, _, model = text.removeprefix(TRITON_SCHEME).partition("/")
    if model and not _MODEL_NAME.fullmatch(model):
        raise ValueError(f"Triton model name {model[:80]!r}: letters, digits, '_', '.', '-' only")
    return TailAddress(check_host_port(target), triton=True, model=model or None)
