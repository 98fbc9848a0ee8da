"""What every graph runner of the cpu profile does around its inference call: read a batch of
requests, pad them into runs of similar size, split and trim the outputs back per request.

The renderer copies this file beside each runner's ``model.py`` (imported by plain name); the
ONNX Runtime runner (onnx_runner.py) and the OpenVINO runner (openvino_runner.py) differ only in
how they run one padded feed, so the batching is written, and tested, once.

Why it pads: with ``allow_ragged_batch`` the dynamic batcher hands us requests whose variable
dimensions differ. Every toneserve graph takes explicit lengths, so zero-padding each input to the
run's maximum is exact; outputs listed in the ``trim`` parameter are cut back to each item's own
length, so a request sees the same tensor whether or not it was batched. Requests of very different
sizes run in separate padded runs (``max_pad_ratio``, see ``length_groups``).

Why runs go together: one instance holds one copy of the weights, and ``streams`` runs of a batch
compute at once inside it (OpenVINO streams, or ONNX Runtime runs on threads of one session), where
Triton would need as many instances, each a process with its own copy of the weights. The runner
gets every run of a batch at once (``run_all``) and answers when the last is done.
"""
import json

import numpy as np
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


def split_runs(groups, streams):
    """Length groups cut into at least `streams` runs where the requests allow: the run of the most requests
    is halved until there are `streams` runs or each is one request. A part of a group pads no more than the
    whole group did, so what a request gets does not change."""
    runs = [list(group) for group in groups]
    while len(runs) < streams:
        largest = max(range(len(runs)), key=lambda index: len(runs[index]))
        if len(runs[largest]) < 2:
            break
        run = runs.pop(largest)
        half = (len(run) + 1) // 2
        runs[largest:largest] = [run[:half], run[half:]]
    return runs


def parameters(config):
    """The model config's parameters as a plain dict of strings."""
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


class PaddedBatches:
    """Serves a batch of requests through `run_all(feeds) -> [{output name: array} or the exception of that
    run]`, one padded run per length group (cut into ``streams`` runs where it can: ``split_runs``).

    inputs: (name, rank in the graph) in graph order; outputs: names in graph order."""

    def __init__(self, config, inputs, outputs, run_all):
        params = parameters(config)
        self.wire_rank = {o["name"]: 1 + len(o["dims"]) for o in config["output"]}
        # A graph may compute more than the model serves (emotion2vec+'s probs beside its logits): only the
        # config's outputs are returned.
        self.inputs, self.run_all = list(inputs), run_all
        self.outputs = [name for name in outputs if name in self.wire_rank]
        self.trim = {k: tuple(v) for k, v in json.loads(params.get("trim", "{}")).items()}
        self.max_pad_ratio = float(params.get("max_pad_ratio", "inf"))
        self.streams = stream_count(params)

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
        runs = split_runs(length_groups(per_request, self.max_pad_ratio), self.streams)
        feeds = []
        for run in runs:
            try:
                feeds.append({name: pad_concat([per_request[i][name] for i in run]) for name, _ in self.inputs})
            except Exception as exc:
                feeds.append(exc)
        ready = [index for index, feed in enumerate(feeds) if not isinstance(feed, Exception)]
        try:
            results = dict(zip(ready, self.run_all([feeds[index] for index in ready])))
        except Exception as exc:
            results = {index: exc for index in ready}
        for index, run in enumerate(runs):
            outcome = feeds[index] if isinstance(feeds[index], Exception) else results[index]
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                for position, response in zip(run, self._responses([per_request[i] for i in run], outcome)):
                    responses[live[position]] = response
            except Exception as exc:
                for position in run:
                    responses[live[position]] = error_response(exc)
        return responses

    def _responses(self, per_request, results):
        sizes = [len(next(iter(a.values()))) for a in per_request]
        start = 0
        out = []
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
            out.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return out


def stream_count(params):
    """How many runs compute at once inside the instance (the ``streams`` parameter, default 1)."""
    return max(1, int(params.get("streams", "1")))  # contract.STREAMS
