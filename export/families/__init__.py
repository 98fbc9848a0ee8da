"""The registry of model families: the one place that lists them. Everything else asks a family."""
from __future__ import annotations

from toneserve.export.families.emotion2vec import EMOTION2VEC
from toneserve.export.families.sensevoice import SENSEVOICE
from toneserve.export.families.silero_vad import SILERO_VAD
from toneserve.export.families.speaker import SPEAKER
from toneserve.export.families.text_sentiment import TEXT_SENTIMENT
from toneserve.export.family import ModelFamily

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (EMOTION2VEC, SENSEVOICE, SILERO_VAD, SPEAKER, TEXT_SENTIMENT)}


def get(name: str) -> ModelFamily:
    family = FAMILIES.get(name)
    if family is None:
        raise ValueError(f"unknown model family {name!r}; choose from {list(FAMILIES)}")
    return family


def exported() -> list[ModelFamily]:
    """The families `toneserve export` writes a folder for, in order."""
    return [f for f in FAMILIES.values() if f.exported]


def by_model_class(name: object) -> ModelFamily | None:
    """The family whose FunASR model class a config.yaml's ``model`` names."""
    return next((f for f in FAMILIES.values() if f.model_class is not None and f.model_class == name), None)


def by_hub_id(ident: str) -> ModelFamily | None:
    return next((f for f in FAMILIES.values() if ident in f.hub_ids or ident in f.hub_aliases), None)
