"""Identity attacks on people at camera scale: one measurement per face size, split and noise condition.

Victims are folders of people (`privacy_attack.people`); each person's first photo is the gallery (dlib on the
clean photo), their other photos are placed in camera frames at each face size (`privacy_attack.scene`) and
attacked through the head and the noise. The attacker's faces are placed the same way and train:
- ``probe_linear``: the noise-aware ridge from the activation crop to dlib's descriptor (`probe.fit_ridge`);
- ``probe_mlp``: the same plus a residual MLP trained contrastively with fresh noise (`probe.train_probe`);
- ``face_decoder``: the noise-aware ridge from the crop to the face's pixels (32x32), scored by face SSIM and
  by dlib on the decoded face.
Beside them, per scale: dlib on the original photos and on the frame's own face (the ceilings), and the
boxes-only guess and the flat image (the floors). The strongest attack at a condition is the one with the
highest rank-1 among 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from facesplit.noise.profile import NoiseProfile
from privacy_attack.canvas import resize
from privacy_attack.crop_cache import crops_folder, crops_key, load_or_make
from privacy_attack.crop_noise import CropObserver, NoiseCondition, noise_conditions
from privacy_attack.crops import CropSet, face_crops, runs_windows
from privacy_attack.descriptors import DescribedFace
from privacy_attack.face_references import as_images, colour_and_contrast_faces, thumbnail_faces
from privacy_attack.identity import (
    Scored,
    cosine_scores,
    euclidean_scores,
    identity_metrics,
    split_gallery,
)
from privacy_attack.metrics import FACE_COMPARE_SIDE, similarity
from privacy_attack.probe import design_for, fit_ridge, train_probe
from privacy_attack.reid import embed_face
from privacy_attack.scene import Backgrounds

SCALES = (48, 96, 192)
DECODED_SIDE = 32  # the face decoder's output side; faces are compared at 112 and at 32
SSIM_32 = 32


@dataclass(frozen=True)
class ScaleConfig:
    scales: tuple[int, ...] = SCALES
    attacker_placements: int = 2  # frames each attacker face is placed in (fresh scene, position), at full scales
    centred: bool = False  # every face at the frame's centre (REFERENCE.md's setting), not at a random position
    crop_cache: bool = True  # keep the clean crops on disk (`privacy_attack.crop_cache`) for the next run
    probe_seconds: float = 120.0  # the MLP probe's time budget per condition
    probe_steps: int | None = None  # and its step budget (early stopping usually ends it first)
    mlp_probe: bool = True
    face_decoder: bool = True
    dlib_on_decoded: bool = True  # dlib on each decoded face (~60 ms a face)
    floor_queries: int = 200  # queries dlib embeds for the boxes-only and flat floors (they are near chance)
    k_values: tuple[int, ...] = (1, 30)
    rotating: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class Victims:
    """Gallery descriptors (one clean photo per person) and the query photos with their person's column."""

    gallery: np.ndarray  # (people, 128)
    people: list[str]
    queries: list[DescribedFace]
    truth: np.ndarray  # (queries,) column into the gallery


def victims_from(described: Sequence[DescribedFace]) -> Victims:
    """Split described victim photos into gallery and queries (`identity.split_gallery`)."""
    identities = [face.photo.identity for face in described]
    gallery, queries, truth = split_gallery(identities)
    if not queries:
        raise ValueError("no victim has a second photo with a face: nothing to query")
    return Victims(np.stack([described[i].descriptor for i in gallery]), [identities[i] for i in gallery],
                   [described[i] for i in queries], np.asarray(truth))


@dataclass
class ScaleData:
    """Everything measured once per face size: crops of the attacker's faces and of the victims' queries at
    every split, and the attack-free baselines."""

    side: int
    attacker: dict[str, CropSet]
    victims: dict[str, CropSet]
    template: np.ndarray  # the attacker's average face at FACE_COMPARE_SIDE (uint8 BGR): the boxes-only guess
    baselines: dict = field(default_factory=dict)


def as_image(face: torch.Tensor) -> np.ndarray:
    """(3, s, s) BGR tensor -> (s, s, 3) array, as OpenCV and the metrics take images."""
    return np.ascontiguousarray(face.permute(1, 2, 0).numpy())


