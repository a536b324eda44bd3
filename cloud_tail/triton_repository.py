"""``frosted export triton``: the tails one `frosted tail` would serve, as an NVIDIA Triton model repository.

Per served tail (a profile's noise-aware tail, or the clean one), four models, each named after it:

- ``NAME.tail-onnx``: the tail as ONNX (``platform: onnxruntime_onnx``), for production Triton (its ONNX
  Runtime or TensorRT backends, on GPUs);
- ``NAME.tail-python``: the same graph run by ONNX Runtime inside a python-backend model, for a Triton that has
  only the python backend (the CPU server nvidia-pytriton ships, which the tests start);
- ``NAME.boxes``: priors, box decoding, score threshold and NMS (python backend, numpy), as `frosted tail` does
  them (`facesplit.postprocess`), so the answers are the same boxes in model-input pixels;
- ``NAME``: the ensemble the edge agent calls: activation (FP16, what crosses the wire) -> tail -> boxes.

Every model carries the tail's profile fingerprint in its ``parameters`` (the agent checks it before it
streams, as it checks our ``GetInfo``), has ``dynamic_batching`` (frames of all cameras are batched) and
``model_warmup``. The configs are written from Triton's own ``ModelConfig`` message (``triton_wire``), so a
field Triton does not know cannot be written.

The python-backend models import numpy and onnxruntime only (plus Triton's ``triton_python_backend_utils``),
never this project: in a Triton container the python backend runs the container's Python, where neither
frosted nor torch is installed, and each model instance is its own process, which torch would add seconds and
hundreds of MB to. What they need from facesplit (the priors, the thresholds) is computed here and written
beside them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from google.protobuf import text_format

from cloud_tail.models import ServedTail
from facesplit.errors import FrostedError
from facesplit.outputs import building_into
from facesplit.priors import priors_for
from facesplit.runtimes import require
from facesplit.runtimes.graphs import MAX_BATCH, TAIL_INPUT, TAIL_OUTPUTS, export_graph
from triton_wire import model_config_pb2 as mc
from triton_wire.names import COMPOSING_SUFFIXES, ensemble_name

REPOSITORY_FORMAT = "frosted-triton/2"  # bump when a model's inputs, outputs or parameters change
MODELS_DIR = Path(__file__).resolve().parent / "triton_models"  # the python-backend model.py sources
ACTIVATION, BOXES, BOX_COUNT = "activation", "boxes", "box_count"
EnsembleTail = Literal["python", "onnxruntime"]
ENSEMBLE_TAILS: tuple[EnsembleTail, ...] = ("python", "onnxruntime")


class TritonExportError(FrostedError):
    """A repository that cannot be written (a folder that exists and is not one of ours, a bad option)."""


@dataclass(frozen=True)
class TritonOptions:
    max_batch: int = 8  # the largest batch Triton forms (frosted tail's --max-batch)
    max_delay_ms: float = 4.0  # how long Triton holds a frame for a batch to form (frosted tail's --max-delay-ms)
    threads: int = 0  # ONNX Runtime's intra-op threads in the python-backend tail; 0: its default
    instances: int = 1  # instances of each python-backend model (each a process)
    ensemble_tail: EnsembleTail = "python"  # which tail model the ensemble calls


def model_names(tail: ServedTail) -> dict[str, str]:
    """The repository's model names for ``tail``: the ensemble is what agents call (`triton_wire.names`)."""
    base = ensemble_name(tail.name if tail.noisy else None, tail.split, tail.precision)
    parts = dict(zip(("tail-onnx", "tail-python", "boxes"), COMPOSING_SUFFIXES, strict=True))
    return {"ensemble": base, **{part: f"{base}{suffix}" for part, suffix in parts.items()}}


