"""HOST:PORT as gRPC takes it, checked one way for both ends: the agent's tail address and the tail's --listen."""

from __future__ import annotations

import re

# an IPv6 address in brackets ([::1]:50051): unbracketed, its colons are ambiguous with the port's
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):(\d{1,5})$")


def check_host_port(text: str, *, listening: bool = False) -> str:
    """``text`` if it is HOST:PORT with a port from 1 to 65535; raises ValueError saying what is wrong.

    ``listening``: port 0 is allowed too (the OS picks a free port, which the server logs). Out of range, gRPC
    would not refuse: it listens on some other port, and the operator never learns which.
    """
    match = _HOST_PORT.fullmatch(text)
    if not match:
        raise ValueError(f"expected HOST:PORT (IPv6 in brackets: [::1]:50051), not {text[:80]!r}")
    port, lowest = int(match.group(2)), 0 if listening else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"port {port} is out of range ({lowest}-65535)")
    return text
