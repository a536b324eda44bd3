"""The privacy attacks: re-identification sanity, inversion, decoder training, k-frame averaging, the report.

Budgets are tiny (seconds): these check that each attack works and measures what it claims, not how strong
it gets with a real budget (that is an experiment, not a test).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from facesplit.detector import SplitDetector
from facesplit.evaluation.errors import DatasetError
from facesplit.faceboxes import FaceBoxes
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.sampler import GaussianStream
from facesplit.preprocess import InputSize
from facesplit.weights import head_fingerprint
from privacy_attack.canvas import flat_canvas
from privacy_attack.datasets import Photo, identities_from_pairs, read_coco_photos, read_pairs, read_unlabelled
from privacy_attack.decoder import DecoderConfig, build_bank, train_decoder
from privacy_attack.inversion import InversionConfig, invert
from privacy_attack.metrics import FACE_COMPARE_SIDE, detector_finds_faces, face_similarities, similarity
from privacy_attack.observe import effective_sigma, observe
from privacy_attack.reid import embed_face, reidentification_rate
from privacy_attack.report import AttackConfig, run_attacks, write_grid
from privacy_attack.scoring import Victim, build_gallery, prepare_victims, reid_scores, score, wilson_interval
from privacy_attack.template import average_face, paint_faces


def isotropic(model: FaceBoxes, sigma: float, side: int = 1024) -> NoiseProfile:
    shape = (128, side // 32, side // 32)
    return NoiseProfile(mu=torch.zeros(shape), sigma=torch.full(shape, sigma), alpha=0.0,
                        input_size=(side, side), head_fingerprint=head_fingerprint(model))


# Where a test only needs an attack to work, it runs at a 512x512 model input: a quarter of the compute.
SMALL = 512


@pytest.fixture(scope="module")
def labelled_victims(detector: SplitDetector, shared_dir: Path) -> list[Victim]:
    """The 18 unlabelled-set photos whose identity the pairs file states (9 people, 4 with 2-7 photos)."""
    photos = [p for p in read_unlabelled(shared_dir / "data/faces/unlabelled") if p.labelled]
    return prepare_victims(detector, photos)


@pytest.fixture(scope="module")
def gallery(labelled_victims: list[Victim], face_recogniser: None) -> dict[str, tuple[str, np.ndarray]]:
    return build_gallery(labelled_victims)


def test_identities_are_connected_components_of_yes_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("file_x,file_y,Decision\na.jpg,b.jpg,Yes\nb.jpg,c.jpg,Yes\nc.jpg,d.jpg,No\n"
                     "e.jpg,f.jpg,No\n")
    identity = identities_from_pairs(read_pairs(pairs), ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    assert identity == {"a.jpg": "a.jpg", "b.jpg": "a.jpg", "c.jpg": "a.jpg", "d.jpg": "d.jpg", "e.jpg": "e.jpg"}


@pytest.mark.parametrize("content, said", [
    ("", r"expected the columns file_x, file_y, Decision, got none"),
    ("file_x,Decision\na.jpg,Yes\n", r"expected the columns file_x, file_y, Decision, got file_x, Decision"),
    ("file_x,file_y,Decision\na.jpg,b.jpg\n", r"pairs\.csv:2: a row without all of file_x, file_y, Decision"),
    (b"file_x,file_y,Decision\n\xff.jpg,b.jpg,Yes\n", r"not UTF-8 text"),
    (None, r"pairs\.csv: a folder, not an identity pairs CSV"),
])
def test_a_bad_pairs_file_is_one_line(tmp_path: Path, content: str | bytes | None, said: str) -> None:
    """An empty or folder pairs file had been silently ignored: every photo its own person, a re-id of 0 %
    that reads like privacy."""
    pairs = tmp_path / "pairs.csv"
    if content is None:
        pairs.mkdir()
    elif isinstance(content, bytes):
        pairs.write_bytes(content)
    else:
        pairs.write_text(content)
    with pytest.raises(DatasetError, match=said):
        read_unlabelled(tmp_path, pairs)


def test_reidentification_rate_and_chance() -> None:
    gallery = {"ann": [np.array([0.0, 0.0]), np.array([0.1, 0.0])], "bob": [np.array([1.0, 1.0])]}
    queries = [(np.array([0.05, 0.02]), "ann"), (np.array([0.9, 1.0]), "bob"), (np.array([0.9, 0.9]), "ann")]
    rate, chance = reidentification_rate(queries, gallery)
    assert rate == pytest.approx(2 / 3)
    assert chance == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)  # per query: its share of gallery embeddings


def test_wilson_interval_matches_scipy_and_keeps_the_number_of_people() -> None:
    for hits, people in ((0, 13), (5, 13), (13, 13), (1, 2)):
        expected = binomtest(hits, people).proportion_ci(method="wilson")
        assert wilson_interval(hits / people, people) == pytest.approx([expected.low, expected.high])
    # a rate pooled over draws of the same 13 people is still a rate on 13 people: as wide as one draw's
    low, high = wilson_interval(27 / 65, 13)
    assert high - low == pytest.approx(float(np.diff(wilson_interval(5 / 13, 13))[0]), abs=0.02)
    assert wilson_interval(0.5, 0) is None


def test_the_unlabelled_set_has_the_identities_its_pairs_file_states(labelled_victims: list[Victim]) -> None:
    sizes = sorted(sum(v.photo.identity == i for v in labelled_victims)
                   for i in {v.photo.identity for v in labelled_victims})
    assert sizes == [1, 1, 1, 1, 1, 2, 2, 2, 7]
    assert all(v.main_face is not None for v in labelled_victims)


def test_reid_finds_everyone_from_their_original_faces(labelled_victims: list[Victim], gallery: dict) -> None:
    # queries: the faces of the letterboxed canvas (what a perfect reconstruction would be)
    queries = {v.photo.key: embed_face(v.canvas.image, v.main_face) for v in labelled_victims}
    scores = reid_scores(queries, gallery)
    assert scores["same_photo"]["queries"] == 18
    assert scores["same_photo"]["rate"] == 1.0
    assert scores["other_photo"]["queries"] == 13  # photos with another photo of the same person
    assert scores["other_photo"]["rate"] >= 12 / 13
    assert scores["other_photo"]["chance"] < 0.3


@pytest.mark.parametrize("kind", ["random", "flat"])
def test_reid_is_at_chance_on_images_with_no_face(labelled_victims: list[Victim], gallery: dict, kind: str) -> None:
    rng = np.random.default_rng(0)
    queries = {}
    for v in labelled_victims:
        image = rng.integers(0, 256, v.canvas.image.shape, dtype=np.uint8) if kind == "random" \
            else flat_canvas(v.canvas)
        queries[v.photo.key] = embed_face(image, v.main_face)
    scores = reid_scores(queries, gallery)
    for protocol in ("same_photo", "other_photo"):
        # an uninformative query lands on one "hub" photo: right only for that person's photos. The
        # largest identity holds 7 of 18 photos, so a single draw can reach 0.39 at a chance of 0.2
        assert scores[protocol]["rate"] <= 7 / 18 + 1e-6
        assert scores[protocol]["rate"] <= scores[protocol]["chance"] + 0.25


def test_metrics_identical_flat_and_detection(detector: SplitDetector, labelled_victims: list[Victim]) -> None:
    victim = next(v for v in labelled_victims if v.photo.key == "img18.jpg")
    same = similarity(victim.canvas.image, victim.canvas.image)
    assert same.ssim == pytest.approx(1.0) and same.psnr == 100.0
    flat = flat_canvas(victim.canvas)
    assert face_similarities(victim.canvas.image, flat, victim.faces)[0].ssim < 0.5
    assert detector_finds_faces(detector, victim.canvas.image, victim.faces) == [True]
    assert detector_finds_faces(detector, flat, victim.faces) == [False]


@pytest.mark.slow  # trains the boxes-only decoder
def test_the_boxes_only_guess_is_face_shaped_but_names_nobody(detector: SplitDetector,
                                                              labelled_victims: list[Victim], gallery: dict,
                                                              shared_dir: Path) -> None:
    """The baseline every attack's face SSIM is read against: an average face painted into the detected boxes
    scores well above a flat image (faces share their layout), yet re-identifies no better than one."""
    mitcmu = shared_dir / "data/faces/mitcmu"
    attacker = read_coco_photos(mitcmu / "labels.json", mitcmu / "images")[:20]
    blank = Photo("grey", np.full((300, 400, 3), 128, np.uint8), "grey")
    assert average_face(detector, [blank]) is None  # no face, no template
    face = average_face(detector, attacker + attacker)  # a photo listed twice counts once
    assert face is not None and face.shape == (FACE_COMPARE_SIDE, FACE_COMPARE_SIDE, 3)
    assert np.allclose(face, average_face(detector, attacker))
    victim = labelled_victims[0]
    painted, flat = paint_faces(victim.canvas, victim.faces, face), flat_canvas(victim.canvas)
    inside = np.zeros(flat.shape[:2], bool)
    for x1, y1, x2, y2 in np.round(victim.faces[:, :4]).astype(int):
        inside[max(0, y1):y2, max(0, x1):x2] = True
    assert np.array_equal(painted[~inside], flat[~inside]) and not np.array_equal(painted[inside], flat[inside])

    guesses = {v.photo.key: paint_faces(v.canvas, v.faces, face) for v in labelled_victims}
    boxes = score(detector, labelled_victims, guesses, gallery)
    flats = score(detector, labelled_victims, {v.photo.key: flat_canvas(v.canvas) for v in labelled_victims},
                  gallery)
    assert boxes["face_ssim"] > flats["face_ssim"] + 0.04, (boxes["face_ssim"], flats["face_ssim"])  # 0.38 vs 0.31
    other = boxes["reid"]["other_photo"]
    assert other["rate"] <= 2 * other["chance"]  # one face for everybody: it lands on a "hub" photo at most


@pytest.mark.slow  # optimises an inversion
def test_inversion_without_noise_beats_a_flat_image(detector: SplitDetector, labelled_victims: list[Victim]) -> None:
    victim = next(v for v in labelled_victims if v.photo.key == "img18.jpg")
    recon = invert(detector.model.head, victim.activation, config=InversionConfig(steps=50))  # ~4 s idle
    inverted = face_similarities(victim.canvas.image, recon, victim.faces)[0].ssim
    flat = face_similarities(victim.canvas.image, flat_canvas(victim.canvas), victim.faces)[0].ssim
    assert inverted > flat + 0.1, (inverted, flat)  # measured 0.55 vs 0.32 (200 steps: 0.76)


@pytest.mark.slow  # trains a decoder
def test_decoder_loss_decreases_on_noisy_activations(detector: SplitDetector, faceboxes: FaceBoxes,
                                                     shared_dir: Path) -> None:
    from privacy_attack.datasets import read_skimage_photos

    config = DecoderConfig(batch_size=2, max_steps=30, train_seconds=60, views_per_photo=2, lr=3e-3,
                           progress=False)
    bank = build_bank(detector.model.head, read_skimage_photos()[:3], (SMALL, SMALL), config)
    assert tuple(bank.targets.shape[1:]) == (3, SMALL // 4, SMALL // 4) and len(bank) == 6
    _, log = train_decoder(bank, isotropic(faceboxes, 0.5, SMALL), config)
    assert log.steps == 30
    assert np.mean(log.losses[-5:]) < 0.8 * np.mean(log.losses[:5]), log.losses


def test_attacks_see_a_basis_profile_as_the_edge_applies_it(faceboxes: FaceBoxes, one_torch_thread: None) -> None:
    from privacy_attack.decoder import noisy_batch

    flat = isotropic(faceboxes, 1.0, SMALL)
    rotation, _ = torch.linalg.qr(torch.randn(128, 128, generator=torch.Generator().manual_seed(0)))
    # all 128 directions, sigma 1: the same Gaussian as `flat`, only written in another basis
    rotated = NoiseProfile(mu=flat.mu, sigma=flat.sigma, alpha=0.0, input_size=flat.input_size,
                           head_fingerprint=flat.head_fingerprint, basis=rotation)
    x = torch.rand(1, 3, SMALL, SMALL) * 255 - 128
    with torch.no_grad():
        activation = faceboxes.head(x)
    config = InversionConfig(steps=5, resolution=32)
    plain = invert(faceboxes.head, activation, flat, flat.sigma, (SMALL, SMALL), config)
    in_basis = invert(faceboxes.head, activation, rotated, rotated.sigma, (SMALL, SMALL), config)
    # the likelihood is rotation invariant: the inversion takes the same steps in either basis
    assert np.abs(plain.astype(int) - in_basis.astype(int)).max() <= 2
    # a rank-8 profile: the decoder trains on the kept part of the activation plus noise along the basis
    narrow = NoiseProfile(mu=torch.zeros(8, 16, 16), sigma=torch.full((8, 16, 16), 0.5), alpha=0.0,
                          input_size=(SMALL, SMALL), head_fingerprint=flat.head_fingerprint,
                          basis=rotation[:, :8].contiguous())
    batch = noisy_batch(activation.repeat(400, 1, 1, 1), narrow, (4,), torch.Generator().manual_seed(1))
    assert torch.allclose(narrow.expand(narrow.coordinates(batch)), batch, atol=1e-4)
    noise = narrow.coordinates(batch) - narrow.coordinates(activation)
    assert noise.std().item() == pytest.approx(0.5 / math.sqrt(4), rel=0.03)


def test_averaging_k_frames_shrinks_the_noise_by_sqrt_k(faceboxes: FaceBoxes, one_torch_thread: None) -> None:
    profile = isotropic(faceboxes, 1.0)
    activation = torch.rand(1, 128, 32, 32)
    stream = GaussianStream(seed_for_reproducible_evaluation=1)
    stds = {k: float((observe(activation, profile, k, stream) - activation).std()) for k in (1, 8, 30)}
    for k, std in stds.items():
        assert std == pytest.approx(1 / math.sqrt(k), rel=0.03), stds
        assert float(effective_sigma(profile, k).mean()) == pytest.approx(1 / math.sqrt(k))
    assert torch.equal(observe(activation, None, 30), activation)


@pytest.mark.slow  # trains and runs both attacks
def test_report_runs_both_attacks_and_draws_a_grid(detector: SplitDetector, faceboxes: FaceBoxes,
                                                   labelled_victims: list[Victim], face_recogniser: None,
                                                   tmp_path: Path) -> None:
    from privacy_attack.datasets import read_skimage_photos

    photos = [v.photo for v in labelled_victims if v.photo.key in ("img18.jpg", "img19.jpg")]
    attacker: list[Photo] = read_skimage_photos()[:2]
    config = AttackConfig(k_values=(1, 4), decoder=DecoderConfig(max_steps=2, batch_size=2, views_per_photo=1,
                                                                 progress=False),
                          inversion=InversionConfig(steps=2))
    small = SplitDetector(faceboxes, InputSize(SMALL, SMALL))
    clean = run_attacks(None, photos, attacker, small, config)
    noisy = run_attacks(isotropic(faceboxes, 0.5, SMALL), photos, attacker, small, config)
    results = json.loads(json.dumps(noisy.results))  # JSON-able as is
    assert results["k_values"] == [1, 4] and clean.results["k_values"] == [1]
    for attack in ("decoder", "inversion"):
        for k in (1, 4):
            entry = results["attacks"][attack][f"k={k}"]
            assert entry["faces"] == 2 and 0 <= entry["face_ssim"] <= 1
            assert entry["reid"]["other_photo"]["queries"] == 2
    assert set(results["stronger"].values()) <= {"decoder", "inversion"}
    assert results["baselines"]["original"]["reid"]["same_photo"]["rate"] == 1.0
    grid = write_grid(tmp_path / "grid.png", clean, noisy, attack="inversion")
    assert grid.stat().st_size > 10_000

    # three independent draws: the first is the one a single-draw run attacks (same stream), the scores pooled
    drawn = run_attacks(isotropic(faceboxes, 0.5, SMALL), photos, attacker, small,
                        replace(config, attacks=("inversion",), k_values=(1,), draws=3))
    entry, single = drawn.results["attacks"]["inversion"]["k=1"], results["attacks"]["inversion"]["k=1"]
    assert drawn.results["draws"] == 3 and entry["draws"] == 3
    assert all(np.array_equal(drawn.images["inversion"][1][key], noisy.images["inversion"][1][key])
               for key in noisy.images["inversion"][1])
    for protocol, found in entry["reid"].items():
        assert found["draws"] == 3 and found["draw_rates"][0] == single["reid"][protocol]["rate"]
        assert found["rate"] == pytest.approx(np.mean(found["draw_rates"]))
        assert len(found["hits"]) == round(found["rate"] * 3 * found["queries"])
