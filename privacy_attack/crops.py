"""The part of the activation an attacker studies: the cells around a face box the tail returned.

The tail returns where every face is, so an attacker crops the noisy activation around each box and asks
who that is. The head is run once per frame up to the deepest split; every shallower split's activation is
an intermediate output of the same pass, so one pass serves the whole table.

The victims' frames go through the head whole (exactly what the edge computes). The attacker's training
faces go through a 640x640 window of their frame around the face: the receptive field reaches little further,
so the crop's cells are those of the whole frame up to 0.3 % (96 px faces) and 1.5 % (192 px) at inception3,
exactly at the shallower splits (`tests/test_identity_attack.py`), and the head costs 2.5x less per face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facesplit.faceboxes import HEAD_CHANNELS, SPLITS
from facesplit.images import read_image_bgr
from privacy_attack.canvas import image_to_input, resize
from privacy_attack.descriptors import DescribedFace
from privacy_attack.metrics import crop
from privacy_attack.reid import embed_face
from privacy_attack.scene import FRAME, Backgrounds, PlacedFace, frame_centre, place_face, random_centre

STRIDE = 32  # pixels per activation cell at every split
WINDOW = 640  # side of the frame window an attacker's training face is run through


def crop_cells(side: float) -> int:
    """Cells on each side of the crop around a face of ``side`` px: about twice the face (context: hair,
    outline), at least 4 and at most 8 (a 192 px face's 256 px surround)."""
    return int(min(8, max(4, 2 * math.ceil(side / STRIDE))))


def cell_origin(centre: tuple[float, float], cells: int, grid: tuple[int, int]) -> tuple[int, int]:
    """(row, column) of the crop's top-left cell: the ``cells`` x ``cells`` block centred nearest the face
    centre, inside the (rows, columns) grid."""
    rows, columns = grid
    row = round(centre[1] / STRIDE - cells / 2)
    column = round(centre[0] / STRIDE - cells / 2)
    return min(max(row, 0), rows - cells), min(max(column, 0), columns - cells)


def head_outputs(head: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every split's activation from one pass of ``head`` (a `FaceBoxesHead`): {"rdcl": ..., "inception1": ...}
    up to the head's own split; a `privacy_attack.runtime_head.RuntimeHead` (a compiled head, e.g. int8) gives
    its one split's."""
    if hasattr(head, "split_outputs"):
        return head.split_outputs(x)
    out = {}
    x = head.conv2(head.conv1(x))
    out[SPLITS[0]] = x
    for name in head.inceptions:
        x = getattr(head, name)(x)
        out[name] = x
    return out


def head_splits(head: nn.Module) -> tuple[str, ...]:
    """The splits `head_outputs` gives for ``head``."""
    return tuple(getattr(head, "splits", None) or (SPLITS[0], *head.inceptions))


def runs_windows(head: nn.Module) -> bool:
    """Whether ``head`` runs any input size (a torch module), so that an attacker's face can go through a window
    of its frame, or only whole frames (a compiled head, whose graph has one input size)."""
    return not hasattr(head, "split_outputs")


@dataclass
class CropSet:
    """Clean activation crops of faces at one split and scale, where they sit, and who they are."""

    crops: torch.Tensor  # (N, C, n, n) float16, clean
    origins: torch.Tensor  # (N, 2) int64: (row, column) of each crop's top-left cell in the full activation
    descriptors: torch.Tensor  # (N, 128) float32: dlib's descriptor of the source photo
    identities: list[str]
    grid: tuple[int, int]  # (rows, columns) of the full activation
    faces: torch.Tensor  # (N, 3, s, s) uint8 BGR: the face as the camera's frame shows it, resized to s x s
    backdrop: torch.Tensor  # (N, 3) float32: the frame's mean colour (the flat guess)
    frame_descriptors: torch.Tensor | None = None  # (N, 128): dlib on the frame's own face (camera pixels)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def cells(self) -> int:
        return int(self.crops.shape[-1])


def _place(face: DescribedFace, side: float, backgrounds: Backgrounds, rng: np.random.Generator,
           cells: int, centred: bool) -> PlacedFace:
    image = read_image_bgr(face.photo.path)
    centre = frame_centre() if centred else random_centre(rng, side, cells // 2 + 1)
    return place_face(image, face.box, side, backgrounds.sample(rng), centre)


@torch.no_grad()
def _run(head: nn.Module, frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
    x = torch.cat([image_to_input(f) for f in frames]).contiguous(memory_format=torch.channels_last)
    return head_outputs(head, x)


def face_crops(head: nn.Module, faces: Sequence[DescribedFace], side: float, backgrounds: Backgrounds,
               seed: int, placements: int = 1, whole_frame: bool = True, batch: int = 8, face_side: int = 32,
               describe_frames: bool = False, centred: bool = False, progress: bool = True,
               desc: str = "crops") -> dict[str, CropSet]:
    """Each face placed ``placements`` times at ``side`` px (random scene and position, from ``seed``) and the
    clean crop around it at every split of ``head``, with the face's pixels at ``face_side`` and (with
    ``describe_frames``) dlib's descriptor of the face in the frame. ``whole_frame``: the head sees the
    1024x1024 frame (the victims); otherwise a 640x640 window around the face (the attacker's faces).
    ``centred``: every face at the frame's centre, not at a random position."""
    rng = np.random.default_rng(seed)
    cells = crop_cells(side)
    grid = (FRAME[1] // STRIDE, FRAME[0] // STRIDE)
    splits = head_splits(head)
    jobs = [face for face in faces for _ in range(placements)]
    # written in place: tens of thousands of small tensors between the head's large temporaries fragment
    # the allocator's heap until the process runs out of memory
    crops = {split: torch.empty((len(jobs), HEAD_CHANNELS, cells, cells), dtype=torch.float16) for split in splits}
    origins = torch.empty((len(jobs), 2), dtype=torch.int64)
    thumbnails = torch.empty((len(jobs), 3, face_side, face_side), dtype=torch.uint8)
    backdrops = torch.empty((len(jobs), 3), dtype=torch.float32)
    frame_descriptors = torch.empty((len(jobs), 128), dtype=torch.float32) if describe_frames else None
    pending: list[tuple[int, np.ndarray, tuple[int, int]]] = []

    def flush() -> None:
        outputs = _run(head, [frame for _, frame, _ in pending])
        for i, (j, _, (wrow, wcolumn)) in enumerate(pending):
            r, c = int(origins[j, 0]) - wrow, int(origins[j, 1]) - wcolumn
            for split in splits:
                crops[split][j] = outputs[split][i, :, r:r + cells, c:c + cells]
        pending.clear()

    for j, face in enumerate(tqdm(jobs, desc=desc, unit="face", disable=not progress, leave=False)):
        placed = _place(face, side, backgrounds, rng, cells, centred)
        row, column = cell_origin(placed.centre, cells, grid)
        origins[j, 0], origins[j, 1] = row, column
        if whole_frame:
            pending.append((j, placed.image, (0, 0)))
        else:
            span = WINDOW // STRIDE
            wrow = min(max(row + cells // 2 - span // 2, 0), grid[0] - span)
            wcolumn = min(max(column + cells // 2 - span // 2, 0), grid[1] - span)
            window = placed.image[wrow * STRIDE:(wrow + span) * STRIDE, wcolumn * STRIDE:(wcolumn + span) * STRIDE]
            pending.append((j, np.ascontiguousarray(window), (wrow, wcolumn)))
        face_pixels = resize(crop(placed.image, placed.box), face_side, face_side)
        thumbnails[j] = torch.from_numpy(np.ascontiguousarray(face_pixels)).permute(2, 0, 1)
        backdrops[j] = torch.from_numpy(placed.image.reshape(-1, 3).mean(axis=0).astype(np.float32))
        if frame_descriptors is not None:
            frame_descriptors[j] = torch.from_numpy(embed_face(placed.image, placed.box))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    descriptors = torch.from_numpy(np.asarray([face.descriptor for face in jobs], np.float32).reshape(-1, 128))
    identities = [face.photo.identity for face in jobs]
    return {split: CropSet(crops[split], origins, descriptors, identities, grid, thumbnails, backdrops,
                           frame_descriptors) for split in splits}
