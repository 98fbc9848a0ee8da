"""Weight source specs (`random:tiny`, a local directory, a hub id) parsed and checked, before any export."""
from __future__ import annotations

import pytest

from toneserve.export import sources
from toneserve.export.sources import Source


def test_parse_random():
    assert sources.parse_source("random:tiny", "emotion2vec") == Source("random", "tiny")
    assert sources.parse_source("random:large", "emotion2vec").ref == "large"
    assert sources.parse_source("random", "emotion2vec") == Source("random", "base")
    assert sources.parse_source(" random ", "sensevoice") == Source("random", "small")
    assert sources.parse_source("random", "sensevoice", default_preset="tiny").ref == "tiny"
    assert sources.parse_source("random:small", "sensevoice").describe() == {"kind": "random", "ref": "small"}
    with pytest.raises(ValueError, match="random:tiny.*random:small"):
        sources.parse_source("random:large", "sensevoice")  # emotion2vec-only size
    with pytest.raises(ValueError, match="unknown emotion2vec preset"):
        sources.parse_source("random:huge", "emotion2vec")


def test_parse_local(tmp_path, monkeypatch):
    d = tmp_path / "my model"
    d.mkdir()
    src = sources.parse_source(str(d), "sensevoice")
    assert src == Source("local", str(d.resolve())) and src.family == "sensevoice"
    assert src.describe() == {"kind": "local", "ref": str(d.resolve())}
    assert sources.parse_source(f"local:{d}", "emotion2vec").ref == str(d.resolve())
    monkeypatch.chdir(tmp_path)
    for rel in ("./my model", "my model"):  # relative: an existing directory, made absolute
        assert sources.parse_source(rel, "emotion2vec") == Source("local", str(d.resolve()))
    # A path that does not exist is said to be missing, not sent to the hub as an id.
    for missing in ("/no/such/dir", "./nope", "~/surely-not-here-123", "local:nope"):
        with pytest.raises(ValueError, match="does not exist"):
            sources.parse_source(missing, "emotion2vec")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a model directory"):
        sources.parse_source("./model.pt", "emotion2vec")


def test_parse_hub():
    assert sources.parse_source("iic/SenseVoiceSmall", "sensevoice") == Source("hub", "iic/SenseVoiceSmall")
    assert sources.parse_source("hub:iic/emotion2vec_plus_large", "emotion2vec").ref == "iic/emotion2vec_plus_large"
    assert sources.parse_source("emotion2vec_plus_base", "emotion2vec") == Source("hub", "iic/emotion2vec_plus_base")
    assert sources.parse_source("someone/emotion2vec_finetuned", "emotion2vec").kind == "hub"
    with pytest.raises(ValueError, match="is a sensevoice model"):
        sources.parse_source("iic/SenseVoiceSmall", "emotion2vec")
    with pytest.raises(ValueError, match="is a emotion2vec model"):
        sources.parse_source("iic/emotion2vec_plus_base", "sensevoice")
    assert set(sources.HUB_IDS) == {"emotion2vec", "sensevoice", "speaker", "text_sentiment"}


@pytest.mark.parametrize("text", ["", "   ", "what is this", "iic/", "a/b/c", "http://x/y", "random:"])
def test_parse_nonsense(text):
    with pytest.raises(ValueError) as e:
        sources.parse_source(text, "emotion2vec")
    assert "random" in str(e.value)


def test_parse_unknown_family():
    with pytest.raises(ValueError, match="unknown model family"):
        sources.parse_source("random", "whisper")
    with pytest.raises(ValueError):
        Source("download", "x")
