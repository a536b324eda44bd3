"""Both attacks against one noise profile, at several k-frame averages: one JSON-able dict, and a grid PNG.

Lower numbers are better for privacy. An attack is "stronger" when it re-identifies more victims and, on a
tie, when its face crops are more similar to the originals (SSIM): re-identification is the harm, SSIM the
tie-breaker that still moves when nobody is re-identified.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facesplit.detector import SplitDetector, load_detector
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.sampler import GaussianStream
from privacy_attack.canvas import flat_canvas, resize
from privacy_attack.datasets import Photo
from privacy_attack.decoder import (
    ActivationDecoder,
    DecoderConfig,
    TrainingBank,
    TrainingLog,
    build_bank,
    decode,
    train_decoder,
)
from privacy_attack.inversion import InversionConfig, invert, tv_weight_for
from privacy_attack.observe import effective_sigma, observe
from privacy_attack.scoring import build_gallery, pool_draws, prepare_victims, score
from privacy_attack.template import average_face, paint_faces

ATTACKS = ("decoder", "inversion")
KEPT_SIDE = 256  # reconstructions are kept at this canvas side for the grid (a 1024 canvas is 3 MB)


@dataclass(frozen=True)
class AttackConfig:
    k_values: tuple[int, ...] = (1, 8, 30)  # frames of a static scene the attacker averages
    attacks: tuple[str, ...] = ATTACKS
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    noise_seed: int | None = 0  # reproducible victim noise (the product's AES stream, fixed key); None: random
    # independent noise draws per victim and k, each attacked, the scores pooled (`pool_draws`): with a handful
    # of victims one draw's re-identification swings by a victim or two
    draws: int = 1


@dataclass
class AttackRun:
    """Results (JSON-able) and the reconstructions, kept small, keyed by attack then k then photo key."""

    results: dict
    images: dict[str, dict[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    originals: dict[str, np.ndarray] = field(default_factory=dict)
    decoder: ActivationDecoder | None = None  # the trained decoder, to reuse on other victims


def _keep(image: np.ndarray) -> np.ndarray:
    """A reconstruction shrunk to KEPT_SIDE wide, aspect kept (nothing is lost: both attacks work at 256)."""
    return resize(image, KEPT_SIDE, max(1, round(KEPT_SIDE * image.shape[0] / image.shape[1])))


def _leak(scores: dict) -> tuple[float, float, float]:
    """How much one attack's scores leak, for ranking: re-identification first, face SSIM on a tie."""
    reid = scores["reid"]
    return (reid["other_photo"]["rate"], reid["same_photo"]["rate"], scores["face_ssim"] or 0.0)


def mark_stronger(results: dict) -> dict:
    """Add ``stronger`` (per k: which attack leaked more) when ``results`` holds both attacks."""
    found = results["attacks"]
    if set(ATTACKS) <= set(found):
        results["stronger"] = {key: strongest(found, int(key[2:]))["attack"]
                               for key in found["decoder"] if key.startswith("k=") and key in found["inversion"]}
    return results


def strongest(attacks: dict, k: int) -> dict:
    """Among ``results["attacks"]``, the one that leaked most at ``k`` (the first listed on a tie): the one
    that counts, summarised."""
    rows = [(name, found[f"k={k}"]) for name, found in attacks.items() if f"k={k}" in found]
    name, best = max(rows, key=lambda row: _leak(row[1]))
    return {"attack": name, "face_ssim": best["face_ssim"], "reid_other_photo": best["reid"]["other_photo"],
            "reid_same_photo": best["reid"]["same_photo"], "detector_finds_face": best["detector_finds_face"]}


def attack_input_size(detector: SplitDetector) -> tuple[int, int]:
    """(width, height) the attacks work at: the detector's fixed input size, 1024 where it is native."""
    return (detector.input_size.width or 1024, detector.input_size.height or 1024)


