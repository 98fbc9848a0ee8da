"""Dynamic batching through the real tritonserver: 32 concurrent mixed-length requests per
ensemble give what sequential local ONNX Runtime gives, and Triton did merge them."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as triton

from toneserve import contract
from toneserve.model_repository import catalog
from toneserve.model_repository.runners.sensevoice_decode import ctc_greedy_decode, load_decode_assets
from toneserve.samples import speechlike

LENGTHS = [0.6 + 0.17 * i for i in range(32)]  # 0.6 s .. 5.9 s, all different


def _inputs(wav: np.ndarray, extra: dict[str, int] | None = None) -> list:
    tensors = [(contract.WAV, wav[None, :]), (contract.WAV_LENS, np.array([[len(wav)]], np.int64))]
    tensors += [(name, np.array([[value]], np.int64)) for name, value in (extra or {}).items()]
    out = []
    for name, array in tensors:
        tensor = triton.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _batches(url: str, model: str) -> tuple[int, int, dict[int, int]]:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)["model_stats"][0]
    sizes = {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])}
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)), sizes


async def _concurrently(url: str, model: str, clips, outputs, extra=None):
    client = triton.InferenceServerClient(url)
    try:
        results = await asyncio.gather(*(
            client.infer(model, _inputs(clip, extra), outputs=[triton.InferRequestedOutput(o) for o in outputs])
            for clip in clips))
    finally:
        await client.close()
    return [{o: r.as_numpy(o) for o in outputs} for r in results]


@pytest.fixture(scope="module")
def clips():
    return [speechlike(seconds, seed=i) for i, seconds in enumerate(LENGTHS)]


def _assert_batched(url: str, model: str, before, requests: int):
    # Triton records a request's statistics when it releases it, which can trail the answer a little.
    deadline = time.monotonic() + 10
    after = _batches(url, model)
    while after[0] - before[0] < requests and time.monotonic() < deadline:
        time.sleep(0.05)
        after = _batches(url, model)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == requests
    assert executions < requests, f"{model}: {requests} requests ran as {executions} executions (no batching)"
    assert any(size > 1 and count > before[2].get(size, 0) for size, count in after[2].items())


def test_emotion_ensemble_batches_and_matches_sequential_onnxruntime(stack, models_root, clips):
    before = _batches(stack.triton_grpc, "emotion2vec")
    served = asyncio.run(_concurrently(stack.triton_grpc, contract.EMOTION, clips, [contract.PROBS, contract.EMBEDDING]))
    _assert_batched(stack.triton_grpc, "emotion2vec", before, len(clips))
    session = ort.InferenceSession(str(models_root / "emotion2vec" / "model.onnx"), providers=["CPUExecutionProvider"])
    for clip, result in zip(clips, served):
        probs, embedding = session.run(["probs", "embedding"],
                                       {"wav": clip[None, :], "wav_lens": np.array([len(clip)], np.int64)})
        np.testing.assert_allclose(result[contract.PROBS][0], probs[0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(result[contract.EMBEDDING][0], embedding[0], atol=1e-4, rtol=0)


def test_asr_ensemble_batches_and_matches_sequential_onnxruntime(stack, models_root, clips):
    folder = models_root / "sensevoice"
    assets = load_decode_assets(folder / "decode_assets.json")
    query = {contract.LANGUAGE: assets["language_query_ids"]["auto"],
             contract.TEXTNORM: assets["textnorm_query_ids"]["woitn"]}
    outputs = [contract.TEXT, contract.TOKENS, contract.TOKEN_MS, contract.TOKEN_END_MS,
               *contract.ASR_DISTRIBUTIONS.values()]
    before = _batches(stack.triton_grpc, "sensevoice_encoder")
    served = asyncio.run(_concurrently(stack.triton_grpc, contract.ASR, clips, outputs, query))
    _assert_batched(stack.triton_grpc, "sensevoice_encoder", before, len(clips))

    frontend = ort.InferenceSession(str(folder / "frontend.onnx"), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    for clip, result in zip(clips, served):
        feats, feat_lens = frontend.run(None, {"wav": clip[None, :], "wav_lens": np.array([len(clip)], np.int64)})
        logits, lens = encoder.run(None, {"speech": feats, "speech_lengths": feat_lens,
                                          "language": np.array([query[contract.LANGUAGE]], np.int64),
                                          "textnorm": np.array([query[contract.TEXTNORM]], np.int64)})
        local = ctc_greedy_decode(logits[0], int(lens[0]), assets)
        assert result[contract.TEXT].reshape(-1)[0].decode() == local["text"]
        assert [p.decode() for p in result[contract.TOKENS][0]] == [t["piece"] for t in local["tokens"]] or \
            (not local["tokens"] and list(result[contract.TOKENS][0]) == [b""])
        assert [int(ms) for ms in result[contract.TOKEN_MS][0] if ms >= 0] == [t["start_ms"] for t in local["tokens"]]
        assert [int(ms) for ms in result[contract.TOKEN_END_MS][0] if ms >= 0] == [t["end_ms"] for t in local["tokens"]]
        for family, name in contract.ASR_DISTRIBUTIONS.items():
            np.testing.assert_allclose(result[name][0], [local[family][label] for label in assets[family]],
                                       atol=1e-4, rtol=0)


def test_emotion_probabilities_carry_tritons_classification_labels(stack, models_root):
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    clip = speechlike(1.0)
    tensors = []
    for name, array in ((contract.WAV, clip[None, :]), (contract.WAV_LENS, np.array([[len(clip)]], np.int64))):
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    top3 = client.infer(contract.EMOTION, tensors, outputs=[grpcclient.InferRequestedOutput(contract.PROBS, class_count=3)])
    entries = [e.decode().split(":") for e in top3.as_numpy(contract.PROBS).reshape(-1)]
    labels = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]
    assert len(entries) == 3 and all(labels[int(index)] == label for _, index, label in entries)
    scores = [float(score) for score, _, _ in entries]
    assert scores == sorted(scores, reverse=True)


def test_vad_batches_and_matches_local_silero(stack, clips):
    import importlib.util
    import sys

    sys.path.insert(0, str(catalog.RUNNERS))
    try:
        from vad_core import SileroVad
    finally:
        sys.path.pop(0)
    before = _batches(stack.triton_grpc, contract.VAD)
    served = asyncio.run(_concurrently(stack.triton_grpc, contract.VAD, clips, [contract.SPEECH_PROBS, contract.FRAMES]))
    _assert_batched(stack.triton_grpc, contract.VAD, before, len(clips))
    assert importlib.util.find_spec("silero_vad") is not None
    local = SileroVad(str(catalog.silero_onnx()))
    for clip, result in zip(clips, served):
        probs, frames = local.probabilities(clip[None, :], np.array([len(clip)]))
        assert int(result[contract.FRAMES][0, 0]) == int(frames[0])
        np.testing.assert_allclose(result[contract.SPEECH_PROBS][0, :frames[0]], probs[0, :frames[0]], atol=1e-5)
