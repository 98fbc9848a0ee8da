"""toneserve: speech emotion and sentiment analysis served by NVIDIA Triton."""
from __future__ import annotations


def version() -> str:
    """This installation's version, from its package metadata: pyproject.toml's `version`, the one place it is
    written."""
    from importlib import metadata

    try:
        return metadata.version("toneserve")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
