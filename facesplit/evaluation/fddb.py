"""FDDB: read the official fold files, and score detections the way FDDB's own ``evaluate`` program does.

The scorer reproduces Vidit Jain's ``evaluate`` (``evaluate.cpp``, ``Matching.cpp``, ``Results.cpp``,
``EllipseR.cpp``, ``RectangleR.cpp`` of the FDDB evaluation code):

* Regions are rasterised as OpenCV draws them there: the annotated ellipse with ``cv::ellipse`` (centre
  rounded, radii truncated to whole pixels, angle in degrees), the detected box as a filled rectangle
  between its two rounded corners, both ends included. The overlap of a pair is |A and D| / |A or D| in
  pixels. The official program draws on the image, which clips both regions to it; pass ``image_sizes``
  to do the same, otherwise the canvas is unbounded.
* For each image and each of its unique detection scores ``t`` (ascending), the detections with
  score >= t are matched to the annotations by a maximum-weight assignment on the *raw* overlap (there is
  no 0.5 cut before the matching); a matched pair with overlap > 0.5 is a discrete true positive, every
  matched pair adds its overlap to the continuous true positives, and every other detection with
  score >= t (including matched ones at <= 0.5) is a false positive. An image without detections gives a
  single result at threshold +inf.
* The per-image results are merged over the union of all images' unique scores (``Results::merge``): at
  a threshold t each image contributes its result at its smallest own score >= t, or nothing but its
  faces if it has none. The true positive rate is divided by the number of annotated faces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.paths import stays_inside

FOLD_NAMES = tuple(f"FDDB-fold-{i:02d}" for i in range(1, 11))
_ELLIPSE_FIELDS = "'major minor angle cx cy 1'"


@dataclass(frozen=True)
class Ellipse:
    """One annotated face as FDDB writes it: radii in pixels, ``angle`` in radians (major axis vs. x)."""

    major_radius: float
    minor_radius: float
    angle: float
    centre_x: float
    centre_y: float

    def bbox(self) -> tuple[float, float, float, float]:
        """Exact axis-aligned bounding box (x1, y1, x2, y2) of the rotated ellipse."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        half_w = math.hypot(self.major_radius * cos, self.minor_radius * sin)
        half_h = math.hypot(self.major_radius * sin, self.minor_radius * cos)
        cx, cy = self.centre_x, self.centre_y
        return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


@dataclass(frozen=True)
class FddbImage:
    path: str  # as in the fold files, e.g. "2002/08/11/big/img_591" (no extension)
    ellipses: tuple[Ellipse, ...]


@dataclass(frozen=True)
class FddbFold:
    name: str  # the official file stem, "FDDB-fold-01" ... "FDDB-fold-10"
    images: tuple[FddbImage, ...]


# ----------------------------------------------------------------------------------------------- reading


def read_fddb_folds(folds_dir: Path) -> list[FddbFold]:
    """Read the ten official folds from ``folds_dir`` (``FDDB-fold-XX.txt`` + ``-ellipseList.txt``).

    Raises ``DatasetError`` (one line: path, line number, what is wrong) on a missing folder or file, a
    malformed line, or an image list that disagrees with its ellipse list.
    """
    folds_dir = Path(folds_dir)
    if not folds_dir.is_dir():
        raise DatasetError(f"{folds_dir}: FDDB folds folder not found")
    return [_read_fold(folds_dir, name) for name in FOLD_NAMES]