def run_attacks(profile: NoiseProfile | None, victims: list[Photo], attacker_images: list[Photo],
                detector: SplitDetector | None = None, config: AttackConfig = AttackConfig(),
                bank: TrainingBank | None = None, decoder: ActivationDecoder | None = None,
                gallery_photos: list[Photo] | None = None, face_template: np.ndarray | None = None) -> AttackRun:
    """Attack ``victims`` through ``profile`` (None: no noise at all) with each of ``config.attacks`` at each
    k; the decoder learns from ``attacker_images`` only (or a prebuilt ``bank`` of them), unless an already
    trained ``decoder`` (for this profile) is given. Re-identification searches a gallery of the originals
    of ``gallery_photos`` (default: the victims; their labelled photos only), so a slow attack can run on a
    few victims and still be scored against the whole set of people. Beside the attacks, two baselines: a flat
    mean-colour image, and `privacy_attack.template`'s boxes-only guess (``face_template``: the attacker's
    average face, default: made from ``attacker_images``)."""
    unknown = set(config.attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {ATTACKS}")
    if config.draws < 1:
        raise ValueError(f"draws must be at least 1, got {config.draws}")
    detector = detector or load_detector()
    input_size = attack_input_size(detector)
    if profile is not None and tuple(profile.input_size) != input_size:
        raise ValueError(f"profile fitted for input {profile.input_size}, detector runs at {input_size}")
    # without noise every k (and every draw) gives the same activation: one is enough
    k_values = config.k_values if profile is not None else (1,)
    draws = range(config.draws if profile is not None else 1)
    head = detector.model.head

    prepared = prepare_victims(detector, victims, input_size)
    gallery = build_gallery(prepared if gallery_photos is None else prepare_victims(detector, gallery_photos,
                                                                                     input_size))
    flat = {v.photo.key: flat_canvas(v.canvas) for v in prepared}
    if face_template is None:
        face_template = average_face(detector, attacker_images, input_size)
    boxes_only = None if face_template is None else score(
        detector, prepared, {v.photo.key: paint_faces(v.canvas, v.faces, face_template) for v in prepared}, gallery)
    run = AttackRun(results={
        "profile": None if profile is None else {
            "fingerprint": profile.fingerprint, "alpha": profile.alpha,
            "sigma_mean": float(profile.sigma.mean()), "mu_abs_mean": float(profile.mu.abs().mean()),
            "rank": profile.rank},
        "victims": len(prepared), "faces": int(sum(len(v.faces) for v in prepared)),
        "gallery": {"photos": len(gallery), "identities": len({i for i, _ in gallery.values()})},
        "k_values": list(k_values),
        "baselines": {"flat_mean_colour": score(detector, prepared, flat, gallery), "boxes_only": boxes_only,
                      "original": score(detector, prepared, {v.photo.key: v.canvas.image for v in prepared},
                                        gallery)},
        "attacks": {}},
        originals={v.photo.key: _keep(v.canvas.image) for v in prepared})

    # every attack sees the same noisy observations, so their comparison is not luck of the draw; draw 0 comes
    # first from the stream, so a single-draw run sees what it always saw
    stream = GaussianStream(seed_for_reproducible_evaluation=config.noise_seed) if config.noise_seed is not None \
        else GaussianStream()
    observed = [{k: {v.photo.key: observe(v.activation, profile, k, stream) for v in prepared} for k in k_values}
                for _ in draws]

    if "decoder" in config.attacks:
        start = time.monotonic()
        log = TrainingLog()
        if decoder is None:
            bank = bank or build_bank(head, attacker_images, input_size, config.decoder)
            decoder_config = DecoderConfig(**{**asdict(config.decoder), "k_values": tuple(k_values)})
            decoder, log = train_decoder(bank, profile, decoder_config)
        run.decoder = decoder
        per_k, images = {}, {}
        for k in k_values:
            scores = []
            for draw in draws:
                recon = {key: decode(decoder, z, profile, input_size) for key, z in observed[draw][k].items()}
                scores.append(score(detector, prepared, recon, gallery))
                if draw == 0:  # the grid shows the first draw
                    images[k] = {key: _keep(r) for key, r in recon.items()}
            per_k[f"k={k}"] = pool_draws(scores)
        run.images["decoder"] = images
        budget: dict = {"pretrained": True} if not log.steps else {
            "train_seconds": round(log.seconds, 1), "steps": log.steps, "batch_size": config.decoder.batch_size,
            "bank_views": len(bank) if bank else None, "attacker_photos": len(attacker_images),
            "first_loss": log.losses[0], "last_loss": float(np.mean(log.losses[-20:]))}
        run.results["attacks"]["decoder"] = {"budget": budget, "seconds": round(time.monotonic() - start, 1), **per_k}

    if "inversion" in config.attacks:
        start = time.monotonic()
        per_k, images = {}, {}
        for k in k_values:
            std = effective_sigma(profile, k)
            scores = []
            for draw in draws:
                label = f"inversion k={k}" + (f" draw {draw + 1}/{len(draws)}" if len(draws) > 1 else "")
                victims_bar = tqdm(observed[draw][k].items(), desc=label, unit="img", leave=False,
                                   disable=not config.inversion.progress)
                recon = {key: invert(head, z, profile, std, input_size, config.inversion) for key, z in victims_bar}
                scores.append(score(detector, prepared, recon, gallery))
                if draw == 0:
                    images[k] = {key: _keep(r) for key, r in recon.items()}
            per_k[f"k={k}"] = pool_draws(scores)
        run.images["inversion"] = images
        run.results["attacks"]["inversion"] = {
            "budget": {"steps": config.inversion.steps, "resolution": config.inversion.resolution,
                       "tv_weight": config.inversion.tv_weight if config.inversion.tv_weight is not None
                       else tv_weight_for(detector.split)},
            "seconds": round(time.monotonic() - start, 1), **per_k}

    run.results["draws"] = len(draws)
    mark_stronger(run.results)
    return run


def grid_columns(clean: AttackRun, noisy: AttackRun | Mapping[str, AttackRun],
                 attack: str = "decoder") -> list[tuple[str, dict[str, np.ndarray]]]:
    """The grid's columns, (title, photo key -> image): original | reconstruction without noise | for each
    noisy run (one, titled "profile", or several by name), ``attack``'s reconstruction at its smallest and
    largest k."""
    named = {"profile": noisy} if isinstance(noisy, AttackRun) else dict(noisy)
    columns = [("original", clean.originals), ("no noise", clean.images[attack][min(clean.images[attack])])]
    for name, run in named.items():
        by_k = run.images[attack]
        short = Path(name).name  # a profile file's name, not its whole path: titles are narrow
        for k in sorted({min(by_k), max(by_k)}):
            columns.append((f"{short}, k={k}", by_k[k]))
    return columns


def write_grid(path: Path, clean: AttackRun, noisy: AttackRun | Mapping[str, AttackRun], attack: str = "decoder",
               keys: list[str] | None = None, max_rows: int = 6) -> Path:
    """A PNG grid, one victim per row, the columns of `grid_columns` (``attack``'s reconstructions): each
    cell 240 pixels square, so the image is 240 x columns wide and 240 x rows high."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    columns = grid_columns(clean, noisy, attack)
    keys = (keys or [k for k in clean.originals if all(k in images for _, images in columns)])[:max_rows]
    if not keys:
        raise ValueError(f"no victim has every column of the {attack} grid")
    fig, axes = plt.subplots(len(keys), len(columns), figsize=(2.4 * len(columns), 2.4 * len(keys)),
                             squeeze=False)
    for row, key in enumerate(keys):
        for col, (title, images) in enumerate(columns):
            ax = axes[row][col]
            ax.imshow(images[key][:, :, ::-1])  # BGR -> RGB
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(key, fontsize=8)
    fig.suptitle(f"{attack} attack", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