def write_repository(tails: Iterable[ServedTail], out: Path, options: TritonOptions = TritonOptions()
                     ) -> list[dict[str, Any]]:
    """Write every tail's four models into ``out`` (created if missing; its other models are left alone, ours
    are replaced); returns one summary per tail."""
    if not 1 <= options.max_batch <= MAX_BATCH:
        raise TritonExportError(f"--max-batch must be 1-{MAX_BATCH} (the graphs' largest batch)")
    if options.ensemble_tail not in ENSEMBLE_TAILS:
        raise TritonExportError(f"--ensemble-tail: one of {', '.join(ENSEMBLE_TAILS)}")
    require("onnx", "frosted export triton", "onnx")
    tails = list(tails)
    for tail in tails:  # every refusal before the first model is written
        for name in model_names(tail).values():
            _check_ours(out / name)
    # built whole in a hidden folder of the repository, then each model moved in by a rename: an export that
    # fails or is killed leaves the models already there as they were
    with building_into(out) as staging:
        summaries = [_write_tail(tail, staging, options) for tail in tails]
    return summaries


def _write_tail(tail: ServedTail, out: Path, options: TritonOptions) -> dict[str, Any]:
    if tail.detector is None:
        raise TritonExportError(f"{tail.name}: a tail without its torch model cannot be exported")
    names = model_names(tail)
    priors = priors_for(tail.input_height, tail.input_width)
    anchors = int(priors.shape[0])
    params = {"fingerprint": tail.fingerprint, "profile": tail.name, "alpha": f"{tail.alpha:g}",
              "noisy": str(tail.noisy).lower(), "split": tail.split, "head_precision": tail.precision,
              "input_size": f"{tail.input_width}x{tail.input_height}", "format": REPOSITORY_FORMAT}
    for name in names.values():
        (out / name).mkdir()

    # the graph once, with an FP16 input (the wire's dtype, so no model converts it on the way in)
    onnx_dir = out / names["tail-onnx"] / "1"
    export_graph(tail.detector, "tail", onnx_dir / "model.onnx")
    _take_float16_input(onnx_dir / "model.onnx")
    python_dir = out / names["tail-python"] / "1"
    python_dir.mkdir(parents=True)
    shutil.copyfile(onnx_dir / "model.onnx", python_dir / "model.onnx")
    shutil.copyfile(MODELS_DIR / "tail.py", python_dir / "model.py")
    boxes_dir = out / names["boxes"] / "1"
    boxes_dir.mkdir(parents=True)
    shutil.copyfile(MODELS_DIR / "boxes.py", boxes_dir / "model.py")
    np.save(boxes_dir / "priors.npy", priors)

    activation = list(tail.activation_shape)
    tail_io = ([_tensor(ACTIVATION, mc.TYPE_FP16, activation)],
               [_tensor(TAIL_OUTPUTS[0], mc.TYPE_FP32, [anchors, 4]),
                _tensor(TAIL_OUTPUTS[1], mc.TYPE_FP32, [anchors])])
    post = tail.detector.postprocess
    configs = {
        "tail-onnx": _model(names["tail-onnx"], options, *tail_io, params, platform="onnxruntime_onnx"),
        "tail-python": _model(names["tail-python"], options, *tail_io,
                              {**params, "intra_op_threads": str(options.threads)}, backend="python"),
        "boxes": _model(names["boxes"], options, list(tail_io[1]),
                        [_tensor(BOXES, mc.TYPE_FP32, [-1, 5]), _tensor(BOX_COUNT, mc.TYPE_INT32, [1])],
                        {**params, "score_threshold": repr(post.score_threshold), "nms_iou": repr(post.nms_iou),
                         "pre_nms_top_k": str(post.pre_nms_top_k), "keep_top_k": str(post.keep_top_k)},
                        backend="python"),
        "ensemble": _ensemble(names, options, tail_io, params),
    }
    (out / names["ensemble"] / "1").mkdir()  # an ensemble has no files, but Triton wants a version folder
    for part, config in configs.items():
        (out / names[part] / "config.pbtxt").write_text(text_format.MessageToString(config))
    return {"model": names["ensemble"], "models": list(names.values()), "fingerprint": tail.fingerprint,
            "profile": tail.name, "head_precision": tail.precision, "split": tail.split,
            "input_size": params["input_size"]}


