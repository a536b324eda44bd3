"""Crops kept on disk between runs: the attacker's 27,456 placed faces cost tens of minutes of head passes on a
CPU, and the crops are clean (noise is drawn on them later), so every profile at a split, fitted today or next
month, is attacked on the same crops without paying for them again.

The key covers everything a crop depends on: the head's weights, each face's photo (its content), box and
descriptor, the scenes, the face size, the seed and every placement setting, and `LAYOUT` (bumped whenever
the way faces are placed or cropped changes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from privacy_attack.crops import CropSet
from privacy_attack.descriptors import DescribedFace, cache_folder
from privacy_attack.scene import Backgrounds

LAYOUT = 1


def crops_folder() -> Path:
    return cache_folder().parent / "crops"


def crops_key(head: nn.Module, faces: Sequence[DescribedFace], backgrounds: Backgrounds, **settings: object) -> str:
    digest = hashlib.sha256(f"layout {LAYOUT} {sorted(settings.items())}".encode())
    for name, tensor in sorted(head.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    for scene in backgrounds.scenes:
        digest.update(hashlib.sha256(scene.tobytes()).digest())
    for face in faces:
        digest.update(hashlib.sha256(face.photo.path.read_bytes()).digest())
        digest.update(face.box.tobytes())
        digest.update(face.descriptor.tobytes())
    return digest.hexdigest()[:24]


def load_or_make(folder: Path | None, key: str, make: Callable[[], dict[str, CropSet]]) -> dict[str, CropSet]:
    """The crop sets stored under ``key`` in ``folder``, else ``make()``'s, stored there (whole or not at all);
    ``folder=None``: no cache."""
    if folder is None:
        return make()
    file = folder / f"{key}.pt"
    if file.is_file():
        stored = torch.load(file, weights_only=True)
        return {split: CropSet(**{**fields, "grid": tuple(fields["grid"])}) for split, fields in stored.items()}
    made = make()
    folder.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(".partial")
    torch.save({split: {f.name: getattr(crop_set, f.name) for f in fields(crop_set)}
                for split, crop_set in made.items()}, partial)
    partial.replace(file)  # a killed run leaves no half file to be read as whole
    return made
