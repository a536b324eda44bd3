"""Evaluation sets as folds of labelled images: a COCO face set split by image, or FDDB's official folds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesplit.evaluation.coco import LabelledImage, read_coco_faces, split_into_folds, truth_in_image
from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.fddb import FddbImage, read_fddb_folds
from facesplit.images import image_size


@dataclass(frozen=True)
class EvalSet:
    name: str  # printed as "<name>-fold-<k>" and "<name> Dataset Average AP"
    folds: tuple[tuple[LabelledImage, ...], ...]
    fddb_images: tuple[FddbImage, ...] = ()  # FDDB only: the ellipses its official ROC scorer needs
    fold_numbers: tuple[int, ...] = ()  # 1-based; default 1..len(folds)

    def __post_init__(self) -> None:
        if not self.fold_numbers:
            object.__setattr__(self, "fold_numbers", tuple(range(1, len(self.folds) + 1)))

    @property
    def images(self) -> list[LabelledImage]:
        return [image for fold in self.folds for image in fold]

    def fold_name(self, index: int) -> str:
        return f"{self.name}-fold-{self.fold_numbers[index]}"

    def without(self, seen: set[str]) -> EvalSet:
        """The set minus the images named in ``seen`` ("<set>/<key>"); emptied folds are dropped, the
        others keep their numbers so reports stay comparable."""
        kept = [(n, tuple(i for i in fold if f"{self.name}/{i.key}" not in seen))
                for n, fold in zip(self.fold_numbers, self.folds, strict=True)]
        kept = [(n, fold) for n, fold in kept if fold]
        keys = {i.key for _, fold in kept for i in fold}
        return EvalSet(self.name, tuple(f for _, f in kept),
                       tuple(i for i in self.fddb_images if i.path in keys), tuple(n for n, _ in kept))

    def only_fold(self, number: int) -> EvalSet:
        """The set cut down to its fold ``number`` (1-based, as reported), which keeps its number; no folds if
        that one was dropped (`without`)."""
        if number not in self.fold_numbers:
            return EvalSet(self.name, (), (), ())
        fold = self.folds[self.fold_numbers.index(number)]
        keys = {image.key for image in fold}
        return EvalSet(self.name, (fold,), tuple(i for i in self.fddb_images if i.path in keys), (number,))

    def fingerprint(self) -> str:
        """sha256 of the fold split, the images' names and their ground truth: equal for the same set split
        the same way, whichever fold a process evaluates."""
        digest = hashlib.sha256(self.name.encode())
        for number, fold in zip(self.fold_numbers, self.folds, strict=True):
            digest.update(f"\0fold {number}".encode())
            for image in fold:
                digest.update(f"\0{image.key}\0{len(image.boxes)}".encode())
                digest.update(np.ascontiguousarray(image.boxes, dtype=np.float32).tobytes())
        for image in self.fddb_images:
            digest.update(f"\0{image.path}".encode())
            for e in image.ellipses:
                digest.update(repr((e.major_radius, e.minor_radius, e.angle, e.centre_x, e.centre_y)).encode())
        return digest.hexdigest()


def coco_set(labels: Path, images_dir: Path, folds: int = 10, limit: int | None = None,
             name: str | None = None) -> EvalSet:
    images = read_coco_faces(labels, images_dir)[:limit]
    if not images:
        raise DatasetError(f"{labels}: no images to evaluate")
    if not any(len(image.boxes) for image in images):  # precision over no faces: an AP of nan, exit 0, otherwise
        raise DatasetError(f"{labels}: no face in the {len(images)} images to evaluate: AP needs faces to find")
    split = split_into_folds(images, folds)
    return EvalSet(name or labels.absolute().parent.name, tuple(tuple(f) for f in split))


def fddb_set(root: Path, limit: int | None = None, need_images: bool = True) -> EvalSet:
    """FDDB laid out as ``root/FDDB-folds/`` plus the images under ``root/originalPics/`` (or ``root/``).

    Ground-truth boxes for AP are the ellipses' bounding boxes, clipped to the image where it is there; the
    official ROC uses the ellipses. Scoring saved detections needs only the annotations (``need_images=False``).
    """
    folds = read_fddb_folds(root / "FDDB-folds")
    pictures = root / "originalPics" if (root / "originalPics").is_dir() else root
    remaining = limit if limit is not None else sum(len(f.images) for f in folds)
    chosen: list[tuple[LabelledImage, ...]] = []
    fddb_images: list[FddbImage] = []
    for fold in folds:
        kept = fold.images[:max(remaining, 0)]
        remaining -= len(kept)
        if not kept:
            continue
        labelled = []
        for image in kept:
            path = pictures / f"{image.path}.jpg"
            if need_images and not path.is_file():
                raise DatasetError(f"{path}: FDDB image listed in {fold.name}.txt not found "
                                   f"(expected the images under {pictures})")
            boxes = np.array([e.bbox() for e in image.ellipses], dtype=np.float32).reshape(-1, 4)
            if path.is_file():  # the ellipses' boxes often leave the image; without it, they stay as annotated
                boxes = truth_in_image(boxes, *image_size(path))
            labelled.append(LabelledImage(image.path, path, boxes))
        chosen.append(tuple(labelled))
        fddb_images.extend(kept)
    return EvalSet("FDDB", tuple(chosen), tuple(fddb_images))
