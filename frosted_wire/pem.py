"""Reading a PEM file (a certificate, a chain, a key) that both ends of the wire are configured with."""

from __future__ import annotations

import stat
from pathlib import Path

# far past a CA bundle (the Mozilla roots are about 220 kB), far short of a wrong file the size of a disk
MAX_PEM_BYTES = 1 << 20


def read_pem(path: Path) -> bytes:
    """The bytes of ``path``; OSError where it cannot be read, ValueError (saying why) where it is no PEM file by
    its kind or size. A FIFO or a device is never opened: reading one would wait, or never end."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise ValueError("a folder, not a PEM file")
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file, so not a PEM file")
    with path.open("rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"more than a PEM file's {MAX_PEM_BYTES} bytes")
    return data
