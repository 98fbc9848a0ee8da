"""Triton Python-backend model: silero VAD speech probabilities for ragged batches.

Copied as ``model.py`` next to ``vad_core.py``, ``runner_errors.py``, ``contract.py`` and
``silero_vad.onnx`` (the standard graph from the silero-vad wheel, MIT). numpy and onnxruntime only: no
torch at serving time.

Inputs ``WAV`` float32 [b, S] (S differs between requests: ragged batching) and
``WAV_LENS`` int64 [b, 1]. Every request's items are zero-padded into one batch
and run once; each item keeps its own recurrent state and is cut at its own
length, so a request gets the same answer batched or not. Outputs per request:
``SPEECH_PROBS`` float32 [b, F] (one probability per 512-sample frame, 32 ms at
16 kHz; F = the request's largest frame count, 0 past an item's own frames) and
``FRAMES`` int64 [b, 1] (ceil(len / 512), silero's own framing).
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from contract import FRAMES, SPEECH_PROBS, WAV, WAV_LENS  # copied next to this file
from runner_errors import cancelled, cancelled_response, error_response  # copied next to this file
from vad_core import SileroVad  # copied next to this file


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"],
                            params.get("onnx_file", "silero_vad.onnx"))
        # One Triton instance = one ORT session on few threads; parallelism comes from instances.
        self.vad = SileroVad(path, threads=int(params.get("intra_op_threads", "1")))

    @staticmethod
    def _request_inputs(request):
        wav = pb_utils.get_input_tensor_by_name(request, WAV).as_numpy()
        lens = pb_utils.get_input_tensor_by_name(request, WAV_LENS).as_numpy().reshape(-1).astype(np.int64)
        if wav.ndim != 2 or wav.dtype != np.float32:
            raise ValueError(f"WAV must be float32 [batch, samples], got {wav.dtype} {wav.shape}")
        if len(lens) != wav.shape[0]:
            raise ValueError(f"WAV has {wav.shape[0]} rows but WAV_LENS has {len(lens)} lengths")
        if np.any(lens < 0) or np.any(lens > wav.shape[1]):
            raise ValueError(f"WAV_LENS must lie in [0, {wav.shape[1]}], got {lens.tolist()}")
        return wav, lens

    def execute(self, requests):
        responses = [None] * len(requests)
        parsed = []  # (index, wav, lens) of the requests that are well formed
        for index, request in enumerate(requests):
            if cancelled(request):  # its client gave up while it waited: not run
                responses[index] = cancelled_response()
                continue
            try:
                parsed.append((index,) + self._request_inputs(request))
            except Exception as exc:  # a malformed request fails on its own
                responses[index] = error_response(exc)
        try:
            if parsed:
                width = max(wav.shape[1] for _, wav, _ in parsed)
                batch = np.concatenate([np.pad(wav, [(0, 0), (0, width - wav.shape[1])])
                                        for _, wav, _ in parsed], axis=0)
                probs, frames = self.vad.probabilities(batch, np.concatenate([lens for _, _, lens in parsed]))
                start = 0
                for index, wav, _ in parsed:
                    rows = slice(start, start + len(wav))
                    start += len(wav)
                    keep = int(frames[rows].max()) if len(wav) else 0
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor(SPEECH_PROBS, np.ascontiguousarray(probs[rows, :keep])),
                        pb_utils.Tensor(FRAMES, frames[rows].reshape(-1, 1).astype(np.int64))])
        except Exception as exc:  # answer every request, never crash the instance
            for index, _, _ in parsed:
                responses[index] = error_response(exc)
        return responses
