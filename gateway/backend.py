"""What an analysis needs of the models that serve it: `Backend`.

The five calls (silero VAD, SenseVoice, emotion2vec+, the speaker-embedding model, the text-sentiment model) and what a
response's metadata says about the models. gateway/inference.py implements it over Triton; the unit tests implement it with
fakes, so the pipeline is tested without a model server.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from toneserve import contract
from toneserve.gateway.words import Piece

# (labels, probabilities in the labels' order)
Distribution = tuple[list[str], np.ndarray]


@dataclass(frozen=True)
class AsrResult:
    text: str
    distributions: dict[str, Distribution]  # language / emotion / event / itn
    pieces: tuple[Piece, ...] = ()  # the CTC pieces the text was decoded from, with their times (none: no word times)


@dataclass(frozen=True)
class ModelInfo:
    """One served model: its provenance (copied into every response's metadata) and batch limit."""
    name: str
    version: str
    family: str
    preset: str
    weights_origin: str  # "random": untrained weights, every response says so
    precision: str
    max_batch_size: int = 0  # rows one call may carry; 0: no limit
    runtime: str = "onnxruntime"  # what computes the heavy model: "onnxruntime" or "openvino"
    # Calls one server replica computes at once: of its busiest step, instances x streams (x max batch size on
    # a GPU); 0: unknown.
    concurrency: int = 0
    # Whether its runs compute on a GPU (any step's instances): on a CPU they share the replica's cores.
    gpu: bool = False


# The model each Backend call runs on: the gateway's Triton call slots are shared per model.
CALL_MODEL = {"vad": contract.VAD, "emotion": contract.EMOTION, "emotion_embedding": contract.EMOTION,
              "asr": contract.ASR, "speaker": contract.SPEAKER, "sentiment": contract.TEXT_SENTIMENT}


class Backend(Protocol):
    @property
    def models(self) -> Mapping[str, ModelInfo]:
        """By name: contract.EMOTION, contract.ASR and contract.VAD; contract.SPEAKER where the server has a
        speaker model (a repository rendered before diarization has none: no diarization then), and
        contract.TEXT_SENTIMENT where it has a text-sentiment model (else transcripts go unscored)."""
        ...

    @property
    def replicas(self) -> int:
        """The server replicas the calls are spread over, each computing `ModelInfo.concurrency` calls at once."""
        ...

    @property
    def emotion_labels(self) -> list[str]:
        """emotion2vec+'s labels, in the order of its probabilities."""
        ...

    def label_sets(self) -> dict[str, list[str]]:
        """Every distribution's labels, named as the Segment fields they label."""
        ...

    def language_query_id(self, language: str) -> int:
        """SenseVoice's id of `language` ("auto", "en", ...); INVALID_ARGUMENT for one it does not know."""
        ...

    async def vad(self, block: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        """Speech probability per VAD frame [rows, ceil(n / VAD_FRAME)] of each row of `block` [rows, n]."""
        ...

    async def emotion(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> Distribution:
        """emotion2vec+'s distribution over `emotion_labels` for one clip [n]."""
        ...

    async def emotion_embedding(self, wav: np.ndarray, request_id: str = "",
                                timeout: float | None = None) -> tuple[Distribution, np.ndarray]:
        """`emotion`'s distribution and emotion2vec+'s utterance embedding [D] of the clip: asked instead of
        `emotion` only for a request that wants embeddings (include_embeddings), as D more floats per call."""
        ...

    async def asr(self, wav: np.ndarray, language: str = "auto", use_itn: bool = False,
                  request_id: str = "", timeout: float | None = None) -> AsrResult:
        """SenseVoice's transcript of one clip [n] and its four query distributions."""
        ...

    async def speaker(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        """The speaker model's L2-normalised embedding [D] of one clip [n] (diarization)."""
        ...

    async def sentiment(self, texts: Sequence[str], request_id: str = "", timeout: float | None = None) -> Distribution:
        """The text-sentiment model's labels (its id2label order) and probabilities [len(texts), labels], one row
        per text, for at most its max_batch_size texts (gateway/sentiment.py scores them)."""
        ...
