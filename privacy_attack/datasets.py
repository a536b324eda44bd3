"""The photos an attack is measured on: victims with identities, and the attacker's own public photos."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesplit.evaluation.coco import read_coco_faces
from facesplit.images import read_image_bgr

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Photo:
    """One photo: ``identity`` names the person shown (a photo with no known match is its own identity)."""

    key: str
    image: np.ndarray  # (H, W, 3) uint8 BGR, full resolution
    identity: str


def identities_from_pairs(pairs_csv: Path, files: list[str]) -> dict[str, str]:
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

    with pairs_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            a, b = row["file_x"].strip(), row["file_y"].strip()
            if row["Decision"].strip().lower() != "yes" or a not in parent or b not in parent:
                continue
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {f: root(f) for f in files}


def read_unlabelled(folder: Path, pairs_csv: Path | None = None) -> list[Photo]:
    """Every image in ``folder`` (sorted by name) with identities from ``identity_pairs.csv`` if present."""
    files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs_csv = pairs_csv or folder / "identity_pairs.csv"
    identity = identities_from_pairs(pairs_csv, files) if pairs_csv.is_file() else {f: f for f in files}
    return [Photo(f, read_image_bgr(folder / f), identity[f]) for f in files]


def read_coco_photos(labels: Path, images_dir: Path) -> list[Photo]:
    """The photos of a COCO face set; each is its own identity (COCO labels say nothing about who)."""
    return [Photo(item.key, read_image_bgr(item.path), item.key) for item in read_coco_faces(labels, images_dir)]


def read_folder(folder: Path) -> list[Photo]:
    """Any folder of images (the attacker's public photos need no labels at all)."""
    return [Photo(p.name, read_image_bgr(p), p.name)
            for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
