"""The split model: tail(head(x)) is the whole FaceBoxes, shapes, priors, input sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facesplit.detector import SplitDetector
from facesplit.faceboxes import SPLITS, FaceBoxes, activation_shape
from facesplit.images import read_image_bgr, sample_image
from facesplit.preprocess import InputSize, preprocess
from facesplit.priors import priors_for
from facesplit.weights import head_fingerprint, load_faceboxes


def reference_forward(model: FaceBoxes, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unsplit network as the original code writes it: CReLU then pool, softmax over two classes."""
    import torch.nn.functional as F

    def crelu(block, t: torch.Tensor) -> torch.Tensor:
        t = block.bn(block.conv(t))
        return F.relu(torch.cat([t, -t], 1))

    t = F.max_pool2d(crelu(model.head.conv1, x), 3, 2, 1)
    t = F.max_pool2d(crelu(model.head.conv2, t), 3, 2, 1)
    tail = model.tail
    loc, conf = tail.logits(t)
    return loc, F.softmax(conf, dim=-1)[..., 1]


@pytest.mark.parametrize("height,width", [(1024, 1024), (576, 1024), (320, 480)])
def test_split_equals_whole_model_on_random_input(faceboxes: FaceBoxes, height: int, width: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, height, width) * 60
    with torch.inference_mode():
        whole = reference_forward(faceboxes, x)
        split = faceboxes.tail(faceboxes.head(x))
    for a, b in zip(whole, split, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


def test_split_equals_whole_model_on_real_photos(faceboxes: FaceBoxes, detector: SplitDetector,
                                                 shared_dir) -> None:
    photo = shared_dir / "data/faces/dlib/images/2008_001322.jpg"
    frames = [sample_image("astronaut"), read_image_bgr(photo)]
    for frame in frames:
        x, _ = preprocess(frame, InputSize(1024, 1024))
        with torch.inference_mode():
            whole = reference_forward(faceboxes, x.contiguous())
            activation = detector.head(x)  # the product path: fused batch norm, channels_last
            split = detector.tail(activation)
        assert tuple(activation.shape) == (1, 128, 32, 32)
        assert (activation >= 0).all()
        assert (whole[0] - split[0]).abs().max().item() <= 1e-4  # box offsets, fused-BN rounding
        assert (whole[1] - split[1]).abs().max().item() <= 1e-5  # face probabilities


def test_every_split_is_the_same_detector(faceboxes: FaceBoxes, weights_path) -> None:
    """Moving the split moves Inception blocks from tail to head: the same checkpoint, the same outputs, the
    same wire shape, but another head (so another fingerprint: a profile is fitted for one split)."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 320, 256) * 60
    with torch.inference_mode():
        whole = reference_forward(faceboxes, x)
    fingerprints = set()
    for depth, split in enumerate(SPLITS):
        model = load_faceboxes(weights_path, split)
        assert model.split == split and model.head.inceptions == tuple(f"inception{i}" for i in range(1, depth + 1))
        assert not set(model.head.state_dict()) & set(model.tail.state_dict())
        with torch.inference_mode():
            activation = model.head(x)
            outputs = model.tail(activation)
        assert tuple(activation.shape) == (1, *activation_shape(320, 256))
        for a, b in zip(whole, outputs, strict=True):
            assert (a - b).abs().max().item() <= 1e-5
        fingerprints.add(head_fingerprint(model))
    assert len(fingerprints) == len(SPLITS)
    with pytest.raises(ValueError, match="split must be one of rdcl, inception1"):
        FaceBoxes("conv3")


def test_activation_shapes() -> None:
    assert activation_shape(1024, 1024) == (128, 32, 32)
    assert activation_shape(576, 1024) == (128, 18, 32)


def test_head_output_shape_for_16_by_9(detector: SplitDetector) -> None:
    frame = np.zeros((1080, 1920, 3), dtype=np.uint8)
    x, box = preprocess(frame, InputSize(1024, 576))
    assert tuple(x.shape) == (1, 3, 576, 1024)
    assert tuple(detector.head(x).shape) == (1, 128, 18, 32)
    assert box.scale == pytest.approx(1024 / 1920)


def test_prior_count_and_dense_order() -> None:
    priors = priors_for(1024, 1024)
    assert priors.shape == (21824, 4)
    # first cell: 16 dense 32-px anchors, row offset outer, column offset inner
    first = priors[:16] * 1024
    assert np.allclose(first[:4, 1], 0) and np.allclose(first[:4, 0], [0, 8, 16, 24])
    assert np.allclose(first[4:8, 1], 8)
    assert np.allclose(first[:, 2:], 32)
    assert np.allclose(priors[16:20, 2:] * 1024, 64) and np.allclose(priors[20, :] * 1024, [16, 16, 128, 128])
    assert len(priors_for(576, 1024)) == 18 * 32 * 21 + 9 * 16 + 5 * 8


@pytest.mark.parametrize("text,expected", [("1024", (1024, 1024)), ("1024x576", (1024, 576)),
                                           ("native", (None, None))])
def test_input_size_parse(text: str, expected: tuple) -> None:
    size = InputSize.parse(text)
    assert (size.width, size.height) == expected


@pytest.mark.parametrize("text", ["1000", "1024x", "abc", "0", "-32"])
def test_input_size_rejects_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="input size"):
        InputSize.parse(text)


def test_letterbox_maps_boxes_back_to_frame() -> None:
    frame = np.zeros((1080, 1920, 3), dtype=np.uint8)
    _, box = preprocess(frame, InputSize(1024, 1024))
    back = box.boxes_to_frame(np.array([[512, 128, 1024, 576, 0.9]]))
    assert np.allclose(back[0], [960, 240, 1920, 1080, 0.9], atol=1e-3)


def test_native_size_pads_to_multiple_of_32() -> None:
    x, box = preprocess(np.zeros((375, 500, 3), dtype=np.uint8), InputSize.parse("native"))
    assert tuple(x.shape) == (1, 3, 384, 512) and box.scale == 1.0
    assert x[0, :, 375:, :].abs().max() == 0  # padding is the mean: zero after subtraction


@pytest.mark.parametrize("shape", [(1080, 1920, 3), (375, 500, 3), (700, 300, 3)])
@pytest.mark.parametrize("size", ["1024", "1024x576", "native"])
def test_preprocess_matches_plain_resize_and_mean_subtraction(shape: tuple[int, int, int], size: str) -> None:
    import cv2

    from facesplit.preprocess import BGR_MEAN

    frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x, box = preprocess(frame, InputSize.parse(size))
    resized = frame if box.scale == 1 else cv2.resize(
        frame, (round(box.frame_width * box.scale), round(box.frame_height * box.scale)))
    expected = np.zeros((box.input_height, box.input_width, 3), np.float32)
    expected[:resized.shape[0], :resized.shape[1]] = resized.astype(np.float32) - BGR_MEAN
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), expected)
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(30000, 1, 3), (1, 9000, 3)])
def test_a_frame_thinner_than_a_pixel_once_scaled_keeps_a_pixel(shape: tuple[int, int, int]) -> None:
    """A 1-pixel-wide strip, scaled to fit, would round its width to zero (an OpenCV assertion)."""
    from facesplit.preprocess import letterbox_pixels

    frame = np.full(shape, 200, dtype=np.uint8)
    x, box = preprocess(frame, InputSize(1024, 576))
    pixels, _ = letterbox_pixels(frame, InputSize(1024, 576))
    assert tuple(x.shape) == (1, 3, 576, 1024) and pixels.shape == (576, 1024, 3)
    assert (x[0, :, 0, 0] != 0).all()  # the strip's first pixel is there, not padding
    back = box.boxes_to_frame(np.array([[0, 0, 1, 1, 0.9]]))
    assert (back[0, :4] <= [shape[1], shape[0]] * 2).all()
