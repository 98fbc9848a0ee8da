"""Where toneserve keeps what it builds. Absolute paths only: nothing depends on the working directory."""
import os
from pathlib import Path


def home() -> Path:
    """Root for exported models, rendered repositories and runtime files ($TONESERVE_HOME)."""
    return Path(os.environ.get("TONESERVE_HOME", Path.home() / ".cache" / "toneserve")).expanduser().resolve()


def models_dir(preset: str) -> Path:
    return home() / "models" / preset


def repository_dir(preset: str, profile: str) -> Path:
    return home() / "repository" / f"{preset}-{profile}"
