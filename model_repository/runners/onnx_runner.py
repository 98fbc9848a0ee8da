"""Generic Triton Python-backend model that runs one ONNX graph in ONNX Runtime.

Copied verbatim as ``model.py`` into every ONNX Runtime model of the cpu profile, with
``batch_io.py`` and ``runner_errors.py`` beside it. It depends on numpy and onnxruntime only, so
the rendered repository is self-contained. Padding, length groups, output trimming and
cancellation are batch_io's (shared with openvino_runner.py).
"""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import onnxruntime as ort
from batch_io import PaddedBatches, parameters, stream_count  # copied next to this file


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = parameters(config)
        path = os.path.join(args["model_repository"], args["model_version"], params["onnx_file"])
        options = ort.SessionOptions()
        # One Triton instance = one ORT session (one copy of the weights). ``streams`` runs compute at once on
        # threads of that session (run is thread-safe and releases the GIL), each on ``intra_op_threads``
        # threads; a run starts when one of them is free (batch_io.PaddedBatches).
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        streams = stream_count(params)
        self.free = threading.Semaphore(streams)
        self.pool = ThreadPoolExecutor(streams, thread_name_prefix="ort-run")
        self.batches = PaddedBatches(config, [(i.name, len(i.shape)) for i in self.session.get_inputs()],
                                     self.output_names, self._start)

    def _start(self, feed, done):
        self.free.acquire()  # waits while every stream is busy

        def run():
            try:
                result = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
            except Exception as exc:
                result = exc
            finally:
                self.free.release()
            done(result)

        try:
            self.pool.submit(run)
        except Exception:
            self.free.release()
            raise

    def execute(self, requests):
        return self.batches.execute(requests)

    def finalize(self):
        self.pool.shutdown(wait=True)  # the runs started: their requests are answered before the model unloads
