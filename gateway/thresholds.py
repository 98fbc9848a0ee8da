"""Thresholds of segmentation and reconciliation: the defaults live here, once.

A request may override any of them (`toneserve.v1.Thresholds`, every field
optional); the resolved values are echoed in the response metadata. The README's
table of defaults is checked against this class by test_thresholds.py.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from toneserve.contract import Code, ToneserveError
from toneserve.v1 import toneserve_pb2 as pb


@dataclass(frozen=True)
class Thresholds:
    # silero's own default: speech probability that opens an utterance.
    vad_threshold: float = 0.5
    # Silence that ends an utterance. silero's default (100 ms) splits phrases at every breath;
    # 300 ms keeps a sentence together and still separates turns.
    min_silence_ms: int = 300
    # Deepgram's convention: positive at >= +1/3, negative at <= -1/3.
    sentiment_break: float = 1 / 3
    # Words and tone count equally unless a request says otherwise.
    text_weight: float = 0.5
    # Half the score range: e.g. words +0.5 and tone -0.5.
    mismatch_gap: float = 1.0
    # Top emotion2vec+ probability below which the tone abstains (uniform over 9 classes is 0.11).
    min_confidence: float = 0.4
    # Negative arousal (arousal x negative valence, in [0, 1]) rising this much over a
    # speaker's recent segments flags escalation.
    escalation_rise: float = 0.25


# Valid range of each field: (low, high), both inclusive.
RANGES = {
    "vad_threshold": (0.01, 0.99),
    "min_silence_ms": (100, 5000),  # below 2 x 30 ms padding + a frame, the segmenter's closing rule fails
    "sentiment_break": (0.0, 1.0),
    "text_weight": (0.0, 1.0),
    "mismatch_gap": (0.0, 2.0),
    "min_confidence": (0.0, 1.0),
    "escalation_rise": (0.0, 1.0),
}

DEFAULTS = Thresholds()


def from_proto(message: pb.Thresholds, base: Thresholds = DEFAULTS) -> Thresholds:
    """The request's thresholds over `base`; a value out of range is INVALID_ARGUMENT."""
    overrides: dict[str, Any] = {}
    for field in fields(Thresholds):
        if message.HasField(field.name):
            # proto floats are float32: 0.2 arrives as 0.2000000029...; 6 decimals is what was meant.
            value = round(getattr(message, field.name), 6)
            low, high = RANGES[field.name]
            if not low <= value <= high:
                raise ToneserveError(Code.INVALID_ARGUMENT,
                                     f"thresholds.{field.name} must be in [{low}, {high}], got {value:g}")
            overrides[field.name] = int(value) if field.type == "int" else float(value)
    return replace(base, **overrides)


def to_proto(thresholds: Thresholds) -> pb.Thresholds:
    return pb.Thresholds(**{field.name: getattr(thresholds, field.name) for field in fields(Thresholds)})
