"""Writing a model folder in the hub's layout (tests, the load-test baseline, re-packaging)."""
from __future__ import annotations

import io
import json

from omegaconf import OmegaConf


def yaml_bytes(obj: dict) -> bytes:
    return OmegaConf.to_yaml(OmegaConf.create(obj)).encode("utf-8")


def checkpoint_bytes(model, wrap: str | None) -> bytes:
    """``model``'s state dict as ``torch.save`` writes it, nested under ``wrap`` when given (as some
    checkpoints are: "state_dict", "model_state_dict", "model")."""
    import torch

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if wrap is not None:
        if wrap not in ("state_dict", "model_state_dict", "model"):
            raise ValueError(f"wrap must be None, 'state_dict', 'model_state_dict' or 'model', not {wrap!r}")
        state = {wrap: state}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def configuration_json_bytes(task: str, metas: dict) -> bytes:
    conf = {"framework": "pytorch", "task": task, "model": {"type": "funasr"},
            "pipeline": {"type": "funasr-pipeline"}, "file_path_metas": metas}
    return (json.dumps(conf, indent=2) + "\n").encode("utf-8")
