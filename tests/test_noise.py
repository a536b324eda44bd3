"""Noise profiles: fresh CSPRNG noise, statistics, refusal of mismatched profiles, exact round trips."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from facesplit.detector import SplitDetector
from facesplit.faceboxes import FaceBoxes
from facesplit.noise.fit import FitConfig, FitImage, build_training_set, fit_profile, privacy_loss, signal_variance
from facesplit.noise.profile import NoiseProfile, Obfuscator, ProfileError
from facesplit.noise.sampler import GaussianStream
from facesplit.weights import head_fingerprint, load_faceboxes
from tests.conftest import REPO, invoke_frosted, run_frosted


def make_profile(fingerprint: str, shape: tuple[int, int, int] = (128, 32, 32)) -> NoiseProfile:
    g = torch.Generator().manual_seed(0)
    return NoiseProfile(mu=torch.randn(shape, generator=g) * 0.3, sigma=torch.rand(shape, generator=g) * 2 + 0.05,
                        alpha=0.5, input_size=(shape[2] * 32, shape[1] * 32), head_fingerprint=fingerprint)


def test_consecutive_frames_never_share_noise(one_torch_thread: None) -> None:
    profile = make_profile("x" * 64)
    obfuscate = Obfuscator(profile)
    activation = torch.zeros(1, *profile.shape)
    frames = [obfuscate(activation) for _ in range(50)]
    for a, b in itertools.pairwise(frames):
        assert not torch.equal(a, b)
        assert (a == b).float().mean() < 1e-3  # not even a shared block of noise
    # two agents started the same way still draw different noise: the key comes from os.urandom
    assert not torch.equal(GaussianStream().normal((1000,)), GaussianStream().normal((1000,)))


def test_only_an_explicit_seed_reproduces_noise() -> None:
    a = GaussianStream(seed_for_reproducible_evaluation=7).normal((4096,))
    b = GaussianStream(seed_for_reproducible_evaluation=7).normal((4096,))
    assert torch.equal(a, b)
    assert not torch.equal(a, GaussianStream(seed_for_reproducible_evaluation=8).normal((4096,)))


def test_noise_is_standard_normal() -> None:
    sample = GaussianStream().normal((200_000,)).numpy()
    assert stats.kstest(sample, "norm").pvalue > 1e-4
    assert abs(sample.mean()) < 0.01 and abs(sample.std() - 1) < 0.01
    # odd sizes work and keep the shape
    assert GaussianStream().normal((3, 5, 7)).shape == (3, 5, 7)


def test_applied_noise_matches_mu_and_sigma_per_element() -> None:
    profile = make_profile("x" * 64, shape=(4, 3, 5))
    activation = torch.rand(1, 4, 3, 5)
    obfuscate = Obfuscator(profile)
    draws = torch.cat([obfuscate(activation) for _ in range(4000)]) - activation
    assert torch.allclose(draws.mean(0), profile.mu, atol=4 * profile.sigma.max().item() / np.sqrt(4000))
    assert torch.allclose(draws.std(0) / profile.sigma, torch.ones(4, 3, 5), atol=0.08)


def test_profile_for_other_head_weights_is_refused(tmp_path: Path, faceboxes: FaceBoxes) -> None:
    path = tmp_path / "p.safetensors"
    make_profile("0" * 64).save(path)
    with pytest.raises(ProfileError, match="fitted for head weights 000000000000"):
        NoiseProfile.load(path, head_fingerprint=head_fingerprint(faceboxes))
    right = tmp_path / "right.safetensors"
    make_profile(head_fingerprint(faceboxes)).save(right)
    with pytest.raises(ProfileError, match="input size 1024x1024, not 1024x576"):
        NoiseProfile.load(right, head_fingerprint(faceboxes), (1024, 576))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ProfileError, match="not a readable noise profile"):
        NoiseProfile.load(tmp_path / "junk.safetensors")


@pytest.mark.slow  # a fit
def test_fit_save_load_apply_round_trips_exactly(tmp_path: Path, faceboxes: FaceBoxes, shared_dir: Path) -> None:
    photos = sorted((shared_dir / "data/faces/unlabelled").glob("*.jpg"))[:2]
    config = FitConfig(alpha=0.5, epochs=1, augmentations=1, batch_size=2)
    data = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos], config)
    fitted = fit_profile(faceboxes, data, config)
    assert fitted.fitted_on["seen"] == [f"unlabelled/{p.name}" for p in photos]
    exact, shipped = tmp_path / "fp32.safetensors", tmp_path / "fp16.safetensors"
    fitted.save(exact, dtype=torch.float32)
    fitted.save(shipped)
    loaded = NoiseProfile.load(exact, head_fingerprint(faceboxes), (1024, 1024))
    assert torch.equal(loaded.mu, fitted.mu) and torch.equal(loaded.sigma, fitted.sigma)
    assert loaded.fingerprint == fitted.fingerprint and loaded.fitted_on == fitted.fitted_on
    half = NoiseProfile.load(shipped)
    assert torch.equal(half.mu, fitted.mu.half().float()) and torch.equal(half.sigma, fitted.sigma.half().float())
    activation = data.activations[:1].float()
    for profile in (fitted, loaded):
        applied = Obfuscator(profile, GaussianStream(seed_for_reproducible_evaluation=3))(activation)
        assert torch.equal(applied, Obfuscator(loaded, GaussianStream(seed_for_reproducible_evaluation=3))(activation))


@pytest.mark.slow  # a fit
def test_fit_with_a_rank_keeps_the_principal_directions(tmp_path: Path, faceboxes: FaceBoxes,
                                                        shared_dir: Path) -> None:
    photos = sorted((shared_dir / "data/faces/unlabelled").glob("*.jpg"))[:2]
    config = FitConfig(alpha=0.5, epochs=1, augmentations=1, batch_size=2, rank=16, privacy="information", dct=True)
    data = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos], config)
    fitted = fit_profile(faceboxes, data, config)
    assert fitted.fitted_on["privacy"] == "information" and fitted.dct and fitted.fitted_on["dct"]
    assert fitted.rank == 16 and fitted.mu.shape == (16, 32, 32) and fitted.shape == (128, 32, 32)
    assert torch.allclose(fitted.basis.T @ fitted.basis, torch.eye(16), atol=1e-4)
    # the first directions carry most of the variance: more than a random 16 of 128 channels would
    assert 16 / 128 < fitted.fitted_on["energy_kept"] <= 1 and fitted.fitted_on["rank"] == 16
    clean = data.activations.float()
    kept = fitted.expand(fitted.coordinates(clean))
    lost = ((clean - kept) ** 2).sum() / (clean**2).sum()
    assert lost.item() == pytest.approx(1 - fitted.fitted_on["energy_kept"], abs=1e-3)
    path = tmp_path / "rank.safetensors"
    fitted.save(path)
    loaded = NoiseProfile.load(path, head_fingerprint(faceboxes), (1024, 1024))
    assert loaded.dct and loaded.fingerprint == fitted.fingerprint
    sent = Obfuscator(loaded)(clean[:1])
    assert sent.shape == (1, 128, 32, 32) and torch.allclose(loaded.expand(loaded.coordinates(sent)), sent, atol=1e-4)


@pytest.mark.slow  # two fits
def test_tail_epochs_train_only_the_tail_with_the_noise_frozen(faceboxes: FaceBoxes, shared_dir: Path) -> None:
    photos = sorted((shared_dir / "data/faces/unlabelled").glob("*.jpg"))[:2]
    config = FitConfig(alpha=0.5, epochs=1, augmentations=0, batch_size=1, tune_tail=True, rank=128, dct=True,
                       privacy="information")
    data = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos], config)
    joint = fit_profile(faceboxes, data, config)
    longer = fit_profile(faceboxes, data, replace(config, tail_epochs=2))
    # the same seed gives the same joint epoch; the tail-only epochs then leave mu and sigma where they were
    assert torch.equal(longer.mu, joint.mu) and torch.equal(longer.sigma, joint.sigma)
    assert joint.tail_state is not None and longer.tail_state is not None
    assert any(not torch.equal(longer.tail_state[k], joint.tail_state[k]) for k in joint.tail_state)
    assert [e["tail_only"] for e in longer.fitted_on["history"]] == [False, True, True]
    assert longer.fitted_on["tail_epochs"] == 2 and joint.fitted_on["tail_epochs"] == 0


@pytest.mark.slow  # two fits
def test_a_fit_from_a_profile_keeps_its_noise_bit_for_bit_and_trains_its_tail(tmp_path: Path, faceboxes: FaceBoxes,
                                                                              shared_dir: Path) -> None:
    photos = sorted((shared_dir / "data/faces/unlabelled").glob("*.jpg"))
    config = FitConfig(alpha=0.5, epochs=1, augmentations=0, batch_size=1, tune_tail=True, rank=8)
    first = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos[:2]], config)
    path = tmp_path / "start.safetensors"
    fit_profile(faceboxes, first, config).save(path)
    start = NoiseProfile.load(path)
    more = build_training_set(faceboxes, [FitImage(f"unlabelled/{p.name}", p, None) for p in photos[2:4]], config)
    retuned = fit_profile(faceboxes, more, replace(config, alpha=0.1, rank=None, epochs=0, tail_epochs=1),
                          start=start)
    retuned.save(tmp_path / "retuned.safetensors")
    again = NoiseProfile.load(tmp_path / "retuned.safetensors")
    # mu, sigma and the basis as shipped, bit for bit (so its privacy figures carry over); the tail moved on
    assert torch.equal(again.mu, start.mu) and torch.equal(again.sigma, start.sigma)
    assert torch.equal(again.basis, start.basis) and again.alpha == 0.5 and again.rank == 8
    assert start.tail_state is not None and again.tail_state is not None
    assert any(not torch.equal(again.tail_state[k], start.tail_state[k]) for k in start.tail_state)
    assert again.fingerprint != start.fingerprint
    assert again.fitted_on["noise_from"]["fingerprint"] == start.fingerprint
    assert again.fitted_on["seen"] == sorted(f"unlabelled/{p.name}" for p in photos[:4])  # eval skips all four
    assert [e["tail_only"] for e in again.fitted_on["history"]] == [True]
    with pytest.raises(ValueError, match="tail alone"):
        fit_profile(faceboxes, more, replace(config, epochs=1, tail_epochs=1), start=start)


def test_information_privacy_rewards_noise_only_where_there_is_signal_to_hide() -> None:
    activations = torch.randn(64, 4, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 + 1
    activations[:, :, 0, 0] = 0.7  # the same in every frame (letterbox padding): nothing to hide
    variance = signal_variance(activations.half(), None, chunk=10)
    expected = activations.half().float().var(dim=0, unbiased=False)
    assert torch.allclose(variance, expected, atol=1e-4) and torch.all(variance[:, 0, 0] == 0)
    sigma = torch.tensor([0.01, 0.5, 2.0, 50.0]).view(4, 1, 1).expand(4, 2, 2).clone().requires_grad_(True)
    privacy_loss("information", sigma, variance).backward()
    assert sigma.grad is not None
    assert torch.all(sigma.grad[:, 0, 0] == 0) and torch.all(sigma.grad[:, 1:, :] < 0)
    # a drowned element (sigma >> its spread) earns ~nothing more; under log-sigma it always earns 1/sigma
    information = sigma.grad[:, 1, 1].abs()
    assert information[3] < 1e-3 * information[1]
    sigma.grad = None
    privacy_loss("log-sigma", sigma, None).backward()
    assert torch.allclose(sigma.grad * sigma.detach() * sigma.numel(), -torch.ones_like(sigma))


@pytest.mark.slow  # fit-noise then eval, in subprocesses
def test_fit_noise_then_eval_with_it_skips_what_it_saw(tmp_path: Path, weights_path: Path, shared_dir: Path) -> None:
    dlib = shared_dir / "data/faces/dlib"
    profile = tmp_path / "p.safetensors"
    fit = run_frosted("fit-noise", "--alpha", "0.3", "--out", str(profile), "--coco", str(dlib / "labels.json"),
                      "--folds", "9", "--use-folds", "1-2", "--task", "multibox", "--epochs", "1",
                      "--augmentations", "0", "--batch-size", "2", "--weights", str(weights_path))
    assert fit.returncode == 0, fit.stderr
    assert "Wrote" in fit.stdout and "fingerprint" in fit.stdout
    result = run_frosted("eval", "--coco", str(dlib / "labels.json"), "--noise", str(profile), "--seed", "1",
                         "--weights", str(weights_path), "--json", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert "Skipping 2 images" in result.stderr
    assert "dlib-fold-1 " not in result.stdout and "dlib-fold-3 Val AP" in result.stdout
    # an --input-size the profile was not fitted for: a usage error
    bad = run_frosted("eval", "--coco", str(dlib / "labels.json"), "--noise", str(profile),
                      "--input-size", "1024x576", "--weights", str(weights_path))
    assert bad.returncode == 2 and "1024x1024" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_fit_noise_refuses_before_fitting(tmp_path: Path, weights_path: Path, shared_dir: Path) -> None:
    """A rank over the activation's channels, tail epochs without tuning the tail, a face decoder or a face
    size for the adversary without the attacker's faces, or an adversary per frequency: usage errors, no
    profile."""
    dlib = shared_dir / "data/faces/dlib"
    too_many = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "r.safetensors"), "--rank",
                              "200", "--coco", str(dlib / "labels.json"), "--use-folds", "1", "--weights",
                              str(weights_path))
    assert too_many.returncode == 2 and "--rank" in too_many.stderr and "only 128 channels" in too_many.stderr
    assert not (tmp_path / "r.safetensors").exists()
    untuned = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "t.safetensors"),
                             "--tail-epochs", "3", "--coco", str(dlib / "labels.json"), "--use-folds", "1",
                             "--weights", str(weights_path))
    assert untuned.returncode == 2 and "--tune-tail" in untuned.stderr and not (tmp_path / "t.safetensors").exists()
    blind = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "d.safetensors"),
                           "--adversary-decoder", "--coco", str(dlib / "labels.json"), "--use-folds", "1",
                           "--weights", str(weights_path))
    assert blind.returncode == 2 and "--adversary-faces" in blind.stderr and not (tmp_path / "d.safetensors").exists()
    sized = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "s.safetensors"),
                           "--adversary-face-size", "192", "--coco", str(dlib / "labels.json"), "--use-folds", "1",
                           "--weights", str(weights_path))
    assert sized.returncode == 2 and "--adversary-faces" in sized.stderr and not (tmp_path / "s.safetensors").exists()
    per_frequency = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "f.safetensors"),
                                   "--adversary-faces", str(dlib / "images"), "--dct", "--coco",
                                   str(dlib / "labels.json"), "--use-folds", "1", "--weights", str(weights_path))
    assert per_frequency.returncode == 2 and "--dct" in per_frequency.stderr
    assert not (tmp_path / "f.safetensors").exists()
    nowhere = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "n.safetensors"),
                             "--adversary-faces", str(tmp_path / "nowhere"), "--coco", str(dlib / "labels.json"),
                             "--use-folds", "1", "--weights", str(weights_path))
    # before the activations are computed: the progress bars came first, then the error
    assert nowhere.returncode == 1 and nowhere.stderr.strip().splitlines() == [
        f"Error: --adversary-faces {tmp_path / 'nowhere'}: no such folder"], nowhere.stderr
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "face.jpg").write_bytes((dlib / "images" / "2007_007763.jpg").read_bytes())
    lone = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "o.safetensors"),
                          "--adversary-faces", str(tmp_path / "one"), "--coco", str(dlib / "labels.json"),
                          "--use-folds", "1", "--weights", str(weights_path))
    assert lone.returncode == 1 and lone.stderr.strip().splitlines() == [  # before the activations too
        f"Error: {tmp_path / 'one'}: 1 photo(s); an attacker learns from at least 2"], lone.stderr
    wide = invoke_frosted("fit-noise", "--alpha", "0.3", "--out", str(tmp_path / "w.safetensors"),
                          "--adversary-faces", str(dlib / "images"), "--input-size", "1024x576", "--coco",
                          str(dlib / "labels.json"), "--use-folds", "1", "--weights", str(weights_path))
    assert wide.returncode == 2 and "1024x1024 frames: leave --input-size at 1024" in wide.stderr  # was after the fit
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "w.safetensors").exists()


def test_fit_noise_from_a_profile_refuses_what_would_change_its_noise(tmp_path: Path, weights_path: Path,
                                                                      shared_dir: Path) -> None:
    """--noise-from keeps the profile's noise: an option that would move it, no tail to train, or a file that is
    not a profile (any bytes, even an 8-byte 'header'), are one-line errors before any fit, and nothing is
    written."""
    dlib = shared_dir / "data/faces/dlib"
    shipped = "inception3-rank16-alpha-0.4"  # a shipped name, as every --noise takes, or a file
    data = ["--coco", str(dlib / "labels.json"), "--use-folds", "1", "--weights", str(weights_path)]
    out = tmp_path / "o.safetensors"
    tail = ["--tune-tail", "--tail-epochs", "1"]
    for extra, says in ((["--alpha", "0.3", *tail], "drop --alpha"), (["--rank", "4", *tail], "drop --rank"),
                        (["--split", "rdcl", *tail], "drop --split"), (["--epochs", "3", *tail], "drop --epochs"),
                        (["--adversary-faces", str(dlib / "images"), *tail], "drop --adversary-faces"),
                        ([], "--tune-tail --tail-epochs N")):
        result = invoke_frosted("fit-noise", "--noise-from", shipped, "--out", str(out), *extra, *data)
        assert result.returncode == 2 and says in result.stderr, (extra, result.stderr)
    (tmp_path / "eight.safetensors").write_bytes(bytes(8))
    (tmp_path / "huge.safetensors").write_bytes(b"\xff" * 64)  # a header length of 2^64 - 1
    for bad in (tmp_path / "missing.safetensors", tmp_path / "eight.safetensors", tmp_path / "huge.safetensors",
                REPO / "README.md"):
        result = invoke_frosted("fit-noise", "--noise-from", str(bad), "--out", str(out), *tail, *data)
        error = result.stderr.strip().splitlines()[-1]
        assert result.returncode in (1, 2) and error.startswith("Error: ") and bad.name in error, result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists()
    no_alpha = invoke_frosted("fit-noise", "--out", str(out), *data)
    assert no_alpha.returncode == 2 and "--alpha" in no_alpha.stderr


@pytest.mark.slow  # fit-noise then eval, in subprocesses
def test_a_profile_fitted_at_a_deeper_split_runs_there_and_only_there(tmp_path: Path, weights_path: Path,
                                                                      shared_dir: Path) -> None:
    from facesplit.noise.shipped import split_for

    dlib = shared_dir / "data/faces/dlib"
    profile = tmp_path / "deep.safetensors"
    fit = run_frosted("fit-noise", "--split", "inception3", "--alpha", "0.3", "--out", str(profile), "--coco",
                      str(dlib / "labels.json"), "--folds", "9", "--use-folds", "1", "--epochs", "1",
                      "--augmentations", "0", "--batch-size", "2", "--weights", str(weights_path))
    assert fit.returncode == 0, fit.stderr
    assert "split inception3" in fit.stdout
    loaded = NoiseProfile.load(profile)
    assert loaded.split == "inception3" and split_for(None, [str(profile)]) == "inception3"
    assert loaded.head_fingerprint == head_fingerprint(load_faceboxes(weights_path, "inception3"))
    with pytest.raises(ProfileError, match="different model splits"):
        split_for(None, [str(profile), "alpha-0.2"])
    # no --split: the profile's own; a verb told another split refuses in one line, naming the right one
    result = run_frosted("eval", "--coco", str(dlib / "labels.json"), "--noise", str(profile), "--seed", "1",
                         "--weights", str(weights_path), "--json", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert "dlib-fold-2 Val AP" in result.stdout
    import json

    assert json.loads((tmp_path / "e.json").read_text())["split"] == "inception3"
    wrong = run_frosted("eval", "--coco", str(dlib / "labels.json"), "--noise", str(profile), "--split", "rdcl",
                        "--weights", str(weights_path))
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "fitted for the model split at inception3, not rdcl; pass --split inception3" in wrong.stderr


def random_basis(channels: int, rank: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed)))
    return q[:, :rank].contiguous()


def test_a_profile_with_a_basis_keeps_only_its_directions_and_noises_them() -> None:
    basis = random_basis(6, 2)
    g = torch.Generator().manual_seed(1)
    profile = NoiseProfile(mu=torch.randn(2, 3, 4, generator=g), sigma=torch.rand(2, 3, 4, generator=g) + 0.2,
                           alpha=0.5, input_size=(128, 96), head_fingerprint="x" * 64, basis=basis)
    assert profile.shape == (6, 3, 4) and profile.rank == 2
    activation = torch.rand(1, 6, 3, 4).contiguous(memory_format=torch.channels_last)
    draws = torch.cat([Obfuscator(profile)(activation) for _ in range(4000)])
    assert draws.shape == (4000, 6, 3, 4)
    # nothing outside the basis' span is sent: z = V c exactly
    along = torch.einsum("cr,nchw->nrhw", basis, draws)
    assert torch.allclose(torch.einsum("cr,nrhw->nchw", basis, along), draws, atol=1e-5)
    # the coordinates are the activation's plus mu plus sigma-scaled Gaussian noise
    expected = torch.einsum("cr,nchw->nrhw", basis, activation)[0] + profile.mu
    assert torch.allclose(along.mean(0), expected, atol=4 * profile.sigma.max().item() / np.sqrt(4000))
    assert torch.allclose(along.std(0) / profile.sigma, torch.ones(2, 3, 4), atol=0.08)
    # an attacker who knows mu gets back the activation's kept part plus zero-mean noise
    centred = profile.centred(draws).mean(0)
    kept = profile.expand(profile.coordinates(activation))[0]
    assert torch.allclose(centred, kept, atol=4 * profile.sigma.max().item() / np.sqrt(4000))


@pytest.mark.parametrize("rank", [2, 6])  # 6: a full basis, where only the noise is transformed
def test_a_profile_per_spatial_frequency_noises_the_dct_of_each_map(tmp_path: Path, rank: int,
                                                                one_torch_thread: None) -> None:
    from facesplit.noise.dct import dct_matrix, to_frequencies, to_frequencies_channels_last

    matrix = dct_matrix(8)
    assert torch.allclose(matrix @ matrix.T, torch.eye(8), atol=1e-6)
    maps = torch.rand(2, 3, 8, 4)
    constant = to_frequencies(torch.ones(1, 1, 8, 4))[0, 0]  # a flat map is all in the lowest frequency
    assert constant[0, 0] == pytest.approx(np.sqrt(32), rel=1e-5) and constant.flatten()[1:].abs().max() < 1e-5
    assert torch.allclose(to_frequencies_channels_last(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
                          to_frequencies(maps), atol=1e-5)
    basis = random_basis(6, rank)
    g = torch.Generator().manual_seed(2)
    profile = NoiseProfile(mu=torch.randn(rank, 8, 4, generator=g), sigma=torch.rand(rank, 8, 4, generator=g) + 0.2,
                           alpha=0.5, input_size=(128, 256), head_fingerprint="x" * 64, basis=basis, dct=True)
    activation = torch.rand(1, 6, 8, 4).contiguous(memory_format=torch.channels_last)
    draws = torch.cat([Obfuscator(profile)(activation) for _ in range(4000)])
    # per frequency of each direction's map: the activation's coefficient plus mu plus sigma-scaled noise
    coefficients = to_frequencies(torch.einsum("cr,nchw->nrhw", basis, draws))
    expected = to_frequencies(torch.einsum("cr,nchw->nrhw", basis, activation))[0] + profile.mu
    assert torch.allclose(coefficients.mean(0), expected, atol=4 * profile.sigma.max().item() / np.sqrt(4000))
    assert torch.allclose(coefficients.std(0) / profile.sigma, torch.ones(rank, 8, 4), atol=0.08)
    assert torch.allclose(profile.coordinates(draws), coefficients, atol=1e-5)
    path = tmp_path / "f.safetensors"
    profile.save(path, dtype=torch.float32)
    loaded = NoiseProfile.load(path)
    assert loaded.dct and torch.equal(loaded.mu, profile.mu) and loaded.fingerprint == profile.fingerprint
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # a reader of the earlier formats refuses it instead of misapplying it
        assert f.metadata()["format"] == "frosted-noise-profile/3"
    per_position = NoiseProfile(mu=profile.mu, sigma=profile.sigma, alpha=0.5, input_size=(128, 256),
                                head_fingerprint="x" * 64, basis=basis)
    assert per_position.fingerprint != profile.fingerprint


def test_a_basis_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    profile = NoiseProfile(mu=torch.zeros(3, 2, 2), sigma=torch.full((3, 2, 2), 0.5), alpha=0.1, input_size=(64, 64),
                           head_fingerprint="x" * 64, basis=random_basis(8, 3))
    path = tmp_path / "b.safetensors"
    profile.save(path)  # fp16 tensors, but the basis stays float32 (fp16 would break orthonormality)
    loaded = NoiseProfile.load(path)
    assert torch.equal(loaded.basis, profile.basis) and loaded.fingerprint == profile.fingerprint
    with pytest.raises(ProfileError, match="orthonormal"):
        NoiseProfile(mu=torch.zeros(3, 2, 2), sigma=torch.ones(3, 2, 2), alpha=0.1, input_size=(64, 64),
                     head_fingerprint="x" * 64, basis=torch.ones(8, 3))
    with pytest.raises(ProfileError, match=r"the basis must be \(C, R\) with R = 3"):
        NoiseProfile(mu=torch.zeros(3, 2, 2), sigma=torch.ones(3, 2, 2), alpha=0.1, input_size=(64, 64),
                     head_fingerprint="x" * 64, basis=random_basis(8, 4))


@pytest.mark.parametrize("content", [
    b"", bytes(8), b"\xff" * 64,  # no header; a header of length 0; one of 2^64 - 1 bytes (read as a length)
    (100).to_bytes(8, "little") + b"{}",  # longer than the file
    (7).to_bytes(8, "little") + b"[1,2,3]", (6).to_bytes(8, "little") + b"{\"a\":",  # not an object; cut short
    (24).to_bytes(8, "little") + b'{"__metadata__": [1, 2]}'])  # metadata that is not a mapping
def test_a_file_that_is_not_a_profile_is_refused_from_its_header_alone(tmp_path: Path, content: bytes) -> None:
    from facesplit.noise.profile import split_of

    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ProfileError, match="not a readable noise profile"):
        split_of(path)
    with pytest.raises(ProfileError, match=r"bad\.safetensors"):
        NoiseProfile.load(path)


@pytest.mark.parametrize(("change", "says"), [
    ({"input_size": "abc"}, "malformed header"), ({"alpha": "x"}, "malformed header"),
    ({"fitted_on": "{bad"}, "malformed header"), ({"split": "nowhere"}, "split 'nowhere'"),
    ({"alpha": "nan"}, "alpha 'nan' is not a weight from 0 to 1"), ({"alpha": "-5"}, "not a weight from 0 to 1"),
    ({"input_size": "0x0"}, "no model input"), ({"input_size": "99999x99999"}, "no model input"),
    ({"fitted_on": "[" * 100_000 + "]" * 100_000}, "nested too deeply"), ({"fitted_on": "[1]"}, "not a JSON object"),
    ({"head_fingerprint": None}, "lacks 'head_fingerprint'")])
def test_a_profile_with_a_malformed_header_is_one_profile_error(tmp_path: Path, change: dict, says: str) -> None:
    from safetensors.torch import load_file, save_file

    from facesplit.noise.profile import read_metadata, split_of

    good = tmp_path / "good.safetensors"
    make_profile("x" * 64, (2, 2, 2)).save(good)
    metadata = {k: v for k, v in {**read_metadata(good), **change}.items() if v is not None}
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=metadata)
    with pytest.raises(ProfileError, match=says):
        split_of(bad)
        NoiseProfile.load(bad)


def test_a_noise_aware_tail_of_other_shapes_is_refused_by_name(detector: SplitDetector) -> None:
    from facesplit.detector import with_tail
    from facesplit.errors import FrostedError

    with pytest.raises(FrostedError, match=r"conf\.0\.weight is \(3, 3, 1, 1\), here \(42, 128, 3, 3\)"):
        with_tail(detector, {"conf.0.weight": torch.zeros(3, 3, 1, 1)})
    with pytest.raises(FrostedError, match="tensors this tail lacks"):
        with_tail(detector, {"bogus": torch.zeros(2)})


def test_detector_with_noise_still_finds_faces(detector: SplitDetector, faceboxes: FaceBoxes) -> None:
    from facesplit.images import sample_image

    profile = NoiseProfile(mu=torch.zeros(128, 32, 32), sigma=torch.full((128, 32, 32), 0.1), alpha=0.0,
                           input_size=(1024, 1024), head_fingerprint=head_fingerprint(faceboxes))
    boxes = detector.detect(sample_image("astronaut"), Obfuscator(profile))
    assert boxes[0, 4] > 0.9 and 150 < boxes[0, 0] < 210


def test_rotating_secret_keeps_per_frame_noise_but_resists_averaging() -> None:
    from facesplit.noise.rotating import RotatingObfuscator

    profile = make_profile("x" * 64, shape=(8, 32, 32))  # 8,192 elements: variances to ~6 s.e.
    activation = torch.zeros(1, 8, 32, 32)
    rotating = RotatingObfuscator(profile, secret_fraction=0.5, rotation_frames=30)
    frames = torch.cat([rotating(activation) for _ in range(60)]) - profile.mu
    # one frame: exactly the profile's distribution (unit variance after dividing by sigma)
    assert (frames / profile.sigma).std().item() == pytest.approx(1.0, abs=0.03)
    # averaging a whole rotation cancels only the fresh half: residual variance 0.5 + 0.5/30
    averaged = frames[:30].mean(0) / profile.sigma
    assert averaged.var().item() == pytest.approx(0.5 + 0.5 / 30, rel=0.1)
    fresh_only = torch.cat([Obfuscator(profile)(activation) for _ in range(30)]) - profile.mu
    assert (fresh_only.mean(0) / profile.sigma).var().item() == pytest.approx(1 / 30, rel=0.15)
    # the next rotation draws a new secret: two rotations' averages are independent
    second = frames[30:].mean(0) / profile.sigma
    assert abs(np.corrcoef(averaged.flatten(), second.flatten())[0, 1]) < 0.1
    # with a basis the same holds along it, and nothing leaves its span
    basis = random_basis(12, 8)
    in_basis = NoiseProfile(mu=profile.mu, sigma=profile.sigma, alpha=0.5, input_size=(1024, 1024),
                            head_fingerprint="x" * 64, basis=basis)
    rotating = RotatingObfuscator(in_basis, secret_fraction=0.5, rotation_frames=30)
    frames = torch.cat([rotating(torch.zeros(1, 12, 32, 32)) for _ in range(30)])
    assert torch.allclose(in_basis.expand(in_basis.coordinates(frames)), frames, atol=1e-5)
    averaged = (in_basis.coordinates(frames) - in_basis.mu).mean(0) / in_basis.sigma
    assert averaged.var().item() == pytest.approx(0.5 + 0.5 / 30, rel=0.1)


def test_shipped_profiles_are_listed_and_fit_the_shipped_weights(weights_path: Path, faceboxes: FaceBoxes) -> None:
    import json

    from facesplit.noise.shipped import shipped_profiles

    result = invoke_frosted("profiles", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    # TR-4928's alpha grid, noise on every channel of the RDCL's output, and the same fit at the deeper split
    grid = [row for row in rows if row["rank"] is None and row["split"] == "rdcl"]
    assert sorted(row["alpha"] for row in grid) == [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95]
    deep = [row for row in rows if row["split"] == "inception3" and row["name"].startswith("inception3-alpha-")]
    assert [(row["name"], row["alpha"], row["rank"]) for row in deep] == [
        (f"inception3-alpha-{a}", a, None) for a in (0.2, 0.4, 0.6, 0.8)]
    # and the two fitted against the identity probes (docs/privacy.md): the linear one, and the MLP too
    fitted_against = [row for row in rows if row["split"] == "inception3" and "adversarial" in row["name"]]
    assert [row["name"] for row in fitted_against] == ["inception3-adversarial-0.2", "inception3-adversarial-mlp-0.2"]
    adversaries = [NoiseProfile.load(Path(row["path"])).fitted_on["adversary"] for row in fitted_against]
    assert all(a["crops"] > 10_000 and a["weight"] == 2.0 for a in adversaries)
    assert "MLP" not in adversaries[0]["probe"] and "MLP probe" in adversaries[1]["probe"]
    assert [(row["name"], row["alpha"], row["rank"], row["dct"], row["split"]) for row in rows if row["rank"]] == [
        ("inception3-rank16-alpha-0.4", 0.4, 16, False, "inception3"),  # the default (facesplit.noise)
        ("information-dct-alpha-0.7", 0.7, 128, True, "rdcl"), ("rank48-alpha-0.2", 0.2, 48, False, "rdcl")]
    information = NoiseProfile.load(Path(next(row["path"] for row in rows if row["dct"])))
    assert information.fitted_on["privacy"] == "information" and information.fitted_on["dct"]
    heads = {split: head_fingerprint(faceboxes.at_split(split)) for split in ("rdcl", "inception3")}
    for row in rows:
        assert row["input_size"] == "1024x1024" and Path(row["path"]).stat().st_size < 2_000_000
        profile = NoiseProfile.load(Path(row["path"]), heads[row["split"]], (1024, 1024), row["split"])
        assert profile.alpha == row["alpha"] and profile.tail_state is not None and profile.rank == row["rank"]
    # more privacy weight, more noise
    for family in (grid, deep):
        sigmas = {row["alpha"]: NoiseProfile.load(shipped_profiles()[row["name"]]).sigma.mean().item()
                  for row in family}
        assert [sigmas[a] for a in sorted(sigmas)] == sorted(sigmas.values())


@pytest.mark.slow  # a noisy accuracy run over a face set
def test_eval_with_a_shipped_profile_by_name(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    dlib = shared_dir / "data/faces/dlib"
    result = run_frosted("eval", "--coco", str(dlib / "labels.json"), "--noise", "alpha-0.2",
                         "--weights", str(weights_path), "--json", str(tmp_path / "e.json"))
    assert result.returncode == 0, result.stderr
    assert "==================== Results ====================" in result.stdout
    import json

    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["noise"] == "alpha-0.2" and scores["noise_seed"] is None
    assert scores["by_iou"]["0.5"]["pooled_ap"] > 0.9


def test_a_validation_record_rewrites_the_header_only_and_is_read_back(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from facesplit.noise.profile import read_metadata
    from facesplit.noise.shipped import resolve_profile
    from facesplit.noise.validation import VALIDATED_HEADS, record_validation, validated_heads

    shipped = resolve_profile("alpha-0.2")
    copy = tmp_path / shipped.name
    shutil.copy(shipped, copy)
    assert validated_heads(copy) == {}
    record_validation(copy, "int8", {"draws": 20})
    record_validation(copy, "float16", {"draws": 20})
    record_validation(copy, "int8", {"draws": 40})  # a new measurement replaces the old
    assert validated_heads(copy) == {"int8": {"draws": 40}, "float16": {"draws": 20}}
    before, after = load_file(str(shipped)), load_file(str(copy))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert NoiseProfile.load(copy).fingerprint == NoiseProfile.load(shipped).fingerprint
    assert not list(tmp_path.glob(".*partial"))
    broken = tmp_path / "broken.safetensors"
    profile = NoiseProfile.load(shipped)
    profile.save(broken)
    # a record that is not JSON is one line
    save_file(load_file(str(broken)), str(broken), metadata={**read_metadata(broken), VALIDATED_HEADS: "{nope"})
    with pytest.raises(ProfileError, match=r"broken.safetensors: not a noise profile \(malformed validated_heads"):
        validated_heads(broken)



def test_video_frames_past_the_pixel_limit_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    """Each kept frame of a --frames video is held decoded: the photos' pixel limit holds for it too."""
    from facesplit.evaluation.errors import DatasetError
    from facesplit.noise.fit_data import frames_from
    from frosted.demo import make_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, fps=10)
    assert len(frames_from(clip)) >= 1
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DatasetError, match=r"clip\.mp4: \d+x\d+ frames, more than the 1000 pixels allowed"):
        frames_from(clip)
