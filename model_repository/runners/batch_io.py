"""What every graph runner of the cpu profile does around its inference call: read a batch of
requests, pad them into runs of similar size, split and trim the outputs back per request.

The renderer copies this file beside each runner's ``model.py`` (imported by plain name); the
ONNX Runtime runner (onnx_runner.py) and the OpenVINO runner (openvino_runner.py) differ only in
how they run one padded feed, so the batching is written, and tested, once.

Why it pads: with ``allow_ragged_batch`` the dynamic batcher hands us requests whose variable
dimensions differ. Every toneserve graph takes explicit lengths, so zero-padding each input to the
run's maximum is exact; outputs listed in the ``trim`` parameter are cut back to each item's own
length, so a request sees the same tensor whether or not it was batched. Requests of very different
sizes run in separate padded runs (``max_pad_ratio``, see ``length_groups``), and no run is larger than
``max_run_volume`` (``cap_runs``), which bounds the memory a runtime keeps for its largest run.

Why runs are started, not run: one instance holds one copy of the weights, and ``streams`` runs
compute at once inside it (OpenVINO streams, or ONNX Runtime runs on threads of one session), where
Triton would need as many instances, each a process with its own copy of the weights. ``execute``
starts a batch's runs and returns; each request is answered through its response sender (one
response, with the final flag: the model stays non-decoupled, so ensembles and ``ModelInfer`` take
it) when its run ends. So the instance takes its next batch while runs of the last one still
compute, and a stream whose run ends first starts another at once. A runner's ``start`` blocks
while every stream is busy: batches wait in Triton's queue, where the dynamic batcher merges them.
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


def volumes(per_request):
    """Each request's size per item: the elements of its largest input divided by its rows."""
    return [max(a.size // max(len(a), 1) for a in arrays.values()) for arrays in per_request]


def length_groups(per_request, max_pad_ratio):
    """Split a batch into runs of similar size, so padding never more than `max_pad_ratio`-folds
    an item's work. Measured on 2 CPU cores (docs/BENCHMARKS.md): one padded run over clips of
    1 to 5 s cost emotion2vec+ up to 3x the compute per item of running them alone, while
    batching equal lengths neither helped nor hurt; grouping keeps what batching gives and
    drops what padding costs."""
    volume = volumes(per_request)
    order = sorted(range(len(per_request)), key=volume.__getitem__)
    groups = []
    for index in order:
        if groups and volume[index] <= max_pad_ratio * volume[groups[-1][0]]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def cap_runs(groups, volume, max_run_volume):
    """Groups cut into runs whose padded size (the run's items times its largest item's `volume`) is at most
    `max_run_volume`; an item larger than that runs alone. A runtime keeps the buffers of the largest run it has
    computed (OpenVINO's per-stream memory grows to it and stays), so this bounds a replica's memory: the
    SenseVoice encoder's output alone is items x frames x 25055 floats, 400 MB for 8 utterances of 30 s,
    per stream. Splitting a run pads no item more than its group did, so what a request gets does not change."""
    runs = []
    for group in groups:
        run, largest = [], 0
        for index in group:
            if run and (len(run) + 1) * max(largest, volume[index]) > max_run_volume:
                runs.append(run)
                run, largest = [], 0
            run.append(index)
            largest = max(largest, volume[index])
        runs.append(run)
    return runs


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
    """Serves a batch of requests through `start(feed, done)`, which starts one run of `feed` and calls
    `done({output name: array} or the exception of the run)` when it ends, from any thread. One padded run
    per length group, cut into ``streams`` runs where it can (``split_runs``).

    inputs: (name, rank in the graph) in graph order; outputs: names in graph order."""

    def __init__(self, config, inputs, outputs, start):
        params = parameters(config)
        self.wire_rank = {o["name"]: 1 + len(o["dims"]) for o in config["output"]}
        # A graph may compute more than the model serves (emotion2vec+'s probs beside its logits): only the
        # config's outputs are returned.
        self.inputs, self.start = list(inputs), start
        self.outputs = [name for name in outputs if name in self.wire_rank]
        self.trim = {k: tuple(v) for k, v in json.loads(params.get("trim", "{}")).items()}
        self.max_pad_ratio = float(params.get("max_pad_ratio", "inf"))
        self.max_run_volume = float(params.get("max_run_volume", "inf"))
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
        """Start the batch's runs; every request is answered through its sender (returns None)."""
        senders = [request.get_response_sender() for request in requests]
        live = []
        for request, sender in zip(requests, senders):
            # Requests their client gave up on while they waited are answered CANCELLED, not run.
            if cancelled(request):
                answer(sender, cancelled_response())
            else:
                live.append((request, sender))
        try:
            per_request = [self._request_inputs(request) for request, _ in live]
        except Exception as exc:  # answer every request, never crash the instance
            for _, sender in live:
                answer(sender, error_response(exc))
            return None
        groups = cap_runs(length_groups(per_request, self.max_pad_ratio), volumes(per_request), self.max_run_volume)
        for run in split_runs(groups, self.streams):
            run_senders = [live[i][1] for i in run]
            # Copies (padding copies; the tensors of a request are freed once execute returns), and each
            # request's rows, to split the outputs back.
            sizes = [len(next(iter(per_request[i].values()))) for i in run]
            try:
                feed = {name: pad_concat([per_request[i][name] for i in run]) for name, _ in self.inputs}
                self.start(feed, _Finish(self, run_senders, sizes))
            except Exception as exc:
                for sender in run_senders:
                    answer(sender, error_response(exc))
        return None

    def responses(self, sizes, results):
        """One response per request of a run: its rows of every output, trimmed to its own length."""
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


class _Finish:
    """A run's `done`: answers each of its requests, once."""

    def __init__(self, batches, senders, sizes):
        self.batches, self.senders, self.sizes = batches, senders, sizes

    def __call__(self, outcome):
        senders, self.senders = self.senders, []
        try:
            if isinstance(outcome, Exception):
                raise outcome
            responses = self.batches.responses(self.sizes, outcome)
        except Exception as exc:
            responses = [error_response(exc) for _ in senders]
        for sender, response in zip(senders, responses):
            answer(sender, response)


def answer(sender, response):
    """A non-decoupled model's one response to a request, with the final flag."""
    sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def stream_count(params):
    """How many runs compute at once inside the instance (the ``streams`` parameter, default 1)."""
    return max(1, int(params.get("streams", "1")))  # contract.STREAMS