def _read_fold(folds_dir: Path, name: str) -> FddbFold:
    list_path = folds_dir / f"{name}.txt"
    ellipse_path = folds_dir / f"{name}-ellipseList.txt"
    listed = _read_image_list(list_path)
    images, path_lines = _read_ellipse_list(ellipse_path)
    # The two files are written together; a disagreement means one of them is from another release or
    # was edited, and the pairing of image names to faces can no longer be trusted.
    for (list_line, listed_path), image, ellipse_line in zip(listed, images, path_lines, strict=False):
        if listed_path != image.path:
            raise DatasetError(f"{ellipse_path}:{ellipse_line}: image '{image.path}' but {list_path}:"
                               f"{list_line} lists '{listed_path}'")
    if len(images) > len(listed):
        raise DatasetError(f"{ellipse_path}:{path_lines[len(listed)]}: image '{images[len(listed)].path}' "
                           f"is not in {list_path} (which lists {len(listed)} images)")
    if len(listed) > len(images):
        list_line, listed_path = listed[len(images)]
        raise DatasetError(f"{list_path}:{list_line}: image '{listed_path}' has no entry in {ellipse_path}")
    return FddbFold(name=name, images=tuple(images))


def _lines(path: Path) -> list[str]:
    """The file's lines, right-stripped, with trailing blank lines dropped."""
    if not path.is_file():
        raise DatasetError(f"{path}: FDDB fold file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read as text: {exc}") from None
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _shown(text: str, limit: int = 60) -> str:
    return f"'{text[:limit]}{' ...' if len(text) > limit else ''}'"


def _read_image_list(path: Path) -> list[tuple[int, str]]:
    """(line number, image path) for each line of ``FDDB-fold-XX.txt``."""
    listed = []
    for number, line in enumerate(_lines(path), start=1):
        if len(line.split()) != 1:
            raise DatasetError(f"{path}:{number}: expected one image path like '2002/08/11/big/img_591', "
                               f"got {_shown(line)}")
        if not stays_inside(line.strip()):
            raise DatasetError(f"{path}:{number}: image path {_shown(line.strip())} must stay inside the "
                               "image folder (relative, without '..')")
        listed.append((number, line.strip()))
    return listed


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_ellipse_list(path: Path) -> tuple[list[FddbImage], list[int]]:
    """The images of ``FDDB-fold-XX-ellipseList.txt`` and the line number of each image's path line."""
    lines = _lines(path)
    images: list[FddbImage] = []
    path_lines: list[int] = []
    i = 0
    while i < len(lines):
        path_line = i + 1
        tokens = lines[i].split()
        if len(tokens) != 1 or _is_number(tokens[0]):
            hint = ""
            if images and len(tokens) == 6 and all(_is_number(t) for t in tokens):
                hint = f" (more ellipse lines than the count for '{images[-1].path}' says)"
            raise DatasetError(f"{path}:{path_line}: expected an image path like '2002/08/11/big/img_591', "
                               f"got {_shown(lines[i])}{hint}")
        image_path = tokens[0]
        i += 1
        if i == len(lines):
            raise DatasetError(f"{path}:{path_line}: image '{image_path}' has no face-count line")
        count_line = i + 1
        try:
            count = int(lines[i])
        except ValueError:
            count = -1
        if count < 0:
            raise DatasetError(f"{path}:{count_line}: expected the number of faces in '{image_path}' "
                               f"(a non-negative integer), got {_shown(lines[i])}")
        i += 1
        ellipses = []
        for found in range(count):
            # A line that is a lone non-number is the next image's path: the count promised more faces.
            if i == len(lines) or (len(lines[i].split()) == 1 and not _is_number(lines[i].split()[0])):
                raise DatasetError(f"{path}:{count_line}: count says {count} faces for '{image_path}' but "
                                   f"only {found} ellipse lines follow")
            ellipses.append(_parse_ellipse(lines[i], path, i + 1))
            i += 1
        images.append(FddbImage(path=image_path, ellipses=tuple(ellipses)))
        path_lines.append(path_line)
    return images, path_lines


MAX_RADIUS = 4096  # pixels: an 8K frame's whole height; a radius of 5000 had cost 2.3 GB to score


