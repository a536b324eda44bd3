"""int8 heads: the exported float head quantized after training by NNCF, calibrated on a user's frames.

NNCF (OpenVINO's compression library) runs the float ONNX graph on the calibration frames (in ONNX Runtime),
picks a scale for every activation and weight, and writes the same graph with QuantizeLinear/DequantizeLinear
pairs around every convolution: a "QDQ" graph, the one form of an int8 head that every runtime reads.
OpenVINO turns the pairs into int8 kernels on the CPU, TensorRT into int8 engines on a GPU (explicit
quantization: the scales are the graph's, not TensorRT's calibrator's), and ``frosted export onnx --precision
int8`` writes it for a user's own runtime. So one int8 head, one fingerprint, one validation, wherever it runs.
It is calibrated on frames like the ones it will see: a folder of the user's images (``--calibration FOLDER``),
by default MIT+CMU folds 1-5 from the shared data, the images every shipped profile was fitted on (folds 6-10
are what AP is measured on).

NNCF's "overflow fix" keeps the first layer's weights to 7 bits so that the int16 sums of older CPUs' int8
instructions cannot saturate. CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX) and GPUs sum in int32, so for
them it is off: with it, clean AP@0.3 on MIT+CMU folds 6-10 at 1024x1024 fell 0.40 points (docs/runtimes.md).
Only OpenVINO on an older CPU gets the graph with it.

A quantized head is a different head: its activations differ from the float head's (at inception3, on the
held-out images: by up to 2.2-2.8 where they reach 7.9, 0.02 on average), so frames from it carry another
fingerprint (`facesplit.runtimes.fingerprint_at`), and a profile is only valid for it once its AP has been
measured on it (`facesplit.noise.validation`). The graph is cached beside the float ones, named by the float
graph, NNCF's version, the calibration frames' contents and their number, and the overflow fix: other frames
are another graph, never a stale one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from facesplit.detector import SplitDetector
from facesplit.errors import FrostedError
from facesplit.images import read_image_bgr
from facesplit.outputs import replacing
from facesplit.preprocess import preprocess
from facesplit.runtimes import EXTRAS, HeadRuntime, require
from facesplit.runtimes.graphs import HEAD_INPUT, GraphSpec, cached_graph, derived_graph, graph_cache_dir, quiet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
MAX_CALIBRATION_FRAMES = 300  # NNCF's own default subset: more frames move the scales by little
DEFAULT_CALIBRATION_FOLDS = (1, 2, 3, 4, 5)  # of MIT+CMU's 10, as `frosted eval` splits it
MITCMU = Path("data/faces/mitcmu")  # under the shared data folder


class CalibrationError(FrostedError):
    """No frames to calibrate an int8 head on: an empty or missing folder, or no default set."""


def shared_dir() -> Path:
    """The shared data folder: ``$FROSTED_SHARED``, else ``shared`` beside the repository."""
    return Path(os.environ.get("FROSTED_SHARED") or Path(__file__).resolve().parents[3] / "shared")


def calibration_frames(folder: Path | None = None) -> list[Path]:
    """The images an int8 head is calibrated on: every image in ``folder`` (sorted, at most
    MAX_CALIBRATION_FRAMES, evenly spaced), or by default MIT+CMU folds 1-5 of the shared data."""
    if folder is None:
        from facesplit.evaluation.coco import read_coco_faces, split_into_folds

        labels = shared_dir() / MITCMU / "labels.json"
        if not labels.is_file():
            raise CalibrationError(f"--precision int8 calibrates on frames: give --calibration FOLDER (the default, "
                                   f"MIT+CMU folds 1-5, is not at {labels.parent}; set $FROSTED_SHARED)")
        folds = split_into_folds(read_coco_faces(labels, labels.parent / "images"), 10)
        files = [image.path for k in DEFAULT_CALIBRATION_FOLDS for image in folds[k - 1]]
    else:
        if not folder.is_dir():
            raise CalibrationError(f"--calibration {folder}: " + ("a file, not a folder of frames" if folder.exists()
                                                                  else "no such folder"))
        # regular files only: a FIFO named like a photo would block the read for ever
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise CalibrationError(f"--calibration {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(files) > MAX_CALIBRATION_FRAMES:
        picks = np.linspace(0, len(files) - 1, MAX_CALIBRATION_FRAMES).round().astype(int)
        files = [files[i] for i in picks]
    return files


def int8_graph(detector: SplitDetector, calibration: Path | None = None, directory: Path | None = None,
               runtime: str | None = "openvino") -> tuple[Path, GraphSpec]:
    """``detector``'s head quantized to int8 (a QDQ ONNX graph) for ``runtime`` (None: any, as ``frosted
    export`` writes it), calibrated on ``calibration`` (a folder; None: the default frames), from the cache or
    made now (a few seconds: the float graph, then NNCF over the frames)."""
    nncf = require_quantizer(runtime)
    frames = calibration_frames(calibration)
    float_path, spec = cached_graph(detector, "head", runtime or "onnxruntime", directory)
    overflow_fix = runtime == "openvino" and not cpu_has_vnni()
    key = calibration_digest(frames, float_path, nncf.__version__, overflow_fix)
    path = (directory or graph_cache_dir()) / f"head-int8-{spec.split}-{spec.size}-{key}.onnx"
    if not path.is_file():
        _quantize(nncf, float_path, path, [_model_input(detector, frame) for frame in frames], overflow_fix)
    return path, spec


def require_quantizer(runtime: str | None) -> Any:
    """NNCF, and ONNX Runtime, which it calibrates in; else the one-line reason, naming ``runtime``'s extra."""
    extra = EXTRAS.get(runtime or "openvino", "openvino")
    require("onnxruntime", "--precision int8", extra, "ONNX Runtime (NNCF calibrates in it)")
    return require("nncf", "--precision int8", extra, "NNCF")


