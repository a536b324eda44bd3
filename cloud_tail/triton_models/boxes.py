"""Triton python-backend model: a Frosted tail's outputs -> face boxes in model-input pixels.

Written into a model repository by ``frosted export triton``, with ``priors.npy`` beside it. The same steps
as ``facesplit.postprocess.detections_from_outputs`` (SSD decoding against the priors, score threshold,
top-k, greedy NMS as OpenCV's ``dnn.NMSBoxes`` does it, keep-k), in numpy alone: the python backend runs the
server's own Python, where neither frosted nor OpenCV is installed. ``tests/test_triton.py`` checks the boxes
equal the ones ``frosted tail`` sends.

Outputs per item: ``boxes`` (K, 5) [x1, y1, x2, y2, score], best first, padded with zero rows to the
request's largest K (at least one), and ``box_count`` (1,), how many rows are real. Tensors cross by
DLPack (see the tail's model.py: the backend's numpy path is built for numpy 1).
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

VARIANCES = (0.1, 0.2)


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        value = {key: entry["string_value"] for key, entry in parameters.items()}
        self.width, self.height = (int(side) for side in value["input_size"].split("x"))
        self.score_threshold = float(value["score_threshold"])
        self.nms_iou = float(value["nms_iou"])
        self.pre_nms_top_k = int(value["pre_nms_top_k"])
        self.keep_top_k = int(value["keep_top_k"])
        self.priors = np.load(Path(args["model_repository"]) / args["model_version"] / "priors.npy")
        self.scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            loc = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "loc"))
            scores = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "scores"))
            found = [self.detections(loc[i], scores[i]) for i in range(len(loc))]
            rows = max(1, *(len(f) for f in found))  # DLPack refuses an empty array: one zero row at least
            boxes = np.zeros((len(found), rows, 5), dtype=np.float32)
            for i, f in enumerate(found):
                boxes[i, :len(f)] = f
            counts = np.array([[len(f)] for f in found], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor.from_dlpack("boxes", boxes), pb_utils.Tensor.from_dlpack("box_count", counts)]))
        return responses

    def detections(self, loc, scores):
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return np.zeros((0, 5), dtype=np.float32)
        priors = self.priors[keep]
        offsets = loc[keep]
        centre = priors[:, :2] + offsets[:, :2] * VARIANCES[0] * priors[:, 2:]
        size = priors[:, 2:] * np.exp(offsets[:, 2:] * VARIANCES[1])
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * self.scale
        kept_scores = scores[keep]
        chosen = nms(boxes.astype(np.float64), kept_scores, self.nms_iou, self.pre_nms_top_k)[:self.keep_top_k]
        return np.concatenate([boxes[chosen], kept_scores[chosen, None]], axis=1).astype(np.float32)


def nms(boxes, scores, iou_threshold, top_k):
    """Indices kept by greedy NMS, best first: candidates by descending score (ties in input order), the
    best ``top_k`` only, each kept unless it overlaps a kept one by more than ``iou_threshold`` (IoU of the
    boxes' areas, no +1), as OpenCV's NMSBoxes."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    kept = []
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        kept.append(order[i])
        rest = np.arange(i + 1, len(order))[alive[i + 1:]]
        width = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        height = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.where((width > 0) & (height > 0), width * height, 0.0)
        iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest[iou > iou_threshold]] = False
    return np.array(kept, dtype=np.int64)
