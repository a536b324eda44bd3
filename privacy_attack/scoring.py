"""Scoring a set of reconstructions against their victims: image and face similarity, detectability,
and re-identification against a gallery of the victims' original photos."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from facesplit.detector import SplitDetector
from privacy_attack.canvas import Canvas, image_to_input, resize, to_canvas
from privacy_attack.datasets import Photo
from privacy_attack.metrics import detector_finds_faces, face_similarities, find_faces, image_similarity
from privacy_attack.reid import embed_face, reidentification_rate

# Whole images are compared at this canvas side: the decoder's output size, and enough for layout, hair and
# clothing (what the whole-image score is about; faces are scored separately at their own scale).
IMAGE_COMPARE_SIDE = 256


@dataclass
class Victim:
    """A victim photo as the edge sees it, its faces (canvas pixels) and its clean activation."""

    photo: Photo
    canvas: Canvas
    faces: np.ndarray  # (N, 5) found by the clean detector on the canvas at the operating threshold
    activation: torch.Tensor  # (1, C, h, w), the head's clean output: the attack sees it only with noise

    @property
    def main_face(self) -> np.ndarray | None:
        """The largest face: the one the photo's identity label is about (re-identification uses it)."""
        if not len(self.faces):
            return None
        areas = (self.faces[:, 2] - self.faces[:, 0]) * (self.faces[:, 3] - self.faces[:, 1])
        return self.faces[int(np.argmax(areas))]


@torch.no_grad()  # not inference_mode: the activations feed autograd (inversion) later
def prepare_victims(detector: SplitDetector, photos: list[Photo],
                    input_size: tuple[int, int] = (1024, 1024)) -> list[Victim]:
    victims = []
    for photo in photos:
        canvas = to_canvas(photo.image, input_size)
        activation = detector.head(image_to_input(canvas.image).contiguous(memory_format=torch.channels_last))
        victims.append(Victim(photo, canvas, find_faces(detector, canvas.image), activation.clone()))
    return victims


def build_gallery(victims: list[Victim]) -> dict[str, tuple[str, np.ndarray]]:
    """photo key -> (identity, embedding of its main face in the full-resolution original): the attacker's
    reference photos of the people they want to find. Labelled victims with a face only."""
    gallery = {}
    for victim in victims:
        face = victim.main_face
        if victim.photo.labelled and face is not None:
            frame_box = face[:4] / victim.canvas.letterbox.scale
            gallery[victim.photo.key] = (victim.photo.identity, embed_face(victim.photo.image, frame_box))
    return gallery


def _grouped(entries: dict[str, tuple[str, np.ndarray]], exclude: str | None = None) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for key, (identity, embedding) in entries.items():
        if key != exclude:
            out.setdefault(identity, []).append(embedding)
    return out


def reid_scores(queries: dict[str, np.ndarray], gallery: dict[str, tuple[str, np.ndarray]]) -> dict[str, dict]:
    """Two protocols, each as {rate, chance, queries}:
    - ``same_photo``: the gallery holds every labelled original, including the very photo the query was
      reconstructed from (the attacker holds the victim's picture and asks "is this them?");
    - ``other_photo``: the query's own photo is left out and only queries with another photo of the same
      person count (the attacker holds a different picture of the person: the realistic case)."""
    # with a handful of queries one lucky match moves the rate a lot: the hits are listed to be looked at
    keys = [key for key in queries if key in gallery]
    same = [reidentification_rate([(queries[key], gallery[key][0])], _grouped(gallery)) for key in keys]
    result = {"same_photo": _protocol(keys, same)}
    other_keys, other = [], []
    for key in keys:
        others = _grouped(gallery, exclude=key)
        if gallery[key][0] in others:
            other_keys.append(key)
            other.append(reidentification_rate([(queries[key], gallery[key][0])], others))
    result["other_photo"] = _protocol(other_keys, other)
    return result


