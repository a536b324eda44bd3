"""VOC average precision: hand-computed cases, and a cross-check against pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from facesplit.evaluation.ap import all_point_ap, iou_matrix, match_image, precision_recall


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10, 1.0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_match_image_greedy_by_score() -> None:
    faces = np.array([[0, 0, 10, 10]], dtype=np.float32)
    dets = np.array([[0, 0, 10, 9, 0.5], [0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8]], dtype=np.float32)
    # the best-scored detection claims the face; the lower-scored duplicate is a false positive
    assert match_image(dets, faces, 0.5).tolist() == [False, True, False]


def test_ap_by_hand() -> None:
    # 2 images, 3 faces. Ranked: TP (0.9), FP (0.8), TP (0.7), FP (0.6); one face never found.
    img1 = (np.array([[0, 0, 10, 10, 0.9], [30, 30, 40, 40, 0.8]]),
            np.array([[0, 0, 10, 10], [80, 80, 90, 90]]))
    img2 = (np.array([[0, 0, 10, 10, 0.7], [50, 50, 60, 60, 0.6]]), np.array([[0, 0, 10, 10]]))
    curve = precision_recall([img1, img2], 0.5)
    # recall 1/3 at precision 1, 2/3 at precision 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3
    assert curve.ap == pytest.approx(1 / 3 + 2 / 9)
    assert curve.at_threshold(0.75) == (pytest.approx(1 / 3), 1)
    assert curve.faces == 3


def test_all_point_interpolation_uses_the_envelope() -> None:
    ap = all_point_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.6]))
    assert ap == pytest.approx(0.5 + 0.5 * 0.6)


def test_no_faces_gives_nan_and_no_detections_gives_zero() -> None:
    assert np.isnan(precision_recall([(np.zeros((2, 5)), np.zeros((0, 4)))], 0.5).ap)
    assert precision_recall([(np.zeros((0, 5)), np.array([[0, 0, 5, 5]]))], 0.5).ap == 0.0


def coco_ap(pairs: list[tuple[np.ndarray, np.ndarray]], iou: float) -> float:
    """AP from pycocotools (the COCO reference code) with VOC-like settings: one IoU, dense recall grid."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (dets, faces) in enumerate(pairs, start=1):
        images.append({"id": image_id, "width": 2000, "height": 2000})
        for x1, y1, x2, y2 in faces:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
        results += [{"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
                    for x1, y1, x2, y2, s in dets.tolist()]
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}
    truth.createIndex()
    evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
    evaluator.params.iouThrs = np.array([iou])
    evaluator.params.recThrs = np.linspace(0, 1, 10001)
    evaluator.params.maxDets = [10000]
    evaluator.params.areaRng = [[0, 1e10]]
    evaluator.params.areaRngLbl = ["all"]
    evaluator.evaluate()
    evaluator.accumulate()
    return float(evaluator.eval["precision"][0, :, 0, 0, 0].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_agrees_with_pycocotools_on_random_scenes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(30):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 900, (n, 2))
        faces = np.concatenate([xy, xy + rng.uniform(20, 90, (n, 2))], axis=1)
        # jittered copies of the faces (some good, some poor) plus clutter
        jitter = faces[:, None, :] + rng.normal(0, 12, (n, 2, 4))
        clutter_xy = rng.uniform(0, 900, (3, 2))
        clutter = np.concatenate([clutter_xy, clutter_xy + 40], axis=1)
        boxes = np.concatenate([jitter.reshape(-1, 4), clutter])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        pairs.append((np.concatenate([boxes, rng.uniform(0, 1, (len(boxes), 1))], axis=1), faces))
    ours = precision_recall(pairs, 0.5).ap
    assert ours == pytest.approx(coco_ap(pairs, 0.5), abs=1e-3)
