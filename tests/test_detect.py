"""Detections on real faces, and `frosted detect` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facesplit.detector import SplitDetector
from facesplit.evaluation.ap import iou_matrix
from facesplit.evaluation.coco import read_coco_faces
from facesplit.images import read_image_bgr
from tests.conftest import invoke_frosted, run_frosted


def test_boxes_overlap_every_labelled_dlib_face(detector: SplitDetector, shared_dir: Path) -> None:
    dlib = shared_dir / "data/faces/dlib"
    images = read_coco_faces(dlib / "labels.json", dlib / "images")
    found = false_alarms = faces = 0
    for image in images:
        boxes = detector.detect(read_image_bgr(image.path))
        confident = boxes[boxes[:, 4] >= 0.7]
        overlaps = iou_matrix(confident, image.boxes)
        faces += len(image.boxes)
        found += int((overlaps.max(axis=0) >= 0.5).sum()) if len(confident) else 0
        false_alarms += int((overlaps.max(axis=1) < 0.3).sum()) if len(image.boxes) else len(confident)
    assert faces == 43
    assert found == 43
    assert false_alarms <= 1


def test_detect_cli_prints_json_lines_and_draws(weights_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    photo = shared_dir / "data/faces/dlib/images/2008_001322.jpg"
    result = invoke_frosted("detect", str(photo), "--sample", "astronaut", "--out", str(tmp_path),
                            "--weights", str(weights_path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in lines] == [str(photo), "skimage:astronaut"]
    astronaut = np.array(lines[1]["boxes"])
    assert len(astronaut) == 1  # one face, in the astronaut photo's own 512x512 pixels
    x1, y1, x2, y2, score = astronaut[0]
    assert 150 < x1 < 210 and 30 < y1 < 90 and 240 < x2 < 300 and 150 < y2 < 200 and score > 0.9
    assert len(lines[0]["boxes"]) == 3
    assert read_image_bgr(tmp_path / "astronaut.jpg").shape == (512, 512, 3)
    assert (tmp_path / "2008_001322.jpg").is_file()


def test_detect_cli_bad_image_is_one_line_and_keeps_the_rest(weights_path: Path, shared_dir: Path,
                                                              tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    result = invoke_frosted("detect", str(junk), "--sample", "astronaut", "--weights", str(weights_path))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1  # the good image's result is not lost
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == [f"Error: {junk}: not a readable image (no image format whose size its header gives)"]


def test_detect_cli_missing_weights_is_one_line(tmp_path: Path) -> None:
    """In a process of its own, as a user runs it: the one-line error and exit status 1 from the interpreter."""
    result = run_frosted("detect", "--sample", "astronaut", "--weights", str(tmp_path / "nope.pth"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "nope.pth" in errors[0] and "FaceBoxesProd.pth" in errors[0]