def _protocol(keys: list[str], outcomes: list[tuple[float, float]]) -> dict:
    hits = [key for key, (r, _) in zip(keys, outcomes, strict=True) if r == 1.0]
    rate = float(np.mean([r for r, _ in outcomes])) if outcomes else 0.0
    return {"rate": rate, "chance": float(np.mean([c for _, c in outcomes])) if outcomes else 0.0,
            "queries": len(keys), "hits": hits, "ci95": wilson_interval(rate, len(keys))}


def wilson_interval(rate: float, people: int, confidence: float = 0.95) -> list[float] | None:
    """The Wilson score interval of a rate measured on ``people`` queries (None without any): how far apart
    two rates on a handful of people must be to differ. A rate pooled over several noise draws of the same
    people is a steadier estimate, but still one about those people: its interval keeps their number."""
    if people < 1:
        return None
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = (rate + z * z / (2 * people)) / (1 + z * z / people)
    half = z / (1 + z * z / people) * math.sqrt(rate * (1 - rate) / people + z * z / (4 * people * people))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def pool_draws(draws: list[dict]) -> dict:
    """One `score` result from the scores of the same victims under several independent noise draws: the
    mean of every figure, re-identification as the share of (victim, draw) queries matched, its hits listed
    once per draw that matched, and the per-draw rates kept (``draw_rates``) to show the spread."""
    if len(draws) == 1:
        return draws[0]

    def mean(name: str) -> float | None:
        values = [d[name] for d in draws if d[name] is not None]
        return float(np.mean(values)) if values else None

    pooled = {name: mean(name) for name in ("image_ssim", "image_psnr", "face_ssim", "face_psnr",
                                            "detector_finds_face")}
    reid = {}
    for protocol, first in draws[0]["reid"].items():
        rates = [d["reid"][protocol]["rate"] for d in draws]
        rate = float(np.mean(rates))
        reid[protocol] = {"rate": rate, "chance": first["chance"], "queries": first["queries"],
                          "hits": sorted(key for d in draws for key in d["reid"][protocol]["hits"]),
                          "ci95": wilson_interval(rate, first["queries"]), "draws": len(draws),
                          "draw_rates": rates}
    return {"images": draws[0]["images"], "faces": draws[0]["faces"], **pooled, "draws": len(draws), "reid": reid}


def score(detector: SplitDetector, victims: list[Victim], reconstructions: dict[str, np.ndarray],
          gallery: dict[str, tuple[str, np.ndarray]]) -> dict:
    """Mean similarity, detectability and re-identification of ``reconstructions`` (photo key -> canvas)."""
    image_ssim, image_psnr, face_ssim, face_psnr, found = [], [], [], [], []
    queries: dict[str, np.ndarray] = {}
    for victim in victims:
        recon = reconstructions.get(victim.photo.key)
        if recon is None:
            continue
        original = victim.canvas.image
        width, height = original.shape[1], original.shape[0]
        small = IMAGE_COMPARE_SIDE / max(width, height)
        size = (round(width * small), round(height * small))
        content = tuple(max(1, round(v * small)) for v in victim.canvas.content)
        whole = image_similarity(resize(original, *size), resize(recon, *size), content)  # type: ignore[arg-type]
        image_ssim.append(whole.ssim)
        image_psnr.append(whole.psnr)
        for s in face_similarities(original, recon, victim.faces):
            face_ssim.append(s.ssim)
            face_psnr.append(s.psnr)
        found.extend(detector_finds_faces(detector, recon, victim.faces))
        face = victim.main_face
        if victim.photo.key in gallery and face is not None:
            queries[victim.photo.key] = embed_face(recon, face)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {"images": len(image_ssim), "faces": len(face_ssim),
            "image_ssim": mean(image_ssim), "image_psnr": mean(image_psnr),
            "face_ssim": mean(face_ssim), "face_psnr": mean(face_psnr),
            "detector_finds_face": mean([float(f) for f in found]),
            "reid": reid_scores(queries, gallery)}
