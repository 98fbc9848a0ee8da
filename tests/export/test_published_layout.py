"""The published-layout folders the other tests export: FunASR's own AutoModel loads every tensor of them
(the layouts and key names are the hub's), and the stand-in tokenizer holds the real pieces at their ids."""
from __future__ import annotations

import json

import sentencepiece as spm
import torch

from tests.published_layout import EMOTION2VEC_PREFIX, SENSEVOICE_BPE_NAME, read_real_tokens


def _auto_model(path):
    from funasr import AutoModel

    return AutoModel(model=str(path), device="cpu", disable_update=True, log_level="ERROR")


def test_emotion2vec_folder_is_the_hub_layout_and_funasr_loads_all_of_it(published_emotion2vec):
    names = sorted(p.name for p in published_emotion2vec.iterdir() if not p.name.startswith("."))
    assert names == ["config.yaml", "configuration.json", "model.pt", "tokens.txt"]
    stored = torch.load(published_emotion2vec / "model.pt", map_location="cpu", weights_only=True)
    assert list(stored) == ["model"]
    stored = stored["model"]
    assert {k for k in stored if not k.startswith(EMOTION2VEC_PREFIX)} == {"proj.weight", "proj.bias"}
    model = _auto_model(published_emotion2vec).model
    state = model.state_dict()
    assert len(state) == len(stored)
    for key, value in state.items():
        assert torch.equal(value, stored[key if key.startswith("proj.") else EMOTION2VEC_PREFIX + key]), key
    assert model.proj.out_features == 9


def test_sensevoice_folder_is_the_hub_layout_and_funasr_loads_all_of_it(published_sensevoice):
    names = sorted(p.name for p in published_sensevoice.iterdir() if not p.name.startswith("."))
    assert names == ["am.mvn", SENSEVOICE_BPE_NAME, "config.yaml", "configuration.json", "model.pt"]
    metas = json.loads((published_sensevoice / "configuration.json").read_text())["file_path_metas"]
    assert metas["tokenizer_conf"]["bpemodel"] == SENSEVOICE_BPE_NAME
    sp = spm.SentencePieceProcessor(model_file=str(published_sensevoice / SENSEVOICE_BPE_NAME))
    pieces = read_real_tokens()
    assert [sp.IdToPiece(i) for i in range(sp.GetPieceSize())] == pieces
    assert sp.DecodeIds([24885, 25004, 24993, 25017]) == "<|en|><|NEUTRAL|><|Speech|><|woitn|>"
    stored = torch.load(published_sensevoice / "model.pt", map_location="cpu", weights_only=True)
    model = _auto_model(published_sensevoice).model
    state = model.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[k], stored[k]) for k in state)
    assert model.ctc.ctc_lo.out_features == 25055
