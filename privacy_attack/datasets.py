"""The photos an attack is measured on: victims with identities, and the attacker's own public photos."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesplit.evaluation.coco import read_coco_faces
from facesplit.evaluation.errors import DatasetError
from facesplit.images import ImageError, not_a_file, read_image_bgr, sample_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Photo:
    """One photo: ``identity`` names the person shown (a photo with no known match is its own identity)."""

    key: str
    image: np.ndarray  # (H, W, 3) uint8 BGR, full resolution
    identity: str
    # True when the identity is known from labels (the photo is in some labelled pair). The unlabelled set's
    # pairs file covers 18 of its 49 photos; dlib puts 78 unlisted pairs among the other 31 closer than its
    # same-person threshold (0.6), so "not in a Yes pair" does not mean "nobody else": re-identification is
    # scored on labelled photos only.
    labelled: bool = False


PAIR_COLUMNS = ("file_x", "file_y", "Decision")


def read_pairs(pairs_csv: Path) -> list[tuple[str, str, bool]]:
    """(file, file, same person) for each row of an identity-pairs CSV (``file_x,file_y,Decision``; Decision
    Yes or No); a file that is not one is a one-line DatasetError naming the row."""
    if not pairs_csv.is_file():
        raise DatasetError(f"{pairs_csv}: {not_a_file(pairs_csv, 'identity pairs CSV')}")
    try:
        with pairs_csv.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(PAIR_COLUMNS) <= set(reader.fieldnames):
                raise DatasetError(f"{pairs_csv}: expected the columns {', '.join(PAIR_COLUMNS)}, got "
                                 f"{', '.join(reader.fieldnames or []) or 'none'}")
            pairs = []
            for row in reader:
                if any(not isinstance(row.get(column), str) for column in PAIR_COLUMNS):
                    raise DatasetError(f"{pairs_csv}:{reader.line_num}: a row without all of "
                                     f"{', '.join(PAIR_COLUMNS)}")
                pairs.append((row["file_x"].strip(), row["file_y"].strip(), row["Decision"].strip().lower() == "yes"))
            return pairs
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{pairs_csv}: not UTF-8 text, as a CSV of pairs is (byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{pairs_csv}: not a readable CSV ({exc})") from None


def labelled_files(pairs: list[tuple[str, str, bool]]) -> set[str]:
    """The files that appear in any pair (Yes or No): those whose identity is known."""
    return {file for a, b, _ in pairs for file in (a, b)}


def identities_from_pairs(pairs: list[tuple[str, str, bool]], files: list[str]) -> dict[str, str]:
    """file -> identity: connected components of the ``Decision == Yes`` pairs (``file_x,file_y,Decision``).

    Same-person is transitive, so a chain of Yes pairs is one person even where the pair between its ends
    was never labelled. Files in no Yes pair are their own identity; an identity is named after its
    alphabetically first file, so the naming is stable.
    """
    parent = {f: f for f in files}

    def root(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    for a, b, same in pairs:
        if not same or a not in parent or b not in parent:
            continue
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {f: root(f) for f in files}


def read_unlabelled(folder: Path, pairs_csv: Path | None = None) -> list[Photo]:
    """Every image in ``folder`` (sorted by name) with identities from ``identity_pairs.csv`` if present."""
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs_csv = pairs_csv or folder / "identity_pairs.csv"
    if not os.path.lexists(pairs_csv):  # no pairs: every photo its own person; anything else must be a pairs CSV
        return [Photo(f, read_image_bgr(folder / f), f) for f in files]
    pairs = read_pairs(pairs_csv)
    identity = identities_from_pairs(pairs, files)
    known = labelled_files(pairs)
    return [Photo(f, read_image_bgr(folder / f), identity[f], f in known) for f in files]


def read_coco_photos(labels: Path, images_dir: Path) -> list[Photo]:
    """The photos of a COCO face set; each is its own identity (COCO labels say nothing about who)."""
    return [Photo(item.key, read_image_bgr(item.path), item.key) for item in read_coco_faces(labels, images_dir)]


def read_folder(folder: Path) -> list[Photo]:
    """Any folder of images (the attacker's public photos need no labels at all)."""
    return [Photo(p.name, read_image_bgr(p), p.name)
            for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


# Colour photos that ship with scikit-image (no download): MIT+CMU is all greyscale scans, and a decoder
# that never saw colour cannot give colour back. Only astronaut shows a face; the rest teach colour/texture.
SKIMAGE_COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat")


def read_skimage_photos(names: tuple[str, ...] = SKIMAGE_COLOUR_PHOTOS) -> list[Photo]:
    photos = []
    for name in names:
        try:
            photos.append(Photo(f"skimage:{name}", sample_image(name), f"skimage:{name}"))
        except ImageError:
            continue  # an older scikit-image without that photo: the set is a convenience, not a contract
    return photos


def attacker_photos(shared: Path, colour_repeats: int = 4) -> list[Photo]:
    """The attacker's public photos: MIT+CMU (disjoint from every victim set) plus scikit-image's colour
    photos, the latter listed ``colour_repeats`` times so colour is not drowned out by 100 greyscale scans
    (each listing gets different random crops in the decoder's bank)."""
    mitcmu = shared / "data" / "faces" / "mitcmu"
    return read_coco_photos(mitcmu / "labels.json", mitcmu / "images") + read_skimage_photos() * colour_repeats
