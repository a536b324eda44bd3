"""The files the product writes: each appears whole or not at all, never on top of what it was made from, and an
output that cannot be written is refused before the work that would fill it.

Every writer goes through `replacing` (a partial file beside the output, renamed over it when it is complete),
so a fit killed, a full disk or a read-only folder leaves the old file as it was and no half-written one under
its name. A stream (a FIFO, a device such as /dev/null, a link under /dev such as /dev/stdout) is written into:
renaming over it would put a regular file in place of the device, for every other process too.
`check_writable` and `check_distinct` are what a verb calls first, before minutes of work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from facesplit.errors import FrostedError


class OutputError(FrostedError):
    """An output that cannot be written, or would overwrite an input."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == "-"


def silence_stdout() -> None:
    """After a write to stdout failed (a full disk, a closed pipe): point it at /dev/null, so what is still
    buffered does not fail again, with a traceback, as Python flushes it on its way out."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def is_stream(path: Path) -> bool:
    """A FIFO, socket or device (links followed), or a link under /dev or /proc (/dev/stdout is one, to a
    regular file when stdout is redirected): written into, never replaced. A new file, or a regular one, in
    /dev/shm say, is a file like any other."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return True
    return path.is_symlink() and path.absolute().parts[1:2] in (("dev",), ("proc",))


def _open_stream(path: Path) -> int:
    """A write descriptor on the stream ``path``: a FIFO without a reader is refused at once (a plain open would
    wait for one, silently, for ever)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError(f"{path}: a FIFO that no process is reading; start its reader first") from None
        raise OutputError(f"{path}: cannot write it ({_reason(exc)})") from None
    os.set_blocking(fd, True)
    return fd


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: Path, folder: bool = False) -> None:
    """Refuse ``path`` (a file, or with ``folder`` a folder, made if missing) unless this process can create or
    replace it: a folder where a file should be, a file in the way of a folder, a read-only or full filesystem, no
    permission. It tries for real (a probe file created and removed), since root passes every permission check
    that `os.access` makes and a read-only mount fails none of them."""
    if is_stdout(path):
        return
    if not folder and is_stream(path):
        os.close(_open_stream(path))
        return
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file")
    where = _nearest_existing(path if folder else path.parent)
    if not where.is_dir():
        raise OutputError(f"{path}: cannot be made: {where} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=where, prefix=".frosted-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {where} ({_reason(exc)})") from None


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or two names (a link) of one file."""
    if a.absolute() == b.absolute():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def input_overwritten(output: Path, inputs: Iterable[Path]) -> Path | None:
    """The one of ``inputs`` that writing ``output`` would overwrite, if any."""
    return next((source for source in inputs if _same_file(output, source)), None)


def check_distinct(outputs: Mapping[str, Path | None], inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that is one of ``inputs`` (which it would overwrite) or the same file as another output
    (``outputs`` maps each option's name to its path; None and '-' are skipped)."""
    given = [(name, path) for name, path in outputs.items() if path is not None and not is_stdout(path)]
    inputs = list(inputs)
    for i, (name, path) in enumerate(given):
        if (source := input_overwritten(path, inputs)) is not None:
            raise OutputError(f"{name} {path}: is an input ({source}); writing it would destroy it")
        for other_name, other in given[i + 1:]:
            if _same_file(path, other):
                raise OutputError(f"{name} and {other_name} are the same file ({path})")


def _partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is complete: beside it (so the rename stays on one filesystem), hidden,
    and named after this process (so two writers do not share it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a partial path to write ``path``'s new content to; when the block ends without an error it replaces
    ``path`` in one rename, else it is removed and ``path`` is as it was. An OSError (no space, read-only, no
    permission) is an `OutputError` naming ``path``."""
    if path.is_dir():  # else the rename's "Is a directory", after the work
        raise OutputError(f"{path}: is a folder, not a file")
    if is_stream(path):
        with _writing_into(path) as stream:
            yield stream
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder {path.parent} ({_reason(exc)})") from None
    partial = _partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({_reason(exc)})") from None
    finally:
        with contextlib.suppress(OSError):  # on a read-only filesystem there is nothing to remove, and no error
            if partial.is_dir():
                shutil.rmtree(partial)
            else:
                partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _writing_into(path: Path) -> Iterator[Path]:
    """`replacing` for a stream: the caller writes to ``path`` itself (its reader is checked first)."""
    os.close(_open_stream(path))
    try:
        yield path
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({_reason(exc)})") from None


def write_text(path: Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as partial:
        partial.write_bytes(data)


def _move_in(staging: Path, folder: Path, names: list[str], aside: Path) -> None:
    """Each of ``names`` from ``staging`` into ``folder``; what it replaces (a file, a folder, a link) is kept in
    ``aside`` first. If a rename fails, or Ctrl-C comes, what was moved in is taken out and what was kept goes
    back, so ``folder`` is as it was; then the error goes on."""
    kept: set[str] = set()
    placed: list[str] = []
    try:
        for name in names:
            old, new = folder / name, staging / name
            if old.is_file() and not old.is_symlink() and new.is_file():
                os.link(old, aside / name)  # a file over a file: kept by a second name, replaced in one rename
                kept.add(name)
            elif os.path.lexists(old):  # a folder cannot be renamed over a full one, nor a folder over a link
                os.replace(old, aside / name)
                kept.add(name)
            os.replace(new, old)
            placed.append(name)
    except BaseException:
        for name in reversed(sorted(kept | set(placed), key=names.index)):
            with contextlib.suppress(OSError):
                if name in placed:
                    _remove(folder / name)
                if name in kept:
                    os.replace(aside / name, folder / name)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextlib.contextmanager
def building_into(folder: Path, last: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a hidden folder inside ``folder`` to build a set of outputs in (files or folders); when the block
    ends without an error each one replaces its namesake in ``folder`` by a rename (those named in ``last``
    last: a manifest after what it lists). On any error, or Ctrl-C, nothing in ``folder`` has changed: the
    build is removed, and so is ``folder`` if this made it and it is empty. An OSError is an `OutputError`."""
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".frosted-build-"))  # one filesystem: renames
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({_reason(exc)})") from None
    try:
        yield staging
        late = set(last)
        names = sorted(os.listdir(staging), key=lambda name: (name in late, name))
        for name in names:  # a user's folder is not replaced by a file (it would be deleted with the build)
            if (staging / name).is_file() and (folder / name).is_dir() and not (folder / name).is_symlink():
                raise OutputError(f"{folder / name}: a folder where this writes a file; move it away first")
        replaced = staging / ".replaced"  # what was there moves aside first: it comes back if a rename fails
        replaced.mkdir()
        _move_in(staging, folder, names, replaced)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write there ({_reason(exc)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a build that failed leaves no folder it made