def calibration_digest(frames: list[Path], float_path: Path, nncf_version: str, overflow_fix: bool) -> str:
    """What an int8 graph depends on besides the float graph's name: NNCF, the fix, the frames and their count."""
    digest = hashlib.sha256(f"{float_path.name}|nncf {nncf_version}|overflow-fix {overflow_fix}|{len(frames)}"
                            .encode())
    for frame in frames:
        digest.update(hashlib.sha256(frame.read_bytes()).digest())
    return digest.hexdigest()[:16]


def cpu_has_vnni() -> bool:
    """Whether this CPU's int8 dot products accumulate without int16 saturation (Linux: /proc/cpuinfo)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split()))


def _model_input(detector: SplitDetector, frame: Path) -> np.ndarray:
    image = read_image_bgr(frame)  # an ImageError (one line) names a file it cannot read
    # dense NCHW, as the graph's input is declared
    return np.ascontiguousarray(preprocess(image, detector.input_size)[0].numpy())


def _quantize(nncf: Any, float_path: Path, path: Path, inputs: list[np.ndarray], overflow_fix: bool) -> None:
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = onnx.load(str(float_path))
    fix = OverflowFix.FIRST_LAYER if overflow_fix else OverflowFix.DISABLE
    with quiet(("nncf",)):
        quantized = nncf.quantize(model, nncf.Dataset(inputs, lambda x: {HEAD_INPUT: x}), subset_size=len(inputs),
                                  advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
    with replacing(path) as partial:
        onnx.save(quantized, str(partial))


def signed_graph(path: Path) -> Path:
    """The int8 graph at ``path`` as TensorRT takes it: its unsigned quantizers made signed
    (`signed_activations`), written once beside it as ``STEM-signed.onnx``."""
    return derived_graph(path, "signed", signed_activations)


def signed_head_on_cpu(detector: SplitDetector, threads: int | None = None,
                       calibration: Path | None = None) -> HeadRuntime:
    """The int8 head TensorRT builds (`signed_graph`), run exactly by ONNX Runtime's int8 kernels on this CPU:
    TensorRT's stand-in where there is no GPU, for measuring that head (its AP, the attacks through it). Not a
    runtime the product offers: OpenVINO runs int8 on a CPU faster, and on its own graph."""
    from facesplit.runtimes.onnxruntime_runtime import OnnxRuntimeHead

    path, spec = int8_graph(detector, calibration, runtime="tensorrt")
    return OnnxRuntimeHead(signed_graph(path), spec, threads)


def signed_activations(model: Any) -> Any:
    """``model`` (a QDQ ONNX graph) with every unsigned quantizer made signed over the same range: uint8 with zero
    point 0 and scale s covers [0, 255 s]; int8 with zero point 0 and scale 255 s / 127 covers it too, at half the
    resolution. NNCF quantizes what follows a ReLU to uint8, which TensorRT does not take (only symmetric signed
    int8), and NNCF will not force the sign for its default hardware (its constraint check refuses). OpenVINO
    keeps the unsigned graph: it computes this one wrongly (its low-precision passes clip the upper half after a
    ReLU; docs/runtimes.md). So TensorRT's int8 head is this variant, at a stated distance from OpenVINO's
    (tests/test_int8.py), with its AP measured through ONNX Runtime (bench/precision_accuracy.py --signed).
    In place; returns ``model``."""
    import onnx
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    made: dict[tuple[str, str], tuple[str, str]] = {}
    signed_outputs: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        scale_name, zero_name = node.input[1], node.input[2]
        zero = initializers.get(zero_name)
        if zero is None or zero.data_type != onnx.TensorProto.UINT8:
            continue
        if (scale_name, zero_name) not in made:
            if numpy_helper.to_array(zero).any():
                raise ValueError(f"{zero_name}: an asymmetric uint8 quantizer (zero point not 0) cannot be signed")
            scale = numpy_helper.to_array(initializers[scale_name]).astype(np.float32) * np.float32(255 / 127)
            names = (f"{scale_name}_signed", f"{zero_name}_signed")
            model.graph.initializer.extend([numpy_helper.from_array(scale, names[0]),
                                            numpy_helper.from_array(np.zeros_like(
                                                numpy_helper.to_array(zero), dtype=np.int8), names[1])])
            made[(scale_name, zero_name)] = names
        node.input[1], node.input[2] = made[(scale_name, zero_name)]
        if node.op_type == "QuantizeLinear":
            signed_outputs.add(node.output[0])
    for info in model.graph.value_info:  # the shapes NNCF recorded name the quantized tensors uint8
        if info.name in signed_outputs:
            info.type.tensor_type.elem_type = onnx.TensorProto.INT8
    used = {name for node in model.graph.node for name in node.input}
    unused = [tensor for tensor in model.graph.initializer if tensor.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    return model
