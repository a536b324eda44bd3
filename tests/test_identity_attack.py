"""The camera-scale identity attacks: readers, placement, crops, the noise on crops, identity metrics, probes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facesplit.detector import SplitDetector
from facesplit.faceboxes import FaceBoxes
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream
from privacy_attack.crop_noise import CropObserver, NoiseCondition, crop_maps, noise_conditions
from privacy_attack.crops import CropSet, cell_origin, crop_cells, head_outputs
from privacy_attack.identity import (
    Scored,
    cosine_scores,
    euclidean_scores,
    identity_metrics,
    rank1_rates,
    split_gallery,
)
from privacy_attack.people import ATTACKER_MIN_PHOTOS, PeopleError, check_disjoint, read_faces, read_people
from privacy_attack.probe import LinearMap, fit_ridge, train_probe
from privacy_attack.scene import place_face


def _photo(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((40, 30, 3), value, np.uint8)
    image[5:10, 5:10] = (value * 7) % 256  # each value a distinct file content
    cv2.imwrite(str(path), image)
    return path


# --- readers -------------------------------------------------------------------------------------------------

def test_victims_take_their_identity_from_the_folder_and_need_two_photos(tmp_path: Path) -> None:
    _photo(tmp_path / "Ann_Lee" / "a.jpg", 10)
    _photo(tmp_path / "Ann_Lee" / "b.png", 20)
    _photo(tmp_path / "Bo" / "x.jpg", 30)
    _photo(tmp_path / "Bo" / "y.jpg", 40)
    _photo(tmp_path / "Solo" / "only.jpg", 50)  # one photo: nothing to query with
    (tmp_path / "Bo" / "notes.txt").write_text("not a photo")
    photos = read_people(tmp_path)
    assert [(p.identity, p.path.name) for p in photos] == [("Ann_Lee", "a.jpg"), ("Ann_Lee", "b.png"),
                                                          ("Bo", "x.jpg"), ("Bo", "y.jpg")]


@pytest.mark.parametrize("layout", ["missing", "empty", "loose", "file"])
def test_a_bad_victims_folder_is_a_one_line_error(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "victims"
    if layout == "empty":
        folder.mkdir()
    elif layout == "loose":
        _photo(folder / "a.jpg")
        _photo(folder / "b.jpg")
    elif layout == "file":
        folder.write_text("x")
    with pytest.raises(PeopleError) as caught:
        read_people(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    if layout == "loose":
        assert "2 loose photos" in message


def test_attacker_faces_are_read_recursively_and_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    _photo(tmp_path / "a" / "one.jpg")
    _photo(tmp_path / "a" / "deep" / "two.jpg")
    faces = read_faces([tmp_path / "a"])
    assert sorted(f.path.name for f in faces) == ["one.jpg", "two.jpg"]
    assert len({f.identity for f in faces}) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(PeopleError, match="no photos"):
        read_faces([tmp_path / "empty"])
    with pytest.raises(PeopleError, match="not found"):
        read_faces([tmp_path / "nowhere"])
    _photo(tmp_path / "one" / "face.jpg")
    with pytest.raises(PeopleError, match=r"one: 1 photo\(s\); an attacker learns from at least 2$"):
        read_faces([tmp_path / "one"], ATTACKER_MIN_PHOTOS)  # its probe's system would be singular


def test_a_victim_in_the_attackers_faces_is_refused(tmp_path: Path) -> None:
    _photo(tmp_path / "v" / "Ann_Lee" / "Ann_Lee_0001.jpg", 1)
    _photo(tmp_path / "v" / "Ann_Lee" / "Ann_Lee_0002.jpg", 2)
    people = read_people(tmp_path / "v")
    _photo(tmp_path / "a" / "Someone_Else_0001.jpg", 3)
    check_disjoint(people, read_faces([tmp_path / "a"]))  # nobody in common
    _photo(tmp_path / "by-name" / "Ann_Lee_0003.jpg", 4)  # the same person, another photo
    with pytest.raises(PeopleError, match="Ann_Lee"):
        check_disjoint(people, read_faces([tmp_path / "by-name"]))
    copy = tmp_path / "by-content" / "renamed.jpg"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "v" / "Ann_Lee" / "Ann_Lee_0002.jpg").read_bytes())
    with pytest.raises(PeopleError, match="same photo"):
        check_disjoint(people, read_faces([tmp_path / "by-content"]))


def test_the_shared_attacker_faces_hold_no_victim(shared_dir: Path) -> None:
    faces = shared_dir / "data" / "faces"
    if not (faces / "lfw").is_dir() or not (faces / "attacker").is_dir():
        pytest.skip("the shared folder has no lfw/ and attacker/ sets")
    victims, attacker = read_people(faces / "lfw"), read_faces([faces / "attacker"])
    assert len({v.identity for v in victims}) == 500 and len(attacker) == 13_744
    check_disjoint(victims, attacker)


# --- placement and crops -------------------------------------------------------------------------------------

def test_a_placed_face_has_the_asked_size_and_centre_over_the_scene() -> None:
    photo = np.full((250, 250, 3), 200, np.uint8)
    background = np.zeros((1024, 1024, 3), np.uint8)
    placed = place_face(photo, np.array([75, 60, 175, 190]), 48, background, (300.0, 700.0))
    x1, y1, x2, y2 = placed.box
    assert np.sqrt((x2 - x1) * (y2 - y1)) == pytest.approx(48, rel=0.02)
    assert placed.centre == pytest.approx((300.0, 700.0), abs=1.0)
    assert placed.image[700, 300].tolist() == [200, 200, 200]  # the face, fully opaque at its centre
    assert placed.image[100, 100].tolist() == [0, 0, 0]  # the scene, far from the photo


def test_the_crop_follows_the_face_and_stays_inside_the_grid() -> None:
    assert crop_cells(48) == 4 and crop_cells(96) == 6 and crop_cells(192) == 8
    assert cell_origin((512.0, 512.0), 6, (32, 32)) == (13, 13)
    assert cell_origin((5.0, 1020.0), 6, (32, 32)) == (26, 0)  # (x, y) in, (row, column) out


def test_one_head_pass_gives_every_split(detector: SplitDetector, faceboxes: FaceBoxes) -> None:
    from facesplit.detector import at_split

    deep = at_split(detector, "inception3")
    x = torch.randn(1, 3, 256, 256) * 50
    with torch.no_grad():
        outputs = head_outputs(deep.model.head, x)
        for split in ("rdcl", "inception1", "inception3"):
            alone = at_split(detector, split).head(x)
            assert torch.allclose(outputs[split], alone, atol=1e-4)


# --- the noise on crops --------------------------------------------------------------------------------------

def _profile(basis: torch.Tensor | None = None, dct: bool = False, channels: int = 8) -> NoiseProfile:
    generator = torch.Generator().manual_seed(0)
    rank = channels if basis is None else basis.shape[1]
    sigma = torch.rand(rank, 32, 32, generator=generator) + 0.2
    return NoiseProfile(torch.zeros(rank, 32, 32), sigma, 0.4, (1024, 1024), "head", basis=basis, dct=dct)


@pytest.mark.parametrize("kind", ["per-element", "per-frequency"])
def test_noise_drawn_for_crops_has_the_edges_statistics(kind: str) -> None:
    """The crops' noise has the same per-element spread as crops of what the product's Obfuscator sends."""
    profile = _profile(dct=kind == "per-frequency")
    origins = torch.tensor([[3, 20]] * 4000)
    observer = CropObserver(NoiseCondition("k=1", profile), cells=4)
    drawn = observer.noise(origins, torch.Generator().manual_seed(1))
    obfuscate = Obfuscator(profile, GaussianStream(seed_for_reproducible_evaluation=2))
    sent = obfuscate(torch.zeros(4000, 8, 32, 32))
    edge = crop_maps(sent, origins, 4)
    ratio = drawn.std(0) / edge.std(0)
    assert float((ratio - 1).abs().max()) < 0.12
    assert float(drawn.mean(0).abs().max()) < 0.1 * float(edge.std(0).min()) * 4


def test_a_dropped_direction_never_reaches_the_attacker() -> None:
    basis = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))[0][:, :3]
    profile = _profile(basis=basis)
    observer = CropObserver(NoiseCondition("k=1", profile), cells=4)
    crops = torch.randn(5, 8, 4, 4)
    observed = observer.observe(crops, torch.zeros(5, 2, dtype=torch.int64))
    dropped = torch.linalg.qr(torch.cat([basis, torch.randn(8, 5)], 1))[0][:, 3:]
    assert torch.einsum("cr,nchw->nrhw", dropped, observed).abs().max() < 1e-4


def test_conditions_scale_sigma_for_averaging_and_the_rotating_secret() -> None:
    profile = _profile()
    found = {c.label: c.scale for c in noise_conditions(profile)}
    assert found["k=1"] == 1.0 and found["k=30"] == pytest.approx(30 ** -0.5)
    assert found["k=30 rotating"] == pytest.approx((0.5 + 0.5 / 30) ** 0.5)
    assert [c.label for c in noise_conditions(None)] == ["clean"]


# --- identity metrics ----------------------------------------------------------------------------------------

def test_originals_as_queries_give_the_ceiling() -> None:
    gallery = np.random.default_rng(0).normal(size=(300, 128))
    truth = np.repeat(np.arange(300), 2)
    queries = gallery[truth] + 0.01
    for scores in (euclidean_scores(queries, gallery), cosine_scores(queries, gallery)):
        found = identity_metrics(Scored(scores, truth))
        assert found["rank1_100"]["rate"] == 1.0 and found["rank1_all"]["rate"] == 1.0
        assert found["tar_at_far"]["rate"] == 1.0


def test_random_queries_give_chance_within_its_interval() -> None:
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(500, 128))
    truth = rng.integers(0, 500, size=10_000)
    found = identity_metrics(Scored(cosine_scores(rng.normal(size=(10_000, 128)), gallery), truth))
    for key, chance in (("rank1_100", 0.01), ("rank1_all", 0.002), ("tar_at_far", 0.01)):
        low, high = found[key]["ci95"]
        assert low <= found[key]["rate"] <= high
        # queries share one gallery, so the rate wanders a little wider than independent draws would
        assert abs(found[key]["rate"] - chance) < 3 * np.sqrt(chance / 10_000), (key, found[key])


def test_rank1_among_100_is_the_expectation_over_random_galleries() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(40, 300))
    truth = rng.integers(0, 300, size=40)
    scores[np.arange(40), truth] += 2.0  # informative, not perfect
    exact = rank1_rates(Scored(scores, truth), 100)
    sampled = np.zeros(40)
    for _ in range(3000):
        for q in range(40):
            others = rng.choice(np.delete(np.arange(300), truth[q]), 99, replace=False)
            sampled[q] += scores[q, truth[q]] > scores[q, others].max()
    assert np.abs(exact - sampled / 3000).max() < 0.04


def test_the_gallery_is_each_persons_first_photo_and_queries_the_rest() -> None:
    gallery, queries, truth = split_gallery(["a", "a", "b", "c", "c", "c"])
    assert gallery == [0, 3] and queries == [1, 4, 5] and truth == [0, 1, 1]


# --- the probes learn ----------------------------------------------------------------------------------------

def _synthetic_crops(n: int, seed: int) -> CropSet:
    """Crops that carry their descriptor linearly, under a per-element profile's noise."""
    generator = torch.Generator().manual_seed(seed)
    descriptors = torch.randn(n, 128, generator=generator)
    mixing = torch.randn(128, 8 * 4 * 4, generator=torch.Generator().manual_seed(99)) / 11
    crops = (descriptors @ mixing).view(n, 8, 4, 4).to(torch.float16)
    origins = torch.randint(0, 28, (n, 2), generator=generator)
    return CropSet(crops, origins, descriptors, [str(i) for i in range(n)], (32, 32),
                   torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.zeros(n, 3))


