"""Triton Python-backend model: the text-sentiment model's tokenizer (Hugging Face ``tokenizers``).

Copied as ``model.py`` next to ``runner_errors.py``, ``contract.py`` and the export's ``tokenizer.json``
(the checkpoint's own fast tokenizer, saved by ``toneserve export``: the same ids as transformers'
pipeline, which the export's parity gate checks). Tokenising here, inside the ensemble, keeps the
tokenizer beside the graph it belongs to: the gateway sends text and needs no model files.

Input ``TEXT`` bytes [b, 1] (UTF-8, one sentence per row). Outputs per request: ``input_ids`` int64
[b, T] and ``input_lens`` int64 [b, 1], each row cut at ``max_tokens`` (special tokens included: the
rest of a longer text is not read) and padded with ``pad_id`` to T, the request's longest row rounded up
to a bucket (16, 32, 64, ...): the classifier takes the true lengths and masks the padding, so the
padding never changes a score, and equal shapes let the gpu profile's onnxruntime backend batch them.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from contract import TEXT  # copied next to this file
from runner_errors import cancelled, cancelled_response, error_response  # copied next to this file
from tokenizers import Tokenizer

FIRST_BUCKET = 16


def bucket(n, limit):
    """The smallest power-of-two multiple of FIRST_BUCKET holding n tokens, at most `limit`."""
    size = FIRST_BUCKET
    while size < n:
        size *= 2
    return max(n, min(size, limit))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(folder, params.get("tokenizer_file", "tokenizer.json")))
        self.max_tokens = int(params["max_tokens"])
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        self.pad_id = int(params["pad_id"])

    @staticmethod
    def _texts(request):
        raw = pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()
        if raw.ndim != 2 or raw.shape[1] != 1:
            raise ValueError(f"TEXT must be bytes [batch, 1], got shape {list(raw.shape)}")
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in raw.reshape(-1)]

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = []  # (index, texts) of the well-formed requests
        for index, request in enumerate(requests):
            if cancelled(request):
                responses[index] = cancelled_response()
                continue
            try:
                parsed.append((index, self._texts(request)))
            except Exception as exc:  # bad UTF-8, a wrong shape: that request fails alone
                responses[index] = error_response(exc)
        try:
            encodings = self.tokenizer.encode_batch([t for _, texts in parsed for t in texts])
            start = 0
            for index, texts in parsed:
                rows = encodings[start:start + len(texts)]
                start += len(texts)
                lens = np.array([len(e.ids) for e in rows], np.int64)
                width = bucket(int(lens.max()) if len(rows) else 1, self.max_tokens)
                ids = np.full((len(rows), width), self.pad_id, np.int64)
                for row, encoding in enumerate(rows):
                    ids[row, :len(encoding.ids)] = encoding.ids
                responses[index] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("input_lens", lens.reshape(-1, 1))])
        except Exception as exc:  # answer every request, never crash the instance
            for index, _ in parsed:
                responses[index] = error_response(exc)
        return responses
