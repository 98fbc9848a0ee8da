"""silero VAD as a model family: real weights that ship in the silero-vad wheel as an ONNX graph.

Nothing to build, load through FunASR, or convert: the model repository serves the wheel's own file,
so ``toneserve export`` writes no folder for it (``exported = False``). Its export, when asked for,
copies the graph and writes the same manifest as every family, which is what ``--check`` and the
family contract's tests read.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_json, sha256_file, versions
from toneserve.export.errors import SourceError
from toneserve.export.family import LoadedModel, Manifest, ModelFiles, Parity, Tensor

GRAPH = "silero_vad.onnx"


def wheel_graph() -> Path:
    """The graph the installed silero-vad wheel ships (MIT), 8 and 16 kHz."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise SourceError("the silero-vad package is not installed (pip install silero-vad==6.2.3)")
    return Path(spec.origin).parent / "data" / GRAPH


class SileroVadFamily:
    name = "silero_vad"
    title = "silero VAD"
    presets = presets.SILERO_VAD
    default_preset = "wheel"
    size_presets = {"tiny": "wheel", "base": "wheel"}
    default_hub_id: str | None = None
    hub_ids: dict[str, str] = {}
    hub_aliases: dict[str, str] = {}
    model_class: str | None = None
    required_files = (GRAPH,)
    graph: str | None = None  # no variants: the wheel's graph is served as it is
    exported = False
    gate_kind: str | None = None

    def unconfirmed(self, preset: str) -> list[str]:
        return list(presets.SILERO_VAD_UNCONFIRMED.get(preset, []))

    def locate(self, root: Path) -> ModelFiles:
        from toneserve.export.loading import locate

        return locate(self.name, root, {"weights": ((), (GRAPH,))}, self.required_files)

    def arch_config(self, config: dict) -> dict:
        return {}

    def detect_preset(self, arch_config: dict) -> str:
        return self.default_preset

    def _no_funasr(self, what: str) -> SourceError:
        return SourceError(f"silero VAD has no {what}: its real weights ship in the silero-vad wheel, "
                           f"served as they are")

    def build_random(self, preset: str, seed: int = 0) -> Any:
        raise self._no_funasr("random weights")

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel:
        raise self._no_funasr("FunASR model folder")

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict:
        if model_dir is not None:
            raise self._no_funasr("model folder to export from")
        started = time.perf_counter()
        src = wheel_graph()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / GRAPH)
        digest = sha256_file(out / GRAPH)
        parity = Parity(reference=f"the wheel's {GRAPH}", max_abs_err={"bytes_differ": float(digest != sha256_file(src))},
                        gates={"bytes_differ": 0.0}, inputs="the file itself (a copy, nothing converted)")
        version = metadata.version("silero-vad")
        manifest = Manifest(
            model=self.name, preset=self.default_preset,
            source=source or {"kind": "package", "ref": f"silero-vad {version}"}, seed=seed,
            files={GRAPH: digest},
            graphs={GRAPH: {"inputs": [Tensor("input", "float32", ("batch", "samples")).describe(),
                                       Tensor("state", "float32", (2, "batch", 128)).describe(),
                                       Tensor("sr", "int64", ()).describe()],
                            "outputs": [Tensor("output", "float32", ("batch", 1)).describe(),
                                        Tensor("stateN", "float32", (2, "batch", 128)).describe()]}},
            parity=asdict(parity), serving={"sample_rate": 16000, "package_version": version},
            config={}, config_source=f"silero-vad {version} wheel", unconfirmed=self.unconfirmed(self.default_preset),
            exporter={"copied": str(src.name)}, versions=versions(("silero-vad", "onnxruntime")),
            export_seconds=round(time.perf_counter() - started, 3)).to_dict()
        atomic_write_json(out / "manifest.json", manifest)
        return manifest

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]:
        return {}, {}

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict:
        raise NotImplementedError("silero VAD has no derived variants to feed")

    def after_export(self, folder: Path, manifest: dict) -> None:
        pass

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path:
        raise self._no_funasr("folder layout to write")


SILERO_VAD = SileroVadFamily()
