"""`frosted attack` as a user runs it: a shipped profile, a small profile with both attacks, bad input.

Budgets are tiny (two victims, two inversion steps, a one-second decoder): these check the verb's wiring,
outputs and errors, not what the attacks recover (tests/test_attack.py checks the attacks themselves).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from facesplit.faceboxes import FaceBoxes
from facesplit.noise.profile import NoiseProfile
from facesplit.noise.shipped import resolve_profile
from facesplit.weights import head_fingerprint
from privacy_attack.tradeoff import AP_DRAWS
from tests.conftest import invoke_frosted, run_frosted

CELL = 240  # write_grid draws each cell 2.4 inches square at 100 dpi
ROW = re.compile(r"^(\S+)\s+(\d+)\s+(decoder|inversion)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+"
                 r"(\d+)% \((\d+)%\)\s+(\d+)% \((\d+)%\)\s+(\d+)%\s*(\*?)$", re.MULTILINE)


def attack(weights_path: Path, shared_dir: Path, out: Path, *args: str) -> dict:
    """Run the verb on the first two labelled victims, one thread; return attack.json and the stdout."""
    result = run_frosted("attack", *args, "--victims", "labelled", "--limit", "2", "--inversion-steps", "2",
                         "--ap-limit", "3", "--threads", "1", "--seed", "0", "--weights", str(weights_path),
                         "--shared", str(shared_dir), "--out", str(out), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "inversion k=" in result.stderr and "inversion k=" not in result.stdout  # progress on stderr
    report = json.loads((out / "attack.json").read_text())
    report["stdout"] = result.stdout
    return report


def rows(stdout: str) -> dict[tuple[str, int, str], bool]:
    """(profile, k, attack) -> marked stronger, for every line of the printed table."""
    return {(m[0], int(m[1]), m[2]): m[12] == "*" for m in ROW.findall(stdout)}


def check_grid(out: Path, report: dict, attack: str, columns: list[str]) -> None:
    grid = report["grids"][attack]
    assert grid["file"] == f"grid-{attack}.png" and grid["columns"] == columns
    with Image.open(out / grid["file"]) as image:
        assert image.format == "PNG"
        assert image.size == (CELL * len(columns), CELL * len(grid["rows"]))
    assert grid["rows"] == ["img1.jpg", "img10.jpg"]  # the first two labelled victims, by name


@pytest.mark.slow  # an attack in a subprocess
def test_inversion_against_a_shipped_profile(weights_path: Path, shared_dir: Path, face_recogniser: None,
                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = attack(weights_path, shared_dir, out, "--noise", "alpha-0.2", "--attack", "inversion",
                    "--k", "8", "--k", "1")
    assert report["settings"]["k_values"] == [1, 8] and report["settings"]["input_size"] == "1024x1024"
    profiles = report["profiles"]
    assert list(profiles) == ["none", "alpha-0.2"]  # the no-noise baseline always runs
    assert profiles["none"]["k_values"] == [1] and profiles["alpha-0.2"]["k_values"] == [1, 8]
    assert profiles["none"]["profile"] is None and profiles["alpha-0.2"]["profile"]["alpha"] == 0.2
    for name, ks in (("none", [1]), ("alpha-0.2", [1, 8])):
        assert list(profiles[name]["attacks"]) == ["inversion"] and "stronger" not in profiles[name]
        for k in ks:
            entry = profiles[name]["attacks"]["inversion"][f"k={k}"]
            assert entry["images"] == 2 and entry["faces"] == 2 and 0 <= entry["face_ssim"] <= 1
            # re-identification searches every labelled photo, not only the two attacked
            assert entry["reid"]["same_photo"]["queries"] == 2
    assert profiles["none"]["gallery"] == {"photos": 18, "identities": 9}
    check_grid(out, report, "inversion", ["original", "no noise", "alpha-0.2, k=1", "alpha-0.2, k=8"])
    assert rows(report["stdout"]) == {("none", 1, "inversion"): False, ("alpha-0.2", 1, "inversion"): False,
                                      ("alpha-0.2", 8, "inversion"): False}
    assert "re-identification gallery: 18 photos of 9 people" in report["stdout"]
    # the boxes-only baseline: the attacker's average face (from its MIT+CMU photos) in the victims' face boxes
    boxes = profiles["none"]["baselines"]["boxes_only"]
    assert boxes["faces"] == 2 and 0 < boxes["face_ssim"] < 1
    assert f"the boxes-only guess (the attacker's average face painted into each face box the tail returns, over " \
           f"the mean colour): face SSIM {boxes['face_ssim']:.3f}" in report["stdout"]
    # AP on photos the profile was not fitted on: the shipped profiles saw MIT+CMU folds 1-5
    seen = set(NoiseProfile.load(resolve_profile("alpha-0.2")).fitted_on["seen"])
    assert any(key.startswith("mitcmu/") for key in seen)
    for name in ("none", "alpha-0.2"):
        found = profiles[name]["accuracy"]
        assert found["mitcmu"]["images"] == 3 and found["mitcmu"]["iou"] == 0.3 and found["dlib"]["images"] == 3
        assert min(found["mitcmu"]["folds"]) > 5 and 0 <= found["mitcmu"]["ap"] <= 1
        # with noise, AP is the mean of several noise draws (one draw swings by about a point)
        draws = found["mitcmu"]["ap_draws"]
        assert len(draws) == (1 if name == "none" else AP_DRAWS)
        assert found["mitcmu"]["ap"] == pytest.approx(sum(draws) / len(draws))
        spread = f" [{min(draws):.3f}-{max(draws):.3f}]" if len(draws) > 1 else ""
        assert f"{name:<9} mitcmu AP@0.3 {found['mitcmu']['ap']:.3f}{spread} (3 photos)" in report["stdout"]
    with Image.open(out / report["tradeoff"]) as image:
        assert report["tradeoff"] == "tradeoff.png" and image.format == "PNG"


@pytest.mark.slow  # both attacks in a subprocess
def test_both_attacks_on_a_small_profile_file(weights_path: Path, shared_dir: Path, faceboxes: FaceBoxes,
                                              face_recogniser: None, tmp_path: Path) -> None:
    # a 512x512 input (a quarter of the compute) needs a profile fitted for it: an isotropic one will do
    shape = (128, 512 // 32, 512 // 32)
    profile_file = tmp_path / "iso.safetensors"
    NoiseProfile(mu=torch.zeros(shape), sigma=torch.full(shape, 0.5), alpha=0.0, input_size=(512, 512),
                 head_fingerprint=head_fingerprint(faceboxes)).save(profile_file)
    out = tmp_path / "out"
    report = attack(weights_path, shared_dir, out, "--noise", "clean", "--noise", str(profile_file),
                    "--input-size", "512", "--decoder-seconds", "1", "--k", "1", "--k", "4", "--draws", "2")
    profiles = report["profiles"]
    assert list(profiles) == ["none", str(profile_file)]  # 'clean' is the baseline, not a second run
    noisy = profiles[str(profile_file)]
    assert list(noisy["attacks"]) == ["decoder", "inversion"] and set(noisy["stronger"]) == {"k=1", "k=4"}
    # two noise draws per victim, pooled; the no-noise baseline has only one to draw
    assert report["settings"]["draws"] == 2 and noisy["draws"] == 2 and profiles["none"]["draws"] == 1
    for attack_name in ("decoder", "inversion"):
        other = noisy["attacks"][attack_name]["k=1"]["reid"]["other_photo"]
        assert other["draws"] == 2 and len(other["draw_rates"]) == 2 and other["queries"] == 2
    assert "pooled over 2 noise draws" in report["stdout"]
    assert noisy["attacks"]["decoder"]["budget"]["attacker_photos"] > 100  # MIT+CMU and the colour photos
    for attack_name in ("decoder", "inversion"):
        check_grid(out, report, attack_name, ["original", "no noise", "iso.safetensors, k=1", "iso.safetensors, k=4"])
    table = rows(report["stdout"])
    assert len(table) == 2 + 4
    for (name, k, attack_name), marked in table.items():
        assert marked == (report["profiles"]["none" if name == "none" else str(profile_file)]
                          ["stronger"][f"k={k}"] == attack_name)


def test_unknown_profile_is_one_line(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    result = invoke_frosted("attack", "--noise", "no-such-profile", "--weights", str(weights_path),
                            "--shared", str(shared_dir), "--out", str(tmp_path / "out"), "--threads", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no-such-profile: no such profile file, and not a shipped profile")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_dlib_says_to_install_the_attack_extra(weights_path: Path, shared_dir: Path,
                                                       tmp_path: Path) -> None:
    """In a process of its own: one whose dlib fails to import (this one may have loaded dlib already)."""
    shadow = tmp_path / "shadow"  # a dlib that fails to import, ahead of any installed one
    shadow.mkdir()
    (shadow / "dlib.py").write_text("raise ImportError('No module named dlib')\n")
    result = run_frosted("attack", "--noise", "alpha-0.2", "--weights", str(weights_path),
                         "--shared", str(shared_dir), "--out", str(tmp_path / "out"), "--threads", "1",
                         env={"PYTHONPATH": str(shadow)})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: re-identification needs dlib and its face models: install the "
                                    "attack extra (pip install -e '.[attack]')")
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_shared_data_is_one_line(weights_path: Path, tmp_path: Path) -> None:
    result = invoke_frosted("attack", "--weights", str(weights_path), "--shared", str(tmp_path), "--threads", "1")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'data/faces/unlabelled'}: not found; point --shared")
    assert len(result.stderr.strip().splitlines()) == 1


def _people(shared_dir: Path, folder: Path, people: int) -> Path:
    """The first ``people`` of the shared victims, copied into ``folder`` as <person>/<photo>.jpg."""
    import shutil

    source = shared_dir / "data" / "faces" / "lfw"
    if not source.is_dir():
        pytest.skip("the shared folder has no lfw/ set")
    for person in sorted(p for p in source.iterdir() if p.is_dir())[:people]:
        shutil.copytree(person, folder / person.name)
    return folder


@pytest.mark.slow
def test_attack_on_a_folder_of_people_at_camera_scale(weights_path: Path, shared_dir: Path, face_recogniser: None,
                                                       tmp_path: Path) -> None:
    """--victims DIR and --attacker DIR as a site would use them: identities from the folders, every identity
    figure with its interval and chance, one table row per condition, the files written."""
    victims = _people(shared_dir, tmp_path / "victims", 6)
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    for photo in sorted((shared_dir / "data" / "faces" / "attacker" / "lfw-singletons").glob("*.jpg"))[:150]:
        (attacker / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    result = run_frosted("attack", "--victims", str(victims), "--attacker", str(attacker), "--scales", "96",
                         "--noise", "inception3-alpha-0.4", "--k", "1", "--probe-seconds", "2", "--ap-limit", "2",
                         "--seed", "0", "--weights", str(weights_path), "--shared", str(shared_dir), "--out", str(out),
                         env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "attack.json").read_text())
    assert report["data"]["people"] == 6 and report["data"]["attacker_photos"] == 150
    found = report["scales"]["96"]["splits"]["inception3"]
    assert set(found) == {"clean/clean", "inception3-alpha-0.4/k=1"}  # the rotating secret is a k = 30 figure
    probe = found["inception3-alpha-0.4/k=1"]["probe_linear"]
    assert probe["people"] == 6 and probe["rank1_6"]["chance"] == pytest.approx(1 / 6)
    low, high = probe["rank1_6"]["ci95"]
    assert low - 1e-9 <= probe["rank1_6"]["rate"] <= high + 1e-9 and high > 1 / 6  # 12 queries: a wide interval
    assert probe["budget"]["samples"] == 2 * report["data"]["attacker_faces"]  # two placements per face
    ceiling = report["scales"]["96"]["baselines"]["original_photo"]
    assert ceiling["rank1_6"]["rate"] > 0.8  # dlib on the originals names them
    assert "inception3-alpha-0.4" in report["accuracy"]["inception3"]
    assert "| inception3 | inception3-alpha-0.4 | k=1 |" in result.stdout
    # 6 people: no gallery of 100 to pick from, and the table says so rather than claim a chance of 1 %
    assert "Rank-1 among all 6 people (chance 16.7%; fewer than 100" in result.stdout
    assert "| rank-1 / 6 | rank-1 / all |" in result.stdout and "rank-1 / 100" not in result.stdout
    assert (out / "attack.md").is_file() and (out / "attack-grid.png").is_file() and (out / "attack.png").is_file()


def test_a_victims_folder_without_people_is_one_line(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 40)).save(tmp_path / "flat" / name)
    for victims in (tmp_path / "flat", tmp_path / "nowhere"):
        result = invoke_frosted("attack", "--victims", str(victims), "--weights", str(weights_path),
                                "--shared", str(shared_dir), "--out", str(tmp_path / "out"))
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"Error: {victims}") and len(result.stderr.strip().splitlines()) == 1
