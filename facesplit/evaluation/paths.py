"""Image names in labels and fold lists are relative to the image folder they are read from."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath


def stays_inside(name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside the folder it is joined to: an absolute name, a
    drive, or one climbing out with '..' would read (and report on) files the job was never pointed at."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and not PureWindowsPath(name).drive \
        and ".." not in parts and "\0" not in name
