"""The contract every model family implements once, and the one manifest schema they all write.

A family (emotion2vec+, SenseVoice, silero VAD) answers, for itself only: its presets, the files a
model folder of it holds, the hub ids it is published under, how to build it with random weights, how
to load it from a folder (through FunASR, as ``AutoModel`` does), how to export its graphs, the inputs
and gates its parity is judged on, and what the serving side reads from its manifest. Nothing outside
a family's module switches on its name: callers look the family up in the registry
(``toneserve.export.families``) and ask it.

Standard library only: the registry, the family modules and the exporters all import this module, and
it imports none of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

MANIFEST_SCHEMA = 3


@dataclass(frozen=True)
class ModelFiles:
    """Which file of a model folder plays which part: ``parts`` maps a role (``config``, ``weights``,
    ``tokens``, ``bpe_model``, ``cmvn``) to its path."""

    family: str
    root: Path
    parts: dict[str, Path]

    @property
    def config(self) -> Path:
        return self.parts["config"]

    @property
    def weights(self) -> Path:
        return self.parts["weights"]

    def __getattr__(self, role: str) -> Path | None:  # files.tokens, files.bpe_model, files.cmvn
        if role.startswith("_") or role == "parts":  # "parts" itself: not set yet (copy, unpickling)
            raise AttributeError(role)
        return self.parts.get(role)

    @property
    def configuration_json(self) -> Path | None:
        path = self.root / "configuration.json"
        return path if path.is_file() else None


@dataclass
class LoadedModel:
    """A family's FunASR model built from a folder's config and loaded with its weights."""

    family: str
    model: Any
    files: ModelFiles
    config: dict
    preset: str  # the preset whose architecture this is, or "custom"
    arch_config: dict
    load: dict  # what loading did: tensors loaded, left at init, scope_map used
    weights_sha256: str


@dataclass(frozen=True)
class Tensor:
    """A graph input or output: dims are ints (static) or names (dynamic: "batch", "frames", ...)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def describe(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class Parity:
    """How an exported graph was judged against its reference: the largest absolute error per checked
    output, and the gate (largest error allowed) of each."""

    reference: str
    max_abs_err: dict[str, float]
    gates: dict[str, float]
    inputs: str = ""

    def passed(self) -> bool:
        return all(value <= self.gates[name] for name, value in self.max_abs_err.items())


@dataclass
class Manifest:
    """What an export wrote, for every family alike (``manifest.json``).

    ``serving`` holds the family's own facts that the model repository reads (labels, vocabulary size,
    feature size ...); everything else has the same meaning in every family."""

    model: str  # the family's name
    preset: str
    source: dict  # {"kind": "hub" | "local" | "random" | "package", "ref", ...}
    seed: int
    files: dict[str, str]  # name -> sha256 of every file the export wrote (manifest.json aside)
    graphs: dict[str, dict]  # ONNX file -> {"inputs": [...], "outputs": [...]}
    parity: dict | None  # Parity as a dict, or None when not verified
    serving: dict
    config: dict
    config_source: str
    unconfirmed: list[str]
    exporter: dict
    versions: dict[str, str]
    export_seconds: float
    weights: dict | None = None  # for loaded weights: file, sha256, folder, what loading did
    notes: dict[str, str] = field(default_factory=dict)  # choices that change results, in words
    schema: int = MANIFEST_SCHEMA

    @property
    def weights_origin(self) -> str:
        return str(self.source["kind"])

    def to_dict(self) -> dict:
        out = asdict(self)
        out["weights_origin"] = self.weights_origin
        return out


MANIFEST_KEYS = frozenset(Manifest.__dataclass_fields__) | {"weights_origin"}


def check_manifest(manifest: dict) -> None:
    """Raise ValueError unless ``manifest`` has the schema's keys (``variants`` may be added later)."""
    keys = set(manifest) - {"variants"}
    if keys != MANIFEST_KEYS:
        raise ValueError(f"manifest keys differ from the schema: missing {sorted(MANIFEST_KEYS - keys)}, "
                         f"unknown {sorted(keys - MANIFEST_KEYS)}")
    if manifest["schema"] != MANIFEST_SCHEMA:
        raise ValueError(f"manifest schema {manifest['schema']}, expected {MANIFEST_SCHEMA}")


class ModelFamily(Protocol):
    """What each family implements, once (see the module docstring)."""

    name: str
    title: str  # in messages: "emotion2vec+", "SenseVoiceSmall"
    presets: dict[str, dict]
    default_preset: str  # what a bare "random" means: the released size
    size_presets: dict[str, str]  # `toneserve export --size` -> preset
    default_hub_id: str | None  # what `--size base` tries first
    hub_ids: dict[str, str]  # known ids -> "ms" | "hf"
    hub_aliases: dict[str, str]  # bare names -> ids
    model_class: str | None  # the FunASR model class its config.yaml names
    required_files: tuple[str, ...]
    graph: str | None  # the fp32 graph variants derive from; None: nothing to derive
    exported: bool  # whether `toneserve export` writes a folder for it
    # How a variant's outputs are judged against the fp32 graph's (gates.GATES):
    # "classification" (one label per clip) or "ctc_frames" (one token per encoder frame); None: no graph.
    gate_kind: str | None

    def unconfirmed(self, preset: str) -> list[str]: ...

    def locate(self, root: Path) -> ModelFiles: ...

    def arch_config(self, config: dict) -> dict: ...

    def detect_preset(self, arch_config: dict) -> str: ...

    def build_random(self, preset: str, seed: int = 0) -> Any: ...

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel: ...

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict: ...

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]: ...

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict: ...  # the graph's inputs for audio

    def after_export(self, folder: Path, manifest: dict) -> None: ...

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path: ...


def source_entry(source: dict | None, model_dir: Path | None, preset: str) -> dict:
    """The manifest's ``source``: given, or derived from ``model_dir`` / ``preset``; its kind must agree
    with whether ``model_dir`` is given."""
    if source is None:
        if model_dir is not None:
            return {"kind": "local", "ref": str(Path(model_dir).expanduser().resolve())}
        return {"kind": "random", "ref": preset}
    source = dict(source)
    if model_dir is not None and source.get("kind") not in ("hub", "local"):
        raise ValueError(f"source {source} does not match a model_dir (kind must be hub or local)")
    if model_dir is None and source.get("kind") != "random":
        raise ValueError(f"source {source} needs model_dir (the resolved model directory)")
    if source["kind"] == "random" and source.get("ref") != preset:
        raise ValueError(f"source {source} names another preset than {preset!r}")
    return source


def loaded_weights_entry(loaded: LoadedModel) -> dict:
    """The manifest's ``weights`` for a loaded folder."""
    return {"file": loaded.files.weights.name, "sha256": loaded.weights_sha256,
            "model_dir": str(loaded.files.root), **loaded.load}