def test_too_few_usable_attacker_faces_is_one_line_not_a_solver_error() -> None:
    from privacy_attack.probe import TooFewFacesError

    profile = NoiseProfile(torch.zeros(8, 32, 32), torch.full((8, 32, 32), 0.5), 0.4, (1024, 1024), "x")
    observer = CropObserver(NoiseCondition("k=1", profile), cells=4)
    for n in (0, 1):  # no face found in any photo; one face: nothing to hold out
        lone = _synthetic_crops(n, 0)
        with pytest.raises(TooFewFacesError, match=rf"^{n} usable attacker faces .*too few to fit a probe"):
            fit_ridge(lone, observer, lone.descriptors)


@pytest.mark.slow
def test_the_identity_probes_learn_identity_through_noise() -> None:
    train, test = _synthetic_crops(3000, 0), _synthetic_crops(300, 1)
    profile = NoiseProfile(torch.zeros(8, 32, 32), torch.full((8, 32, 32), 0.5), 0.4, (1024, 1024), "x")
    observer = CropObserver(NoiseCondition("k=1", profile), cells=4)
    linear, log = fit_ridge(train, observer, train.descriptors)
    assert log.ridge in (1e-2, 1e-1, 1.0, 10.0) and set(log.validation) == {"0.01", "0.1", "1", "10"}
    observed = observer.observe(test.crops, test.origins, torch.Generator().manual_seed(5))
    scores = cosine_scores(linear(observed).detach().numpy(), test.descriptors.numpy())
    rate = identity_metrics(Scored(scores, np.arange(300)))["rank1_100"]["rate"]
    assert rate > 0.2  # chance is 0.01
    # from an untrained start (the ridge alone already solves this linear task), the MLP must learn
    untrained = LinearMap(linear.mean, linear.std, torch.zeros_like(linear.weight), linear.bias, 0.0)
    _, log = train_probe(train, observer, untrained, seconds=60, check_every=20, patience=3, progress=False)
    assert log.steps >= 20
    tenth = max(1, len(log.losses) // 5)
    assert np.mean(log.losses[-tenth:]) < np.mean(log.losses[:tenth])
    assert max(log.validation.values()) >= log.validation["0"]



def test_every_placement_of_a_held_out_face_is_held_out() -> None:
    from privacy_attack.probe import holdout

    identities = [f"face-{i // 2}" for i in range(400)]  # two placements of each of 200 faces
    fit, held = holdout(identities, seed=3)
    assert len(fit) + len(held) == 400 and len(held) == 40
    assert not {identities[i] for i in fit.tolist()} & {identities[i] for i in held.tolist()}


def test_the_mlp_probe_starts_from_a_ridge_that_never_saw_its_held_out_faces() -> None:
    """The MLP keeps its start unless a step beats it on held-out faces, so the start must be judged where it
    was not fitted: the ridge fitted without them (``refit=False``) on the same split scores there exactly
    as the ridge's own choice of lambda did."""
    faces = _synthetic_crops(600, 0)
    twice = torch.arange(600).repeat_interleave(2)  # two placements of each face
    train = CropSet(faces.crops[twice], torch.randint(0, 28, (1200, 2)), faces.descriptors[twice],
                    [f"face-{i}" for i in twice.tolist()], (32, 32), faces.faces[twice], faces.backdrop[twice])
    profile = NoiseProfile(torch.zeros(8, 32, 32), torch.full((8, 32, 32), 0.5), 0.4, (1024, 1024), "x")
    observer = CropObserver(NoiseCondition("k=1", profile), cells=4)
    start, log = fit_ridge(train, observer, train.descriptors, refit=False)
    _, probe_log = train_probe(train, observer, start, seconds=5, check_every=10_000, progress=False)
    assert probe_log.validation["0"] == pytest.approx(log.validation[f"{log.ridge:g}"], abs=0.03)
    assert probe_log.validation["0"] < 0.99  # through the noise: not a score no step could beat

def test_the_face_decoder_ridge_lowers_its_pixel_error() -> None:
    train = _synthetic_crops(2000, 3)
    pixels = train.descriptors[:, :48] / 4 + 0.5  # a "face" the crop determines
    observer = CropObserver(NoiseCondition("clean", None), cells=4)
    decoder, log = fit_ridge(train, observer, pixels, score="mse")
    error = float(((decoder(train.crops) - pixels) ** 2).mean())
    assert error < 0.1 * float(pixels.var(0).mean())
    assert max(log.validation.values()) <= 0


# --- real faces through the real head ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lfw_faces(detector: SplitDetector, shared_dir: Path) -> list:
    from facesplit.detector import SplitDetector as Detector
    from facesplit.images import read_image_bgr
    from facesplit.preprocess import InputSize
    from privacy_attack.descriptors import DescribedFace, find_face

    folder = shared_dir / "data" / "faces" / "lfw"
    if not folder.is_dir():
        pytest.skip("the shared folder has no lfw/ set")
    native = Detector(detector.source, InputSize.parse("native"))
    faces = []
    for photo in read_people(folder)[:4]:
        box = find_face(native, read_image_bgr(photo.path))
        assert box is not None, photo.path
        faces.append(DescribedFace(photo, box, np.zeros(128, np.float32)))
    return faces


def test_the_attackers_window_gives_the_crop_of_the_whole_frame(detector: SplitDetector, lfw_faces: list) -> None:
    """The attacker's faces go through a 512x512 window of their frame: the crop must match the whole
    frame's to within a few percent, or the attacker would train on something the edge never sends."""
    from facesplit.detector import at_split
    from privacy_attack.crops import face_crops
    from privacy_attack.scene import Backgrounds

    head = at_split(detector, "inception3").model.head
    backgrounds = Backgrounds.shipped()
    whole = face_crops(head, lfw_faces, 96, backgrounds, seed=4, whole_frame=True, progress=False)
    window = face_crops(head, lfw_faces, 96, backgrounds, seed=4, whole_frame=False, progress=False)
    assert torch.equal(whole["rdcl"].origins, window["rdcl"].origins)
    for split in ("rdcl", "inception3"):
        a, b = whole[split].crops.float(), window[split].crops.float()
        assert a.shape == (4, 128, 6, 6)
        assert float((a - b).norm() / a.norm()) < 0.02, split
    # the face itself is there: the crops of a face differ from those of another face
    assert float((whole["inception3"].crops[0].float() - whole["inception3"].crops[1].float()).norm()) > 1.0



def test_a_compiled_head_gives_the_torch_heads_crops_at_its_split_through_whole_frames(detector: SplitDetector,
                                                                                     lfw_faces: list) -> None:
    """The int8 privacy table runs the attacks through a head runtime (`RuntimeHead`): over the float torch
    runtime it must give exactly the torch module's crops, the attacker's faces through whole frames (a graph has
    one input size), and its own crop-cache key."""
    from facesplit.detector import at_split
    from facesplit.preprocess import InputSize
    from facesplit.runtimes.factory import head_runtime
    from privacy_attack.crop_cache import crops_key
    from privacy_attack.crops import face_crops, head_splits, runs_windows
    from privacy_attack.runtime_head import RuntimeHead
    from privacy_attack.scene import FRAME, Backgrounds

    at = at_split(SplitDetector(detector.source, InputSize(*FRAME)), "inception3")
    compiled = RuntimeHead(head_runtime("torch", at), "inception3", "torch float32")
    assert head_splits(compiled) == ("inception3",) and not runs_windows(compiled) and runs_windows(at.model.head)
    backgrounds = Backgrounds.shipped()
    torch_crops = face_crops(at.model.head, lfw_faces, 96, backgrounds, seed=4, whole_frame=True, progress=False)
    runtime_crops = face_crops(compiled, lfw_faces, 96, backgrounds, seed=4, whole_frame=True, progress=False)
    assert set(runtime_crops) == {"inception3"}
    assert torch.equal(runtime_crops["inception3"].origins, torch_crops["inception3"].origins)
    assert torch.equal(runtime_crops["inception3"].crops, torch_crops["inception3"].crops)
    keys = {crops_key(head, lfw_faces, backgrounds, side=96) for head in
            (at.model.head, compiled, RuntimeHead(head_runtime("torch", at), "inception3", "another graph"))}
    assert len(keys) == 3


def test_a_table_through_a_compiled_head_attacks_only_the_split_it_ends_at(detector: SplitDetector) -> None:
    from facesplit.runtimes.factory import head_runtime
    from privacy_attack.at_scale import ScaleConfig
    from privacy_attack.runtime_head import RuntimeHead
    from privacy_attack.scale_report import TableInputs, TablePlan, run_table
    from privacy_attack.scene import Backgrounds

    compiled = RuntimeHead(head_runtime("torch", detector), "inception3", "torch float32")
    plan = TablePlan({"rdcl": (), "inception3": ()}, (96,), ())
    with pytest.raises(ValueError, match=r"^the head gives splits inception3, not rdcl$"):
        run_table(detector, TableInputs([], [], Backgrounds.flat()), plan, ScaleConfig(), head=compiled)


def test_centred_staging_puts_every_face_on_the_same_cells_over_the_mean(detector: SplitDetector,
                                                                         lfw_faces: list) -> None:
    """REFERENCE.md's setting: each face at the frame's centre over the model's mean grey (zero at the input),
    so every crop is the same cells and whatever is in them is the face."""
    from facesplit.detector import at_split
    from privacy_attack.crops import face_crops
    from privacy_attack.scene import Backgrounds

    head = at_split(detector, "inception3").model.head
    centred = face_crops(head, lfw_faces, 96, Backgrounds.flat(), seed=1, whole_frame=True, centred=True,
                         progress=False)["inception3"]
    assert centred.origins.tolist() == [[13, 13]] * len(lfw_faces)
    assert centred.backdrop.sub(torch.tensor([104.0, 117.0, 123.0])).abs().max() < 12  # mostly mean grey
    scattered = face_crops(head, lfw_faces, 96, Backgrounds.shipped(), seed=1, whole_frame=True,
                           progress=False)["inception3"]
    assert len({tuple(o) for o in scattered.origins.tolist()}) > 1


def test_descriptors_are_cached_by_content_not_by_where_the_photos_lie(detector: SplitDetector, lfw_faces: list,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from privacy_attack import descriptors
    from privacy_attack.people import read_faces

    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        folder.mkdir()
        for i, face in enumerate(lfw_faces[:2]):
            shutil.copy(face.photo.path, folder / f"{i}.jpg")
    cache = tmp_path / "cache"
    first = descriptors.describe(read_faces([here]), detector, cache=cache, progress=False)
    assert len(first) == 2

    def no_encoder() -> None:
        raise AssertionError("described again: the cache missed")

    monkeypatch.setattr(descriptors, "default_encoder", no_encoder)
    again = descriptors.describe(read_faces([there]), detector, cache=cache, progress=False)
    assert [a.descriptor.tolist() for a in again] == [f.descriptor.tolist() for f in first]
    (there / "1.jpg").write_bytes((here / "0.jpg").read_bytes())  # a changed photo is described anew
    with pytest.raises(AssertionError, match="cache missed"):
        descriptors.describe(read_faces([there]), detector, cache=cache, progress=False)

# --- the defence ---------------------------------------------------------------------------------------------

def _identity_in_first_channels(n: int, channels: int, generator: torch.Generator) -> CropSet:
    """Crops whose first 8 channels carry their descriptor linearly and whose other channels are empty."""
    descriptors = torch.randn(n, 128, generator=generator)
    crops = torch.zeros(n, channels, 4, 4)
    crops[:, :8] = (descriptors @ torch.randn(128, 8 * 16, generator=generator) / 11).view(n, 8, 4, 4)
    return CropSet(crops.half(), torch.randint(0, 28, (n, 2), generator=generator), descriptors,
                   [str(i) for i in range(n)], (32, 32), torch.zeros(n, 3, 32, 32, dtype=torch.uint8),
                   torch.zeros(n, 3))


@pytest.mark.slow
def test_noise_fitted_against_the_probe_grows_where_identity_is(faceboxes: FaceBoxes, shared_dir: Path) -> None:
    """Identity carried by channels 0-7 only: fitted against the probe, sigma grows there, not elsewhere."""
    from facesplit.noise.fit import FitConfig, FitImage, build_training_set, fit_profile
    from privacy_attack.defence import IdentityAdversary

    photos = sorted((shared_dir / "data/faces/unlabelled").glob("*.jpg"))[:2]
    config = FitConfig(alpha=0.3, epochs=4, augmentations=1, batch_size=1)
    data = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos], config)
    faces = _identity_in_first_channels(1500, 128, torch.Generator().manual_seed(0))
    plain = fit_profile(faceboxes, data, config)
    defended = fit_profile(faceboxes, data, config, adversary=IdentityAdversary(faces, weight=2.0, batch=128))
    growth = defended.sigma / plain.sigma
    assert float(growth[:8].mean()) > float(growth[8:].mean()) + 0.1
    scores = [epoch["adversary"]["probe_held_out_rank1_100"] for epoch in defended.fitted_on["history"]]
    assert len(scores) == config.epochs and all(0 <= score <= 1 for score in scores)  # retrained every epoch
    ranked = fit_profile(faceboxes, data, replace(config, rank=16, epochs=1),
                         adversary=IdentityAdversary(faces, weight=2.0, batch=128))
    assert ranked.basis is not None and ranked.sigma.shape[0] == 16
    assert "adversary" in ranked.fitted_on["history"][0]  # read in the basis' coordinates


