"""Generic Triton Python-backend model that runs one ONNX graph in ONNX Runtime.

Copied verbatim as ``model.py`` into every ONNX model of the cpu profile, with
``runner_errors.py`` beside it. It depends on numpy and onnxruntime only, so the
rendered repository is self-contained.

Why it pads: with ``allow_ragged_batch`` the dynamic batcher hands us requests
whose variable dimensions differ. Every toneserve graph takes explicit
lengths, so zero-padding each input to the run's maximum is exact; outputs
listed in the ``trim`` parameter are cut back to each item's own length, so a
request sees the same tensor whether or not it was batched. Requests of very
different sizes run in separate padded runs (``max_pad_ratio``, see
``length_groups``).
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from runner_errors import cancelled, cancelled_response, error_response  # copied next to this file


def pad_concat(arrays):
    """Zero-pad arrays of equal rank to a common shape and join them on axis 0."""
    shape = np.max([a.shape for a in arrays], axis=0)
    padded = [np.pad(a, [(0, 0)] + [(0, int(m - s)) for m, s in zip(shape[1:], a.shape[1:])])
              for a in arrays]
    return np.concatenate(padded, axis=0)


def length_groups(per_request, max_pad_ratio):
    """Split a batch into runs of similar size, so padding never more than `max_pad_ratio`-folds
    an item's work. Measured on 2 CPU cores (docs/BENCHMARKS.md): one padded run over clips of
    1 to 5 s cost emotion2vec+ up to 3x the compute per item of running them alone, while
    batching equal lengths neither helped nor hurt; grouping keeps what batching gives and
    drops what padding costs."""
    volume = [max(a.size // max(len(a), 1) for a in arrays.values()) for arrays in per_request]
    order = sorted(range(len(per_request)), key=volume.__getitem__)
    groups = []
    for index in order:
        if groups and volume[index] <= max_pad_ratio * volume[groups[-1][0]]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params["onnx_file"])
        options = ort.SessionOptions()
        # One Triton instance = one ORT session; parallelism comes from instances
        # and batching, so each session stays on few threads unless told otherwise.
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, len(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.wire_rank = {o["name"]: 1 + len(o["dims"]) for o in config["output"]}
        self.trim = {k: tuple(v) for k, v in json.loads(params.get("trim", "{}")).items()}
        self.max_pad_ratio = float(params.get("max_pad_ratio", "inf"))

    def _request_inputs(self, request):
        arrays = {}
        for name, rank in self.inputs:
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            if array.ndim == rank + 1 and array.shape[-1] == 1:
                array = array[..., 0]  # lengths: [B, 1] on the wire, [B] in the graph
            arrays[name] = array
        return arrays

    def execute(self, requests):
        # Requests their client gave up on while they waited are answered CANCELLED, not run.
        responses = [cancelled_response() if cancelled(r) else None for r in requests]
        live = [index for index, response in enumerate(responses) if response is None]
        try:
            per_request = [self._request_inputs(requests[index]) for index in live]
        except Exception as exc:  # answer every request, never crash the instance
            return [response or error_response(exc) for response in responses]
        for group in length_groups(per_request, self.max_pad_ratio):
            try:
                for index, response in zip(group, self._run([per_request[i] for i in group])):
                    responses[live[index]] = response
            except Exception as exc:
                for index in group:
                    responses[live[index]] = error_response(exc)
        return responses

    def _run(self, per_request):
        sizes = [len(next(iter(a.values()))) for a in per_request]
        feed = {name: pad_concat([a[name] for a in per_request]) for name, _ in self.inputs}
        results = dict(zip(self.outputs, self.session.run(self.outputs, feed)))
        start = 0
        for size in sizes:
            rows = slice(start, start + size)
            start += size
            tensors = []
            for name in self.outputs:
                value = results[name][rows]
                if name in self.trim:
                    lengths_name, axis = self.trim[name]
                    keep = int(np.max(results[lengths_name][rows]))
                    value = np.take(value, np.arange(keep), axis=axis)
                if value.ndim < self.wire_rank[name]:
                    value = value.reshape(value.shape + (1,) * (self.wire_rank[name] - value.ndim))
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
            yield pb_utils.InferenceResponse(output_tensors=tensors)
