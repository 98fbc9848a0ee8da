"""Where model weights come from: a hub id, a local model folder, or random weights.

Three kinds of source per family:

* ``hub``: a ModelScope or Hugging Face id (``iic/SenseVoiceSmall``, ``emotion2vec/emotion2vec_plus_base``,
  ``ms:<id>``, ``hf:<id>``; see ``toneserve.export.hub``), optionally pinned to a ``revision``;
* ``local``: a folder laid out the way ModelScope/FunASR lay the model out (the family's
  ``required_files``; ``configuration.json``'s ``file_path_metas`` first, as in FunASR);
* ``random``: random weights of a preset's architecture (``random:<preset>``).

A source is parsed and checked before any long work (:func:`parse_source`), made usable by
:func:`resolve` (a hub download, or the checked folder) and exported by the family
(:func:`export_from_source`). The family-specific parts are the family's (``toneserve.export.families``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toneserve.export import hub
from toneserve.export.errors import MissingModelFiles, SourceError, SourceUnavailable
from toneserve.export.families import FAMILIES as _REGISTRY
from toneserve.export.families import exported, get
from toneserve.export.family import LoadedModel, ModelFiles
from toneserve.export.hub import hub_endpoint, probe_endpoint
from toneserve.export.loading import model_kwargs, read_checkpoint, read_config

# Views of the registry, for callers that want plain tables.
FAMILIES = tuple(f.name for f in exported())
HUB_IDS: dict[str, tuple[str, ...]] = {f.name: tuple(f.hub_ids) for f in exported()}
HUB_ALIASES: dict[str, str] = {k: v for f in exported() for k, v in f.hub_aliases.items()}
PRESET_NAMES: dict[str, tuple[str, ...]] = {f.name: tuple(f.presets) for f in exported()}
DEFAULT_PRESETS: dict[str, str] = {f.name: f.default_preset for f in exported()}
REQUIRED_FILES: dict[str, tuple[str, ...]] = {f.name: f.required_files for f in exported()}

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Source:
    kind: str  # "hub" | "local" | "random"
    ref: str  # hub id, absolute local path, or preset name
    family: str | None = field(default=None, compare=False)  # set by parse_source
    hub: str | None = None  # "ms" | "hf" for kind "hub"
    revision: str | None = None  # a hub revision (branch, tag, commit); None: the hub's default

    def __post_init__(self):
        if self.kind not in ("hub", "local", "random"):
            raise ValueError(f"source kind must be hub, local or random, not {self.kind!r}")
        if self.kind == "hub" and self.hub is None:
            object.__setattr__(self, "hub", hub.MS)

    def describe(self) -> dict:
        """``{"kind", "ref"}`` (and, for a hub, ``hub`` and ``revision``) for manifests."""
        out = {"kind": self.kind, "ref": self.ref}
        if self.kind == "hub":
            out.update(hub=self.hub, revision=self.revision)
        return out

    def __str__(self) -> str:
        if self.kind == "random":
            return f"random:{self.ref}"
        if self.kind == "hub":
            return f"{self.hub}:{self.ref}" + (f"@{self.revision}" if self.revision else "")
        return self.ref


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {list(FAMILIES)}")


def alternatives(family: str) -> str:
    fam = get(family)
    presets = ", ".join(f"'random:{p}'" for p in fam.presets)
    return (f"a local directory holding the model's files ({', '.join(fam.required_files)}; configuration.json "
            f"optional), or random weights of the real architecture ({presets}; outputs are then meaningless)")


def _grammar(family: str) -> str:
    fam = get(family)
    return ("'random' or " + ", ".join(f"'random:{p}'" for p in fam.presets)
            + ", a model directory (absolute or ./relative path), or a hub id such as "
            + " / ".join(repr(i) for i in fam.hub_ids) + " ('ms:' / 'hf:' names the hub)")


def parse_source(text: str, family: str, *, default_preset: str | None = None,
                 revision: str | None = None) -> Source:
    """Parse a weight source for ``family``.

    * ``random`` (the family's released size, or ``default_preset``) or ``random:<preset>``;
    * ``local:<path>``, or a path: anything starting with ``/``, ``.`` or ``~``, or naming an existing
      directory. It must be an existing directory (absolute path in the result);
    * ``hub:<id>``, ``ms:<id>``, ``hf:<id>``, an ``owner/name`` id, or a bare name FunASR maps to one
      (``emotion2vec_plus_large``). An id known to belong to another family is refused. ``revision``
      pins it (a hub source only).
    """
    _check_family(family)
    fam = get(family)
    if not isinstance(text, str) or not text.strip():
        raise SourceError(f"empty {family} weight source; expected {_grammar(family)}")
    s = text.strip()
    low = s.lower()

    def no_revision(kind: str) -> None:
        if revision:
            raise SourceError(f"--revision {revision!r} pins a hub id; {text!r} is a {kind} source")

    if low == "random" or low.startswith("random:"):
        preset = s.split(":", 1)[1].strip() if ":" in s else (default_preset or fam.default_preset)
        if preset not in fam.presets:
            raise SourceError(f"unknown {family} preset {preset!r} in {text!r}; choose from "
                              + ", ".join(f"random:{p}" for p in fam.presets))
        no_revision("random")
        return Source("random", preset, family)

    explicit_local = low.startswith("local:")
    if explicit_local or s.startswith(("/", ".", "~")) or (os.sep in s and Path(s).expanduser().exists()):
        raw = s[len("local:"):].strip() if explicit_local else s
        no_revision("local")
        return Source("local", str(_existing_dir(raw, family)), family)

    explicit_hub = low.startswith(("hub:", "ms:", "hf:"))
    if not explicit_hub and Path(s).is_dir():  # a relative directory name such as "models/sv"
        no_revision("local")
        return Source("local", str(Path(s).resolve()), family)
    ident = s[len("hub:"):].strip() if low.startswith("hub:") else s
    known = {i: h for f in _REGISTRY.values() for i, h in f.hub_ids.items()}
    which, ident = hub.hub_of(ident, known)
    ident = HUB_ALIASES.get(ident, ident)
    if ident in known and known[ident] != which and not low.startswith(("ms:", "hf:")):
        which = known[ident]
    if _HUB_ID_RE.match(ident):
        for other in _REGISTRY.values():
            if other.name != family and ident in other.hub_ids:
                raise SourceError(f"{ident!r} is a {other.name} model, not a {family} one; "
                                  f"{family} hub ids: {', '.join(fam.hub_ids)}")
        return Source("hub", ident, family, hub=which, revision=revision or None)
    raise SourceError(f"cannot read {text!r} as a {family} weight source; expected {_grammar(family)}")


def _existing_dir(raw: str, family: str) -> Path:
    p = Path(raw).expanduser()
    files = ", ".join(get(family).required_files)
    if not p.exists():
        raise SourceError(f"{family} model directory {raw!r} does not exist ({p.resolve()}); it should hold {files}")
    if not p.is_dir():
        raise SourceError(f"{family} weight source {raw!r} is a file, not a model directory; "
                          f"give the directory holding {files}")
    return p.resolve()


def locate_files(family: str, model_dir: str | os.PathLike) -> ModelFiles:
    """Which file of ``model_dir`` plays which part (the family's ``locate``)."""
    _check_family(family)
    return get(family).locate(Path(model_dir))


def resolve(source: Source, cache_dir: Path | None = None, probe_timeout: float = 3.0, *,
            endpoint: str | None = None) -> Path | None:
    """Make a source usable: hub -> the downloaded (or cached) model directory, local -> the checked
    directory, random -> None. Raises :class:`SourceUnavailable` (hub unreachable, download failed) or
    :class:`MissingModelFiles` (a folder that lacks files, when the source's family is known)."""
    if source.kind == "random":
        return None
    if source.kind == "local":
        root = Path(source.ref).expanduser().resolve()
        if source.family:
            return locate_files(source.family, root).root
        if not root.is_dir():
            raise MissingModelFiles(f"model directory {root} does not exist", [str(root)])
        return root
    alts = (alternatives(source.family) if source.family else
            "a local directory holding the model's files, or random weights ('random:<preset>')")
    path = hub.fetch(source.hub or hub.MS, source.ref, alternatives=alts, revision=source.revision,
                     cache_dir=cache_dir, probe_timeout=probe_timeout, endpoint=endpoint)
    if source.family:
        locate_files(source.family, path)
    return path


def load_local_model(family: str, model_dir: str | os.PathLike, *, hash_weights: bool = True,
                     trust_checkpoint: bool = False) -> LoadedModel:
    """Build ``family``'s FunASR model from ``model_dir`` and load its weights as FunASR does (eval mode)."""
    _check_family(family)
    return get(family).load(Path(model_dir), trust_checkpoint=trust_checkpoint, hash_weights=hash_weights)


def detect_preset(family: str, arch_config: dict) -> str:
    """Name of the preset with the same architecture size, else ``"custom"``."""
    return get(family).detect_preset(arch_config)


def save_local_layout(model, family: str, out_dir: Path, **assets) -> Path:
    """Write ``model`` (an in-memory FunASR model of ``family``) as a folder in the hub's layout."""
    _check_family(family)
    return get(family).save_layout(model, Path(out_dir), **assets)


def export_from_source(family: str, source: Source | str, out_dir: Path, *, seed: int = 0,
                       cache_dir: Path | None = None, probe_timeout: float = 3.0, endpoint: str | None = None,
                       verify: bool = True, trust_checkpoint: bool = False) -> dict:
    """Resolve ``source`` and export ``family`` from it into ``out_dir``; returns the manifest. A hub
    source's manifest records the sha256 of every file downloaded (``source["sha256"]``)."""
    _check_family(family)
    src = parse_source(source, family) if isinstance(source, str) else source
    if src.family is None:
        src = Source(src.kind, src.ref, family, hub=src.hub, revision=src.revision)
    model_dir = resolve(src, cache_dir, probe_timeout, endpoint=endpoint)
    return export_resolved(family, src, model_dir, out_dir, seed=seed, verify=verify,
                           trust_checkpoint=trust_checkpoint)


def export_resolved(family: str, src: Source, model_dir: Path | None, out_dir: Path, *, seed: int = 0,
                    verify: bool = True, trust_checkpoint: bool = False) -> dict:
    """Export ``family`` from a source `resolve` has already turned into ``model_dir`` (None: random)."""
    if src.family is None:
        src = Source(src.kind, src.ref, family, hub=src.hub, revision=src.revision)
    fam = get(family)
    described = src.describe()
    if src.kind == "random":
        return fam.export(out_dir, preset=src.ref, seed=seed, verify=verify, source=described)
    if src.kind == "hub" and model_dir is not None:
        described["sha256"] = hub.folder_digest(model_dir)
    return fam.export(out_dir, seed=seed, verify=verify, model_dir=model_dir, source=described,
                      trust_checkpoint=trust_checkpoint)


__all__ = [
    "DEFAULT_PRESETS", "FAMILIES", "HUB_ALIASES", "HUB_IDS", "LoadedModel", "MissingModelFiles", "ModelFiles",
    "PRESET_NAMES", "REQUIRED_FILES", "Source", "SourceError", "SourceUnavailable", "alternatives",
    "detect_preset", "export_from_source", "export_resolved", "hub_endpoint", "load_local_model", "locate_files", "model_kwargs",
    "parse_source", "probe_endpoint", "read_checkpoint", "read_config", "resolve", "save_local_layout",
]