def test_the_mlp_adversary_trains_against_the_noise_and_pushes_sigma_where_identity_is() -> None:
    """Identity carried by channels 0-7 only: the alternating MLP probe learns to identify through the current
    noise, and its term's gradient asks for more sigma on those channels, not on the others."""
    from privacy_attack.defence import IdentityAdversary

    faces = _identity_in_first_channels(1500, 16, torch.Generator().manual_seed(0))
    sigma = torch.full((16, 32, 32), 0.3)
    adversary = IdentityAdversary(faces, weight=1.0, batch=128, mlp_steps=200)
    scores = adversary.refit(sigma)
    assert scores["mlp_held_out_rank1_100"] > 0.2  # chance is 0.01
    sigma = sigma.clone().requires_grad_(True)
    adversary.loss(sigma, torch.Generator().manual_seed(1)).backward()
    assert sigma.grad is not None
    pull = -sigma.grad.sum((1, 2))  # minimising the loss moves sigma along minus its gradient
    assert float(pull[:8].min()) > 0 and float(pull[:8].mean()) > 10 * float(pull[8:].abs().mean())


def test_the_adversary_of_a_rank_profile_reads_the_coordinates_the_edge_keeps() -> None:
    """A basis whose columns 8-15 are channels 0-7 (where identity is) and whose columns 0-7 are empty channels:
    in the basis the probe identifies through the noise, and its term asks for sigma on coordinates 8-15 only;
    a basis that drops channels 0-7 leaves it nothing to read."""
    from privacy_attack.defence import IdentityAdversary

    faces = _identity_in_first_channels(1500, 32, torch.Generator().manual_seed(0))
    eye = torch.eye(32)
    keeps = torch.cat([eye[:, 16:24], eye[:, :8]], dim=1)  # (32, 16): coordinates 8-15 are channels 0-7
    drops = eye[:, 16:32]
    adversary = IdentityAdversary(faces, weight=1.0, batch=128)
    seen = adversary.in_basis(keeps)
    assert seen.faces.crops.shape[1] == 16 and torch.equal(seen.faces.crops[:, 8:], faces.crops[:, :8])
    sigma = torch.full((16, 32, 32), 0.3)
    assert seen.refit(sigma)["probe_held_out_rank1_100"] > 0.2  # chance is 0.01
    sigma.requires_grad_(True)
    seen.loss(sigma, torch.Generator().manual_seed(1)).backward()
    assert sigma.grad is not None
    pull = -sigma.grad.sum((1, 2))
    assert float(pull[8:].min()) > 0 and float(pull[8:].mean()) > 10 * float(pull[:8].abs().mean())
    blind = IdentityAdversary(faces, weight=1.0, batch=128).in_basis(drops)
    assert blind.refit(torch.full((16, 32, 32), 0.3))["probe_held_out_rank1_100"] < 0.05
    with pytest.raises(RuntimeError, match="before"):
        seen.in_basis(keeps)


