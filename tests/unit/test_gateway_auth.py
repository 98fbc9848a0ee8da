"""API key files: their mistakes are clear errors."""
from __future__ import annotations

import pytest

from toneserve.gateway.auth import KeyFileError, read_keys


def test_key_file_mistakes_are_clear(tmp_path):
    bad = tmp_path / "keys.txt"
    for text, words in [("", "no keys"), ("onlykey\n", "expected `KEY TENANT`"), ("a t\na u\n", "twice")]:
        bad.write_text(text)
        with pytest.raises(KeyFileError, match=words):
            read_keys(bad)
    with pytest.raises(KeyFileError, match="cannot read"):
        read_keys(tmp_path / "missing.txt")
