"""Triton Python-backend model: batch-safe greedy CTC decoding of SenseVoice output.

Each item is decoded on its own, up to its own `encoder_out_lens`: nothing is
collapsed across the batch and padding frames are never read. The four query
frames give the language / emotion / event / ITN distributions over the token
ids named in decode_assets.json (derived from the tokenizer at export time);
they are returned in that file's order, which is also the order of the labels
the ensemble publishes. TOKENS / TOKEN_MS / TOKEN_END_MS give each emitted piece, its start and
its end (ms from the start of the input, as FunASR's timestamps report them: sensevoice_decode.token_times);
-1 and b"" pad rows of a multi-item request.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from contract import TEXT, TOKEN_END_MS, TOKEN_MS, TOKENS  # copied next to this file
from runner_errors import cancelled, cancelled_response, error_response  # copied next to this file
from sensevoice_decode import ctc_greedy_decode, load_decode_assets  # copied next to this file


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        self.assets = load_decode_assets(os.path.join(here, "decode_assets.json"))
        parameters = json.loads(args["model_config"]).get("parameters", {})
        # family (language / emotion / event / itn) -> output tensor name, from the model description.
        self.outputs = json.loads(parameters["distribution_outputs"]["string_value"])

    def _decode(self, request):
        logits = pb_utils.get_input_tensor_by_name(request, "ctc_logits").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "encoder_out_lens").as_numpy().reshape(-1)
        items = [ctc_greedy_decode(logits[i], int(lengths[i]), self.assets) for i in range(len(lengths))]
        width = max(1, max(len(item["tokens"]) for item in items))
        pieces = np.full((len(items), width), b"", dtype=np.object_)
        starts = np.full((len(items), width), -1, dtype=np.int32)
        ends = np.full((len(items), width), -1, dtype=np.int32)
        for row, item in enumerate(items):
            for col, token in enumerate(item["tokens"]):
                pieces[row, col] = token["piece"].encode("utf-8")
                starts[row, col] = token["start_ms"]
                ends[row, col] = token["end_ms"]
        tensors = [pb_utils.Tensor(TEXT, np.array([[item["text"].encode("utf-8")] for item in items],
                                                    dtype=np.object_)),
                   pb_utils.Tensor(TOKENS, pieces), pb_utils.Tensor(TOKEN_MS, starts),
                   pb_utils.Tensor(TOKEN_END_MS, ends)]
        for family, name in self.outputs.items():
            order = list(self.assets[family])
            probs = np.array([[item[family][label] for label in order] for item in items], dtype=np.float32)
            tensors.append(pb_utils.Tensor(name, probs))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests):
        responses = []
        for request in requests:
            if cancelled(request):  # its client gave up while it waited: not decoded
                responses.append(cancelled_response())
                continue
            try:
                responses.append(self._decode(request))
            except Exception as exc:  # one bad item fails its own request only
                responses.append(error_response(exc))
        return responses
