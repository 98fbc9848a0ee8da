"""Generic Triton Python-backend model that runs one ONNX graph in ONNX Runtime.

Copied verbatim as ``model.py`` into every ONNX Runtime model of the cpu profile, with
``batch_io.py`` and ``runner_errors.py`` beside it. It depends on numpy and onnxruntime only, so
the rendered repository is self-contained. Padding, length groups, output trimming and
cancellation are batch_io's (shared with openvino_runner.py).
"""
import json
import os

import onnxruntime as ort
from batch_io import PaddedBatches, parameters  # copied next to this file


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = parameters(config)
        path = os.path.join(args["model_repository"], args["model_version"], params["onnx_file"])
        options = ort.SessionOptions()
        # One Triton instance = one ORT session; parallelism comes from instances
        # and batching, so each session stays on few threads unless told otherwise.
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        self.batches = PaddedBatches(config, [(i.name, len(i.shape)) for i in self.session.get_inputs()], outputs,
                                     lambda feed: dict(zip(outputs, self.session.run(outputs, feed))))

    def execute(self, requests):
        return self.batches.execute(requests)
