"""Find, check, load and download the FaceBoxes weights.

Where the weights come from, in order: an explicit path (``--weights``), ``$FROSTED_WEIGHTS``, the user's
cache (``$XDG_CACHE_HOME/frosted/FaceBoxesProd.pth``, filled by ``frosted weights download``).
Nothing is ever fetched implicitly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import warnings
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import torch
from tqdm import tqdm

from facesplit.errors import FrostedError
from facesplit.faceboxes import DEFAULT_SPLIT, FaceBoxes
from facesplit.outputs import check_writable, is_stream, replacing
from facesplit.urls import redact_url

WEIGHTS_FILENAME = "FaceBoxesProd.pth"
OFFICIAL_SHA256 = "c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09"
OFFICIAL_URL = ("https://github.com/cleardusk/3DDFA_V2/raw/f3ec646695600230f60bb6d7de4a5dbe5aaa59f8/"
                "FaceBoxes/weights/FaceBoxesProd.pth")
WEIGHTS_ENV = "FROSTED_WEIGHTS"


class WeightsError(FrostedError):
    """The weights are missing, unreadable or not a FaceBoxes checkpoint; the message is one line."""


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frosted" / WEIGHTS_FILENAME


def resolve_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """The weights file to use: ``path``, else ``$FROSTED_WEIGHTS``, else the cache. Raises if absent."""
    if path is not None:
        candidate, origin = Path(path), "--weights"
    elif os.environ.get(WEIGHTS_ENV):
        candidate, origin = Path(os.environ[WEIGHTS_ENV]), f"${WEIGHTS_ENV}"
    else:
        candidate, origin = cache_path(), "the cache"
    if candidate.is_dir():
        raise WeightsError(f"{candidate} (from {origin}) is a folder: give the checkpoint file in it, such as "
                           f"{candidate / WEIGHTS_FILENAME}")
    if not candidate.is_file():
        raise WeightsError(
            f"FaceBoxes weights not found at {candidate} (from {origin}); expected {WEIGHTS_FILENAME} "
            f"(sha256 {OFFICIAL_SHA256[:12]}...): pass --weights, set ${WEIGHTS_ENV}, "
            "or run 'frosted weights download'")
    return candidate


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite_real(name: str, tensor: torch.Tensor) -> bool:
    """Finite real numbers: NaN weights would detect nothing, silently. Batch-norm's step counters are unused at
    inference, and overflow a checkpoint saved in half floats."""
    if name.endswith("num_batches_tracked"):
        return not tensor.is_complex()
    return (tensor.is_floating_point() and bool(tensor.isfinite().all())) or tensor.dtype == torch.int64


MAX_CHECKPOINT_BYTES = 64 << 20  # FaceBoxes' weights are 4 MB: a checkpoint past this is not them


def _check_size(file: Path) -> None:
    """Refuse a checkpoint bigger than `MAX_CHECKPOINT_BYTES`, on disk or unpacked: torch's format is a zip,
    and a few hundred kilobytes of it can inflate to gigabytes."""
    size = file.stat().st_size
    try:
        with zipfile.ZipFile(file) as archive:
            size = max(size, sum(entry.file_size for entry in archive.infolist()))
    except (zipfile.BadZipFile, OSError):
        pass  # torch's legacy format, or not a checkpoint at all: torch.load says which
    if size > MAX_CHECKPOINT_BYTES:
        raise WeightsError(f"{file}: {size} bytes unpacked, more than a FaceBoxes checkpoint's "
                           f"{MAX_CHECKPOINT_BYTES}: not these weights")


def load_faceboxes(path: str | os.PathLike[str] | None = None, split: str = DEFAULT_SPLIT) -> FaceBoxes:
    """A FaceBoxes model split at ``split``, in eval mode, with the checkpoint at ``resolve_weights(path)``
    loaded."""
    file = resolve_weights(path)
    _check_size(file)
    try:
        with warnings.catch_warnings():  # torch's own words on a foreign pickle: the error below says it plainly
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt pickle
        raise WeightsError(f"{file}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{file}: expected a state dict of FaceBoxes tensors, got {type(state).__name__}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{file}: expected a state dict of FaceBoxes tensors, named by strings; it holds "
                           "other keys or values")
    model = FaceBoxes(split)
    expected = {k.split(".", 1)[1]: v.shape for k, v in model.state_dict().items()}
    found = {k.removeprefix("module."): v for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong_shape:
        problems = [f"{label} {names[0]}" + (f" (+{len(names) - 1} more)" if len(names) > 1 else "")
                    for label, names in (("missing", missing), ("unexpected", unexpected),
                                         ("wrong shape for", wrong_shape)) if names]
        raise WeightsError(f"{file}: not a FaceBoxes checkpoint: expected {len(expected)} tensors such as "
                           f"conv1.conv.weight; {'; '.join(problems)}")
    if bad := sorted(k for k in expected if not _finite_real(k, found[k])):
        raise WeightsError(f"{file}: not FaceBoxes weights: {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1
                           else "") + " holds values that are not finite real numbers")
    model.load_checkpoint(found)
    return model.eval()


MAX_DOWNLOAD_BYTES = 64 << 20  # the checkpoint is 4 MB: a server sending more is not sending it
MAX_REDIRECTS = 5  # the official URL takes one (GitHub to its raw-file host)
DOWNLOAD_SECONDS = 300.0  # for the whole download, however the server paces it (a drip, endless headers)


def download_weights(url: str = OFFICIAL_URL, destination: Path | None = None,
                     expected_sha256: str = OFFICIAL_SHA256, timeout_s: float = DOWNLOAD_SECONDS) -> Path:
    """Fetch ``url`` into ``destination`` (default: the cache), verifying its sha256 before it lands. At most
    `MAX_DOWNLOAD_BYTES`, within ``timeout_s`` in all; http(s) only; the URL's credentials are never shown."""
    shown = redact_url(url)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise WeightsError(f"{shown}: only http:// and https:// URLs are fetched")
    destination = destination or cache_path()
    if is_stream(destination):  # it is loaded from the saved file before it lands: a device or FIFO holds nothing
        raise WeightsError(f"{destination}: not a regular file; the checkpoint is saved as one")
    check_writable(destination)  # before the download, not after it
    with replacing(destination) as partial:
        try:
            digest = asyncio.run(_fetch(url, shown, partial, timeout_s))
        except aiohttp.TooManyRedirects:
            raise WeightsError(f"download of {shown} failed: more than {MAX_REDIRECTS} redirects") from None
        except aiohttp.ClientResponseError as exc:  # an HTTP status, or an answer that is not HTTP
            first = (exc.message or "").splitlines()[0] if exc.message else ""
            raise WeightsError(f"download of {shown} failed: HTTP {exc.status} {first}".rstrip()) from None
        except TimeoutError:
            raise WeightsError(f"download of {shown} failed: not complete within {timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, TLS, malformed answer, bad URL
            reason = (str(exc) or type(exc).__name__).replace(url, shown).splitlines()[0]
            raise WeightsError(f"download of {shown} failed: {reason}") from None
        # raised inside: the partial file is removed, nothing lands
        if digest != expected_sha256:
            raise WeightsError(f"download of {shown} has sha256 {digest}, expected {expected_sha256}; "
                               "nothing was saved")
        # the official hash always loads; a custom --sha256 may pin a file that is no checkpoint
        try:
            load_faceboxes(partial)
        except WeightsError as exc:
            why = str(exc).split(": ", 1)[-1]  # without the partial file's name
            raise WeightsError(f"download of {shown}: {why}; nothing was saved") from None
    return destination


async def _fetch(url: str, shown: str, into: Path, seconds: float) -> str:
    """``url``'s body (``shown`` in messages) into ``into``; its sha256. The body is taken as sent (no gzip
    decoding: a compressed answer is not the checkpoint, and its sha256 says so, without inflating a bomb)."""
    digest = hashlib.sha256()
    received = 0
    timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session, \
            session.get(url, max_redirects=MAX_REDIRECTS) as response:
        response.raise_for_status()
        if (response.content_length or 0) > MAX_DOWNLOAD_BYTES:
            raise WeightsError(f"download of {shown}: the server announces {response.content_length} "
                               f"bytes, more than a checkpoint's {MAX_DOWNLOAD_BYTES}; nothing was saved")
        with into.open("wb") as file, tqdm(total=response.content_length, unit="B", unit_scale=True,
                                           desc=WEIGHTS_FILENAME) as bar:
            async for block in response.content.iter_chunked(1 << 16):
                received += len(block)
                if received > MAX_DOWNLOAD_BYTES:
                    raise WeightsError(f"download of {shown}: more than a checkpoint's "
                                       f"{MAX_DOWNLOAD_BYTES} bytes; nothing was saved")
                digest.update(block)
                file.write(block)
                bar.update(len(block))
    return digest.hexdigest()


def head_fingerprint(model: FaceBoxes) -> str:
    """sha256 of the head's weights (unfused): a noise profile is valid only for the head it was fitted on.
    A deeper split's head holds more layers, so each split of the same checkpoint has its own."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def clean_fingerprint(model: FaceBoxes) -> str:
    """What clean activations (an agent run with ``--no-noise``) carry on the wire instead of a profile's."""
    return "clean-" + head_fingerprint(model)[:26]