def face_ssim(originals: torch.Tensor, guesses: Sequence[np.ndarray]) -> dict:
    """Mean face SSIM of ``guesses`` against the originals (N, 3, s, s) at 112 and at 32 px."""
    at_112, at_32 = [], []
    for original, guess in zip(originals, guesses, strict=True):
        a = as_image(original)
        b = resize(guess, a.shape[1], a.shape[0])
        at_112.append(similarity(resize(a, FACE_COMPARE_SIDE, FACE_COMPARE_SIDE),
                                 resize(b, FACE_COMPARE_SIDE, FACE_COMPARE_SIDE)).ssim)
        at_32.append(similarity(resize(a, SSIM_32, SSIM_32), resize(b, SSIM_32, SSIM_32)).ssim)
    return {"face_ssim": float(np.mean(at_112)), "face_ssim_32": float(np.mean(at_32)), "faces": len(at_112)}


def embed_faces(faces: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
    """dlib descriptors of face images that are the face box (a decoded or painted face)."""
    out = []
    for face in tqdm(faces, desc="dlib", unit="face", disable=not progress, leave=False):
        big = resize(face, 150, 150)
        out.append(embed_face(big, (0, 0, 150, 150)))
    return np.stack(out)


def prepare_scale(head: torch.nn.Module, side: int, attacker: Sequence[DescribedFace], victims: Victims,
                  backgrounds: Backgrounds, config: ScaleConfig, placements: int | None = None) -> ScaleData:
    """Place and run the head over the attacker's faces (``placements`` times each, default the config's) and
    the victims' queries at ``side`` px; measure the ceilings and floors."""
    folder = crops_folder() if config.crop_cache else None
    count = placements or config.attacker_placements

    def crops_of(faces: Sequence[DescribedFace], desc: str, **settings: Any) -> dict[str, CropSet]:
        key = crops_key(head, faces, backgrounds, side=side, centred=config.centred, **settings)
        return load_or_make(folder, key, lambda: face_crops(head, faces, side, backgrounds, centred=config.centred,
                                                            progress=config.progress, desc=desc, **settings))

    attacker_sets = crops_of(attacker, f"attacker at {side} px", seed=config.seed + side, placements=count,
                             whole_frame=not runs_windows(head), face_side=DECODED_SIDE)
    victim_sets = crops_of(victims.queries, f"victims at {side} px", seed=config.seed + 10_000 + side,
                           whole_frame=True, face_side=FACE_COMPARE_SIDE, describe_frames=True)
    any_split = next(iter(attacker_sets.values()))
    mean_face = any_split.faces.float().mean(0)
    template = np.clip(np.round(resize(as_image(mean_face), FACE_COMPARE_SIDE, FACE_COMPARE_SIDE)), 0, 255
                       ).astype(np.uint8)
    data = ScaleData(side, attacker_sets, victim_sets, template)
    queries = next(iter(victim_sets.values()))
    data.baselines = baselines(queries, victims, template, config, any_split.faces)
    return data


def baselines(queries: CropSet, victims: Victims, template: np.ndarray, config: ScaleConfig,
              attacker_faces: torch.Tensor | None = None) -> dict:
    """dlib on the original photos and on the frame's face (ceilings); the boxes-only guess and the flat
    image (floors: face SSIM on every query, identity on ``floor_queries`` of them); with the attacker's faces,
    face SSIM of the references that know each face's colour and contrast or its 4x4 thumbnail
    (`privacy_attack.face_references`)."""
    original = np.stack([face.descriptor for face in victims.queries])
    out = {"original_photo": identity_metrics(Scored(euclidean_scores(original, victims.gallery), victims.truth)),
           "frame": identity_metrics(Scored(euclidean_scores(queries.frame_descriptors.numpy(), victims.gallery),
                                            victims.truth))}
    flat = [np.broadcast_to(colour.numpy().round().astype(np.uint8), template.shape).copy()
            for colour in queries.backdrop]
    boxes = [template] * len(queries)
    rng = np.random.default_rng(config.seed)
    pick = np.sort(rng.choice(len(queries), size=min(config.floor_queries, len(queries)), replace=False))
    for name, guesses in (("boxes_only", boxes), ("flat", flat)):
        found = face_ssim(queries.faces, guesses)
        embedded = embed_faces([guesses[i] for i in pick])
        found.update(identity_metrics(Scored(euclidean_scores(embedded, victims.gallery), victims.truth[pick])))
        out[name] = found
    if attacker_faces is not None:
        out["knowing_colour_and_contrast"] = face_ssim(
            queries.faces, as_images(colour_and_contrast_faces(attacker_faces, queries.faces)))
        out["knowing_a_4x4_thumbnail"] = face_ssim(queries.faces, as_images(thumbnail_faces(queries.faces)))
    return out


def attack_condition(data: ScaleData, split: str, condition: NoiseCondition, victims: Victims,
                     config: ScaleConfig, strong: bool, designs: dict | None = None) -> dict:
    """Every attack at one split and noise condition; ``strong``: also the MLP probe and dlib on decoded faces
    (the costly ones). ``designs`` caches the ridge's design per split and kept part across calls."""
    train, test = data.attacker[split], data.victims[split]
    observer = CropObserver(condition, train.cells)
    designs = {} if designs is None else designs
    profile = condition.profile
    key = (data.side, split, None if profile is None or observer.projects is False else profile.fingerprint)
    if key not in designs:
        designs[key] = design_for(train, observer, config.seed)
    design = designs[key]
    generator = torch.Generator().manual_seed(config.seed + 7)
    observed = observer.observe(test.crops, test.origins, generator)
    centre = train.descriptors.mean(0).numpy()
    results: dict = {}

    linear, log = fit_ridge(train, observer, train.descriptors, seed=config.seed, design=design)
    with torch.no_grad():
        predicted = linear(observed).numpy()
    results["probe_linear"] = {**identity_metrics(Scored(cosine_scores(predicted, victims.gallery, centre),
                                                         victims.truth)), "budget": log.as_dict()}
    if strong and config.mlp_probe:
        # the same lambda, fitted without the held-out faces the MLP is judged on
        start, _ = fit_ridge(train, observer, train.descriptors, seed=config.seed, design=design, refit=False,
                             lambdas=(log.ridge,))
        probe, log = train_probe(train, observer, start, seconds=config.probe_seconds, steps=config.probe_steps,
                                 seed=config.seed, progress=config.progress)
        with torch.no_grad():
            predicted = probe(observed).numpy()
        results["probe_mlp"] = {**identity_metrics(Scored(cosine_scores(predicted, victims.gallery, centre),
                                                          victims.truth)), "budget": log.as_dict()}
    if config.face_decoder:
        pixels = train.faces.float().flatten(1) / 255.0
        decoder, log = fit_ridge(train, observer, pixels, seed=config.seed, score="mse", design=design)
        with torch.no_grad():
            decoded = decoder(observed).clamp(0, 1).mul(255).round().to(torch.uint8)
        faces = [as_image(face.view(3, DECODED_SIDE, DECODED_SIDE)) for face in decoded]
        found = {**face_ssim(test.faces, faces), "budget": log.as_dict()}
        if strong and config.dlib_on_decoded:
            embedded = embed_faces(faces, progress=config.progress)
            found.update(identity_metrics(Scored(euclidean_scores(embedded, victims.gallery), victims.truth)))
        results["face_decoder"] = found
        results["_decoded"] = faces  # for the grid; dropped from JSON
    results["strongest"] = strongest(results)
    return results


def rank1_key(results: dict) -> str:
    return next(key for key in results if key.startswith("rank1_") and key != "rank1_all")


def strongest(results: dict) -> str | None:
    """The attack with the highest rank-1 among 100 (the identity figure that counts); on a tie the one run
    first, the simpler (the MLP probe starts from the linear one and keeps it unless it does better)."""
    ranked = [(found[rank1_key(found)]["rate"], name) for name, found in results.items()
              if isinstance(found, dict) and any(k.startswith("rank1_") for k in found)]
    return max(ranked, key=lambda entry: entry[0])[1] if ranked else None


def measure_split(data: ScaleData, split: str, profiles: dict[str, NoiseProfile | None], victims: Victims,
                  config: ScaleConfig, focus: set[str], strong: bool = True, designs: dict | None = None) -> dict:
    """Attack every profile at one split: the ``focus`` profiles (and clean) at every condition of ``config``
    and, with ``strong``, with the costly attacks too; the others at k = 1 with the ridge attacks only."""
    out = {}
    designs = {} if designs is None else designs
    for name, profile in profiles.items():
        focused = profile is None or name in focus
        conditions = noise_conditions(profile, config.k_values if focused else (1,), config.rotating and focused)
        for condition in conditions:
            # the costly attacks where the target is set: clean and each focus profile, at k = 1
            costly = strong and focused and condition.k == 1
            out[f"{name}/{condition.label}"] = attack_condition(data, split, condition, victims, config, costly,
                                                                designs)
    return out
