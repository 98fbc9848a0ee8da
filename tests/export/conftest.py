"""The export tier's session fixtures: checkpoint folders in the published hub layouts (built once)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.published_layout import published


@pytest.fixture(scope="session")
def published_emotion2vec(tmp_path_factory) -> Path:
    """``iic/emotion2vec_plus_large``'s layout and config, random weights (see tests/published_layout.py)."""
    return published(tmp_path_factory, "emotion2vec_plus_large")


@pytest.fixture(scope="session")
def published_sensevoice(tmp_path_factory) -> Path:
    """``iic/SenseVoiceSmall``'s layout and config, the real pieces, random weights."""
    return published(tmp_path_factory, "SenseVoiceSmall")
