"""`frosted eval` as a user runs it: COCO face sets, FDDB's layout, saved detections, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesplit.evaluation.coco import read_coco_faces, split_into_folds
from facesplit.evaluation.detections import load_detections
from facesplit.evaluation.errors import DatasetError
from tests.conftest import invoke_frosted, run_frosted, write_one_face_set
from tests.test_ap import coco_ap

BLOCK = re.compile(
    r"==================== Results ====================\n"
    r"((?:\S+-fold-\d+ Val AP: [0-9.]+\n)+)"
    r"(\S+) Dataset Average AP: ([0-9.]+)\n"
    r"=================================================\n"
    r"mAP: ([0-9.]+)")


def parse_blocks(stdout: str) -> list[tuple[list[float], str, float]]:
    blocks = []
    for folds, name, mean, m_ap in BLOCK.findall(stdout):
        aps = [float(line.rsplit(" ", 1)[1]) for line in folds.strip().splitlines()]
        assert mean == m_ap
        assert float(mean) == pytest.approx(np.mean(aps))
        blocks.append((aps, name, float(mean)))
    return blocks


def test_dlib_set_scores_ap_1(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    dlib = shared_dir / "data/faces/dlib"
    out = tmp_path / "dlib.json"
    dets = tmp_path / "dlib-detections.jsonl"
    result = invoke_frosted("eval", "--coco", str(dlib / "labels.json"), "--images", str(dlib / "images"),
                            "--weights", str(weights_path), "--json", str(out), "--save-detections", str(dets))
    assert result.returncode == 0, result.stderr
    [(aps, name, mean)] = parse_blocks(result.stdout)
    assert name == "dlib" and len(aps) == 9  # 9 images -> 9 folds, never an empty one
    assert mean == 1.0
    scores = json.loads(out.read_text())
    assert scores["faces"] == 43 and scores["by_iou"]["0.5"]["pooled_ap"] == 1.0
    assert scores["by_iou"]["0.5"]["recall"] == 1.0 and scores["by_iou"]["0.5"]["false_positives"] == 0
    assert "tqdm" not in result.stdout and "img/s" in result.stderr  # progress goes to stderr
    # cross-check the pooled AP on these real detections with pycocotools
    detections = load_detections(dets)
    images = read_coco_faces(dlib / "labels.json", dlib / "images")
    pairs = [(detections[i.key], i.boxes) for i in images]
    assert scores["by_iou"]["0.5"]["pooled_ap"] == pytest.approx(coco_ap(pairs, 0.5), abs=2e-3)


@pytest.mark.slow  # full-set accuracy run
def test_mitcmu_reaches_the_reference_ap(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    mitcmu = shared_dir / "data/faces/mitcmu"
    dets = tmp_path / "mitcmu.jsonl"
    result = run_frosted("eval", "--coco", str(mitcmu / "labels.json"), "--iou", "0.3", "--iou", "0.5",
                         "--weights", str(weights_path), "--json", str(tmp_path / "m.json"),
                         "--save-detections", str(dets))
    assert result.returncode == 0, result.stderr
    (aps_03, name, mean_03), (aps_05, _, mean_05) = parse_blocks(result.stdout)
    assert name == "mitcmu" and len(aps_03) == len(aps_05) == 10 and mean_05 < mean_03
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["by_iou"]["0.3"]["pooled_ap"] >= 0.94  # REFERENCE.md: 0.942 at 1024² letterbox
    assert 0.55 <= scores["by_iou"]["0.5"]["pooled_ap"] < scores["by_iou"]["0.3"]["pooled_ap"]
    detections = load_detections(dets)
    images = read_coco_faces(mitcmu / "labels.json", mitcmu / "images")
    pairs = [(detections[i.key], i.boxes) for i in images]
    assert scores["by_iou"]["0.3"]["pooled_ap"] == pytest.approx(coco_ap(pairs, 0.3), abs=5e-3)
    # rescoring the saved detections gives the same figures without running the model
    again = run_frosted("eval", "--coco", str(mitcmu / "labels.json"), "--iou", "0.3", "--detections",
                        str(dets), "--json", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    assert parse_blocks(again.stdout)[0][0] == aps_03


def test_folds_are_deterministic_contiguous_and_cover_every_image(shared_dir: Path) -> None:
    mitcmu = shared_dir / "data/faces/mitcmu"
    images = read_coco_faces(mitcmu / "labels.json", mitcmu / "images")
    folds = split_into_folds(images, 10)
    assert [len(f) for f in folds] == [10] * 10
    assert [i.key for f in folds for i in f] == sorted(i.key for i in images)
    assert len(split_into_folds(images[:3], 10)) == 3


def make_fddb_root(tmp_path: Path, shared_dir: Path) -> Path:
    """An FDDB-shaped folder (ten folds of one image, images under originalPics/) built from the dlib
    photos, with each labelled box turned into its inscribed ellipse."""
    dlib = shared_dir / "data/faces/dlib"
    images = read_coco_faces(dlib / "labels.json", dlib / "images")
    root = tmp_path / "fddb"
    (root / "FDDB-folds").mkdir(parents=True)
    for fold in range(1, 11):
        paths, ellipses = [], []
        for image in [images[(fold - 1) % len(images)]]:
            rel = f"2002/08/{fold:02d}/big/{Path(image.key).stem}"
            (root / "originalPics" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image.path, root / "originalPics" / f"{rel}.jpg")
            paths.append(rel)
            ellipses += [rel, str(len(image.boxes))]
            for x1, y1, x2, y2 in image.boxes:
                # FDDB's ellipses are taller than wide: major radius vertical (angle pi/2)
                ellipses.append(f"{(y2 - y1) / 2:.4f} {(x2 - x1) / 2:.4f} 1.570796 {(x1 + x2) / 2:.4f} "
                                f"{(y1 + y2) / 2:.4f}  1")
        (root / "FDDB-folds" / f"FDDB-fold-{fold:02d}.txt").write_text("\n".join(paths) + "\n")
        (root / "FDDB-folds" / f"FDDB-fold-{fold:02d}-ellipseList.txt").write_text("\n".join(ellipses) + "\n")
    return root


def test_fddb_layout_end_to_end(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    root = make_fddb_root(tmp_path, shared_dir)
    result = invoke_frosted("eval", "--fddb", str(root), "--weights", str(weights_path),
                            "--json", str(tmp_path / "fddb.json"))
    assert result.returncode == 0, result.stderr
    [(aps, name, mean)] = parse_blocks(result.stdout)
    assert name == "FDDB" and len(aps) == 10 and mean > 0.9
    assert "FDDB-fold-1 Val AP" in result.stdout
    roc = json.loads((tmp_path / "fddb.json").read_text())["fddb_roc"]
    assert roc["discrete_tpr_at_1000_fp"] > 0.9 and 0.4 < roc["continuous_tpr_at_1000_fp"] < 1.0


def test_real_fddb_annotations_score_their_own_ellipses_perfectly(shared_dir: Path, tmp_path: Path) -> None:
    """FDDB's images are not here: score detections made from its real ellipses (annotations only)."""
    from facesplit.evaluation.sets import fddb_set

    fddb = shared_dir / "data/fddb"
    eval_set = fddb_set(fddb, need_images=False)
    assert len(eval_set.images) == 2845 and len(eval_set.folds) == 10
    dets = tmp_path / "ellipses.jsonl"
    with dets.open("w") as f:
        for image in eval_set.images:
            boxes = [[*map(float, b), 1.0] for b in image.boxes]
            f.write(json.dumps({"image": image.key, "boxes": boxes}) + "\n")
    result = invoke_frosted("eval", "--fddb", str(fddb), "--detections", str(dets), "--json",
                            str(tmp_path / "f.json"))
    assert result.returncode == 0, result.stderr
    [(aps, name, mean)] = parse_blocks(result.stdout)
    assert name == "FDDB" and aps == [1.0] * 10 and mean == 1.0
    roc = json.loads((tmp_path / "f.json").read_text())["fddb_roc"]
    assert roc["discrete_tpr_at_1000_fp"] == 1.0


