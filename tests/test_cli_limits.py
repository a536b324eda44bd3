"""Inputs too large to process are refused in one line naming the value, never with a traceback or gigabytes
of memory: images by their header before decoding, model input sizes, native sizes; and the edge's metrics
endpoint that cannot listen."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from facesplit.errors import FrostedError
from facesplit.images import ImageError, read_image_bgr
from facesplit.preprocess import MAX_INPUT_SIDE, InputSize, preprocess
from tests.conftest import invoke_frosted, write_one_face_set
from tests.test_edge_tls import NoFrameBackend


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels but holds a few bytes: what a decompression bomb's header
    looks like, without anyone having to build the bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("width, height, shown", [(12000, 12000, "12000x12000"),
                                                  (40000, 40000, "1600000000")])  # PIL gives only the count
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, width, height, shown):
    huge = png_header_only(tmp_path / "huge.png", width, height)
    with pytest.raises(ImageError, match=rf"huge\.png: {shown} pixels, more than the \d+ allowed "
                                         r"\(FROSTED_MAX_IMAGE_PIXELS\)"):
        read_image_bgr(huge)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((40, 60, 3), np.uint8))
    assert read_image_bgr(small).shape == (40, 60, 3)
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "2000")
    with pytest.raises(ImageError, match=r"small\.png: 60x40 pixels, more than the 2000 allowed"):
        read_image_bgr(small)
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match="FROSTED_MAX_IMAGE_PIXELS='lots'"):
        read_image_bgr(small)


@pytest.mark.parametrize("text", ["65536", "99999999999999999968", "1024x65536", "9" * 5000])
def test_input_sizes_are_bounded(text):
    with pytest.raises(ValueError, match=f"at most {MAX_INPUT_SIDE}") as error:
        InputSize.parse(text)
    assert text[:20] in str(error.value) and len(str(error.value)) < 200


def test_a_native_input_over_the_bound_is_refused_before_allocating():
    strip = np.zeros((32, MAX_INPUT_SIDE + 32, 3), np.uint8)
    with pytest.raises(FrostedError, match=f"{MAX_INPUT_SIDE + 32}x32 .*native"):
        preprocess(strip, InputSize.parse("native"))


def test_detect_reports_each_bad_image_and_keeps_the_others(weights_path, tmp_path):
    huge = png_header_only(tmp_path / "huge.png", 40000, 40000)
    strip = tmp_path / "strip.png"  # within the pixel limit, too wide for a native-size model input
    cv2.imwrite(str(strip), np.zeros((32, MAX_INPUT_SIDE + 32, 3), np.uint8))
    result = invoke_frosted("detect", str(huge), str(strip), "--sample", "astronaut", "--input-size", "native",
                            "--weights", str(weights_path))
    assert result.returncode == 1, result.stderr[-2000:]
    assert [line.split('"')[3] for line in result.stdout.splitlines()] == ["skimage:astronaut"]
    errors = error_lines(result.stderr)
    assert len(errors) == 2 and "huge.png: 1600000000 pixels" in errors[0] and "native" in errors[1], result.stderr
    assert "Traceback" not in result.stderr


def test_detect_with_a_lowered_pixel_limit(weights_path, tmp_path):
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((400, 600, 3), 128, np.uint8))
    result = invoke_frosted("detect", str(photo), "--sample", "astronaut", "--weights", str(weights_path),
                            env={"FROSTED_MAX_IMAGE_PIXELS": "100000"})
    assert result.returncode == 1 and len(result.stdout.splitlines()) == 1, result.stderr[-2000:]
    assert error_lines(result.stderr) == [f"Error: {photo}: 600x400 pixels, more than the 100000 allowed "
                                          "(FROSTED_MAX_IMAGE_PIXELS)"]


@pytest.mark.parametrize("size", ["65536", "99999999999999999968"])
def test_detect_input_size_out_of_bounds_is_one_line(size):
    result = invoke_frosted("detect", "--sample", "astronaut", "--input-size", size)
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and size in errors[0] and str(MAX_INPUT_SIDE) in errors[0], result.stderr


def _agent(tmp_path: Path, metrics: dict) -> EdgeAgent:
    config = AgentConfig(tail={"address": "127.0.0.1:1", "insecure": True}, metrics=metrics,
                         cameras=[{"id": "door", "url": str(tmp_path / "none.mp4")}], output=str(tmp_path / "o"))
    return EdgeAgent(config, NoFrameBackend(), JsonLinesSink(str(tmp_path / "o")))


async def test_metrics_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FrostedError, match=f"metrics: cannot serve on 127.0.0.1:{port} .*in use"):
            await _agent(tmp_path, {"port": port}).run()


async def test_metrics_host_that_does_not_resolve_is_one_line(tmp_path):
    with pytest.raises(FrostedError, match=r"metrics: cannot serve on 999\.1\.1\.1:9"):
        await _agent(tmp_path, {"host": "999.1.1.1", "port": 9}).run()


def test_eval_json_into_a_folder_is_one_line(tmp_path):
    """Refused when the options are read, not after the evaluation has run (with a traceback)."""
    write_one_face_set(tmp_path)
    base = ("eval", "--coco", str(tmp_path / "labels.json"), "--detections", str(tmp_path / "det.jsonl"),
            "--folds", "1")
    assert invoke_frosted(*base, "--json", str(tmp_path / "ok.json")).returncode == 0
    for option in ("--json", "--save-detections"):
        result = invoke_frosted(*base, option, str(tmp_path))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        errors = error_lines(result.stderr)
        assert len(errors) == 1 and str(tmp_path) in errors[0] and "is a folder, not a file" in errors[0], \
            result.stderr


def _kind_cases() -> list[tuple[str, ...]]:
    """(verb and flags with FOLDER or FILE standing for a path of the wrong kind, what the error says)."""
    image = "PHOTO"
    return [
        ("detect", image, "--json", "FOLDER", "is a folder, not a file"),
        ("detect", image, "--out", "FILE", "exists and is not a folder"),
        ("detect", "FOLDER", "a folder, not an image"),
        ("edge", "--config", "FOLDER", "a folder, not a config file"),
        ("edge", "--source", image, "--tail", "h:1", "--insecure", "--json", "FOLDER", "is a folder, not a file"),
        ("demo", "--json", "FOLDER", "is a folder, not a file"),
        ("fit-noise", "--out", "FOLDER", "--frames", image, "is a folder, not a file"),
        ("weights", "download", "--out", "FOLDER", "is a folder, not a file"),
        ("weights", "check", "--weights", "FOLDER", "is a folder"),
        ("export", "onnx", "--out", "FILE", "exists and is not a folder"),
        ("export", "triton", "--out", "FILE", "exists and is not a folder"),
        ("eval", "--merge", "FILE", "not a folder of fold JSONs"),
        ("attack", "--out", "FILE", "exists and is not a folder"),
        ("profiles", "--json", "FOLDER", "is a folder, not a file"),
        ("runtimes", "--json", "FOLDER", "is a folder, not a file"),
    ]


@pytest.mark.parametrize("case", _kind_cases(), ids=lambda case: " ".join(case[:-1]))
def test_a_path_of_the_wrong_kind_is_one_line_and_status_1_in_every_verb(tmp_path, case):
    """A folder where a file is expected (or a file where a folder is) is found on disk, like a missing file: one
    line naming it and exit status 1 in every verb, whether click's option or the verb would have seen it first."""
    *words, says = case
    folder, file = tmp_path / "a-folder", tmp_path / "a-file"
    folder.mkdir()
    file.write_text("not a folder\n")
    photo = png_header_only(tmp_path / "photo.png", 64, 64)
    paths = {"FOLDER": str(folder), "FILE": str(file), "PHOTO": str(photo)}
    result = invoke_frosted(*[paths.get(word, word) for word in words])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and says in errors[0], result.stderr[-2000:]
    assert folder.is_dir() and file.read_text() == "not a folder\n"  # neither was touched