def _parse_ellipse(line: str, path: Path, number: int) -> Ellipse:
    tokens = line.split()
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        values = []
    if len(tokens) != 6 or len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise DatasetError(f"{path}:{number}: expected 6 numbers {_ELLIPSE_FIELDS}, got {_shown(line)}")
    major, minor, angle, cx, cy, _ = values
    if major < 0 or minor < 0:
        raise DatasetError(f"{path}:{number}: negative ellipse radius in {_shown(line)}")
    if max(major, minor) > MAX_RADIUS:  # its overlaps are counted in pixels: the mask grows with the radius squared
        raise DatasetError(f"{path}:{number}: an ellipse radius past {MAX_RADIUS} pixels in {_shown(line)}; "
                           "no face of an FDDB photo (at most a few hundred pixels wide) is that large")
    return Ellipse(major_radius=major, minor_radius=minor, angle=angle, centre_x=cx, centre_y=cy)


# ----------------------------------------------------------------------------------------------- overlap


def _ellipse_mask(ellipse: Ellipse, image_size: tuple[int, int] | None) -> tuple[np.ndarray, int, int]:
    """The filled ellipse as ``EllipseR::display`` draws it, on a window just big enough to hold it (and
    inside the image, if its size is given); returns the mask and the window's top-left pixel."""
    # cvPointFrom32f(cvPoint2D32f(cx, cy)): through float32, then rounded (ties to even, like cvRound).
    cx, cy = (int(v) for v in np.rint(np.array([ellipse.centre_x, ellipse.centre_y], dtype=np.float32)))
    # cvSize((int) ra, (int) rb): radii truncated.
    ra, rb = int(ellipse.major_radius), int(ellipse.minor_radius)
    # EllipsesSingleImage stores (pi - t) * 180 / pi and display() draws at 180 minus that; OpenCV then
    # rounds the angle to whole degrees. The same double arithmetic keeps the rounding identical.
    degrees = 180.0 - (math.pi - ellipse.angle) * 180.0 / math.pi
    x1, y1, x2, y2 = Ellipse(ra, rb, ellipse.angle, cx, cy).bbox()
    # OpenCV's polygon approximation and fill can reach a pixel past the true outline: 2 px of margin.
    left, top = math.floor(x1) - 2, math.floor(y1) - 2
    right, bottom = math.ceil(x2) + 2, math.ceil(y2) + 2
    if image_size is not None:
        width, height = image_size
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, width - 1), min(bottom, height - 1)
    if right < left or bottom < top:
        return np.zeros((0, 0), dtype=np.uint8), left, top
    mask = np.zeros((bottom - top + 1, right - left + 1), dtype=np.uint8)
    # Shifting the centre by whole pixels moves OpenCV's drawing by exactly those pixels.
    cv2.ellipse(mask, (cx - left, cy - top), (ra, rb), degrees, 0, 360, 1, thickness=-1)
    return mask, left, top


def overlap_matrix(ellipses: Sequence[Ellipse], boxes: np.ndarray,
                   image_size: tuple[int, int] | None = None) -> np.ndarray:
    """(len(ellipses), len(boxes)) region overlap |E and B| / |E or B| in pixels, as FDDB's ``evaluate``
    computes it. ``boxes`` is (N, >=4) ``[x1, y1, x2, y2, ...]``; ``image_size`` (width, height) clips the
    regions to the image as the official program does."""
    boxes = np.asarray(boxes, dtype=np.float64)
    overlaps = np.zeros((len(ellipses), len(boxes)))
    if len(ellipses) == 0 or len(boxes) == 0:
        return overlaps
    boxes = boxes.reshape(len(boxes), -1)
    # RectangleR::display fills between cvPointFrom32f of the two corners, both included.
    corners = np.rint(boxes[:, :4].astype(np.float32)).astype(np.int64)
    c0, c1 = np.minimum(corners[:, 0], corners[:, 2]), np.maximum(corners[:, 0], corners[:, 2])
    r0, r1 = np.minimum(corners[:, 1], corners[:, 3]), np.maximum(corners[:, 1], corners[:, 3])
    if image_size is not None:
        width, height = image_size
        c0, c1 = np.maximum(c0, 0), np.minimum(c1, width - 1)
        r0, r1 = np.maximum(r0, 0), np.minimum(r1, height - 1)
    box_area = np.maximum(c1 - c0 + 1, 0) * np.maximum(r1 - r0 + 1, 0)
    for row, ellipse in enumerate(ellipses):
        mask, left, top = _ellipse_mask(ellipse, image_size)
        h, w = mask.shape
        # Integral image: each box's intersection with the ellipse is then four look-ups.
        integral = np.zeros((h + 1, w + 1), dtype=np.int32)
        integral[1:, 1:] = mask.cumsum(axis=0, dtype=np.int32).cumsum(axis=1)
        a0 = np.minimum(np.maximum(c0 - left, 0), w)
        a1 = np.minimum(np.maximum(c1 - left + 1, a0), w)
        b0 = np.minimum(np.maximum(r0 - top, 0), h)
        b1 = np.minimum(np.maximum(r1 - top + 1, b0), h)
        inter = integral[b1, a1] - integral[b0, a1] - integral[b1, a0] + integral[b0, a0]
        union = int(integral[h, w]) + box_area - inter
        overlaps[row] = np.divide(inter, union, out=np.zeros(len(boxes)), where=union > 0)
    return overlaps


