"""Where model weights come from: a hub id, a local model directory, or random weights.

Three kinds of source per model family (``"emotion2vec"``: emotion2vec+, ``"sensevoice"``:
SenseVoiceSmall):

* ``hub``: a ModelScope model id (``iic/emotion2vec_plus_base``, ``iic/emotion2vec_plus_large``,
  ``iic/SenseVoiceSmall``), fetched with ``modelscope.snapshot_download``, which is what FunASR's
  ``AutoModel`` uses (``funasr.download.download_model_from_hub.get_or_download_model_dir``).
  The hub endpoint is probed first (DNS + TCP connect, ``probe_timeout`` seconds), so an
  unreachable hub fails in about that time with :class:`SourceUnavailable` instead of
  modelscope's retries. When the probe fails but the model is already in the ModelScope cache,
  the cached copy is used (``snapshot_download(local_files_only=True)``).
  Endpoint: ``endpoint`` argument > ``MODELSCOPE_ENDPOINT`` > ``MODELSCOPE_DOMAIN`` >
  ``https://modelscope.cn`` (modelscope's own precedence). Cache: ``cache_dir`` argument >
  ``MODELSCOPE_CACHE`` > modelscope's default (``~/.cache/modelscope``).
* ``local``: a directory laid out the way ModelScope/FunASR lay the model out (see
  :data:`REQUIRED_FILES`); files are found the way FunASR's ``download_from_ms`` finds them
  (``configuration.json``'s ``file_path_metas`` first, then the conventional names).
* ``random``: random weights of the real architecture (``random:<preset>``).

:func:`load_local_model` builds the FunASR class from ``config.yaml`` with the same keyword
arguments ``AutoModel.build_model`` passes (``model_conf`` merged with the top-level keys,
``vocab_size`` from the tokenizer, ``input_size`` from the frontend) and loads ``model.pt``
unwrapped the way ``funasr.train_utils.load_pretrained_model`` does (``state_dict`` /
``model_state_dict`` / ``model`` keys, ``module.`` prefixes). Unlike FunASR, which warns and
keeps random values, a parameter missing from the checkpoint or of the wrong shape is an error
here (except the emotion2vec pretraining decoder, which inference never runs).

Lightweight at import time: torch, funasr and modelscope are imported only when needed. The
exporters (emotion2vec, sensevoice and its frontend and tokenizer) import this module, so it imports
them inside the functions that use them.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import sentencepiece as spm
from omegaconf import OmegaConf

from toneserve.console import CommandError
from toneserve.export.artifacts import atomic_write_bytes, sha256_file

FAMILIES = ("emotion2vec", "sensevoice")

# Known hub ids per family (FunASR's name_maps_ms; the emotion2vec_plus_seed id exists too but
# is not a size this project plans for).
HUB_IDS: dict[str, tuple[str, ...]] = {
    "emotion2vec": ("iic/emotion2vec_plus_base", "iic/emotion2vec_plus_large"),
    "sensevoice": ("iic/SenseVoiceSmall",),
}
# Bare names FunASR maps to hub ids (funasr.download.name_maps_from_hub.name_maps_ms), plus the
# SenseVoice repo name.
HUB_ALIASES: dict[str, str] = {
    "emotion2vec_plus_base": "iic/emotion2vec_plus_base",
    "emotion2vec_plus_large": "iic/emotion2vec_plus_large",
    "SenseVoiceSmall": "iic/SenseVoiceSmall",
}
# Random-weight presets (the keys of emotion2vec.PRESETS / sensevoice.PRESETS; a test checks
# they agree) and the preset a bare "random" means: the real size.
PRESET_NAMES: dict[str, tuple[str, ...]] = {
    "emotion2vec": ("tiny", "base", "large"),
    "sensevoice": ("tiny", "small"),
}
DEFAULT_PRESETS: dict[str, str] = {"emotion2vec": "base", "sensevoice": "small"}

# FunASR model class each family's config.yaml must name.
MODEL_CLASSES: dict[str, str] = {"emotion2vec": "Emotion2vec", "sensevoice": "SenseVoiceSmall"}

SENSEVOICE_BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
# The files a model directory must hold (names as in the hub repos). configuration.json is
# optional: when present, its file_path_metas say which file plays which part (as in FunASR).
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "emotion2vec": ("config.yaml", "model.pt", "tokens.txt"),
    "sensevoice": ("config.yaml", "model.pt", "am.mvn", SENSEVOICE_BPE_NAME),
}

# Checkpoint parameters that may be absent without harm: the emotion2vec pretraining decoder
# (data2vec 2.0 target decoder) is never run at inference and is not exported.
TOLERATED_MISSING_PREFIXES: dict[str, tuple[str, ...]] = {
    "emotion2vec": ("modality_encoders.AUDIO.decoder.",),
    "sensevoice": (),
}

DEFAULT_ENDPOINT = "https://modelscope.cn"

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SourceUnavailable(CommandError):
    """A weight source cannot be used here (hub unreachable, download failed)."""


class SourceError(CommandError, ValueError):
    """A weight source as given cannot be used: a spec that does not parse, or a model directory whose
    files do not describe the model (a ValueError too, for callers that validate input)."""


class MissingModelFiles(FileNotFoundError):
    """A model directory lacks files the model needs; ``missing`` names them."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


# --------------------------------------------------------------------------------------------
# Source
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    kind: str  # "hub" | "local" | "random"
    ref: str  # hub id, absolute local path, or preset name
    family: str | None = field(default=None, compare=False)  # set by parse_source

    def __post_init__(self):
        if self.kind not in ("hub", "local", "random"):
            raise ValueError(f"source kind must be hub, local or random, not {self.kind!r}")

    def describe(self) -> dict:
        """``{"kind", "ref"}`` for manifests."""
        return {"kind": self.kind, "ref": self.ref}

    def __str__(self) -> str:
        return f"random:{self.ref}" if self.kind == "random" else self.ref


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {list(FAMILIES)}")


def _alternatives(family: str) -> str:
    presets = ", ".join(f"'random:{p}'" for p in PRESET_NAMES[family])
    files = ", ".join(REQUIRED_FILES[family])
    return (f"a local directory holding the model's files ({files}; configuration.json optional), "
            f"or random weights of the real architecture ({presets})")


def parse_source(text: str, family: str, *, default_preset: str | None = None) -> Source:
    """Parse a weight source for ``family``.

    * ``random`` (the family's real size, :data:`DEFAULT_PRESETS`, or ``default_preset``) or
      ``random:<preset>``;
    * ``local:<path>``, or a path: anything starting with ``/``, ``.`` or ``~``, or naming an
      existing directory. It must be an existing directory (absolute path in the result);
    * ``hub:<id>``, an ``owner/name`` id (``iic/SenseVoiceSmall``), or a bare name FunASR maps
      to one (``emotion2vec_plus_large``). An id known to belong to the other family is refused.
    """
    _check_family(family)
    if not isinstance(text, str) or not text.strip():
        raise SourceError(f"empty {family} weight source; expected {_grammar(family)}")
    s = text.strip()
    low = s.lower()

    if low == "random" or low.startswith("random:"):
        preset = s.split(":", 1)[1].strip() if ":" in s else (default_preset or DEFAULT_PRESETS[family])
        if preset not in PRESET_NAMES[family]:
            raise SourceError(f"unknown {family} preset {preset!r} in {text!r}; choose from "
                             + ", ".join(f"random:{p}" for p in PRESET_NAMES[family]))
        return Source("random", preset, family)

    explicit_local = low.startswith("local:")
    if explicit_local or s.startswith(("/", ".", "~")) or (os.sep in s and Path(s).expanduser().exists()):
        raw = s[len("local:"):].strip() if explicit_local else s
        return Source("local", str(_existing_dir(raw, family)), family)

    explicit_hub = low.startswith("hub:")
    ident = s[len("hub:"):].strip() if explicit_hub else s
    if not explicit_hub and Path(s).is_dir():  # a relative directory name such as "models/sv"
        return Source("local", str(Path(s).resolve()), family)
    ident = HUB_ALIASES.get(ident, ident)
    if _HUB_ID_RE.match(ident):
        for other, ids in HUB_IDS.items():
            if other != family and ident in ids:
                raise SourceError(f"{ident!r} is a {other} model, not a {family} one; "
                                  f"{family} hub ids: {', '.join(HUB_IDS[family])}")
        return Source("hub", ident, family)
    raise SourceError(f"cannot read {text!r} as a {family} weight source; expected {_grammar(family)}")


def _grammar(family: str) -> str:
    return ("'random' or " + ", ".join(f"'random:{p}'" for p in PRESET_NAMES[family])
            + ", a model directory (absolute or ./relative path), or a hub id such as "
            + " / ".join(repr(i) for i in HUB_IDS[family]))


def _existing_dir(raw: str, family: str) -> Path:
    p = Path(raw).expanduser()
    if not p.exists():
        raise SourceError(f"{family} model directory {raw!r} does not exist ({p.resolve()}); "
                          f"it should hold {', '.join(REQUIRED_FILES[family])}")
    if not p.is_dir():
        raise SourceError(f"{family} weight source {raw!r} is a file, not a model directory; "
                          f"give the directory holding {', '.join(REQUIRED_FILES[family])}")
    return p.resolve()


# --------------------------------------------------------------------------------------------
# Model directory layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFiles:
    """Which file of a model directory plays which part."""

    family: str
    root: Path
    config: Path
    weights: Path
    tokens: Path | None = None  # emotion2vec: tokens.txt
    bpe_model: Path | None = None  # sensevoice: sentencepiece model
    cmvn: Path | None = None  # sensevoice: am.mvn
    configuration_json: Path | None = None


def _file_path_metas(root: Path) -> dict:
    path = root / "configuration.json"
    if not path.is_file():
        return {}
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from e
    metas = conf.get("file_path_metas") if isinstance(conf, dict) else None
    return metas if isinstance(metas, dict) else {}


def locate_files(family: str, model_dir: str | os.PathLike) -> ModelFiles:
    """Find the model's files in ``model_dir`` the way FunASR's ``download_from_ms`` does:
    ``configuration.json``'s ``file_path_metas`` (``config``, ``init_param``,
    ``tokenizer_conf.token_list`` / ``tokenizer_conf.bpemodel``, ``frontend_conf.cmvn_file``)
    when present, else ``config.yaml``, ``model.pt``, ``tokens.txt``, ``am.mvn`` and, for
    SenseVoice, ``config.yaml``'s ``tokenizer_conf.bpemodel``, ``bpe.model`` or
    ``chn_jpn_yue_eng_ko_spectok.bpe.model``. Raises :class:`MissingModelFiles` naming every
    missing file."""
    _check_family(family)
    root = Path(model_dir).expanduser().resolve()
    if not root.is_dir():
        raise MissingModelFiles(f"{family} model directory {root} does not exist", [str(root)])
    metas = _file_path_metas(root)

    def meta(*keys: str) -> str | None:
        node: Any = metas
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node if isinstance(node, str) and node else None

    chosen: dict[str, str] = {
        "config": meta("config") or "config.yaml",
        "weights": meta("init_param") or "model.pt",
    }
    if family == "emotion2vec":
        chosen["tokens"] = meta("tokenizer_conf", "token_list") or "tokens.txt"
    else:
        chosen["cmvn"] = meta("frontend_conf", "cmvn_file") or "am.mvn"
        bpe = meta("tokenizer_conf", "bpemodel")
        if bpe is None:
            candidates = []
            cfg_path = root / chosen["config"]
            if cfg_path.is_file():
                try:
                    tconf = read_config(cfg_path).get("tokenizer_conf") or {}
                except Exception:  # reported when the config is read for real
                    tconf = {}
                name = tconf.get("bpemodel") if isinstance(tconf, dict) else None
                if isinstance(name, str) and name and not os.path.isabs(name):
                    candidates.append(name)
            candidates += ["bpe.model", SENSEVOICE_BPE_NAME]
            bpe = next((c for c in candidates if (root / c).is_file()), SENSEVOICE_BPE_NAME)
        chosen["bpe_model"] = bpe

    missing = [name for name in chosen.values() if not (root / name).is_file()]
    if missing:
        present = sorted(p.name for p in root.iterdir())
        raise MissingModelFiles(
            f"{family} model directory {root} lacks {', '.join(missing)} "
            f"(a {family} model directory holds {', '.join(REQUIRED_FILES[family])}; "
            f"found: {', '.join(present) or 'nothing'})", missing)
    return ModelFiles(
        family=family, root=root,
        config=root / chosen["config"], weights=root / chosen["weights"],
        tokens=root / chosen["tokens"] if "tokens" in chosen else None,
        bpe_model=root / chosen["bpe_model"] if "bpe_model" in chosen else None,
        cmvn=root / chosen["cmvn"] if "cmvn" in chosen else None,
        configuration_json=(root / "configuration.json") if (root / "configuration.json").is_file() else None,
    )


# --------------------------------------------------------------------------------------------
# Hub
# --------------------------------------------------------------------------------------------


def hub_endpoint(endpoint: str | None = None) -> str:
    """The ModelScope endpoint with modelscope's precedence: argument > ``MODELSCOPE_ENDPOINT``
    > ``MODELSCOPE_DOMAIN`` > ``https://modelscope.cn``."""
    ep = endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN", "").strip()
    ep = ep or DEFAULT_ENDPOINT
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", ep):
        ep = "https://" + ep
    return ep.rstrip("/")


def _probe_target(endpoint: str) -> tuple[str, int, str]:
    """(host, port, what) to connect to: the endpoint, or the HTTP(S) proxy that would carry it."""
    u = urlparse(endpoint)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        pu = urlparse(proxy if "://" in proxy else "http://" + proxy)
        if pu.hostname:
            return pu.hostname, pu.port or 80, f"proxy {pu.hostname}:{pu.port or 80} for {host}"
    return host, port, f"{host}:{port}"


def probe_endpoint(endpoint: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the endpoint (or its proxy) opens within ``timeout``
    seconds (DNS included); else why not, in words. Never takes much longer than ``timeout``."""
    host, port, what = _probe_target(endpoint)
    if not host:
        return f"endpoint {endpoint!r} names no host"
    deadline = time.monotonic() + timeout
    box: dict[str, Any] = {}

    def lookup():
        try:
            box["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=lookup, name="toneserve-hub-dns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"DNS lookup of {host} gave no answer within {timeout:g} s"
    if "error" in box:
        return f"DNS lookup of {host} failed ({box['error']})"
    last: str = "no address"
    for fam, typ, proto, _, addr in box["addrs"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = f"timed out after {timeout:g} s"
            break
        try:
            with socket.socket(fam, typ, proto) as s:
                s.settimeout(remaining)
                s.connect(addr)
            return None
        except socket.timeout:
            last = f"timed out after {timeout:g} s"
        except OSError as e:
            last = str(e) or type(e).__name__
    return f"TCP connect to {what} failed ({last})"


def _cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    return os.environ.get("MODELSCOPE_CACHE") or None


def _cached_snapshot(model_id: str, cache_dir: str | None) -> Path | None:
    """The model's directory in the ModelScope cache, without touching the network."""
    try:
        from modelscope import snapshot_download

        path = snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True)
    except Exception:
        return None
    return Path(path) if path and Path(path).is_dir() else None


def _unavailable(source: Source, endpoint: str, why: str, cache: str | None) -> SourceUnavailable:
    family = source.family
    where = (f"the ModelScope cache {cache}" if cache
             else "the default ModelScope cache (~/.cache/modelscope)")
    msg = (f"cannot fetch {source.ref!r} from the model hub {endpoint}: {why}; it is not in {where} "
           f"either (MODELSCOPE_ENDPOINT picks another hub endpoint, MODELSCOPE_CACHE another cache). ")
    if family:
        example = f"random:{DEFAULT_PRESETS[family]}"
        msg += (f"Use instead {_alternatives(family)}. For example copy the model from a machine that "
                f"reaches the hub (`modelscope download {source.ref} --local-dir DIR`) and give DIR "
                f"as the source, or give '{example}' (outputs are then meaningless).")
    else:
        msg += ("Use instead a local directory holding the model's files, or random weights of the "
                "real architecture ('random:<preset>').")
    return SourceUnavailable(msg)


def resolve(source: Source, cache_dir: Path | None = None, probe_timeout: float = 3.0, *,
            endpoint: str | None = None) -> Path | None:
    """Make a source usable: hub -> the downloaded (or cached) model directory, local -> the
    checked directory, random -> None.

    Hub: the endpoint is probed first (DNS + TCP, ``probe_timeout`` s); when that fails the
    ModelScope cache is looked up offline, and only then :class:`SourceUnavailable` is raised.
    Download errors are raised as :class:`SourceUnavailable` too. A directory that lacks files
    raises :class:`MissingModelFiles` (when the source's family is known)."""
    if source.kind == "random":
        return None
    if source.kind == "local":
        root = Path(source.ref).expanduser().resolve()
        if source.family:
            return locate_files(source.family, root).root
        if not root.is_dir():
            raise MissingModelFiles(f"model directory {root} does not exist", [str(root)])
        return root

    ep = hub_endpoint(endpoint)
    cache = _cache_dir(cache_dir)
    problem = probe_endpoint(ep, probe_timeout)
    if problem is not None:
        cached = _cached_snapshot(source.ref, cache)
        if cached is None:
            raise _unavailable(source, ep, problem, cache)
        path = cached
    else:
        try:
            from modelscope import snapshot_download

            kwargs: dict[str, Any] = {"cache_dir": cache}
            if endpoint is not None:
                kwargs["endpoint"] = ep
            path = Path(snapshot_download(source.ref, **kwargs))
        except Exception as e:  # network, auth, unknown id: all mean "not from the hub"
            raise _unavailable(source, ep, f"download failed ({type(e).__name__}: {e})", cache) from e
    if source.family:
        locate_files(source.family, path)
    return path


# --------------------------------------------------------------------------------------------
# Reading a model directory the way FunASR does
# --------------------------------------------------------------------------------------------


def read_config(path: str | os.PathLike) -> dict:
    """config.yaml as FunASR reads it (OmegaConf, interpolations resolved) -> plain dict."""
    cfg = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    if not isinstance(cfg, dict):
        raise SourceError(f"{path}: not a mapping")
    return cfg


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The state dict in ``model.pt``, unwrapped as ``load_pretrained_model`` does: a
    ``state_dict``, then ``model_state_dict``, then ``model`` entry when present.
    ``torch.load(weights_only=True)``: what FunASR's plain ``torch.load`` does on torch >= 2.6."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise SourceError(
            f"{path}: torch.load(weights_only=True) failed ({type(e).__name__}: {e}); FunASR on "
            "torch >= 2.6 loads model.pt the same way. If the file is trusted, re-save its state "
            "dict with torch.save(state_dict) and retry") from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise SourceError(f"{path}: no state dict inside (got {type(obj).__name__})")
    return obj


def apply_checkpoint(model, state: dict, family: str, origin: str = "model.pt") -> dict:
    """Copy ``state`` into ``model`` strictly: every parameter/buffer of the model must be in the
    checkpoint (``module.``-prefixed names accepted, as in FunASR) with its shape, except the
    tolerated unused parts (:data:`TOLERATED_MISSING_PREFIXES`). Returns load statistics."""
    import torch

    dst = model.state_dict()
    new: dict[str, Any] = {}
    missing, mismatched, tolerated = [], [], []
    used = set()
    for k, v in dst.items():
        src_key = "module." + k if ("module." + k) in state else k
        if src_key not in state:
            if k.startswith(TOLERATED_MISSING_PREFIXES[family]):
                tolerated.append(k)
                new[k] = v
                continue
            missing.append(k)
            continue
        t = state[src_key]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape):
            mismatched.append(f"{k}: checkpoint {tuple(getattr(t, 'shape', ()))} vs model {tuple(v.shape)}")
            continue
        new[k] = t.to(dtype=v.dtype)
        used.add(src_key)
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape (e.g. {'; '.join(mismatched[:5])})")
        raise SourceError(f"{origin} does not fit the architecture its config.yaml describes: "
                          + "; ".join(parts))
    model.load_state_dict(new, strict=True)
    unused = sorted(k for k in state if k not in used)
    return {"tensors_loaded": len(used), "unused_checkpoint_tensors": len(unused),
            "unused_checkpoint_examples": unused[:10], "left_at_init": tolerated}


def _funasr_model_class(name: str):
    from funasr.register import tables

    if name == "Emotion2vec":
        import funasr.models.emotion2vec.model  # noqa: F401  (registers the class)
    elif name == "SenseVoiceSmall":
        import funasr.models.sense_voice.model  # noqa: F401
    cls = tables.model_classes.get(name)
    if cls is None:  # pragma: no cover - depends on the funasr install
        raise RuntimeError(f"funasr has no registered model class {name!r}")
    return cls


def model_kwargs(config: dict, *, vocab_size: int, input_size: int | None) -> dict:
    """The keyword arguments ``AutoModel.build_model`` gives the model class: ``model_conf``
    deep-updated with every top-level key of the config, ``vocab_size`` from the tokenizer,
    ``input_size`` from the frontend; tokenizer/frontend objects are not needed to build."""
    from funasr.utils.misc import deep_update

    kwargs = copy.deepcopy(config)
    kwargs.update(vocab_size=int(vocab_size), input_size=input_size, tokenizer=None, frontend=None)
    out: dict = {}
    deep_update(out, copy.deepcopy(kwargs.get("model_conf") or {}))
    deep_update(out, kwargs)
    return out


# Frontend settings our ONNX frontend implements (sensevoice_frontend); a model dir asking for
# others cannot be exported faithfully.
_FRONTEND_FIXED = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                   "frame_shift": 10, "lfr_m": 7, "lfr_n": 6}


@dataclass
class LocalModel:
    """A FunASR model built from a model directory, with what was read to build it."""

    family: str
    model: Any
    files: ModelFiles
    config: dict
    preset: str  # the preset whose architecture this is, or "custom"
    arch_config: dict  # emotion2vec: model_conf; sensevoice: encoder + encoder_conf + input_size
    load: dict  # apply_checkpoint statistics
    weights_sha256: str


def detect_preset(family: str, arch_config: dict) -> str:
    """Name of the random-weight preset with the same architecture size, else ``"custom"``."""
    if family == "emotion2vec":
        from toneserve.export.emotion2vec import PRESETS

        keys = ("embed_dim", "depth", "num_heads")
        for name, conf in PRESETS.items():
            if all(arch_config.get(k) == conf.get(k) for k in keys):
                return name
        return "custom"
    from toneserve.export.sensevoice import PRESETS

    keys = ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks")
    enc = arch_config.get("encoder_conf") or {}
    for name, conf in PRESETS.items():
        if all(enc.get(k) == conf["encoder_conf"].get(k) for k in keys):
            return name
    return "custom"


