"""emotion2vec+'s tokens file: its labels, read as FunASR reads them (standard library only)."""
from __future__ import annotations

import os

from toneserve.export.errors import SourceError

# The tokens file of iic/emotion2vec_plus_{seed,base,large}, line for line (9 lines, no trailing
# newline). Written next to random weights so that they are read exactly the way a real model's file is.
REAL_TOKENS: tuple[str, ...] = (
    "生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral", "其他/other", "难过/sad",
    "吃惊/surprised", "<unk>",
)
# The labels a tokens file must give, in this order: an export whose tokens file says otherwise is
# refused rather than served with its classes mislabelled.
EXPECTED_LABELS: tuple[str, ...] = (
    "angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown",
)


def read_tokens(path: str | os.PathLike) -> list[str]:
    """Token lines as FunASR's ``BaseTokenizer`` reads a ``.txt`` token list (``line.rstrip()``)."""
    with open(path, "r", encoding="utf-8") as f:
        return [line.rstrip() for line in f]


def token_to_label(token: str) -> str:
    """``"生气/angry" -> "angry"``, ``"<unk>" -> "unknown"``; anything else is returned as is."""
    if token == "<unk>":
        return "unknown"
    if "/" in token:
        return token.rsplit("/", 1)[1]
    return token


def read_labels(path: str | os.PathLike) -> list[str]:
    """Plain English labels, in model output order, from a tokens file."""
    labels = [token_to_label(t) for t in read_tokens(path)]
    if not labels or any(not lab for lab in labels):
        raise SourceError(f"{path}: empty tokens file or empty token line")
    return labels
