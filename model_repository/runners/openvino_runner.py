"""Generic Triton Python-backend model that runs one graph in OpenVINO on the CPU.

Copied verbatim as ``model.py`` into every OpenVINO model of the cpu profile, with ``batch_io.py``
and ``runner_errors.py`` beside it; it imports numpy and openvino only. The graph is the fp32 ONNX
export (``model.onnx``, run at f32 or bf16) or an OpenVINO IR (``model.xml`` + ``model.bin``, the
int8 variant, which carries its own quantized precision). Padding, length groups, output trimming
and cancellation are batch_io's, shared with onnx_runner.py, so batching is exact here too.

Parameters (strings, from config.pbtxt):
- ``graph_file``: the graph in the version folder;
- ``inference_precision``: OpenVINO's INFERENCE_PRECISION_HINT, ``f32`` or ``bf16`` (for an int8 IR:
  the precision of the layers left unquantized);
- ``intra_op_threads``: threads of each stream;
- ``streams``: OpenVINO streams, the runs that compute at once (of one batch or of several), each on its own
  infer request of one compiled model: one copy of the weights, however many streams (default 1);
- ``cache_dir``: where compiled models are cached, so a restart skips compilation; default
  ``ov_cache`` in the version folder, a temporary folder when that is not writable;
- ``compile_config``: a JSON object of further compile properties, e.g. ``{"SNIPPETS_MODE": "DISABLE"}``.
"""
import fcntl
import json
import os
import tempfile

import numpy as np
import openvino as ov
import triton_python_backend_utils as pb_utils
from batch_io import PaddedBatches, parameters, stream_count  # copied next to this file
from openvino_compile import compile_properties  # likewise


def _log(message):
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_warn(message)
    else:
        print(message, flush=True)


def writable_cache(preferred, model_name):
    """`preferred` when it can be created and written, else a folder under the temp dir (logged):
    a read-only repository (a container image) still serves, only without a persistent cache."""
    try:
        os.makedirs(preferred, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=preferred):
            pass
        return preferred
    except OSError as exc:
        fallback = os.path.join(tempfile.gettempdir(), f"toneserve-ov-cache-{model_name}")
        os.makedirs(fallback, exist_ok=True)
        _log(f"{model_name}: OpenVINO cache dir {preferred} is not writable ({exc}); caching in {fallback}")
        return fallback


def _name(port, tensors):
    """The name the model config gives a compiled port. Compiling may give a port more names (a fused Cast
    adds its own), and get_any_name() then need not be the graph's; fed and read by position, in graph order.
    A port the config does not serve keeps any name (batch_io returns only the config's outputs)."""
    names = port.get_names() & {t["name"] for t in tensors}
    if len(names) > 1:
        raise ValueError(f"graph port {sorted(port.get_names())} matches {sorted(names)} of the config")
    return names.pop() if names else port.get_any_name()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = parameters(config)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        cache = writable_cache(params.get("cache_dir") or os.path.join(version_dir, "ov_cache"),
                               config.get("name", "model"))
        # Compiled from the file, not from read_model's graph: with the cache warm, OpenVINO then skips
        # reading and converting the ONNX graph (base SenseVoice encoder, 1 thread: 12.9 s cold; warm 4.7 s
        # from the file, 13.8 s through read_model).
        # The instances of a model start at once and share the cache: one compiles (and writes the cache) at a
        # time, so none reads a blob another is still writing; the others then load it from the cache.
        with open(os.path.join(cache, ".compile.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.compiled = ov.Core().compile_model(os.path.join(version_dir, params["graph_file"]), "CPU",
                                                        compile_properties(params, cache, stream_count(params)))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        # One infer request per stream: a run starts on a free one (start_async waits while all are busy) and
        # its requests are answered from OpenVINO's callback when it ends (batch_io.PaddedBatches).
        self.queue = ov.AsyncInferQueue(self.compiled, stream_count(params))
        self.queue.set_callback(self._done)
        self.input_names = [_name(port, config["input"]) for port in self.compiled.inputs]
        inputs = [(name, port.get_partial_shape().rank.get_length())
                  for name, port in zip(self.input_names, self.compiled.inputs)]
        self.output_names = [_name(port, config["output"]) for port in self.compiled.outputs]
        self.batches = PaddedBatches(config, inputs, self.output_names, self._start)

    def _start(self, feed, done):
        # OpenVINO's Python binding knows numpy's int64 only under one of its two C type numbers (long,
        # not long long, which some array sources produce): a view under the one it knows, no copy.
        arrays = [feed[name] for name in self.input_names]
        self.queue.start_async({index: a.view(np.int64) if a.dtype == np.int64 else a
                                for index, a in enumerate(arrays)}, done)

    def _done(self, request, done):
        try:
            # Copies: the request reuses its output buffers on its next run.
            result = {name: np.array(request.get_output_tensor(index).data)
                      for index, name in enumerate(self.output_names)}
        except Exception as exc:
            result = exc
        done(result)

    def execute(self, requests):
        return self.batches.execute(requests)

    def finalize(self):
        self.queue.wait_all()  # the runs started: their requests are answered before the model unloads