# ----------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class FddbRoc:
    """FDDB ROC curves. Each is (K, 3) ``[false positives, true positive rate, score threshold]``, one row
    per threshold, by decreasing threshold, so FP ascending (the official matching maximises the raw
    overlap, which can, rarely, let FP dip as a threshold drops). ``continuous`` has the same FP and
    thresholds, with the summed overlap of the matched pairs over the number of faces as its rate."""

    discrete: np.ndarray
    continuous: np.ndarray

    def true_positive_rate_at(self, false_positives: int = 1000, continuous: bool = False) -> float:
        """The usual one-number summary: the highest true positive rate with at most ``false_positives``."""
        curve = self.continuous if continuous else self.discrete
        rates = curve[curve[:, 0] <= false_positives, 1]
        return float(rates.max()) if rates.size else 0.0


def _image_results(overlaps: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image's results at each of its unique scores (ascending): thresholds and rows of
    (discrete TP, continuous TP, FP)."""
    thresholds = np.unique(scores)
    n_valid = len(scores) - np.searchsorted(np.sort(scores), thresholds, side="left")
    results = np.zeros((len(thresholds), 3))
    results[:, 2] = n_valid
    # A detection that touches no face never enters the matching (Matching::runHungarian drops it), so
    # the matching only changes at the scores of the detections that touch one.
    touching = overlaps.sum(axis=0) > 0
    touching_scores = scores[touching]
    touching_overlaps = overlaps[:, touching]
    levels = np.unique(touching_scores)
    matched = np.zeros((len(levels), 2))
    for k, level in enumerate(levels):
        candidates = touching_overlaps[:, touching_scores >= level]
        rows, cols = linear_sum_assignment(candidates, maximize=True)
        pairs = candidates[rows, cols]
        pairs = pairs[pairs > 0]  # the assignment may pad with zero-overlap pairs; those are no match
        matched[k] = np.count_nonzero(pairs > 0.5), pairs.sum()
    # The detections valid at threshold t that touch a face are exactly those valid at the smallest
    # touching score >= t.
    at = np.searchsorted(levels, thresholds, side="left")
    has = at < len(levels)
    results[has, :2] = matched[at[has]]
    results[:, 2] -= results[:, 0]  # FP: every valid detection that is not a discrete true positive
    return thresholds, results


@dataclass(frozen=True, eq=False)
class RocSteps:
    """Some images' share of the FDDB ROC, in image order: each image's result steps at its own unique scores
    (``thresholds`` (K,), ``changes`` (K, 3) of discrete TP, continuous TP, FP), its faces, and whether any
    image had no detections. `roc_from_steps` sums the shares of several folds exactly as `fddb_roc` sums
    all their images at once."""

    thresholds: np.ndarray
    changes: np.ndarray
    faces: int
    any_without: bool


def roc_steps(detections: Mapping[str, np.ndarray], images: Sequence[FddbImage], *,
              image_sizes: Mapping[str, tuple[int, int]] | None = None) -> RocSteps:
    """The per-image steps `fddb_roc` merges (arguments as there)."""
    known = {image.path for image in images}
    unknown = [path for path in detections if path not in known]
    if unknown:
        # Most likely a naming mismatch (an extension, a prefix); silently ignoring it would score 0.
        raise ValueError(f"detections for {len(unknown)} images not among the {len(known)} scored, "
                         f"e.g. '{unknown[0]}'")
    all_thresholds, all_changes = [], []
    any_without = False
    for image in images:
        dets = np.asarray(detections.get(image.path, np.zeros((0, 5))), dtype=np.float64)
        if dets.size == 0:
            any_without = True
            continue
        if dets.ndim != 2 or dets.shape[1] != 5 or not np.isfinite(dets).all():
            raise ValueError(f"detections['{image.path}'] must be a finite (N, 5) array "
                             f"[x1, y1, x2, y2, score], got shape {dets.shape}")
        size = None if image_sizes is None else image_sizes[image.path]
        thresholds, results = _image_results(overlap_matrix(image.ellipses, dets, size), dets[:, 4])
        # As a function of the global threshold t, the image contributes results[k] for t in
        # (thresholds[k-1], thresholds[k]] and nothing above its top score: store the step at each own
        # threshold, so the merged result at t is the sum of the steps at thresholds >= t.
        all_thresholds.append(thresholds)
        all_changes.append(results - np.vstack([results[1:], np.zeros((1, 3))]))
    return RocSteps(np.concatenate(all_thresholds or [np.zeros(0)]),
                    np.concatenate(all_changes or [np.zeros((0, 3))]),
                    sum(len(image.ellipses) for image in images), any_without)


def roc_from_steps(parts: Sequence[RocSteps]) -> FddbRoc:
    """The ROC of the images of ``parts`` (in that order), as `fddb_roc` computes it for all of them."""
    n_faces = sum(part.faces for part in parts)
    any_without = any(part.any_without for part in parts)
    thresholds = np.concatenate([part.thresholds for part in parts] or [np.zeros(0)])
    if len(thresholds):
        changes = np.concatenate([part.changes for part in parts])
        order = np.argsort(-thresholds, kind="stable")
        thresholds, changes = thresholds[order], np.cumsum(changes[order], axis=0)
        # Descending: the merged result at a threshold is the running sum at its last occurrence.
        last = np.flatnonzero(np.append(thresholds[1:] != thresholds[:-1], True))
        thresholds, totals = thresholds[last], changes[last]
    else:
        thresholds, totals = np.zeros(0), np.zeros((0, 3))
    if any_without:
        # An image without detections is one result at threshold DBL_MAX: nothing found, no false alarm.
        thresholds = np.concatenate([[np.inf], thresholds])
        totals = np.vstack([np.zeros((1, 3)), totals])
    false_pos = totals[:, 2]  # whole counts: their float64 sums are exact
    disc_rate = totals[:, 0] / n_faces if n_faces else np.zeros(len(thresholds))
    cont_rate = totals[:, 1] / n_faces if n_faces else np.zeros(len(thresholds))
    return FddbRoc(discrete=np.column_stack([false_pos, disc_rate, thresholds]),
                   continuous=np.column_stack([false_pos, cont_rate, thresholds]))


def fddb_roc(detections: Mapping[str, np.ndarray], images: Sequence[FddbImage], *,
             image_sizes: Mapping[str, tuple[int, int]] | None = None) -> FddbRoc:
    """Score detections on ``images`` as FDDB's ``evaluate`` does (discrete and continuous ROC).

    ``detections[path]`` is an (N, 5) array ``[x1, y1, x2, y2, score]`` in image pixels (the official
    detection file writes ``x1 y1 x2-x1 y2-y1 score``); a missing key means no detections.
    ``image_sizes[path]`` = (width, height), if given, clips regions to the image like the official program.
    """
    return roc_from_steps([roc_steps(detections, images, image_sizes=image_sizes)])
