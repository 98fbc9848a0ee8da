"""SenseVoice's torch-free parts: the stand-in tokenizer, decode assets and the decoder module's imports."""
from __future__ import annotations

import subprocess
import sys

import pytest

spm = pytest.importorskip("sentencepiece")

from toneserve.export import sensevoice_tokenizer as svt  # noqa: E402


def test_decode_assets_missing_tag_raises(tmp_path):
    import io

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["hello world this is a plain tokenizer"] * 50),
        model_writer=buf, model_type="bpe", vocab_size=40, user_defined_symbols=["<|zh|>", "<|en|>"],
        hard_vocab_limit=False, minloglevel=2,
    )
    (tmp_path / "plain.model").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"<\|yue\|>"):
        svt.decode_assets(tmp_path / "plain.model", lid_dict={"auto": 0}, textnorm_dict={"woitn": 15})


def test_standin_tokenizer_is_deterministic_and_exact_size(tmp_path):
    a, b = tmp_path / "a.model", tmp_path / "b.model"
    svt.train_standin_bpe(a, 320, seed=0)
    svt.train_standin_bpe(b, 320, seed=0)
    assert a.read_bytes() == b.read_bytes()
    assert spm.SentencePieceProcessor(model_file=str(a)).GetPieceSize() == 320


def test_decode_module_imports_without_torch():
    code = (
        "import sys, toneserve.model_repository.runners.sensevoice_decode as d; "
        "assert 'torch' not in sys.modules and 'funasr' not in sys.modules, 'torch imported'; "
        "print(d.FRAME_SHIFT_MS)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "60"
