"""URLs in logs and error messages: never the credentials they may carry."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# query parameters that carry a secret by their name (a camera's or a server's token, a signed URL's signature)
_SECRET_NAME = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential|session", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part and with the values of secret-looking query parameters
    (``token=``, ``password=``, ``sig=``...) as ``***``: safe for logs and error messages; the rest stays, so
    that two cameras on one host remain told apart."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 netloc: show nothing that could be a secret
        return "<unparseable URL>"
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if host == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=host, query=query))


def _redacted_pair(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    return f"{name}=***" if equals and _SECRET_NAME.search(name) else pair
