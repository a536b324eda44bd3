"""Reading photos as the model wants them: 8-bit BGR, grey replicated to three channels, and never more pixels
than a limit checked from the file's header before anything is decoded."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facesplit.errors import FrostedError

MAX_PIXELS_VARIABLE = "FROSTED_MAX_IMAGE_PIXELS"
# 2**27 = 134 MP (a 16384x8192 panorama; 0.4 GB as BGR): far above any camera photo, far below OpenCV's own
# 2**30, past which it raises instead of decoding, and an image that big already costs 3 GB before resizing.
DEFAULT_MAX_PIXELS = 1 << 27


class ImageError(FrostedError):
    """A file that is missing, not a decodable image, or larger than the pixel limit."""


def max_image_pixels() -> int:
    """The pixel limit: $FROSTED_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit() or int(text) <= 0:
        raise ImageError(f"{MAX_PIXELS_VARIABLE}={text[:24]!r}: expected a positive number of pixels")
    return int(text)


def not_a_file(path: Path, wanted: str = "image") -> str:
    """What ``path`` is instead of a regular file (a ``wanted``): for a one-line error."""
    one = f"{'an' if wanted[0] in 'aeiou' else 'a'} {wanted}"
    if path.is_dir():
        return f"a folder, not {one}"
    if path.is_symlink():
        return "a link to nothing (or to itself)"
    if path.exists():  # a FIFO or a device: reading it could block, or never end
        return f"not a regular file, so not {one}"
    return f"{wanted} not found"


def frames_too_large(name: str, width: int, height: int, limit: int) -> str | None:
    """Why ``width`` x ``height`` frames of the video or camera ``name`` are refused (more than ``limit`` pixels,
    the photos' limit), or None. Checked before a frame becomes a BGR array (3 bytes a pixel, then copies): one
    declaring 65,000 x 65,000 would otherwise take gigabytes per frame."""
    if width * height <= limit:
        return None
    return f"{name}: {width}x{height} frames, more than the {limit} pixels allowed ({MAX_PIXELS_VARIABLE})"