def test_eval_writes_no_file_unless_asked(tmp_path: Path) -> None:
    """No JSON lands in the working folder by default; `--json -` puts the JSON alone on stdout."""
    write_one_face_set(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    base = ["eval", "--coco", str(tmp_path / "labels.json"), "--detections", str(tmp_path / "det.jsonl"),
            "--folds", "1"]
    result = invoke_frosted(*base, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert parse_blocks(result.stdout) and list(work.iterdir()) == []
    result = invoke_frosted(*base, "--json", "-", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["by_iou"]["0.5"]["pooled_ap"] == 1.0
    assert parse_blocks(result.stderr) and list(work.iterdir()) == []


@pytest.mark.parametrize("corruption,expected", [
    ("not json", r"labels\.json:1: not valid JSON"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "bbox": [1, 2]}]}',
     r"labels\.json: annotations\[0\] needs a 'bbox'"),
    ('{"images": [{"id": 1, "file_name": "missing.jpg"}], "annotations": []}', r"missing\.jpg: image listed"),
    ('{"images": [{"id": 1, "file_name": "sub/missing.jpg"}], "annotations": []}', r"sub/missing\.jpg: image listed"),
    ('{"images": [{"id": 1, "file_name": "../labels.json"}], "annotations": []}',
     r"images\[0\] has file_name '\.\./labels\.json': it must name a file inside the image folder"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}], "annotations": []}',
     r"images\[1\] has file_name 'a\.jpg', which images\[0\] has too"),
    ('{"images": [{"id": [1], "file_name": "a.jpg"}], "annotations": []}',
     r"images\[0\] needs an 'id' \(a number or a string\) and a 'file_name'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": [1], "bbox": [1, 2, 3, 4]}]}',
     r"annotations\[0\] refers to image_id \[1\], which 'images' does not list"),
    ('{"images": [{"id": 1, "file_name": "/etc/passwd"}], "annotations": []}',
     r"images\[0\] has file_name '/etc/passwd': it must name a file inside"),
])
def test_bad_coco_files_are_one_line_errors(tmp_path: Path, corruption: str, expected: str) -> None:
    (tmp_path / "images").mkdir()
    labels = tmp_path / "labels.json"
    labels.write_text(corruption)
    with pytest.raises(DatasetError, match=expected):
        read_coco_faces(labels, tmp_path / "images")
    result = invoke_frosted("eval", "--coco", str(labels), "--detections", str(tmp_path / "none.jsonl"))
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and re.search(expected, errors[0])


