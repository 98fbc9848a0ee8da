"""The errors an export raises about its inputs (standard library only, so every export module can use them)."""
from __future__ import annotations

from toneserve.console import CommandError


class SourceUnavailable(CommandError):
    """A weight source cannot be used here (hub unreachable, download failed)."""


class SourceError(CommandError, ValueError):
    """A weight source as given cannot be used: a spec that does not parse, or a model directory whose
    files do not describe the model (a ValueError too, for callers that validate input)."""


class CheckpointRefused(SourceError):
    """``torch.load(weights_only=True)`` refused a checkpoint: it holds Python objects that only a full
    (unpickling) load builds. ``type_name`` is what it met; a trusted folder may opt in to a full load."""

    def __init__(self, message: str, type_name: str):
        super().__init__(message)
        self.type_name = type_name


class MissingModelFiles(FileNotFoundError):
    """A model directory lacks files the model needs; ``missing`` names them."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing
