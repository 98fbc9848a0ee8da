"""Loading a FunASR model folder the way FunASR's ``AutoModel`` does, with errors that say what is wrong.

* Files: found as FunASR's hub download finds them: ``configuration.json``'s ``file_path_metas`` first,
  then the conventional names a family gives (:func:`locate`).
* Model: the class FunASR's registry (``funasr.register.tables``) holds under the config's ``model``,
  built with the keyword arguments ``AutoModel.build_model`` passes (``model_conf`` deep-updated with the
  config's top-level keys, ``vocab_size`` from the tokenizer, ``input_size`` from the frontend).
* Weights: FunASR's own ``load_pretrained_model`` with the config's ``scope_map`` (emotion2vec+ stores
  its backbone under ``d2v_model.``), so any checkpoint FunASR loads, this loads. Unlike FunASR, which
  warns and keeps random values, a parameter left at its initial value is an error here, except those
  the family says inference never runs (the emotion2vec pretraining decoder).
* The checkpoint is first opened with ``torch.load(weights_only=True)``, what FunASR's plain
  ``torch.load`` does on torch >= 2.6; a refusal names the type it met and the opt-in to a full load.

torch and funasr are imported in the functions that use them.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from omegaconf import OmegaConf

from toneserve.export.errors import CheckpointRefused, MissingModelFiles, SourceError
from toneserve.export.family import ModelFiles

TRUST_FLAG = "--trust-checkpoint"


def read_config(path: str | os.PathLike) -> dict:
    """config.yaml as FunASR reads it (OmegaConf, interpolations resolved) -> plain dict."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    except Exception as e:
        raise SourceError(f"{path}: not a readable YAML config ({type(e).__name__}: {e})") from e
    if not isinstance(cfg, dict):
        raise SourceError(f"{path}: not a mapping")
    return cfg


def file_path_metas(root: Path) -> dict:
    path = root / "configuration.json"
    if not path.is_file():
        return {}
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    metas = conf.get("file_path_metas") if isinstance(conf, dict) else None
    return metas if isinstance(metas, dict) else {}


def _meta(metas: dict, keys: tuple[str, ...]) -> str | None:
    node: Any = metas
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node if isinstance(node, str) and node else None


def locate(family: str, root: str | os.PathLike, roles: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
           required: tuple[str, ...]) -> ModelFiles:
    """``roles``: role -> (its key path in ``file_path_metas``, conventional names in order of preference;
    the first existing one wins, else the first is reported missing). Raises :class:`MissingModelFiles`
    naming every missing file."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise MissingModelFiles(f"{family} model directory {root} does not exist", [str(root)])
    metas = file_path_metas(root)
    chosen: dict[str, str] = {}
    for role, (meta_keys, names) in roles.items():
        named = _meta(metas, meta_keys)
        chosen[role] = named or next((n for n in names if (root / n).is_file()), names[0])
    missing = [name for name in chosen.values() if not (root / name).is_file()]
    if missing:
        present = sorted(p.name for p in root.iterdir())
        raise MissingModelFiles(
            f"{family} model directory {root} lacks {', '.join(missing)} (a {family} model directory holds "
            f"{', '.join(required)}; found: {', '.join(present) or 'nothing'})", missing)
    return ModelFiles(family=family, root=root, parts={role: root / name for role, name in chosen.items()})


# ---------------------------------------------------------------------------------------- checkpoint

_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|Unsupported operand \d+ ?|Trying to load unsupported "
                     r"type|unsupported class|not an allowed global)\s*:?\s*([A-Za-z_][\w.]*)", re.IGNORECASE)


@contextlib.contextmanager
def _full_load() -> Iterator[None]:
    """FunASR's plain ``torch.load`` does a full (unpickling) load inside, for a folder the user trusts."""
    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict:
    """The state dict in ``path``, unwrapped as ``load_pretrained_model`` unwraps it (``state_dict``, then
    ``model_state_dict``, then ``model``). ``weights_only=True`` unless ``trust``; a refusal is a
    :class:`CheckpointRefused` naming the type met, never a silent fallback to a full load."""
    import pickle

    import torch

    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        text = str(e)
        match = _GLOBAL.search(text)
        type_name = match.group(1) if match else "an object that is not a tensor or plain container"
        raise CheckpointRefused(
            f"{path}: torch.load(weights_only=True) refused it: it holds {type_name}, which only a full "
            f"(unpickling) load builds. A full load runs code stored in the file: if you trust this folder, "
            f"give {TRUST_FLAG} (export_models(..., trust_checkpoint=True)); else re-save its state dict "
            f"with torch.save(state_dict) where it was made", type_name) from e
    except Exception as e:
        size = path.stat().st_size if path.exists() else 0
        raise SourceError(f"{path}: cannot be read as a torch checkpoint ({size} bytes; truncated or not a "
                          f"checkpoint: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise SourceError(f"{path}: no state dict inside (got {type(obj).__name__})")
    return obj


# ---------------------------------------------------------------------------------------- model

def model_class(name: str, module: str):
    """The class FunASR's registry holds under ``name`` (``module`` registers it when imported)."""
    import importlib

    with contextlib.redirect_stdout(io.StringIO()):  # funasr prints an ffmpeg notice on import
        importlib.import_module(module)
    from funasr.register import tables

    cls = tables.model_classes.get(name)
    if cls is None:  # pragma: no cover - depends on the funasr install
        raise RuntimeError(f"funasr has no registered model class {name!r}")
    return cls


def model_kwargs(config: dict, *, vocab_size: int, input_size: int | None) -> dict:
    """The keyword arguments ``AutoModel.build_model`` gives the model class: ``model_conf`` deep-updated
    with every top-level key of the config, ``vocab_size`` from the tokenizer, ``input_size`` from the
    frontend; tokenizer/frontend objects are not needed to build."""
    from funasr.utils.misc import deep_update

    kwargs = copy.deepcopy(config)
    kwargs.update(vocab_size=int(vocab_size), input_size=input_size, tokenizer=None, frontend=None)
    out: dict = {}
    deep_update(out, copy.deepcopy(kwargs.get("model_conf") or {}))
    deep_update(out, kwargs)
    return out


def scope_map(config: dict) -> list[str]:
    """The config's ``scope_map`` as ``load_pretrained_model`` takes it (a list of src, dst prefixes)."""
    value = config.get("scope_map") or []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v) for v in value]