def test_bad_fddb_paths_are_one_line_errors(tmp_path: Path, shared_dir: Path) -> None:
    result = invoke_frosted("eval", "--fddb", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "nowhere" in result.stderr
    root = tmp_path / "fddb"
    shutil.copytree(shared_dir / "data/fddb/FDDB-folds", root / "FDDB-folds")
    broken = root / "FDDB-folds" / "FDDB-fold-02-ellipseList.txt"
    lines = broken.read_text().splitlines()
    lines[2] = "12.5 eight 1.2 100 100 1"
    broken.write_text("\n".join(lines) + "\n")
    result = invoke_frosted("eval", "--fddb", str(root), "--detections", str(tmp_path / "x.jsonl"))
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    assert "FDDB-fold-02-ellipseList.txt:3" in error


def test_a_fifo_given_as_labels_or_detections_is_one_line_not_a_hang(tmp_path: Path) -> None:
    from facesplit.evaluation.detections import load_detections

    (tmp_path / "images").mkdir()
    fifo = tmp_path / "labels.json"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    with pytest.raises(DatasetError, match=r"labels\.json: not a regular file, so not a COCO labels file$"):
        read_coco_faces(fifo, tmp_path / "images")
    with pytest.raises(DatasetError, match=r"labels\.json: not a regular file, so not a detections file$"):
        load_detections(fifo)
    with pytest.raises(DatasetError, match=r": a folder, not a detections file$"):
        load_detections(tmp_path / "images")


def test_a_set_without_faces_is_refused_not_an_ap_of_nan(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    labels = json.loads((tmp_path / "labels.json").read_text())
    labels["annotations"] = []
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    result = invoke_frosted("eval", "--coco", str(tmp_path / "labels.json"), "--detections",
                            str(tmp_path / "det.jsonl"), "--folds", "1")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'labels.json'}: no face in the 1 images to evaluate: AP needs faces to find"]


def test_an_error_mid_progress_starts_its_own_line(tmp_path: Path, weights_path: Path) -> None:
    """The bar an error interrupts is closed first: in a log, the error is a line of its own, not glued to it."""
    write_one_face_set(tmp_path)
    labels = json.loads((tmp_path / "labels.json").read_text())
    labels["images"].append({"id": 2, "file_name": "zz.jpg"})  # sorted last: met with the bar under way
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "images" / "zz.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1]
                                                 .tobytes()[:-40])  # truncated
    result = invoke_frosted("eval", "--coco", str(tmp_path / "labels.json"), "--folds", "1", "--weights",
                            str(weights_path), "--input-size", "320")
    assert result.returncode == 1
    assert f"\nError: {tmp_path / 'images' / 'zz.jpg'}: a truncated JPEG" in result.stderr, result.stderr[-500:]