def test_the_face_decoder_adversary_pushes_sigma_where_the_face_pixels_are() -> None:
    """Identity carried by channels 0-7, the face's pixels by channels 8-15: the probe alone asks for sigma on
    0-7 only; with the face decoder refitted beside it, its term asks for sigma on 8-15 too, and its held-out
    fit explains most of the pixels it can see."""
    from privacy_attack.defence import IdentityAdversary

    generator = torch.Generator().manual_seed(0)
    n = 1500
    faces = _identity_in_first_channels(n, 16, generator)
    looks = torch.randn(n, 12, generator=generator)
    crops = faces.crops.float()
    crops[:, 8:] = (looks @ torch.randn(12, 8 * 16, generator=generator) / 3).view(n, 8, 4, 4)
    faces.crops = crops.half()
    pixels = (128 + 30 * looks @ torch.randn(12, 3 * 32 * 32, generator=generator) / 12 ** 0.5).clamp(0, 255)
    faces.faces = pixels.round().to(torch.uint8).view(n, 3, 32, 32)
    pulls = {}
    for decoder in (False, True):
        adversary = IdentityAdversary(faces, weight=1.0, batch=256, face_decoder=decoder)
        sigma = torch.full((16, 32, 32), 0.3)
        scores = adversary.refit(sigma)
        assert ("decoder_held_out_r2" in scores) == decoder
        if decoder:
            assert scores["decoder_held_out_r2"] > 0.5
        sigma.requires_grad_(True)
        adversary.loss(sigma, torch.Generator().manual_seed(1)).backward()
        assert sigma.grad is not None
        pulls[decoder] = -sigma.grad.sum((1, 2))
    assert float(pulls[False][8:].abs().max()) < 0.05 * float(pulls[False][:8].mean())
    assert float(pulls[True][8:].min()) > 0 and float(pulls[True][8:].mean()) > 0.2 * float(pulls[True][:8].mean())


