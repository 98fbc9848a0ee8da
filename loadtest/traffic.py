"""The traffic mix: which Locust users run, and with what weights (no Locust import here:
importing Locust monkey-patches the whole process for gevent)."""
from __future__ import annotations

# --mix name -> Locust user class in locustfile.py
USERS = {"analyze": "AnalyzeUser", "upload": "UploadUser", "triton": "TritonUser"}


def split(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_mix(text: str) -> dict[str, float]:
    """'analyze:3,upload:1' -> {'analyze': 3.0, 'upload': 1.0}; a bare name weighs 1."""
    mix = {}
    for part in split(text):
        name, _, weight = part.partition(":")
        if name not in USERS:
            raise ValueError(f"unknown user {name!r} in --mix; choose from {sorted(USERS)}")
        mix[name] = float(weight) if weight else 1.0
        if mix[name] < 0:
            raise ValueError(f"--mix weight of {name} must be >= 0")
    if not any(mix.values()):
        raise ValueError(f"--mix {text!r} gives no user a positive weight")
    return mix


def user_classes(text: str) -> list[str]:
    """The Locust user classes a --mix runs (positive weight)."""
    return [USERS[name] for name, weight in parse_mix(text).items() if weight > 0]
