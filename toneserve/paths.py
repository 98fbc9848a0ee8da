"""Where toneserve keeps what it builds. Absolute paths only: nothing depends on the working directory."""
import os
from pathlib import Path


def home() -> Path:
    """Root for exported models, rendered repositories and runtime files ($TONESERVE_HOME)."""
    return Path(os.environ.get("TONESERVE_HOME", Path.home() / ".cache" / "toneserve")).expanduser().resolve()


def models_dir(preset: str) -> Path:
    return home() / "models" / preset


def repository_name(profile: str, precision: str = "fp32") -> str:
    """The cpu profile has a repository per precision, fp32 under the plain name ("cpu", "cpu-bf16",
    "cpu-int8");
    the gpu profile has one (fp16 when built, else fp32) under its plain name, which
    docker-compose.yml mounts."""
    return profile if profile == "gpu" or precision == "fp32" else f"{profile}-{precision}"


def repository_dir(preset: str, profile: str, precision: str = "fp32") -> Path:
    return home() / "repository" / f"{preset}-{repository_name(profile, precision)}"