def read_image_bgr(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """``path`` decoded as BGR; ``max_pixels`` defaults to `max_image_pixels()`."""
    if not path.is_file():
        raise ImageError(f"{path}: {not_a_file(path)}")
    limit = max_image_pixels() if max_pixels is None else max_pixels
    size, pixels = _header_size(path)
    if not pixels:
        # a format whose size is unknown until decoded could decode to gigabytes: it is not decoded
        raise ImageError(f"{path}: not a readable image (no image format whose size its header gives)")
    if pixels > limit:
        raise ImageError(f"{path}: {size} pixels, more than the {limit} allowed ({MAX_PIXELS_VARIABLE})")
    try:
        # At most what its pixels could take (16 bytes each: 16-bit RGBA, uncompressed) and headers: what follows
        # (a motion photo's video, gigabytes of padding) is never read
        with open(path, "rb") as file:
            data = file.read(pixels * 16 + (16 << 20))
        if size and _is_truncated_jpeg(data):  # OpenCV would decode it, grey below the cut, and only warn on stderr
            raise ImageError(f"{path}: a truncated JPEG (it ends before its end-of-image marker)")
        # decoded from its bytes, not by name: OpenCV crashes the process on a file name that is not UTF-8 (the
        # same pixels as cv2.imread, EXIF rotation included); grey and palette images come back as 3-channel BGR
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except cv2.error as exc:  # a format PIL cannot size, over OpenCV's own limit (or an assertion of a codec)
        raise ImageError(f"{path}: not a readable image (OpenCV: {_last_line(str(exc))})") from None
    if image is None:
        raise ImageError(f"{path}: not a readable image (OpenCV could not decode it)")
    return image


def write_image(path: Path, image: np.ndarray) -> None:
    """``image`` (BGR) encoded as ``path``'s suffix says and written there, whole or not at all; ImageError when
    OpenCV has no encoder for that suffix or the file cannot be written. Encoded here and written by Python: OpenCV
    crashes the process on a file name that is not UTF-8."""
    from facesplit.outputs import OutputError, write_bytes

    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"{path}: OpenCV cannot write a {path.suffix or 'suffix-less'} image")
    try:
        write_bytes(path, encoded.tobytes())
    except OutputError as exc:
        raise ImageError(str(exc)) from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image at ``path``: from its header alone when PIL reads the format, else decoded
    (within `read_image_bgr`'s limits)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the size is read, not the pixels
            with Image.open(path) as image:
                return image.size
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        height, width = read_image_bgr(path).shape[:2]
        return width, height


def _header_size(path: Path) -> tuple[str, int]:
    """("WxH", pixels) from the file's header alone (PIL opens lazily); ("", 0) when it cannot be told."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit, not PIL's, decides
            with Image.open(path) as image:
                width, height = image.size
        return f"{width}x{height}", width * height
    except Image.DecompressionBombError as exc:  # more than twice PIL's limit: it gives the count, not the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return str(count), count
    except (OSError, ValueError, SyntaxError):  # not a format PIL reads: the two OpenCV reads whose header we parse
        return _opencv_only_header_size(path)


# Radiance HDR ends its text header with a resolution line such as "-Y 1080 +X 1920"; PFM's second line is
# "WIDTH HEIGHT". Both are formats OpenCV decodes and PIL cannot size, and both decode to float32 pixels: a small
# file can claim a frame of gigabytes.
_RADIANCE_SIZE = re.compile(rb"\n[-+]([YX]) (\d{1,9}) [-+]([YX]) (\d{1,9})\n")
_PFM_SIZE = re.compile(rb"\APf?F?\s+(\d{1,9})\s+(\d{1,9})\s", re.IGNORECASE)


def _opencv_only_header_size(path: Path) -> tuple[str, int]:
    """("WxH", pixels) of a Radiance HDR or PFM file from its header; ("", 0) for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 << 10)
    except OSError:
        return "", 0
    if head.startswith((b"#?RADIANCE", b"#?RGBE")) and (found := _RADIANCE_SIZE.search(head)):
        sizes = {found.group(1): int(found.group(2)), found.group(3): int(found.group(4))}
        width, height = sizes.get(b"X", 0), sizes.get(b"Y", 0)
    elif head[:2] in (b"PF", b"Pf") and (found := _PFM_SIZE.match(head)):
        width, height = int(found.group(1)), int(found.group(2))
    else:
        return "", 0
    return f"{width}x{height}", width * height


_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM and RST0-7: markers without a length


def _is_truncated_jpeg(data: bytes) -> bool:
    """Whether ``data`` is a JPEG that ends before its end-of-image marker. Walks the main image's markers:
    segments by their lengths (an EXIF thumbnail, with its own end marker, is inside one), scans by the next
    marker (0xFF not followed by 0x00), so data after the end (a motion photo's video) is never looked at."""
    if not data.startswith(b"\xff\xd8"):
        return False
    position = 2
    while position + 1 < len(data):
        if data[position] != 0xFF:  # entropy-coded data (after SOS): on to the next real marker
            position = data.find(b"\xff", position)
            if position < 0:
                return True
            continue
        marker = data[position + 1]
        if marker == 0xD9:  # EOI
            return False
        if marker in (0x00, 0xFF) or marker in _JPEG_STANDALONE:  # stuffed byte, fill byte, restart marker
            position += 1 if marker == 0xFF else 2
            continue
        if position + 3 >= len(data):
            return True
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "unknown error"


def sample_image(name: str) -> np.ndarray:
    """A colour photo that scikit-image ships (``astronaut``, ``coffee``, ...) as BGR: no download needed."""
    import skimage.data  # imported here: slow to import and only the demo needs it

    loader = getattr(skimage.data, name, None)
    if loader is None or name.startswith("_") or not callable(loader):
        raise ImageError(f"skimage:{name}: scikit-image ships no photo of that name (try 'astronaut')")
    try:
        rgb = np.asarray(loader())
    except Exception as exc:  # some loaders need an optional download (pooch): refuse plainly
        raise ImageError(f"skimage:{name}: not available offline ({type(exc).__name__})") from None
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise ImageError(f"skimage:{name}: not an 8-bit photo")
    if rgb.ndim == 2:
        return cv2.cvtColor(rgb, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR)
