"""``frosted export onnx``: the head at one split and the tails that go with it, as ONNX graphs in one folder,
with a manifest that says what each graph is.

Per input size: ``head-SPLIT-WxH.onnx``, and with ``--precision int8`` also the int8 head as QDQ graphs
(`facesplit.runtimes.int8`): ``head-SPLIT-WxH-int8.onnx``, the one OpenVINO runs, and ``...-int8-signed.onnx``,
its quantizers made signed, the one TensorRT builds; a tail per noise profile, at the size the profile was fitted for,
with the profile's noise-aware tail weights (``tail-PROFILE-WxH.onnx``), or, without profiles, the clean tail
(``tail-SPLIT-WxH.onnx``). Every graph takes any batch (1 to `MAX_BATCH`) at its one input size. The noise is
in none of them: the edge adds it on the CPU after the head (see `facesplit.runtimes.graphs`), and the
manifest says so, with the fingerprint each tail serves.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.noise.profile import read_metadata
from facesplit.noise.shipped import load_profile_for, resolve_profile
from facesplit.noise.validation import DEFAULT_CALIBRATION
from facesplit.outputs import building_into, write_text
from facesplit.preprocess import InputSize
from facesplit.runtimes import DEFAULT_PRECISION
from facesplit.runtimes.graphs import (
    GRAPH_FORMAT,
    MAX_BATCH,
    OPSET,
    ExportConflictError,
    ExportError,
    GraphSpec,
    Part,
    export_graph,
)
from facesplit.weights import clean_fingerprint

MANIFEST = "manifest.json"
NOISE_NOTE = ("The head graphs hold no noise: the edge adds the profile's z = a + mu + sigma * eps (or its basis / "
              "frequency form) after the head, with eps from facesplit.noise.sampler (AES-256-CTR keystream), on "
              "the CPU, fresh per frame.")


def export_onnx(detector: SplitDetector, profiles: list[str], sizes: list[InputSize], out: Path,
                split: str, precision: str = DEFAULT_PRECISION, calibration: Path | None = None) -> dict[str, Any]:
    """Write the graphs and ``manifest.json`` into ``out``; returns the manifest. ``precision`` int8: the int8
    head too, calibrated on the images in ``calibration`` (None: the default frames)."""
    if not sizes or any(size.native for size in sizes):
        raise ExportConflictError("graphs are exported for fixed input sizes (e.g. --input-size 1024x576), not "
                                  "'native'")
    if precision not in (DEFAULT_PRECISION, "int8"):
        raise ExportConflictError(f"--precision {precision}: a {precision} head is the float graph built at "
                                  f"{precision} by its runtime (TensorRT's FP16 kernels); export without --precision")
    base = at_split(detector, split)
    by_size = {str(size): SplitDetector(base.source, size, base.postprocess) for size in sizes}
    tails = [_profile_tail(by_size, name) for name in profiles]  # every refusal before the first export
    int8: dict[str, tuple[Path, Path, GraphSpec]] = {}
    frames: dict[str, Any] = {}
    if precision == "int8":  # quantized into the cache first: no NNCF or an unreadable frame writes nothing here
        from facesplit.runtimes.int8 import calibration_frames, int8_graph, signed_graph

        for name, at_size in by_size.items():
            made, spec = int8_graph(at_size, calibration, runtime=None)
            int8[name] = made, signed_graph(made), spec
        frames = {"folder": str(calibration.resolve()) if calibration else DEFAULT_CALIBRATION,
                  "frames": len(calibration_frames(calibration))}
    # built whole beside the folder's graphs, then moved in: a failed or interrupted export leaves them as they were
    with building_into(out, last=[MANIFEST]) as building:
        graphs: list[dict[str, Any]] = []
        for name, at_size in by_size.items():
            graphs.append(_write(at_size, "head", building / f"head-{split}-{name}.onnx", None, None))
            if precision == "int8":
                graphs.extend(_write_int8(*int8[name], building / f"head-{split}-{name}-int8.onnx", frames))
            if not profiles:
                graphs.append(_write(at_size, "tail", building / f"tail-{split}-{name}.onnx", "clean",
                                     clean_fingerprint(at_size.source)))
        for stem, fingerprint, tuned in tails:
            graphs.append(_write(tuned, "tail", building / f"tail-{stem}-{tuned.input_size}.onnx", stem,
                                 fingerprint))
        manifest = {"format": GRAPH_FORMAT, "opset": OPSET, "torch": torch.__version__, "split": split,
                    "max_batch": MAX_BATCH, "noise": NOISE_NOTE, "graphs": graphs}
        write_text(building / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _profile_tail(by_size: dict[str, SplitDetector], profile_name: str) -> tuple[str, str, SplitDetector]:
    """(name, fingerprint, the detector with its noise-aware tail) of a profile, checked against the export."""
    path = resolve_profile(profile_name)
    fitted = read_metadata(path).get("input_size", "")
    if fitted not in by_size:
        raise ExportConflictError(f"{path.stem} was fitted for input size {fitted}: add --input-size {fitted} to "
                                  "export its tail")
    profile = load_profile_for(by_size[fitted], profile_name)  # its split and head weights too
    return path.stem, profile.fingerprint, with_tail(by_size[fitted], profile.tail_state)


def _write_int8(made: Path, signed: Path, spec: GraphSpec, path: Path, frames: dict[str, Any]
                ) -> list[dict[str, Any]]:
    """Copy the int8 head's two graphs (OpenVINO's, TensorRT's signed variant) from the cache into the export."""
    entries = []
    for source, target, runs in ((made, path, "openvino"),
                                 (signed, path.with_name(f"{path.stem}-signed.onnx"), "tensorrt")):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        except OSError as exc:
            raise ExportError(f"{target}: cannot write the graph ({exc.strerror or exc})") from None
        entries.append({**_entry(spec, target, "head"), "precision": "int8", "for_runtime": runs,
                        "calibration": frames})
    return entries


def _write(detector: SplitDetector, part: Part, path: Path, profile: str | None,
           fingerprint: str | None) -> dict[str, Any]:
    spec: GraphSpec = export_graph(detector, part, path)
    entry = _entry(spec, path, part)
    if part == "tail":
        entry.update(profile=profile, serves_fingerprint=fingerprint)
    return entry


def _entry(spec: GraphSpec, path: Path, part: Part) -> dict[str, Any]:
    return {
        "file": path.name, "part": part, "split": spec.split, "input_size": spec.size,
        "input": {"name": spec.input_name, "shape": ["batch", *spec.input_shape(1)[1:]]},
        "outputs": list(spec.output_names), "weights_sha256": spec.weights_sha256,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
