"""`frosted eval --fold N` and `--merge DIR`: folds evaluated apart merge into the single run's figures to the
last digit; bad folders are one-line errors; per-image noise does not depend on which process draws it; and
the Kubernetes Jobs' own command lines (read from the rendered overlays) reproduce a single-process run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facesplit.evaluation.coco import LabelledImage
from facesplit.evaluation.folds import fold_record, merge_folds, read_fold_folder
from facesplit.evaluation.report import combine, report_lines, score_folds, score_set
from facesplit.evaluation.sets import EvalSet, fddb_set
from tests.conftest import REPO, invoke_frosted
from tests.test_deploy import EVAL_OVERLAYS, container_of, kubectl_or_skip, rendered

IOUS = (0.3, 0.5)


def comparable(scores: dict) -> str:
    """The figures as text (NaN included), without what differs between a run and a merge: wall times and
    where the merge read from."""
    return json.dumps({k: v for k, v in scores.items() if k not in ("wall_time_s", "merged_from")}, sort_keys=True)


def write_folds(eval_set: EvalSet, detections: dict[str, np.ndarray], folder: Path, threshold: float = 0.7,
                provenance: dict | None = None) -> None:
    """What `frosted eval --fold N --json` writes, one file per fold (no model: the detections are given)."""
    folder.mkdir(parents=True, exist_ok=True)
    provenance = provenance or {"input_size": "1024x1024", "detections_from": "constructed"}
    for number in eval_set.fold_numbers:
        one = eval_set.only_fold(number)
        scored = score_folds(one, detections, IOUS)
        scores = combine(one.name, scored, [str(i) for i in IOUS], threshold)
        scores.update(provenance, wall_time_s=0.5)
        record = fold_record(scores, scored[0], number, len(eval_set.folds), eval_set.fingerprint(), provenance)
        (folder / f"fold-{number}.json").write_text(json.dumps(record))


def constructed_coco_set(rng: np.random.Generator) -> tuple[EvalSet, dict[str, np.ndarray]]:
    """Four folds of images with faces and detections near them, scores rounded so that ties cross folds; one
    fold without faces (AP NaN), one image without detections."""
    folds, detections = [], {}
    for f in range(4):
        fold = []
        for i in range(6):
            key = f"img-{f}-{i}.jpg"
            faces = 0 if f == 2 else int(rng.integers(1, 4))
            xy = rng.uniform(0, 400, size=(faces, 2))
            boxes = np.hstack([xy, xy + rng.uniform(20, 80, size=(faces, 2))]).astype(np.float32)
            fold.append(LabelledImage(key, Path(key), boxes))
            if f == 1 and i == 0:
                continue
            found = boxes + rng.normal(0, 6, size=boxes.shape).astype(np.float32)
            false = np.array([[10, 10, 40, 40]], np.float32) + rng.uniform(0, 300)
            dets = np.vstack([found, false])
            detections[key] = np.hstack([dets, rng.integers(1, 10, (len(dets), 1)) / 10]).astype(np.float32)
        folds.append(tuple(fold))
    return EvalSet("constructed", tuple(folds)), detections


def test_merged_constructed_folds_equal_the_single_scoring(tmp_path: Path) -> None:
    eval_set, detections = constructed_coco_set(np.random.default_rng(7))
    single = score_set(eval_set, detections, IOUS, 0.7)
    single.update(input_size="1024x1024", detections_from="constructed")
    assert any(np.isnan(f["by_iou"]["0.5"]["ap"]) for f in single["folds"])  # the fold without faces
    write_folds(eval_set, detections, tmp_path / "folds")
    (tmp_path / "folds" / "merged.json").write_text(json.dumps(single))  # not a fold JSON: ignored
    merged = merge_folds(read_fold_folder(tmp_path / "folds"))
    assert comparable(merged) == comparable(single)
    assert report_lines(merged) == report_lines(single)
    assert merged["merged_from"]["files"] == [f"fold-{n}.json" for n in range(1, 5)]


def test_merged_fddb_folds_equal_the_single_scoring(shared_dir: Path, tmp_path: Path) -> None:
    """FDDB's real annotations (the images are not here), 20 images of each official fold, detections made
    from the ellipses: the merged ROC equals the single one too."""
    full = fddb_set(shared_dir / "data/fddb", need_images=False)
    folds = tuple(fold[:20] for fold in full.folds)
    keys = {image.key for fold in folds for image in fold}
    eval_set = EvalSet("FDDB", folds, tuple(i for i in full.fddb_images if i.path in keys))
    rng = np.random.default_rng(3)
    detections = {}
    for image in eval_set.images[::2]:  # every other image: the rest have no detections
        boxes = image.boxes + rng.normal(0, 4, size=image.boxes.shape)
        detections[image.key] = np.hstack([boxes, rng.integers(1, 20, (len(boxes), 1)) / 20]).astype(np.float32)
    single = score_set(eval_set, detections, IOUS, 0.7)
    single.update(input_size="1024x1024", detections_from="constructed")
    write_folds(eval_set, detections, tmp_path / "folds")
    merged = merge_folds(read_fold_folder(tmp_path / "folds"))
    assert comparable(merged) == comparable(single) and "fddb_roc" in merged
    assert report_lines(merged) == report_lines(single)


@pytest.fixture
def fold_folder(tmp_path: Path) -> Path:
    eval_set, detections = constructed_coco_set(np.random.default_rng(11))
    write_folds(eval_set, detections, tmp_path / "folds", provenance={
        "input_size": "1024x1024", "split": "inception3", "weights": "/w/FaceBoxesProd.pth", "weights_sha256": "c0cb",
        "noise": "inception3-alpha-0.4", "noise_alpha": 0.4, "noise_fingerprint": "ab12", "noise_seed": 0,
        "skipped_fitted_images": 0})
    return tmp_path / "folds"


def one_line_error(folder: Path, *extra: str) -> str:
    result = invoke_frosted("eval", "--merge", str(folder), *extra)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "Traceback" not in result.stderr
    return line


def test_bad_fold_folders_are_one_line_errors(fold_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no fold JSONs" in one_line_error(tmp_path / "empty")
    assert "not a folder" in one_line_error(tmp_path / "nowhere")

    (fold_folder / "fold-2.json").rename(tmp_path / "fold-2.json")
    (fold_folder / "fold-4.json").unlink()
    assert re.search(r"folds 2, 4 of 4 missing \(have folds 1, 3\)", one_line_error(fold_folder))

    (tmp_path / "fold-2.json").rename(fold_folder / "fold-2.json")
    (fold_folder / "copy.json").write_text((fold_folder / "fold-2.json").read_text())
    assert "fold 2 given twice (copy.json, fold-2.json)" in one_line_error(fold_folder)
    (fold_folder / "copy.json").unlink()

    def edited(name: str, change: dict, where: str = "fold_of") -> None:
        record = json.loads((fold_folder / name).read_text())
        (record[where] if where else record).update(change)
        (fold_folder / name).write_text(json.dumps(record))

    for change, where, expected in [
            ({"operating_threshold": 0.5}, "", "--threshold: 0.7 vs 0.5"),
            ({"noise": "alpha-0.2"}, "provenance", "noise: inception3-alpha-0.4 vs alpha-0.2"),
            ({"noise_seed": 1}, "provenance", "noise_seed: 0 vs 1"),
            ({"split": "rdcl"}, "provenance", "split: inception3 vs rdcl"),
            ({"ious": ["0.5"]}, "fold_of", "IoUs (--iou): [\"0.3\", \"0.5\"] vs [\"0.5\"]"),
            ({"set_fingerprint": "0" * 64}, "fold_of", "evaluation set (images, labels or fold split)"),
            ({"set": "dlib"}, "", "set: constructed vs dlib")]:
        original = (fold_folder / "fold-3.json").read_text()
        if where == "provenance":
            record = json.loads(original)
            record["fold_of"]["provenance"].update(change)
            (fold_folder / "fold-3.json").write_text(json.dumps(record))
        else:
            edited("fold-3.json", change, where)
        line = one_line_error(fold_folder)
        assert "fold-1.json and fold-3.json are folds of different runs" in line and expected in line, line
        (fold_folder / "fold-3.json").write_text(original)

    (fold_folder / "fold-3.json").write_text('{"fold_of": ')
    assert "fold-3.json: not valid JSON" in one_line_error(fold_folder)

    (fold_folder / "fold-3.json").unlink()
    original = (fold_folder / "fold-1.json").read_text()
    edited("fold-1.json", {"folds": 1_000_000_000})  # a merge would list a billion folds it waits for
    assert "fold-1.json: fold 1 of 1000000000; a set has 1 to 1000 folds" in one_line_error(fold_folder)
    (fold_folder / "fold-1.json").write_text(original)
    os.mkfifo(fold_folder / "pipe.json")  # reading it would wait for a writer
    assert "pipe.json: not a regular file" in one_line_error(fold_folder)
    (fold_folder / "pipe.json").unlink()
    (fold_folder / "gone.json").symlink_to(tmp_path / "nothing.json")
    assert "gone.json: not a regular file (a link to nothing" in one_line_error(fold_folder)


def test_merge_takes_no_evaluation_options(fold_folder: Path) -> None:
    result = invoke_frosted("eval", "--merge", str(fold_folder), "--noise", "alpha-0.2", "--threshold", "0.5")
    assert result.returncode == 2 and "not --threshold, --noise" in result.stderr
    result = invoke_frosted("eval", "--wait", "5", "--coco", "x.json")
    assert result.returncode == 2 and "--wait goes with --merge" in result.stderr
    fold = (fold_folder / "fold-1.json").read_bytes()
    result = invoke_frosted("eval", "--merge", str(fold_folder), "--json", str(fold_folder / "fold-1.json"))
    assert result.returncode == 2 and "is an input" in result.stderr  # the merge over a fold it merges
    assert (fold_folder / "fold-1.json").read_bytes() == fold


def test_merge_waits_for_the_folds_still_missing(fold_folder: Path, tmp_path: Path) -> None:
    """A merge started before the folds are there (as the merge Job is) finishes once the last one lands."""
    held = tmp_path / "held"
    held.mkdir()
    for name in ("fold-3.json", "fold-4.json"):
        (fold_folder / name).rename(held / name)
    merge = subprocess.Popen([sys.executable, "-m", "frosted", "eval", "--merge", str(fold_folder), "--wait", "120",
                              "--json", str(tmp_path / "merged.json")], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert merge.stderr is not None
        line = merge.stderr.readline()  # until the merge says what it waits for (or exits: then '')
        assert "Waiting up to" in line and "folds 3, 4 of 4" in line, line
        for name in ("fold-3.json", "fold-4.json"):
            (held / name).rename(fold_folder / name)  # what a fold run's atomic write looks like
        out, err = merge.communicate(timeout=60)
    finally:
        merge.kill()
    assert merge.returncode == 0, err
    assert "constructed Dataset Average AP" in out
    assert json.loads((tmp_path / "merged.json").read_text())["merged_from"]["files"][-1] == "fold-4.json"


def test_per_image_noise_does_not_depend_on_the_images_before(weights_path: Path, shared_dir: Path,
                                                              one_torch_thread: None) -> None:
    """With a seed, an image's noisy detections are the same alone as after other images: a fold's pod draws
    what the single process drew. (One seeded stream shared by the images, as before, would not.)"""
    from facesplit.detector import load_detector, with_tail
    from facesplit.evaluation.coco import read_coco_faces
    from facesplit.evaluation.detections import detect_images
    from facesplit.evaluation.noise import ImageNoise
    from facesplit.noise.profile import Obfuscator
    from facesplit.noise.sampler import GaussianStream
    from facesplit.noise.shipped import load_profile_for, split_for

    mitcmu = shared_dir / "data/faces/mitcmu"
    first, second = read_coco_faces(mitcmu / "labels.json", mitcmu / "images")[60:62]
    detector = load_detector(weights_path, split=split_for(None, ["inception3-alpha-0.4"]))
    profile = load_profile_for(detector, "inception3-alpha-0.4")
    detector = with_tail(detector, profile.tail_state)
    both = detect_images(detector, [first, second], ImageNoise(profile, seed=5))
    alone = detect_images(detector, [second], ImageNoise(profile, seed=5))
    np.testing.assert_array_equal(both[second.key], alone[second.key])
    other_seed = detect_images(detector, [second], ImageNoise(profile, seed=6))
    assert not np.array_equal(other_seed[second.key], alone[second.key])
    shared = detect_images(detector, [first, second], Obfuscator(profile, GaussianStream(
        seed_for_reproducible_evaluation=5)))
    shared_alone = detect_images(detector, [second], Obfuscator(profile, GaussianStream(
        seed_for_reproducible_evaluation=5)))
    assert not np.array_equal(shared[second.key], shared_alone[second.key])


@pytest.mark.parametrize("case", ["dlib with seeded noise", "FDDB layout"])
def test_fold_runs_merge_into_the_single_run(case: str, weights_path: Path, shared_dir: Path,
                                             tmp_path: Path) -> None:
    """The CLI end to end with the real model on real photos: `--fold N --json` for every fold, `--merge`, and one
    process over every fold print the same lines and write the same figures (COCO with a profile's seeded
    noise; FDDB's layout with its ROC)."""
    from tests.test_eval import make_fddb_root

    if case == "FDDB layout":
        flags = ["--fddb", str(make_fddb_root(tmp_path, shared_dir))]
    else:
        flags = ["--coco", str(shared_dir / "data/faces/dlib/labels.json"), "--noise", "inception3-alpha-0.4",
                 "--seed", "3"]
    flags += ["--iou", "0.3", "--iou", "0.5", "--weights", str(weights_path), "--threads", "1"]
    single = invoke_frosted("eval", *flags, "--json", str(tmp_path / "single.json"))
    assert single.returncode == 0, single.stderr[-2000:]
    count = len(json.loads((tmp_path / "single.json").read_text())["folds"])
    assert count == (10 if case == "FDDB layout" else 9)
    for n in range(1, count + 1):
        fold = invoke_frosted("eval", *flags, "--fold", str(n), "--json", str(tmp_path / "folds" / f"fold-{n}.json"))
        assert fold.returncode == 0, fold.stderr[-2000:]
        assert re.search(rf"-fold-{n} Val AP: [0-9.]+\n", fold.stdout)
    merged = invoke_frosted("eval", "--merge", str(tmp_path / "folds"), "--json", str(tmp_path / "merged.json"))
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert report_of(merged.stdout) == report_of(single.stdout)
    assert comparable(json.loads((tmp_path / "merged.json").read_text())) == comparable(
        json.loads((tmp_path / "single.json").read_text()))
    assert ("FDDB ROC at 1000 false positives" in merged.stdout) == (case == "FDDB layout")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args: defined variables are replaced, $$ is a literal $."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


class LocalPod:
    """A rendered Job's container run here: its mounts mapped to folders under ``root``, its env set, its
    command line as written (Kubernetes' $(VAR) expansion, then the container's own argv)."""

    def __init__(self, container: dict, root: Path, volumes: dict[str, Path]) -> None:
        self.mounts = {m["mountPath"]: volumes.get(m["name"], root / m["name"]) for m in container["volumeMounts"]}
        for local in self.mounts.values():
            local.mkdir(parents=True, exist_ok=True)
        self.env = {e["name"]: self.local(e["value"]) for e in container.get("env", [])}
        self.argv = [self.local(expand(part, self.env)) for part in container["command"] + container["args"]]

    def local(self, text: str) -> str:
        """``text`` with every path on a mount (at the start of a word: after a quote, '=', a space) made local,
        in one pass, so a mapped path is never mapped again."""
        mounts = "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/.-])({mounts})(?=/|$|[\s\"'])", lambda m: str(self.mounts[m.group(1)]), text)

    def run(self, **extra_env: str) -> subprocess.CompletedProcess[str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # `frosted`: this venv's
        return subprocess.run(self.argv, env={**os.environ, "PATH": path, **self.env, **extra_env}, cwd=REPO,
                              capture_output=True, text=True, timeout=300)


def report_of(stdout: str) -> list[str]:
    """The report lines of `frosted eval`'s stdout, without its last line (wall time, where it wrote)."""
    lines = stdout.strip().splitlines()
    assert re.match(r"(Wrote .*)?\(?[Ww]all time [0-9.]+ s\)?$", lines[-1]), lines[-1]
    return lines[:-1]


@pytest.mark.slow  # 10 fold processes, a merge and a single run on MIT+CMU: ~40 s on 2 cores per overlay
@pytest.mark.parametrize("overlay", ["inception3-alpha-0.4", "clean"])
def test_the_jobs_command_lines_reproduce_a_single_run(overlay: str, weights_path: Path, shared_dir: Path,
                                                       tmp_path: Path) -> None:
    kubectl_or_skip()
    jobs = {doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc
            for doc in rendered(EVAL_OVERLAYS / overlay) if doc["kind"] == "Job"}
    folds_job, merge_job = jobs["fold"], jobs["merge"]
    data = tmp_path / "data"  # the data volume's layout (deploy/k8s/eval/volumes/data-pvc.yaml)
    data.mkdir()
    (data / "mitcmu").symlink_to(shared_dir / "data/faces/mitcmu")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "FaceBoxesProd.pth").symlink_to(weights_path)
    volumes = {"data": data, "weights": weights, "results": tmp_path / "results", "tmp": tmp_path / "home"}

    pod = LocalPod(container_of(folds_job), tmp_path, volumes)
    started = time.perf_counter()
    for index in range(folds_job["spec"]["completions"]):
        result = pod.run(JOB_COMPLETION_INDEX=str(index))
        assert result.returncode == 0, f"fold pod {index}: {result.stderr[-2000:]}"
    fold_seconds = time.perf_counter() - started
    merger = LocalPod(container_of(merge_job), tmp_path, volumes)
    merged = merger.run()
    assert merged.returncode == 0, merged.stderr[-2000:]

    # the same evaluation in one process: the fold Job's own flags ("$@" of its sh -c), no --fold
    flags = pod.argv[pod.argv.index("frosted-eval") + 1:]
    started = time.perf_counter()
    single = subprocess.run([sys.executable, "-m", "frosted", "eval", *flags, "--json", str(tmp_path / "single.json")],
                            env={**os.environ, **pod.env}, cwd=REPO, capture_output=True, text=True, timeout=300)
    single_seconds = time.perf_counter() - started
    assert single.returncode == 0, single.stderr[-2000:]

    run = pod.env["RUN"]
    assert run == overlay and merger.env["RUN"] == overlay
    results = volumes["results"]
    assert sorted(p.name for p in (results / run).glob("*.json")) == sorted(f"fold-{n}.json" for n in range(1, 11))
    assert report_of(merged.stdout) == report_of(single.stdout)  # every line, every digit
    merged_json = json.loads((results / f"{run}.json").read_text())
    assert comparable(merged_json) == comparable(json.loads((tmp_path / "single.json").read_text()))
    expected_folds = 5 if overlay != "clean" else 10  # every shipped profile was fitted on MIT+CMU folds 1-5
    assert merged_json["set"] == "mitcmu" and len(merged_json["folds"]) == expected_folds
    assert merged_json.get("noise") == (None if overlay == "clean" else overlay)
    print(f"\n{overlay}: 10 fold processes {fold_seconds:.1f} s, merge {merged_json['wall_time_s']} s, "
          f"single process {single_seconds:.1f} s\n" + "\n".join(report_of(merged.stdout)))