def load_local_model(family: str, model_dir: str | os.PathLike, *, hash_weights: bool = True) -> LocalModel:
    """Build ``family``'s FunASR model from ``model_dir`` and load its weights (eval mode).

    emotion2vec: ``Emotion2vec(**kwargs)`` with ``vocab_size`` = lines of the tokens file (as
    FunASR's CharTokenizer counts them). SenseVoice: ``SenseVoiceSmall(**kwargs)`` with
    ``vocab_size`` = pieces of the sentencepiece model and ``input_size`` = ``n_mels * lfr_m``
    of ``frontend_conf`` (``WavFrontend.output_size()``)."""
    import torch

    files = locate_files(family, model_dir)
    config = read_config(files.config)
    want = MODEL_CLASSES[family]
    if config.get("model") != want:
        raise SourceError(f"{files.config}: model is {config.get('model')!r}, expected {want!r} "
                          f"for a {family} model directory")

    if family == "emotion2vec":
        from toneserve.export.emotion2vec import read_tokens

        vocab_size = len(read_tokens(files.tokens))
        input_size = None
        if not isinstance(config.get("model_conf"), dict):
            raise SourceError(f"{files.config}: no model_conf mapping")
        arch = copy.deepcopy(config["model_conf"])
    else:
        sp = spm.SentencePieceProcessor()
        if not sp.Load(str(files.bpe_model)):
            raise SourceError(f"cannot load sentencepiece model {files.bpe_model}")
        vocab_size = sp.GetPieceSize()
        if config.get("frontend", "WavFrontend") != "WavFrontend":
            raise SourceError(f"{files.config}: frontend {config.get('frontend')!r} is not "
                              "supported (only WavFrontend)")
        fconf = dict(config.get("frontend_conf") or {})
        diff = {k: fconf[k] for k, v in _FRONTEND_FIXED.items() if k in fconf and fconf[k] != v}
        if diff:
            raise SourceError(f"{files.config}: frontend_conf {diff} differs from the exported "
                              f"frontend's {_FRONTEND_FIXED}")
        input_size = int(fconf.get("n_mels", 80)) * int(fconf.get("lfr_m", 1))
        if config.get("encoder") is None or not isinstance(config.get("encoder_conf"), dict):
            raise SourceError(f"{files.config}: no encoder / encoder_conf")
        arch = {"encoder": config["encoder"], "encoder_conf": copy.deepcopy(config["encoder_conf"]),
                "input_size": input_size}

    cls = _funasr_model_class(want)
    kwargs = model_kwargs(config, vocab_size=vocab_size, input_size=input_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(**kwargs)
    model.eval()
    state = read_checkpoint(files.weights)
    load = apply_checkpoint(model, state, family, origin=str(files.weights))
    model.eval()
    if family == "sensevoice":
        model.toneserve_encoder_conf = copy.deepcopy(arch["encoder_conf"])  # type: ignore[attr-defined]
        model.toneserve_model_conf = copy.deepcopy(config.get("model_conf") or {})  # type: ignore[attr-defined]
    preset = detect_preset(family, arch)
    model.toneserve_preset = preset  # type: ignore[attr-defined]
    return LocalModel(family=family, model=model, files=files, config=config, preset=preset,
                      arch_config=arch, load=load,
                      weights_sha256=sha256_file(files.weights) if hash_weights else "")


# --------------------------------------------------------------------------------------------
# Writing a model directory in the real layout (tests, and re-packaging)
# --------------------------------------------------------------------------------------------


def _yaml_bytes(obj: dict) -> bytes:
    return OmegaConf.to_yaml(OmegaConf.create(obj)).encode("utf-8")


def _checkpoint_bytes(model, wrap: str | None) -> bytes:
    import torch

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if wrap is not None:
        if wrap not in ("state_dict", "model_state_dict", "model"):
            raise ValueError(f"wrap must be None, 'state_dict', 'model_state_dict' or 'model', not {wrap!r}")
        state = {wrap: state}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_local_layout(model, family: str, out_dir: Path, **assets) -> Path:
    """Write ``model`` (an in-memory FunASR model of ``family``) as a model directory in the
    layout of the hub repos: ``config.yaml``, ``model.pt`` (plain state dict), the tokenizer
    file(s) and ``configuration.json`` (``file_path_metas`` as in FunASR's docs). Returns the
    directory.

    Assets (all optional):
      common: ``wrap`` ("state_dict" | "model_state_dict" | "model": nest the state dict under
        that key, as some checkpoints do), ``configuration_json`` (default True);
      emotion2vec: ``tokens`` (token lines; default the real 9 labels);
      sensevoice: ``bpe_model`` (path; default a stand-in trained with the model's vocab size),
        ``cmvn_file`` (path; default a generated am.mvn), ``encoder_conf`` (default the one
        recorded on the model by ``build_model`` / :func:`load_local_model`).
    """
    _check_family(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrap = assets.pop("wrap", None)
    with_json = assets.pop("configuration_json", True)
    metas: dict[str, Any] = {"init_param": "model.pt", "config": "config.yaml"}

    if family == "emotion2vec":
        from toneserve.export.emotion2vec import REAL_TOKENS

        tokens = list(assets.pop("tokens", REAL_TOKENS))
        if model.proj is not None and model.proj.out_features != len(tokens):
            raise ValueError(f"model has {model.proj.out_features} classes but {len(tokens)} tokens were given")
        config = {
            "model": "Emotion2vec",
            "model_conf": OmegaConf.to_container(model.cfg, resolve=True),
            "tokenizer": "CharTokenizer",
            "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        }
        atomic_write_bytes(out / "tokens.txt", "\n".join(tokens).encode("utf-8"))
        metas["tokenizer_conf"] = {"token_list": "tokens.txt"}
        task = "emotion-recognition"
    else:
        from toneserve.export.sensevoice_frontend import standin_cmvn_text
        from toneserve.export.sensevoice_tokenizer import train_standin_bpe

        encoder_conf = assets.pop("encoder_conf", None) or getattr(model, "toneserve_encoder_conf", None)
        if encoder_conf is None:
            raise ValueError("encoder_conf unknown: pass encoder_conf=... (models from "
                             "sensevoice.build_model or load_local_model carry it)")
        bpe_src = assets.pop("bpe_model", None)
        if bpe_src is not None:
            shutil.copyfile(bpe_src, out / SENSEVOICE_BPE_NAME)
        else:
            train_standin_bpe(out / SENSEVOICE_BPE_NAME, int(model.vocab_size), seed=0)
        cmvn_src = assets.pop("cmvn_file", None)
        if cmvn_src is not None:
            shutil.copyfile(cmvn_src, out / "am.mvn")
        else:
            atomic_write_bytes(out / "am.mvn", standin_cmvn_text(0).encode("utf-8"))
        model_conf = dict(getattr(model, "toneserve_model_conf", None) or {
            "length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1})
        config = {
            "encoder": "SenseVoiceEncoderSmall",
            "encoder_conf": copy.deepcopy(dict(encoder_conf)),
            "model": "SenseVoiceSmall",
            "model_conf": model_conf,
            "tokenizer": "SentencepiecesTokenizer",
            "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
            "frontend": "WavFrontend",
            "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                              "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
        }
        metas["tokenizer_conf"] = {"bpemodel": SENSEVOICE_BPE_NAME}
        metas["frontend_conf"] = {"cmvn_file": "am.mvn"}
        task = "auto-speech-recognition"
    if assets:
        raise TypeError(f"unknown assets for {family}: {sorted(assets)}")

    atomic_write_bytes(out / "config.yaml", _yaml_bytes(config))
    atomic_write_bytes(out / "model.pt", _checkpoint_bytes(model, wrap))
    if with_json:
        conf_json = {"framework": "pytorch", "task": task, "model": {"type": "funasr"},
                     "pipeline": {"type": "funasr-pipeline"}, "file_path_metas": metas}
        atomic_write_bytes(out / "configuration.json",
                           (json.dumps(conf_json, indent=2) + "\n").encode("utf-8"))
    return out


def manifest_source(source: dict | None, model_dir, preset: str) -> dict:
    """The manifest's ``source``: given, or derived from ``model_dir`` / ``preset``; its kind must
    agree with whether ``model_dir`` is given."""
    if source is None:
        if model_dir is not None:
            return {"kind": "local", "ref": str(Path(model_dir).expanduser().resolve())}
        return {"kind": "random", "ref": preset}
    source = {"kind": source.get("kind"), "ref": source.get("ref")}
    if model_dir is not None and source["kind"] not in ("hub", "local"):
        raise ValueError(f"source {source} does not match a model_dir (kind must be hub or local)")
    if model_dir is None and source["kind"] != "random":
        raise ValueError(f"source {source} needs model_dir (the resolved model directory)")
    if source["kind"] == "random" and source["ref"] != preset:
        raise ValueError(f"source {source} names another preset than {preset!r}")
    return source


# --------------------------------------------------------------------------------------------
# One call: source -> export
# --------------------------------------------------------------------------------------------


def export_from_source(family: str, source: Source | str, out_dir: Path, *, seed: int = 0,
                       cache_dir: Path | None = None, probe_timeout: float = 3.0,
                       endpoint: str | None = None, verify: bool = True) -> dict:
    """Resolve ``source`` and export ``family`` from it into ``out_dir``; returns the manifest."""
    _check_family(family)
    src = parse_source(source, family) if isinstance(source, str) else source
    if src.family is None:
        src = Source(src.kind, src.ref, family)
    model_dir = resolve(src, cache_dir, probe_timeout, endpoint=endpoint)
    if family == "emotion2vec":
        from toneserve.export import emotion2vec as module
    else:
        from toneserve.export import sensevoice as module
    if src.kind == "random":
        return module.export_onnx(out_dir, preset=src.ref, seed=seed, verify=verify, source=src.describe())
    return module.export_onnx(out_dir, seed=seed, verify=verify, model_dir=model_dir, source=src.describe())


__all__ = [
    "DEFAULT_PRESETS", "FAMILIES", "HUB_ALIASES", "HUB_IDS", "LocalModel", "MissingModelFiles",
    "ModelFiles", "PRESET_NAMES", "REQUIRED_FILES", "Source", "SourceUnavailable",
    "apply_checkpoint", "detect_preset", "export_from_source", "hub_endpoint", "load_local_model",
    "locate_files", "manifest_source", "model_kwargs", "parse_source", "probe_endpoint", "read_checkpoint",
    "read_config", "resolve", "save_local_layout",
]
