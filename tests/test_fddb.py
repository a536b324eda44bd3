"""FDDB: the fold reader on the real annotation files, and the ROC scorer against hand-computed results."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.fddb import (
    Ellipse,
    FddbFold,
    FddbImage,
    FddbRoc,
    fddb_roc,
    overlap_matrix,
    read_fddb_folds,
)
from tests.conftest import SHARED

FOLDS_DIR = SHARED / "data" / "fddb" / "FDDB-folds"
FAR_BOX = (-10_000.0, -10_000.0, -9_950.0, -9_950.0)  # touches no face


@pytest.fixture(scope="module")
def folds_dir() -> Path:
    if not FOLDS_DIR.is_dir():
        pytest.skip(f"FDDB folds not found at {FOLDS_DIR} (set FROSTED_SHARED)")
    return FOLDS_DIR


@pytest.fixture(scope="module")
def folds(folds_dir: Path) -> list[FddbFold]:
    return read_fddb_folds(folds_dir)


def bbox_detections(images: tuple[FddbImage, ...], score: float = 1.0) -> dict[str, np.ndarray]:
    return {im.path: np.array([[*e.bbox(), score] for e in im.ellipses]) for im in images}


def face_overlap(ellipse: Ellipse, box: tuple[float, float, float, float]) -> float:
    return float(overlap_matrix([ellipse], np.array([box]))[0, 0])


def box_area_ratio(ellipse: Ellipse) -> float:
    """Area of the ellipse over the area of its bounding box: its overlap with that box, before pixels."""
    x1, y1, x2, y2 = ellipse.bbox()
    return math.pi * ellipse.major_radius * ellipse.minor_radius / ((x2 - x1) * (y2 - y1))


# ------------------------------------------------------------------------------------------------ reader


def test_reads_all_ten_real_folds(folds: list[FddbFold], folds_dir: Path) -> None:
    assert [fold.name for fold in folds] == [f"FDDB-fold-{i:02d}" for i in range(1, 11)]
    assert [len(fold.images) for fold in folds] == [290, 285, 274, 302, 298, 302, 279, 276, 259, 280]
    images = [image for fold in folds for image in fold.images]
    assert len(images) == 2845
    assert len({image.path for image in images}) == 2845
    assert sum(len(image.ellipses) for image in images) == 5171
    assert all(image.ellipses for image in images)
    for fold in folds:  # the image order is the image list's
        listed = (folds_dir / f"{fold.name}.txt").read_text().split()
        assert [image.path for image in fold.images] == listed
    first = folds[0].images[0]
    assert first.path == "2002/08/11/big/img_591"
    assert first.ellipses == (Ellipse(123.5833, 85.5495, 1.265839, 269.6934, 161.7812),)


def test_bbox_of_rotated_ellipse_matches_dense_boundary_sampling(folds: list[FddbFold]) -> None:
    ellipses = [Ellipse(50.0, 20.0, angle, 10.0, -4.0) for angle in (0.0, 0.3, math.pi / 4, 1.2, -2.5, math.pi)]
    ellipses.append(folds[0].images[0].ellipses[0])
    theta = np.linspace(0.0, 2 * math.pi, 400_001)
    for e in ellipses:
        cos, sin = math.cos(e.angle), math.sin(e.angle)
        u, v = e.major_radius * np.cos(theta), e.minor_radius * np.sin(theta)
        x, y = e.centre_x + u * cos - v * sin, e.centre_y + u * sin + v * cos
        np.testing.assert_allclose(e.bbox(), (x.min(), y.min(), x.max(), y.max()), atol=1e-6)
    assert Ellipse(5.0, 3.0, 0.0, 1.0, 2.0).bbox() == (-4.0, -1.0, 6.0, 5.0)


# ----------------------------------------------------------------------------------------------- overlap


def official_overlap(e: Ellipse, box: np.ndarray, width: int, height: int, offset: int = 0) -> float:
    """Matching::computeScore as written: both regions drawn filled on a zeroed image-sized mask
    (EllipseR/RectangleR::display), then count(A and D) / count(A or D)."""
    mask_a = np.zeros((height, width), np.uint8)
    centre = np.rint(np.float32([e.centre_x, e.centre_y])).astype(int) + offset
    cv2.ellipse(mask_a, (int(centre[0]), int(centre[1])), (int(e.major_radius), int(e.minor_radius)),
                180 - (math.pi - e.angle) * 180 / math.pi, 0, 360, 1, -1)
    mask_d = np.zeros((height, width), np.uint8)
    corners = np.rint(box[:4].astype(np.float32)).astype(int) + offset
    cv2.rectangle(mask_d, (int(corners[0]), int(corners[1])), (int(corners[2]), int(corners[3])), 1, -1)
    union = np.count_nonzero(mask_a | mask_d)
    return np.count_nonzero(mask_a & mask_d) / union if union else 0.0


def test_overlap_is_the_official_pixel_count_with_and_without_image_clipping() -> None:
    rng = np.random.default_rng(3)
    width, height = 320, 240
    ellipses = [Ellipse(float(rng.uniform(3, 90)), float(rng.uniform(2, 60)), float(rng.uniform(-3.2, 3.2)),
                        float(rng.uniform(-30, 350)), float(rng.uniform(-30, 270))) for _ in range(12)]
    corners = rng.uniform(-40, 360, (30, 2))
    boxes = np.column_stack([corners, corners + rng.uniform(-20, 150, (30, 2))])  # some reversed
    boxes[:12, :2] = [e.bbox()[:2] for e in ellipses]  # and some that surely overlap
    clipped = overlap_matrix(ellipses, boxes, image_size=(width, height))
    unbounded = overlap_matrix(ellipses, boxes)
    for i, e in enumerate(ellipses):
        for j, box in enumerate(boxes):
            assert clipped[i, j] == official_overlap(e, box, width, height)
            # Unbounded: the same on a canvas big enough to hold everything.
            assert unbounded[i, j] == official_overlap(e, box, 1000, 1000, offset=300)
    assert (clipped > 0.2).sum() >= 8


# ------------------------------------------------------------------------------------------------- score


def test_ellipse_bounding_boxes_find_every_face_of_a_real_fold(folds: list[FddbFold]) -> None:
    images = folds[0].images
    roc = fddb_roc(bbox_detections(images), images)
    np.testing.assert_array_equal(roc.discrete, [[0.0, 1.0, 1.0]])
    assert roc.true_positive_rate_at(0) == 1.0
    ellipses = [e for image in images for e in image.ellipses]
    per_face = [face_overlap(e, e.bbox()) for e in ellipses]
    assert min(per_face) > 0.5
    assert roc.continuous[0, 1] == pytest.approx(np.mean(per_face), abs=1e-12)
    # Analytically each overlap is area(ellipse) / area(box) (pi/4 when axis-aligned); the official
    # rasterisation (radii truncated to whole pixels, box ends inclusive) costs ~0.02 on these faces.
    assert roc.continuous[0, 1] == pytest.approx(np.mean([box_area_ratio(e) for e in ellipses]), abs=0.03)
    assert face_overlap(Ellipse(100.0, 60.0, 0.0, 500.0, 500.0), (400, 440, 600, 560)) == pytest.approx(
        math.pi / 4, abs=0.01)


def test_dropped_faces_and_far_false_boxes_on_a_real_fold(folds: list[FddbFold]) -> None:
    images = folds[1].images
    n_faces = sum(len(image.ellipses) for image in images)
    detections, kept, kept_overlap, face = {}, 0, 0.0, 0
    for image in images:
        rows = [[*FAR_BOX, 0.4]]  # one false box per image, scored below every true one
        for e in image.ellipses:
            if face % 2 == 0:
                rows.append([*e.bbox(), 0.9])
                kept += 1
                kept_overlap += face_overlap(e, e.bbox())
            face += 1
        detections[image.path] = np.array(rows)
    roc = fddb_roc(detections, images)
    n_false = len(images)
    np.testing.assert_array_equal(roc.discrete, [[0, kept / n_faces, 0.9], [n_false, kept / n_faces, 0.4]])
    np.testing.assert_allclose(roc.continuous, [[0, kept_overlap / n_faces, 0.9],
                                                [n_false, kept_overlap / n_faces, 0.4]], rtol=1e-12)
    assert roc.true_positive_rate_at(n_false - 1) == roc.true_positive_rate_at(n_false) == kept / n_faces


def test_shifted_box_is_a_false_positive_and_its_face_a_miss(folds: list[FddbFold]) -> None:
    images = folds[2].images
    n_faces = sum(len(image.ellipses) for image in images)
    detections = bbox_detections(images)
    target = next(image for image in images if len(image.ellipses) == 1)
    x1, y1, x2, y2 = target.ellipses[0].bbox()
    shift = 0.55 * (x2 - x1)
    shifted = (x1 + shift, y1, x2 + shift, y2)
    detections[target.path] = np.array([[*shifted, 1.0]])
    off = face_overlap(target.ellipses[0], shifted)
    assert 0.1 < off < 0.5
    roc = fddb_roc(detections, images)
    np.testing.assert_array_equal(roc.discrete, [[1, (n_faces - 1) / n_faces, 1.0]])
    # Official quirk kept: a matched pair at <= 0.5 is a false positive but still adds its overlap to
    # the continuous score.
    others = sum(face_overlap(e, e.bbox()) for image in images if image is not target for e in image.ellipses)
    assert roc.continuous[0, 1] == pytest.approx((others + off) / n_faces, rel=1e-12)


def test_hand_made_image_gives_the_rows_computed_by_hand() -> None:
    a = Ellipse(40.0, 30.0, 0.0, 100.0, 100.0)  # 80 x 60 box
    b = Ellipse(40.0, 30.0, math.pi / 2, 300.0, 100.0)  # upright: 60 x 80 box, x 270..330
    box_a = a.bbox()
    box_b_half = (300.0, 60.0, 360.0, 140.0)  # shifted by half its width: covers half of b
    duplicate = (box_a[0] + 1, box_a[1], box_a[2] + 1, box_a[3])
    dets = np.array([[*box_a, 0.9], [1000, 1000, 1050, 1050, 0.8], [*box_b_half, 0.7], [*duplicate, 0.6]])
    image = FddbImage("hand/made", (a, b))
    overlaps = overlap_matrix(image.ellipses, dets)
    # By hand: ellipse area pi*40*30 ~ 3770; its box 4800; half the ellipse 1885 against 4800 + 1885.
    o_a, o_b = overlaps[0, 0], overlaps[1, 2]
    assert o_a == pytest.approx(math.pi / 4, abs=0.02)
    assert o_b == pytest.approx(600 * math.pi / (4800 + 600 * math.pi), abs=0.02)
    assert overlaps[1, [0, 1, 3]].tolist() == [0, 0, 0] and overlaps[0, [1, 2]].tolist() == [0, 0]
    roc = fddb_roc({image.path: dets}, [image])
    # 0.9: a found. 0.8: + a false box. 0.7: b's half box matches b at < 0.5, so it is a false positive.
    # 0.6: a's duplicate: one face, two boxes, one is a false positive.
    np.testing.assert_array_equal(roc.discrete, [[0, 0.5, 0.9], [1, 0.5, 0.8], [2, 0.5, 0.7], [3, 0.5, 0.6]])
    best_a = max(o_a, overlaps[0, 3])
    np.testing.assert_allclose(roc.continuous, [[0, o_a / 2, 0.9], [1, o_a / 2, 0.8],
                                                [2, (o_a + o_b) / 2, 0.7], [3, (best_a + o_b) / 2, 0.6]])


def test_each_threshold_rematches_its_own_detections() -> None:
    face = Ellipse(40.0, 30.0, 0.3, 200.0, 200.0)
    x1, y1, x2, y2 = face.bbox()
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    loose = (cx - 1.15 * hw, cy - 1.15 * hh, cx + 1.15 * hw, cy + 1.15 * hh)
    dets = np.array([[*loose, 0.9], [*face.bbox(), 0.5]])
    o_loose, o_tight = overlap_matrix([face], dets)[0]
    assert 0.5 < o_loose < o_tight
    roc = fddb_roc({"one": dets}, [FddbImage("one", (face,))])
    # At 0.9 only the loose box; at 0.5 the matching takes the better box, the loose one is then false.
    np.testing.assert_array_equal(roc.discrete, [[0, 1.0, 0.9], [1, 1.0, 0.5]])
    np.testing.assert_allclose(roc.continuous, [[0, o_loose, 0.9], [1, o_tight, 0.5]])


def test_overlap_of_exactly_one_half_is_not_a_match() -> None:
    # Radii below one pixel truncate to 0: OpenCV draws the single centre pixel. A two-pixel box on it
    # overlaps exactly 1/2, and Results.cpp counts a discrete match only for an overlap > 0.5.
    dot = FddbImage("dot", (Ellipse(0.5, 0.5, 0.0, 10.0, 10.0),))
    dets = np.array([[10.0, 10.0, 11.0, 10.0, 1.0]])
    assert overlap_matrix(dot.ellipses, dets)[0, 0] == 0.5
    roc = fddb_roc({"dot": dets}, [dot])
    np.testing.assert_array_equal(roc.discrete, [[1, 0.0, 1.0]])
    np.testing.assert_array_equal(roc.continuous, [[1, 0.5, 1.0]])


def official_roc(detections: dict[str, np.ndarray], images: tuple[FddbImage, ...]) -> np.ndarray:
    """The official loop written out directly: every image re-matched at every threshold of the union of
    unique scores (plus DBL_MAX when an image has no detection); rows FP, TP disc, TP cont, threshold."""
    scores = {s for dets in detections.values() for s in dets[:, 4]}
    thresholds = sorted(scores, reverse=True)
    if any(len(detections.get(image.path, [])) == 0 for image in images):
        thresholds.insert(0, math.inf)
    rows = []
    for t in thresholds:
        fp = tp_disc = tp_cont = 0.0
        for image in images:
            dets = detections.get(image.path, np.zeros((0, 5)))
            valid = dets[dets[:, 4] >= t]
            overlaps = overlap_matrix(image.ellipses, valid)
            r, c = linear_sum_assignment(overlaps, maximize=True)
            pairs = overlaps[r, c][overlaps[r, c] > 0]
            tp_disc += np.count_nonzero(pairs > 0.5)
            tp_cont += pairs.sum()
            fp += len(valid) - np.count_nonzero(pairs > 0.5)
        rows.append([fp, tp_disc, tp_cont, t])
    return np.array(rows)


def test_merged_thresholds_equal_the_official_loop_on_real_images(folds: list[FddbFold]) -> None:
    images = folds[4].images[:40]
    rng = np.random.default_rng(7)
    detections = {}
    for k, image in enumerate(images):
        if k % 7 == 3:
            continue  # no detections: the official program gives this image a DBL_MAX result
        boxes = np.array([e.bbox() for e in image.ellipses])
        sizes = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=0)
        near = np.repeat(boxes, 2, axis=0) + rng.normal(0, 0.25, (len(sizes), 4)) * np.tile(sizes, 2)
        clutter = rng.uniform(0, 400, (4, 2))
        clutter = np.column_stack([clutter, clutter + rng.uniform(20, 120, (4, 2))])
        dets = np.vstack([near, clutter])
        scores = np.round(rng.uniform(0, 1, len(dets)), 1)  # ties within and across images
        detections[image.path] = np.column_stack([dets, scores])
    n_faces = sum(len(image.ellipses) for image in images)
    roc = fddb_roc(detections, images)
    expected = official_roc(detections, images)
    np.testing.assert_array_equal(roc.discrete[:, [0, 2]], expected[:, [0, 3]])
    np.testing.assert_array_equal(roc.discrete[:, 1], expected[:, 1] / n_faces)
    np.testing.assert_allclose(roc.continuous[:, 1], expected[:, 2] / n_faces, rtol=1e-12, atol=1e-15)
    assert roc.discrete[0].tolist() == [0, 0, math.inf]
    assert 0 < roc.discrete[-1, 1] < 1 and len(roc.discrete) > 5


def test_no_detections_and_bad_detections(folds: list[FddbFold]) -> None:
    images = folds[0].images[:3]
    roc = fddb_roc({}, images)
    np.testing.assert_array_equal(roc.discrete, [[0, 0, math.inf]])
    assert roc.true_positive_rate_at(1000) == 0.0
    with pytest.raises(ValueError, match="not among"):
        fddb_roc({images[0].path + ".jpg": np.zeros((1, 5))}, images)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        fddb_roc({images[0].path: np.zeros((2, 4))}, images)


def test_image_sizes_clip_regions_to_the_image() -> None:
    # A face cut by the left edge; the official program draws on the image, so only its visible part counts.
    face = FddbImage("edge", (Ellipse(40.0, 30.0, 0.0, -5.0, 50.0),))
    dets = np.array([[0.0, 20.0, 35.0, 80.0, 1.0]])
    inside = overlap_matrix(face.ellipses, dets, image_size=(200, 100))[0, 0]
    whole = overlap_matrix(face.ellipses, dets)[0, 0]
    assert inside > 0.5 > whole
    clipped = fddb_roc({"edge": dets}, [face], image_sizes={"edge": (200, 100)})
    np.testing.assert_array_equal(clipped.discrete, [[0, 1.0, 1.0]])
    assert clipped.continuous[0, 1] == inside
    np.testing.assert_array_equal(fddb_roc({"edge": dets}, [face]).discrete, [[1, 0.0, 1.0]])


def test_true_positive_rate_at_takes_the_best_rate_within_the_budget() -> None:
    curve = np.array([[0, 0.2, 0.9], [3, 0.5, 0.5], [10, 0.7, 0.1]])
    roc = FddbRoc(discrete=curve, continuous=curve * [1, 0.5, 1])
    assert [roc.true_positive_rate_at(n) for n in (-1, 0, 2, 3, 9, 10, 1000)] == [0, 0.2, 0.2, 0.5, 0.5, 0.7, 0.7]
    assert roc.true_positive_rate_at(5, continuous=True) == 0.25


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def folds_copy(folds_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folds_dir, tmp_path / "FDDB-folds"))


def one_line_error(folds_dir: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        read_fddb_folds(folds_dir)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def test_missing_folder_and_missing_fold_file(folds_copy: Path, tmp_path: Path) -> None:
    assert str(tmp_path / "nowhere") in one_line_error(tmp_path / "nowhere")
    (folds_copy / "FDDB-fold-07.txt").unlink()
    assert str(folds_copy / "FDDB-fold-07.txt") in one_line_error(folds_copy)


def test_trailing_whitespace_and_blank_lines_are_fine(folds_copy: Path, folds: list[FddbFold]) -> None:
    for name in ("FDDB-fold-01.txt", "FDDB-fold-01-ellipseList.txt"):
        path = folds_copy / name
        path.write_text("".join(f"{line} \t \n" for line in path.read_text().splitlines()) + "\n  \n\n")
    assert read_fddb_folds(folds_copy) == folds


def corrupt_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", ["non-numeric", "field count", "count", "too few ellipses", "too many ellipses",
                                  "negative radius", "huge radius", "list mismatch", "path out of the folder"])
def test_malformed_line_is_named_by_file_and_line(folds_copy: Path, case: str) -> None:
    ellipse_file = folds_copy / "FDDB-fold-03-ellipseList.txt"
    list_file = folds_copy / "FDDB-fold-03.txt"
    lines = ellipse_file.read_text().splitlines()
    # The real file: line 16 is an image path, 17 its count (1), 18 its ellipse, 19 the next path.
    assert (lines[15], lines[16]) == ("2002/07/21/big/img_793", "1") and lines[18].startswith("2002/")
    ellipse = lines[17].split()
    if case == "non-numeric":
        corrupt_line(ellipse_file, 18, "abc " + " ".join(ellipse[1:]))
        where, says = f"{ellipse_file}:18:", "expected 6 numbers 'major minor angle cx cy 1', got 'abc "
    elif case == "field count":
        corrupt_line(ellipse_file, 18, " ".join(ellipse[:5]))
        where, says = f"{ellipse_file}:18:", "expected 6 numbers"
    elif case == "count":
        corrupt_line(ellipse_file, 17, "one")
        where, says = f"{ellipse_file}:17:", "got 'one'"
    elif case == "too few ellipses":
        corrupt_line(ellipse_file, 17, "2")
        where, says = f"{ellipse_file}:17:", "count says 2 faces for '2002/07/21/big/img_793' but only 1"
    elif case == "too many ellipses":
        corrupt_line(ellipse_file, 2, "12")  # the first image has 13
        where, says = f"{ellipse_file}:15:", "more ellipse lines than the count"
    elif case == "negative radius":
        corrupt_line(ellipse_file, 18, " ".join(["-" + ellipse[0], *ellipse[1:]]))
        where, says = f"{ellipse_file}:18:", "negative ellipse radius"
    elif case == "huge radius":
        corrupt_line(ellipse_file, 18, " ".join(["50000", *ellipse[1:]]))
        where, says = f"{ellipse_file}:18:", "an ellipse radius past 4096 pixels"
    elif case == "path out of the folder":
        corrupt_line(list_file, 2, "../../../etc/passwd")
        where, says = f"{list_file}:2:", "'../../../etc/passwd' must stay inside the image folder"
    else:
        corrupt_line(list_file, 2, "2002/07/21/big/img_794")
        where, says = f"{ellipse_file}:16:", f"{list_file}:2 lists '2002/07/21/big/img_794'"
    message = one_line_error(folds_copy)
    assert message.startswith(where)
    assert says in message
