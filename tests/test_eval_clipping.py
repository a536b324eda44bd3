"""Ground truth is scored as detections are: clipped to the image. A face the frame cuts is then a hit for a
detection that covers what of it the frame shows (detections are clipped to the frame when they are made)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesplit.evaluation.coco import read_coco_faces
from facesplit.evaluation.report import score_set
from facesplit.evaluation.sets import coco_set

WIDTH, HEIGHT = 100, 80


def cut_face_set(tmp_path: Path, sizes_in_labels: bool) -> Path:
    """One 100x80 image whose face runs 40 pixels past its left edge, and one face wholly outside it."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "edge.png"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    image = {"id": 1, "file_name": "edge.png", **({"width": WIDTH, "height": HEIGHT} if sizes_in_labels else {})}
    annotations = [{"id": 1, "image_id": 1, "bbox": [-40, 10, 70, 40]},  # x -40..30: 30 of its 70 in the frame
                   {"id": 2, "image_id": 1, "bbox": [120, 10, 20, 20]}]  # right of the frame: nothing to find
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"images": [image], "annotations": annotations}))
    return labels


@pytest.mark.parametrize("sizes_in_labels", [True, False], ids=["size from labels", "size from the image"])
def test_ground_truth_is_clipped_to_the_image(tmp_path, sizes_in_labels):
    labels = cut_face_set(tmp_path, sizes_in_labels)
    [image] = read_coco_faces(labels, tmp_path / "images")
    np.testing.assert_array_equal(image.boxes, [[0, 10, 30, 50]])


def test_a_face_the_frame_cuts_is_found_by_the_clipped_detection(tmp_path):
    labels = cut_face_set(tmp_path, sizes_in_labels=True)
    # what the detector reports for that face: its box clipped to the frame, x 0..30 (IoU 0.43 with the
    # unclipped label, a miss at 0.5; 1.0 with the clipped one)
    detections = {"edge.png": np.array([[0, 10, 30, 50, 0.9]], np.float32)}
    scores = score_set(coco_set(labels, tmp_path / "images", folds=1), detections, [0.5], 0.5)
    assert scores["faces"] == 1
    assert scores["by_iou"]["0.5"]["pooled_ap"] == 1.0 and scores["by_iou"]["0.5"]["recall"] == 1.0
