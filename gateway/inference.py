"""Calls to the Triton ensembles over KServe v2 gRPC (tritonclient.grpc.aio).

At start-up the gateway reads each ensemble's config once: label sets and
provenance (which weights serve) live in the config parameters that the
model repository rendered from the export manifests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import aio as triton
from tritonclient.utils import InferenceServerException

from ..model_repository import catalog
from .errors import Code, ToneserveError

Distribution = tuple[list[str], np.ndarray]


@dataclass(frozen=True)
class EnsembleInfo:
    name: str
    version: str
    family: str
    preset: str
    weights_origin: str
    precision: str
    parameters: dict[str, str]

    def json(self, key: str):
        return json.loads(self.parameters[key])


@dataclass(frozen=True)
class AsrResult:
    text: str
    distributions: dict[str, Distribution]  # language / emotion / event / itn


def _error(exc: InferenceServerException) -> ToneserveError:
    status = str(exc.status() or "")
    if "DEADLINE_EXCEEDED" in status or "Deadline" in str(exc):
        return ToneserveError(Code.DEADLINE_EXCEEDED, f"Triton did not answer in time: {exc.message()}")
    if "UNAVAILABLE" in status:
        return ToneserveError(Code.TRITON_UNAVAILABLE, f"Triton: {exc.message()}")
    return ToneserveError(Code.INTERNAL, f"Triton: {exc.message()}")


def _input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


class Inference:
    def __init__(self, url: str):
        self.url = url
        self.client = triton.InferenceServerClient(url)
        self.models: dict[str, EnsembleInfo] = {}

    async def load(self) -> None:
        """Read the ensembles' configs; fails with TRITON_UNAVAILABLE when Triton or a model is not ready."""
        for name in (catalog.EMOTION, catalog.ASR):
            try:
                if not await self.client.is_model_ready(name):
                    raise ToneserveError(Code.TRITON_UNAVAILABLE, f"model {name!r} is not ready on {self.url}")
                config = (await self.client.get_model_config(name, as_json=True))["config"]
                versions = await self.client.get_model_metadata(name, as_json=True)
            except InferenceServerException as exc:
                raise _error(exc) from None
            parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            self.models[name] = EnsembleInfo(
                name=name, version=str(max(versions.get("versions", ["1"]), key=int)),
                family=parameters["family"], preset=parameters["preset"],
                weights_origin=parameters["weights_origin"], precision=parameters["precision"],
                parameters=parameters)

    @property
    def emotion_labels(self) -> list[str]:
        return self.models[catalog.EMOTION].json("labels")

    def language_query_id(self, language: str) -> int:
        ids = self.models[catalog.ASR].json("language_query_ids")
        if language not in ids:
            raise ToneserveError(Code.INVALID_ARGUMENT,
                                 f"language {language!r} is not supported; choose one of {sorted(ids)}")
        return int(ids[language])

    def textnorm_query_id(self, use_itn: bool) -> int:
        return int(self.models[catalog.ASR].json("textnorm_query_ids")["withitn" if use_itn else "woitn"])

    async def _infer(self, model: str, inputs, outputs: list[str], request_id: str, timeout: float | None):
        try:
            result = await self.client.infer(
                model, inputs, outputs=[triton.InferRequestedOutput(o) for o in outputs],
                request_id=request_id, client_timeout=timeout)
        except InferenceServerException as exc:
            raise _error(exc) from None
        return result

    async def emotion(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> Distribution:
        inputs = [_input(catalog.WAV, wav[None, :]), _input(catalog.WAV_LENS, np.array([[len(wav)]], np.int64))]
        result = await self._infer(catalog.EMOTION, inputs, [catalog.PROBS], request_id, timeout)
        return self.emotion_labels, result.as_numpy(catalog.PROBS)[0]

    async def asr(self, wav: np.ndarray, language: str = "auto", use_itn: bool = False,
                  request_id: str = "", timeout: float | None = None) -> AsrResult:
        inputs = [_input(catalog.WAV, wav[None, :]),
                  _input(catalog.WAV_LENS, np.array([[len(wav)]], np.int64)),
                  _input(catalog.LANGUAGE, np.array([[self.language_query_id(language)]], np.int64)),
                  _input(catalog.TEXTNORM, np.array([[self.textnorm_query_id(use_itn)]], np.int64))]
        outputs = [catalog.TEXT, *catalog.ASR_DISTRIBUTIONS.values()]
        result = await self._infer(catalog.ASR, inputs, outputs, request_id, timeout)
        info = self.models[catalog.ASR]
        return AsrResult(
            text=result.as_numpy(catalog.TEXT).reshape(-1)[0].decode("utf-8"),
            distributions={name: (info.json(f"labels_{name}"), result.as_numpy(out)[0])
                           for name, out in catalog.ASR_DISTRIBUTIONS.items()})

    async def close(self) -> None:
        await self.client.close()
