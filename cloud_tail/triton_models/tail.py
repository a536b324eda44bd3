"""Triton python-backend model: a Frosted tail's ONNX graph (``model.onnx`` beside this file) on ONNX Runtime.

Written into a model repository by ``frosted export triton``. Imports numpy and onnxruntime only (and Triton's
``triton_python_backend_utils``): the python backend runs the server's own Python, where frosted is not
installed. Triton's dynamic batcher hands ``execute`` the requests it gathered; they run as one batch.

Tensors cross to and from Triton by DLPack, not ``as_numpy()`` / ``Tensor(name, array)``: the python backend's
numpy path is built for numpy 1's array layout, and with numpy 2 its outputs arrive empty (0 bytes).
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT, OUTPUTS = "activation", ("loc", "scores")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["intra_op_threads"]["string_value"])
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        inputs = [np.from_dlpack(pb_utils.get_input_tensor_by_name(request, INPUT)) for request in requests]
        loc, scores = self.session.run(list(OUTPUTS), {INPUT: np.concatenate(inputs)})
        responses, start = [], 0
        for batch in inputs:
            end = start + len(batch)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor.from_dlpack(OUTPUTS[0], np.ascontiguousarray(loc[start:end])),
                pb_utils.Tensor.from_dlpack(OUTPUTS[1], np.ascontiguousarray(scores[start:end]))]))
            start = end
        return responses
