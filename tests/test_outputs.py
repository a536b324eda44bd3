"""What the verbs write, tried as a hostile user would: an output that cannot be written fails before the work,
none overwrites an input, every file appears whole or not at all, and Ctrl-C leaves nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesplit.evaluation.coco import read_coco_faces
from facesplit.evaluation.errors import DatasetError
from facesplit.images import ImageError, read_image_bgr, sample_image
from facesplit.outputs import OutputError, check_distinct, check_writable, replacing, write_text
from tests.conftest import REPO, invoke_frosted, write_one_face_set
from tests.waiting import wait_until_sync


def unwritable_folder() -> Path:
    """A folder even root cannot create files in (sysfs), or skip: a read-only mount is not to be had here."""
    for candidate in (Path("/sys"), Path("/proc/self")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no folder here refuses a new file to root")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# facesplit.outputs, the one primitive every writer goes through

def test_a_replaced_file_is_whole_or_untouched(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]


def test_a_stream_is_written_into_never_replaced(tmp_path: Path) -> None:
    """A FIFO or a device (as /dev/null, /dev/full) takes the output itself: renaming a file over it, as for a
    regular file, would leave a regular file in its place, for every other process too."""
    import stat

    fifo = tmp_path / "boxes.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match=r"boxes\.fifo: a FIFO that no process is reading; start its reader first"):
        check_writable(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # its reader, there before the write
    try:
        write_text(fifo, "through the pipe\n")
        assert os.read(reader, 1000) == b"through the pipe\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here to make a device node")
    write_text(null, "discarded")
    assert stat.S_ISCHR(null.stat().st_mode)  # still the device
    assert sorted(os.listdir(tmp_path)) == ["boxes.fifo", "null"]  # and no partial file beside it


def test_stdout_by_its_dev_name_is_stdout() -> None:
    result = invoke_frosted("profiles", "--json", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    assert {p["name"] for p in json.loads(result.stdout)} >= {"inception3-rank16-alpha-0.4"}


def test_an_unwritable_output_is_refused_before_any_work(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(OutputError, match="is not a folder"):
        check_writable(a_file / "out.json")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_writable(a_file, folder=True)
    with pytest.raises(OutputError, match="is a folder, not a file"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper" / "out.json")  # folders that will be made are fine
    assert not (tmp_path / "new").exists()  # and checking made none
    sealed = unwritable_folder()
    with pytest.raises(OutputError, match=f"cannot write in {sealed}"):
        check_writable(sealed / "out.json")
    with pytest.raises(OutputError, match="cannot write it"):
        write_text(sealed / "out.json", "x")


def test_an_output_that_is_an_input_or_another_output_is_refused(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"jpeg")
    link = tmp_path / "link.json"
    link.symlink_to(photo)
    with pytest.raises(OutputError, match="is an input"):
        check_distinct({"--json": link}, [photo])  # through a link too
    with pytest.raises(OutputError, match="--json and --save-detections are the same file"):
        check_distinct({"--json": tmp_path / "a.json", "--save-detections": tmp_path / "." / "a.json"})
    check_distinct({"--json": Path("-"), "--save-detections": None}, [photo])


# the verbs, as a user runs them

def test_every_verb_refuses_an_unwritable_output_in_one_line_before_the_model_loads(tmp_path: Path) -> None:
    sealed = unwritable_folder()
    frames = tmp_path / "frames"
    frames.mkdir()
    runs = {
        "fit-noise": ("fit-noise", "--alpha", "0.4", "--frames", str(frames), "--out", str(sealed / "p.safetensors")),
        "attack": ("attack", "--out", str(sealed / "attack")),
        "export onnx": ("export", "onnx", "--out", str(sealed / "graphs")),
        "export triton": ("export", "triton", "--out", str(sealed / "models")),
        "weights download": ("weights", "download", "--out", str(sealed / "w.pth")),
        "detect": ("detect", "--sample", "astronaut", "--json", str(sealed / "boxes.jsonl")),
        "profiles": ("profiles", "--json", str(sealed / "profiles.json")),
        "demo": ("demo", "--json", str(sealed / "boxes.jsonl")),
    }
    for verb, argv in runs.items():
        # weights that do not exist: had the verb loaded the model first, that would be the error
        result = invoke_frosted(*argv, env={"FROSTED_WEIGHTS": str(tmp_path / "missing.pth")})
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and "cannot write" in lines[0], (verb, result.stderr)


def test_detect_never_draws_over_an_input_and_numbers_drawings_that_share_a_name(tmp_path: Path,
                                                                               weights_path: Path) -> None:
    photo = sample_image("astronaut")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.jpg"), photo)
    before = digest(tmp_path)
    result = invoke_frosted("detect", str(tmp_path / "a" / "x.jpg"), "--out", str(tmp_path / "a"),
                            "--weights", str(weights_path))
    assert result.returncode == 2 and "would overwrite" in result.stderr and digest(tmp_path) == before

    drawn = tmp_path / "drawn"
    result = invoke_frosted("detect", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"),
                            "--out", str(drawn), "--weights", str(weights_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["drawn"] for r in records] == [str(drawn / "x.jpg"), str(drawn / "x-2.jpg")]
    assert sorted(p.name for p in drawn.iterdir()) == ["x-2.jpg", "x.jpg"]
    assert digest(tmp_path / "a") == {k[2:]: v for k, v in before.items() if k.startswith("a/")}

    for twice in ([str(tmp_path / "a" / "x.jpg")] * 2, ["--sample", "astronaut", "--sample", "astronaut"]):
        result = invoke_frosted("detect", *twice, "--out", str(tmp_path / "again"), "--weights", str(weights_path))
        assert result.returncode == 2 and "is given twice: give each image once" in result.stderr, result.stderr
        assert not (tmp_path / "again").exists()  # refused before anything is made


def test_a_file_name_that_is_not_utf8_is_read_and_drawn(tmp_path: Path) -> None:
    """OpenCV, given such a name, crashed the process (SIGSEGV, no message): the bytes are read and written by
    Python instead. A real process, since a crash is what it shows."""
    from tests.conftest import run_frosted

    photo = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    cv2.imencode(".png", sample_image("astronaut"))[1].tofile(photo)
    result = run_frosted("detect", str(photo), "--out", str(tmp_path / "drawn"))
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["boxes"] and Path(record["drawn"]).parent == tmp_path / "drawn"
    assert read_image_bgr(Path(record["drawn"])).shape == sample_image("astronaut").shape


def test_detect_keeps_the_old_json_until_the_new_one_is_whole(tmp_path: Path) -> None:
    old = tmp_path / "boxes.jsonl"
    old.write_text('{"image": "yesterday", "boxes": []}\n')
    result = invoke_frosted("detect", "--sample", "astronaut", "--json", str(old),
                            "--weights", str(tmp_path / "missing.pth"))
    assert result.returncode == 1 and "weights not found" in result.stderr
    assert old.read_text() == '{"image": "yesterday", "boxes": []}\n' and os.listdir(tmp_path) == ["boxes.jsonl"]
    result = invoke_frosted("detect", "--sample", "astronaut", "--json", "photo.JPG")
    assert result.returncode == 2 and "looks like an image" in result.stderr


def test_eval_refuses_outputs_that_are_its_inputs_or_each_other(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    labels = tmp_path / "labels.json"
    before = digest(tmp_path)
    for argv, says in [(("--json", str(labels)), "is an input"),
                       (("--save-detections", str(tmp_path / "images" / "a.png")), "is an input"),
                       (("--json", str(tmp_path / "same.json"), "--save-detections", str(tmp_path / "same.json")),
                        "are the same file")]:
        result = invoke_frosted("eval", "--coco", str(labels), "--detections", str(tmp_path / "det.jsonl"), *argv)
        assert result.returncode == 2 and says in result.stderr, result.stderr
    assert digest(tmp_path) == before


def test_eval_refuses_saved_detections_that_miss_images_or_options_they_would_ignore(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    labels, saved = tmp_path / "labels.json", tmp_path / "det.jsonl"
    saved.write_text('{"image": "other.png", "boxes": []}\n')
    result = invoke_frosted("eval", "--coco", str(labels), "--detections", str(saved))
    assert result.returncode == 2 and "no detections for 1 of the 1 images" in result.stderr, result.stderr
    saved.write_text('{"image": "a.png", "boxes": [[10, 10, 30, 30, 0.9]]}\n')
    result = invoke_frosted("eval", "--coco", str(labels), "--detections", str(saved), "--noise", "alpha-0.4")
    assert result.returncode == 2 and "drop --noise" in result.stderr, result.stderr
    saved.write_bytes(b'{"image": "a.png", "boxes": []}\n\xff\xfe\n')
    result = invoke_frosted("eval", "--coco", str(labels), "--detections", str(saved))
    assert result.returncode == 1 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_exits_130_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """A merge waiting for fold files, interrupted as a user would (SIGINT to the process)."""
    folds, report = tmp_path / "folds", tmp_path / "report.json"
    folds.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "frosted", "eval", "--merge", str(folds), "--wait", "600",
                                "--json", str(report)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # it says it is waiting once it runs
        assert "Waiting up to" in first, first
        process.send_signal(signal.SIGINT)
        wait_until_sync(lambda: process.poll() is not None, "the interrupted merge to exit")
        assert process.returncode == 130 and "Interrupted." in process.stderr.read()
    finally:
        process.kill()
        process.wait()
    assert os.listdir(tmp_path) == ["folds"]


@pytest.mark.parametrize("option", ["--threshold", "--iou"])
def test_nan_is_not_a_number_an_option_takes(option: str) -> None:
    result = invoke_frosted("eval", option, "nan")
    assert result.returncode == 2 and "not a finite number" in result.stderr


# inputs whose header lies

def test_an_image_whose_size_only_decoding_tells_is_refused_undecoded(tmp_path: Path) -> None:
    radiance = tmp_path / "huge.hdr"  # a 16384x16384 float frame (3 GB decoded) in a few bytes
    radiance.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 16384 +X 16384\n" + bytes(64))
    with pytest.raises(ImageError, match="16384x16384 pixels, more than"):
        read_image_bgr(radiance)
    pfm = tmp_path / "huge.pfm"
    pfm.write_bytes(b"PF\n20000 20000\n-1.0\n" + bytes(64))
    with pytest.raises(ImageError, match="20000x20000 pixels"):
        read_image_bgr(pfm)
    small = tmp_path / "small.hdr"
    assert cv2.imwrite(str(small), np.ones((4, 6, 3), np.float32))
    assert read_image_bgr(small).shape == (4, 6, 3)  # the format itself still reads
    unknown = tmp_path / "mystery.bin"
    unknown.write_bytes(b"\x00\x01" * 64)
    with pytest.raises(ImageError, match="no image format whose size its header gives"):
        read_image_bgr(unknown)
    with pytest.raises(ImageError, match="a folder, not an image"):
        read_image_bgr(tmp_path)


def test_a_fifo_or_a_broken_link_is_named_for_what_it_is_and_never_read(tmp_path: Path) -> None:
    """A FIFO read as an image would block until a writer came: it is refused from what the path is."""
    fifo, loop, dangling = tmp_path / "camera.jpg", tmp_path / "loop.jpg", tmp_path / "gone.jpg"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageError, match=r"camera\.jpg: not a regular file"):
        read_image_bgr(fifo)
    for link in (loop, dangling):
        with pytest.raises(ImageError, match="a link to nothing"):
            read_image_bgr(link)
    with pytest.raises(ImageError, match="image not found"):
        read_image_bgr(tmp_path / "missing.jpg")


@pytest.mark.parametrize("progressive", [False, True])
def test_a_truncated_jpeg_is_an_error_not_a_frame_without_faces(tmp_path: Path, progressive: bool) -> None:
    photo = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(photo), sample_image("astronaut"), [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    whole = photo.read_bytes()
    assert read_image_bgr(photo).shape == (512, 512, 3)
    photo.write_bytes(whole + b"ftyp" + bytes(range(256)) * 64)  # data after the end (a motion photo's video)
    assert read_image_bgr(photo).shape == (512, 512, 3)
    photo.write_bytes(whole[:len(whole) * 2 // 3])
    with pytest.raises(ImageError, match="a truncated JPEG"):
        read_image_bgr(photo)


def test_coco_labels_that_lie_are_refused(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    labels = tmp_path / "labels.json"
    good = json.loads(labels.read_text())

    def refused(data: dict, says: str) -> None:
        labels.write_text(json.dumps(data))
        with pytest.raises(DatasetError, match=says):
            read_coco_faces(labels, tmp_path / "images")

    refused({**good, "images": good["images"] * 2}, "which an earlier image has too")
    refused({**good, "images": [{**good["images"][0], "width": 640, "height": 480}]}, "is 64x64, but the labels say")
    labels.write_text(json.dumps(good).replace("[10, 10, 20, 20]", "[10, NaN, 20, 20]"))
    with pytest.raises(DatasetError, match="finite numbers"):
        read_coco_faces(labels, tmp_path / "images")
    labels.write_bytes(b'{"images": "\xff"}')
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_coco_faces(labels, tmp_path / "images")


def test_a_tampered_fold_json_is_refused_not_merged_into_an_impossible_ap(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    folds = tmp_path / "folds"
    result = invoke_frosted("eval", "--coco", str(tmp_path / "labels.json"), "--detections",
                            str(tmp_path / "det.jsonl"), "--folds", "1", "--fold", "1",
                            "--json", str(folds / "fold-1.json"))
    assert result.returncode == 0, result.stderr
    assert invoke_frosted("eval", "--merge", str(folds)).returncode == 0
    record = json.loads((folds / "fold-1.json").read_text())
    record["pool"]["faces"] = 0  # one match of no faces: recall, and AP, above 1
    (folds / "fold-1.json").write_text(json.dumps(record))
    result = invoke_frosted("eval", "--merge", str(folds))
    assert result.returncode == 1 and "malformed fold JSON" in result.stderr, result.stderr


def test_a_triton_re_export_cut_short_leaves_the_served_models_as_they_were(tmp_path: Path, tails,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    import cloud_tail.triton_repository as repository

    tail = next(tail for tail in tails.values() if tail.noisy)
    out = tmp_path / "models"
    repository.write_repository([tail], out)
    served = digest(out)
    assert len({name.split("/")[0] for name in served}) == 4

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the new graph is being exported

    monkeypatch.setattr(repository, "export_graph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        repository.write_repository([tail], out)
    assert digest(out) == served and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_onnx_export_cut_short_changes_nothing_and_leaves_no_folder_it_made(tmp_path: Path, detector,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    import facesplit.runtimes.export as export
    from facesplit.preprocess import InputSize

    real, calls = export.export_graph, []

    def interrupted_at_the_second(*args: object, **kwargs: object):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the head, while the tail is exported
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "export_graph", interrupted_at_the_second)
    out = tmp_path / "graphs"
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(detector, [], [InputSize.parse("320x256")], out, "rdcl")
    assert not out.exists()  # it left the head graph and no manifest

    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an earlier export's
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(detector, [], [InputSize.parse("320x256")], out, "rdcl")
    assert [p.name for p in out.iterdir()] == ["manifest.json"] and (out / "manifest.json").read_text() == "{}"
    calls.clear()
    monkeypatch.setattr(export, "export_graph", real)
    manifest = export.export_onnx(detector, [], [InputSize.parse("320x256")], out, "rdcl")
    assert sorted(p.name for p in out.iterdir()) == sorted([g["file"] for g in manifest["graphs"]] + ["manifest.json"])


def test_a_report_to_a_full_stdout_is_one_line_for_every_verb(weights_path: Path) -> None:
    """Every verb's report lines (not only the JSON writers') to a stdout that cannot take them: one line, exit 1,
    no traceback, whichever `click.echo` they came from."""
    for argv in (("profiles",), ("weights", "check", "--weights", str(weights_path))):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "frosted", *argv], stdout=full, stderr=subprocess.PIPE,
                                    text=True, cwd=REPO, timeout=240)
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr.strip() == "Error: stdout: cannot write (No space left on device)", (argv, result.stderr)


def test_a_set_that_cannot_all_move_in_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """One of the outputs cannot take its place (a link is in the way of a folder, say): those already moved in
    are taken out and what they replaced comes back, files, folders and links alike."""
    from facesplit.outputs import building_into

    repository = tmp_path / "models"
    (repository / "alpha").mkdir(parents=True)
    (repository / "alpha" / "config.pbtxt").write_text("old alpha")
    (repository / "manifest.json").write_text("old manifest")
    (repository / "zulu").mkdir()
    before = digest(repository)

    def rename_failing_at(name: str):
        real = os.replace

        def replace(src: object, dst: object) -> None:
            if Path(str(src)).name == name and ".frosted-build-" in str(src) and ".replaced" not in str(src):
                raise OSError(28, "No space left on device")
            real(src, dst)
        return replace

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", rename_failing_at("zulu"))
        with pytest.raises(OutputError, match="No space left on device"), \
                building_into(repository, last=["manifest.json"]) as staging:
            for name in ("alpha", "zulu"):
                (staging / name).mkdir()
                (staging / name / "config.pbtxt").write_text(f"new {name}")
            (staging / "manifest.json").write_text("new manifest")
    assert digest(repository) == before and sorted(os.listdir(repository)) == ["alpha", "manifest.json", "zulu"]
    with building_into(repository, last=["manifest.json"]) as staging:  # and when all can: all are new
        (staging / "alpha").mkdir()
        (staging / "alpha" / "config.pbtxt").write_text("new alpha")
        (staging / "manifest.json").write_text("new manifest")
    assert (repository / "alpha" / "config.pbtxt").read_text() == "new alpha"
    assert (repository / "manifest.json").read_text() == "new manifest" and (repository / "zulu").is_dir()
    assert sorted(os.listdir(repository)) == ["alpha", "manifest.json", "zulu"]


def test_a_folder_where_a_built_file_goes_is_refused_not_deleted(tmp_path: Path) -> None:
    from facesplit.outputs import building_into

    (tmp_path / "manifest.json").mkdir()
    (tmp_path / "manifest.json" / "mine.txt").write_text("the user's")
    with pytest.raises(OutputError, match=r"manifest\.json: a folder where this writes a file; move it away"), \
            building_into(tmp_path, last=["manifest.json"]) as staging:
        (staging / "manifest.json").write_text("{}")
    assert (tmp_path / "manifest.json" / "mine.txt").read_text() == "the user's"
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]


def test_a_new_or_regular_file_under_dev_is_a_file_like_any_other() -> None:
    """/dev/shm holds regular files: only devices, FIFOs and links (as /dev/stdout) there are streams."""
    from facesplit.outputs import is_stream

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    target = shm / f"frosted-test-{os.getpid()}.json"
    try:
        assert not is_stream(target)
        check_writable(target)
        write_text(target, "whole")
        assert target.read_text() == "whole" and not is_stream(target)
    finally:
        target.unlink(missing_ok=True)
    assert is_stream(Path("/dev/null")) and is_stream(Path("/dev/stdout"))


def test_an_image_is_read_no_further_than_its_pixels_could_need(tmp_path: Path, monkeypatch) -> None:
    """A 10x10 PNG followed by 64 MiB of padding: the decoder gets the image and what its pixels could take, not
    the padding (a file of gigabytes after a tiny header was read whole)."""
    from facesplit import images

    padded = tmp_path / "padded.png"
    padded.write_bytes(cv2.imencode(".png", np.full((10, 10, 3), 7, np.uint8))[1].tobytes() + bytes(64 << 20))
    decoded: list[int] = []
    real = cv2.imdecode

    def imdecode(data: np.ndarray, flags: int) -> np.ndarray:
        decoded.append(len(data))
        return real(data, flags)

    monkeypatch.setattr(images.cv2, "imdecode", imdecode)
    assert (read_image_bgr(padded) == 7).all()
    assert decoded == [10 * 10 * 16 + (16 << 20)]
