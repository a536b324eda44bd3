"""Reading photos as the model wants them: 8-bit BGR, grey replicated to three channels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facesplit.errors import FrostedError


class ImageError(FrostedError):
    """A file that is missing or not a decodable image."""


def read_image_bgr(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError(f"{path}: image not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey and palette images come back as 3-channel BGR
    if image is None:
        raise ImageError(f"{path}: not a readable image (OpenCV could not decode it)")
    return image


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