def _check_ours(path: Path) -> None:
    """Refuse to replace a model folder `frosted export triton` did not write."""
    if not path.exists():
        return
    config = path / "config.pbtxt"
    # the marker is in the config's first lines: a config of gigabytes is not read whole to look for it
    if not (config.is_file() and REPOSITORY_FORMAT.split("/")[0] in _head_of(config)):
        raise TritonExportError(f"{path} exists and is not a model frosted export triton wrote: not replacing it "
                                "(remove it, or choose another --out)")


def _head_of(config: Path, size: int = 64 << 10) -> str:
    with config.open("rb") as file:
        return file.read(size).decode("utf-8", errors="replace")


def _take_float16_input(path: Path) -> None:
    """The graph's float32 input becomes FP16, cast to float32 inside: what the edge sends is FP16, and a
    production Triton then passes the wire's bytes to its backend untouched."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    (old,) = [i for i in graph.input if i.name == TAIL_INPUT]
    inner = f"{TAIL_INPUT}_float32"
    for node in graph.node:
        node.input[:] = [inner if name == TAIL_INPUT else name for name in node.input]
    graph.node.insert(0, helper.make_node("Cast", [TAIL_INPUT], [inner], to=TensorProto.FLOAT, name="wire_fp16"))
    old.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _tensor(name: str, dtype: int, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": dtype, "dims": dims}


def _parameters(config: mc.ModelConfig, params: dict[str, str]) -> None:
    for key, value in params.items():
        config.parameters[key].string_value = value


def _model(name: str, options: TritonOptions, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
           params: dict[str, str], *, platform: str = "", backend: str = "") -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, platform=platform, backend=backend, max_batch_size=options.max_batch,
                            input=[mc.ModelInput(**i) for i in inputs],
                            output=[mc.ModelOutput(**o) for o in outputs])
    config.dynamic_batching.max_queue_delay_microseconds = int(options.max_delay_ms * 1000)
    if backend == "python":  # a process per instance, on the CPU whatever the server has
        config.instance_group.append(mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU,
                                                           count=options.instances))
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    for tensor in inputs:
        warmup.inputs[tensor["name"]].CopyFrom(mc.ModelWarmup.Input(
            data_type=tensor["data_type"], dims=[d if d > 0 else 1 for d in tensor["dims"]], zero_data=True))
    _parameters(config, params)
    return config


def _ensemble(names: dict[str, str], options: TritonOptions, tail_io: tuple[list[dict[str, Any]], ...],
              params: dict[str, str]) -> mc.ModelConfig:
    tail = names["tail-python" if options.ensemble_tail == "python" else "tail-onnx"]
    config = mc.ModelConfig(name=names["ensemble"], platform="ensemble", max_batch_size=options.max_batch,
                            input=[mc.ModelInput(**i) for i in tail_io[0]],
                            output=[mc.ModelOutput(**_tensor(BOXES, mc.TYPE_FP32, [-1, 5])),
                                    mc.ModelOutput(**_tensor(BOX_COUNT, mc.TYPE_INT32, [1]))])
    steps = config.ensemble_scheduling.step
    steps.add(model_name=tail, model_version=-1, input_map={TAIL_INPUT: ACTIVATION},
              output_map={name: name for name in TAIL_OUTPUTS})
    steps.add(model_name=names["boxes"], model_version=-1, input_map={name: name for name in TAIL_OUTPUTS},
              output_map={BOXES: BOXES, BOX_COUNT: BOX_COUNT})
    _parameters(config, {**params, "ensemble_tail": tail})
    return config


def summary_json(summaries: list[dict[str, Any]]) -> str:
    return json.dumps({"format": REPOSITORY_FORMAT, "models": summaries}, indent=1) + "\n"