def test_crops_are_kept_on_disk_and_a_changed_setting_makes_them_anew(detector: SplitDetector, lfw_faces: list,
                                                                      tmp_path: Path) -> None:
    from facesplit.detector import at_split
    from privacy_attack.crop_cache import crops_key, load_or_make
    from privacy_attack.crops import face_crops
    from privacy_attack.scene import Backgrounds

    head = at_split(detector, "rdcl").model.head
    backgrounds = Backgrounds.shipped()
    made: list[int] = []

    def make(seed: int) -> dict[str, CropSet]:
        made.append(seed)
        return face_crops(head, lfw_faces[:2], 48, backgrounds, seed=seed, progress=False)

    first = load_or_make(tmp_path, crops_key(head, lfw_faces[:2], backgrounds, side=48, seed=0), lambda: make(0))
    again = load_or_make(tmp_path, crops_key(head, lfw_faces[:2], backgrounds, side=48, seed=0), lambda: make(0))
    assert made == [0]
    for field in ("crops", "origins", "descriptors", "faces", "backdrop"):
        assert torch.equal(getattr(first["rdcl"], field), getattr(again["rdcl"], field)), field
    assert again["rdcl"].grid == first["rdcl"].grid and again["rdcl"].identities == first["rdcl"].identities
    load_or_make(tmp_path, crops_key(head, lfw_faces[:2], backgrounds, side=48, seed=1), lambda: make(1))
    assert made == [0, 1]
