"""The model-family contract, read without torch: every family implements it, nothing outside a family's
module switches on its name, the export package has no import cycle, hub ids go to the right hub, and an
unreachable hub fails within seconds naming itself and the alternatives."""
from __future__ import annotations

import ast
import importlib
import socket
import time
from pathlib import Path

import pytest

from tests.support import ROOT
from toneserve.export import presets, sources
from toneserve.export.errors import SourceError, SourceUnavailable
from toneserve.export.families import FAMILIES, by_hub_id, by_model_class, exported
from toneserve.export.family import Manifest, ModelFamily, check_manifest

EXPORT = ROOT / "export"


def _members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(protocol.__annotations__)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_implements_the_contract(name):
    family = FAMILIES[name]
    missing = sorted(m for m in _members(ModelFamily) if not hasattr(family, m))
    assert not missing, f"{name} lacks {missing}"
    assert family.name == name and family.default_preset in family.presets
    assert set(family.size_presets) == {"tiny", "base"} and set(family.size_presets.values()) <= set(family.presets)
    if family.model_class is not None:
        assert by_model_class(family.model_class) is family
    for ident in family.hub_ids:
        assert by_hub_id(ident) is family


def test_the_families_exported_and_silero_ships_in_its_wheel():
    assert [f.name for f in exported()] == ["emotion2vec", "sensevoice", "speaker", "text_sentiment"]
    assert not FAMILIES["silero_vad"].exported and FAMILIES["silero_vad"].graph is None


def _modules() -> dict[str, Path]:
    return {"toneserve.export." + ".".join(p.relative_to(EXPORT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in EXPORT.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every export module `path` imports, lazily or not (``from a import b`` counts as a.b when a.b is one)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
    return {m for m in out if m in known}


def test_no_import_cycle_in_the_export_package():
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    # A package's __init__ is imported with each of its modules; an edge into it is not a cycle by itself.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)


def test_no_switch_on_a_family_name_outside_its_module():
    """A family's name is compared, or used as a key of a literal table, only in its own module."""
    names = set(FAMILIES)
    wrong = []
    for name, path in _modules().items():
        own = name.rsplit(".", 1)[-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            constants = []
            if isinstance(node, ast.Compare):
                constants = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            elif isinstance(node, ast.Dict):
                constants = [k for k in node.keys if isinstance(k, ast.Constant)]
            for c in constants:
                if c.value in names and c.value != own:
                    wrong.append(f"{path.relative_to(ROOT)}:{c.lineno}: {c.value!r}")
    assert not wrong, "\n".join(wrong)


def test_preset_names_live_in_one_place():
    assert {f.name: f.presets for f in FAMILIES.values()} == {
        "emotion2vec": presets.EMOTION2VEC, "sensevoice": presets.SENSEVOICE, "silero_vad": presets.SILERO_VAD,
        "speaker": presets.SPEAKER, "text_sentiment": presets.TEXT_SENTIMENT}
    large = presets.EMOTION2VEC["large"]
    audio = large["modalities"]["audio"]
    # The published plus_large config.yaml: 8 blocks after a 4-block prenet, width 1024, 16 heads.
    assert (large["embed_dim"], large["depth"], large["num_heads"], audio["prenet_depth"]) == (1024, 8, 16, 4)
    assert any("~300M" in note for note in presets.EMOTION2VEC_UNCONFIRMED["large"])
    assert any("no published config.yaml" in note for note in presets.EMOTION2VEC_UNCONFIRMED["base"])


def test_manifest_schema_is_one():
    manifest = Manifest(model="x", preset="p", source={"kind": "random", "ref": "p"}, seed=0, files={}, graphs={},
                        parity=None, serving={}, config={}, config_source="", unconfirmed=[], exporter={},
                        versions={}, export_seconds=0.0).to_dict()
    check_manifest(manifest)
    assert manifest["weights_origin"] == "random"
    with pytest.raises(ValueError, match="parity_max_abs_err"):
        check_manifest({**manifest, "parity_max_abs_err": {}})


# ------------------------------------------------------------------------------------------- hubs


@pytest.mark.parametrize("text,family,hub,ref", [
    ("iic/SenseVoiceSmall", "sensevoice", "ms", "iic/SenseVoiceSmall"),
    ("FunAudioLLM/SenseVoiceSmall", "sensevoice", "hf", "FunAudioLLM/SenseVoiceSmall"),
    ("emotion2vec/emotion2vec_plus_base", "emotion2vec", "hf", "emotion2vec/emotion2vec_plus_base"),
    ("emotion2vec_plus_large", "emotion2vec", "ms", "iic/emotion2vec_plus_large"),
    ("hf:someone/my_emotion2vec", "emotion2vec", "hf", "someone/my_emotion2vec"),
    ("ms:someone/my_emotion2vec", "emotion2vec", "ms", "someone/my_emotion2vec"),
    ("someone/my_sensevoice", "sensevoice", "ms", "someone/my_sensevoice"),
    ("iic/speech_campplus_sv_zh-cn_16k-common", "speaker", "ms", "iic/speech_campplus_sv_zh-cn_16k-common"),
    ("cam++", "speaker", "ms", "iic/speech_campplus_sv_zh-cn_16k-common"),
    ("lxyuan/distilbert-base-multilingual-cased-sentiments-student", "text_sentiment", "hf",
     "lxyuan/distilbert-base-multilingual-cased-sentiments-student"),
    ("cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual", "text_sentiment", "hf",
     "cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual"),
])
def test_hub_ids_go_to_their_hub(text, family, hub, ref):
    src = sources.parse_source(text, family, revision="v2.0.4")
    assert (src.kind, src.hub, src.ref, src.revision) == ("hub", hub, ref, "v2.0.4")
    assert src.describe() == {"kind": "hub", "ref": ref, "hub": hub, "revision": "v2.0.4"}


def test_revision_pins_only_hub_ids(tmp_path):
    with pytest.raises(SourceError, match="--revision"):
        sources.parse_source("random:tiny", "emotion2vec", revision="v1")
    with pytest.raises(SourceError, match="--revision"):
        sources.parse_source(str(tmp_path), "emotion2vec", revision="v1")
    with pytest.raises(SourceError, match="is a sensevoice model"):
        sources.parse_source("FunAudioLLM/SenseVoiceSmall", "emotion2vec")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text,family,variable,hub_name", [
    ("emotion2vec/emotion2vec_plus_large", "emotion2vec", "HF_ENDPOINT", "Hugging Face"),
    ("FunAudioLLM/SenseVoiceSmall", "sensevoice", "HF_ENDPOINT", "Hugging Face"),
])  # ModelScope's client imports torch: its case is tests/export/test_export_sources.py's
def test_offline_hub_fails_within_seconds_naming_it_and_the_alternatives(tmp_path, monkeypatch, text, family,
                                                                         variable, hub_name):
    monkeypatch.setenv(variable, f"http://127.0.0.1:{_closed_port()}")
    src = sources.parse_source(text, family, revision="main")
    # The client's import (seconds on a busy machine) is not the wait on the network measured here.
    importlib.import_module("huggingface_hub")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as e:
        sources.resolve(src, cache_dir=tmp_path / "empty-cache", probe_timeout=2.0)
    assert time.monotonic() - started < 10
    message = str(e.value)
    assert hub_name in message and src.ref in message and "revision 'main'" in message
    assert "local directory" in message and "random:" in message  # the alternatives
    assert "ModelScope ('ms:<id>')" in message  # the other hub