def load_weights(model, path: Path, config: dict, *, tolerated: tuple[str, ...] = (),
                 trust: bool = False) -> dict:
    """Load ``path`` into ``model`` with FunASR's ``load_pretrained_model`` (the config's ``scope_map``,
    shapes checked). Every parameter must come from the checkpoint, except those under ``tolerated``.
    Returns what loading did."""
    from funasr.train_utils.load_pretrained_model import load_pretrained_model

    state = read_checkpoint(path, trust=trust)  # clear errors first; FunASR reads the file itself below
    dst = model.state_dict()
    loaded: set[str] = set()
    # FunASR reports the keys it loaded to this hook (its own extension point); an instance attribute
    # is enough, and removed after.
    model.on_pretrained_model_loaded = loaded.update
    scopes = scope_map(config)
    try:
        # FunASR prints one line per key it misses and logs one per key it maps; what matters is
        # reported below, once.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logging(), (_full_load() if trust else
                                                                          contextlib.nullcontext()):
            load_pretrained_model(path=str(path), model=model, ignore_init_mismatch=True,
                                  scope_map=list(scopes), excludes=config.get("excludes"))
    finally:
        del model.on_pretrained_model_loaded
    left = [k for k in dst if k not in loaded]
    left_tolerated = [k for k in left if k.startswith(tolerated)] if tolerated else []
    wrong = [k for k in left if k not in left_tolerated]
    if wrong:
        pairs = [(scopes[i], scopes[i + 1]) for i in range(0, len(scopes) - 1, 2)] + [("module.", "none")]

        def source_keys(k: str) -> list[str]:  # where load_pretrained_model looks for k
            out = [k]
            for src, dst in pairs:
                src, dst = ("" if p.lower() == "none" else p for p in (src, dst))
                if k.startswith(dst):
                    out.append(src + k[len(dst):])
            return out

        shaped = [k for k in wrong if any(c in state and tuple(getattr(state[c], "shape", ())) != tuple(dst[k].shape)
                                          for c in source_keys(k))]
        missing = [k for k in wrong if k not in shaped]
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if shaped:
            parts.append(f"{len(shaped)} of another shape (e.g. {'; '.join(shaped[:5])})")
        raise SourceError(f"{path} does not fit the architecture its config.yaml describes (loaded with "
                          f"FunASR's load_pretrained_model, scope_map {scopes or 'none'}): " + "; ".join(parts))
    model.eval()
    return {"loader": "funasr.train_utils.load_pretrained_model", "scope_map": scopes,
            "tensors_loaded": len(loaded), "checkpoint_tensors": len(state),
            "left_at_init": left_tolerated, "full_load": bool(trust)}


def build_and_load(config: dict, files: ModelFiles, *, module: str, vocab_size: int, input_size: int | None,
                   tolerated: tuple[str, ...] = (), trust: bool = False) -> tuple[Any, dict]:
    """Build the config's FunASR model class and load the folder's weights: (model in eval mode, load stats)."""
    import torch

    cls = model_class(str(config["model"]), module)
    kwargs = model_kwargs(config, vocab_size=vocab_size, input_size=input_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(**kwargs)
    model.eval()
    stats = load_weights(model, files.weights, config, tolerated=tolerated, trust=trust)
    return model, stats
