"""SenseVoice tokenizer stand-in and decode assets.

The real tokenizer (``chn_jpn_yue_eng_ko_spectok.bpe.model``) is a sentencepiece BPE
model: <unk>/<s>/</s> at ids 0/1/2 and the rich-transcription tags as "<|name|>" pieces.
When it is not available, ``train_standin_bpe`` trains a small BPE model on a generated
English + Chinese corpus with the same tags as user-defined symbols, so the rest of the
pipeline (ids looked up by name, CTC blank 0, detokenisation) runs unchanged.

Decode assets are always derived from the tokenizer's own vocabulary: nothing here is an
id table.  Torch-free.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import sentencepiece as spm

from toneserve.export.errors import SourceError
from toneserve.model_repository.runners.sensevoice_decode import (
    OPTIONAL_EVENT_TAGS,
    TAG_FAMILIES,
    all_special_pieces,
    tag_piece,
)

# FunASR SenseVoiceSmall: blank_id=0 (constructor default, not overridden by its
# config.yaml) and funasr.models.ctc.CTC uses torch.nn.CTCLoss(blank=0).
CTC_BLANK_ID = 0

_EN_SENTENCES = [
    "thank you for calling customer service how can i help you today",
    "i would like to check the status of my order please",
    "the package was supposed to arrive on monday but it never came",
    "could you please repeat the account number one more time",
    "we are sorry for the inconvenience and we will refund the payment",
    "my internet connection keeps dropping every evening",
    "let me transfer you to the billing department",
    "is there anything else i can help you with",
    "the weather is lovely and the meeting starts at nine",
    "she said the new phone works much better than the old one",
    "please hold while i look up your information",
    "i am really happy with the support i received",
    "this is the third time i have called about the same problem",
    "our records show that the invoice was paid last week",
    "have a wonderful afternoon and goodbye",
    "speech recognition with emotion and sentiment analysis",
]
_ZH_SENTENCES = [
    "您好欢迎致电客户服务中心请问有什么可以帮您",
    "我想查询一下我的订单状态",
    "快递本来应该星期一到但是一直没有收到",
    "请您再重复一遍您的账号",
    "非常抱歉给您带来不便我们会尽快退款",
    "我家的网络每天晚上都会断开",
    "我帮您转接到账单部门",
    "请问还有其他可以帮您的吗",
    "今天天气很好会议九点开始",
    "她说新手机比旧手机好用多了",
    "请稍等我查一下您的信息",
    "我对这次的服务非常满意",
    "同样的问题我已经打了三次电话了",
    "记录显示发票上周已经付清",
    "祝您下午愉快再见",
    "语音识别情感分析和文本情绪",
]


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    en_words = sorted({w for s in _EN_SENTENCES for w in s.split()})
    zh_chars = sorted({c for s in _ZH_SENTENCES for c in s})
    lines = list(_EN_SENTENCES) + list(_ZH_SENTENCES)
    for i in range(n_lines):
        kind = i % 3
        if kind == 0:
            lines.append(rng.choice(_EN_SENTENCES))
        elif kind == 1:
            lines.append(" ".join(rng.choice(en_words) for _ in range(rng.randint(3, 12))))
        else:
            s = rng.choice(_ZH_SENTENCES)
            lines.append(s if rng.random() < 0.5 else "".join(rng.choice(zh_chars) for _ in range(rng.randint(4, 16))))
    return lines


def train_standin_bpe(
    out_path: str | os.PathLike,
    vocab_size: int,
    seed: int = 0,
    max_bpe_pieces: int = 400,
) -> int:
    """Train a sentencepiece BPE stand-in with exactly ``vocab_size`` pieces.

    Layout: <unk>=0 (also the CTC blank, as in SenseVoice), <s>=1, </s>=2, the SenseVoice
    tags as user-defined symbols, up to ``max_bpe_pieces`` learned pieces, and, when
    ``vocab_size`` is larger than the corpus supports (e.g. 25055 for the "small" preset),
    unused "<|reserved_N|>" symbols so the CTC head has the real model's width.
    Deterministic: same arguments give byte-identical files.  Returns the piece count.
    """
    specials = all_special_pieces(include_optional=True)
    n_fixed = 3 + len(specials)
    if vocab_size < n_fixed + 120:
        raise ValueError(f"vocab_size {vocab_size} too small: need >= {n_fixed + 120}")
    n_bpe = min(vocab_size - n_fixed, max_bpe_pieces)
    fillers = [f"<|reserved_{i}|>" for i in range(vocab_size - n_fixed - n_bpe)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(seed)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        user_defined_symbols=specials + fillers,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        hard_vocab_limit=True,
        minloglevel=2,
    )
    data = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=data)
    if sp.GetPieceSize() != vocab_size:
        raise RuntimeError(f"stand-in tokenizer has {sp.GetPieceSize()} pieces, wanted {vocab_size}")
    Path(out_path).write_bytes(data)
    return vocab_size


def decode_assets(
    bpe_model_path: str | os.PathLike,
    *,
    blank_id: int = CTC_BLANK_ID,
    lid_dict: dict[str, int],
    textnorm_dict: dict[str, int],
) -> dict[str, Any]:
    """Decode assets from the tokenizer's own vocabulary.

    Tag ids are looked up by piece name; a missing required tag raises ValueError.
    ``language_query_ids`` / ``textnorm_query_ids`` are the encoder INPUT ids (rows of
    FunASR's query embedding), taken from the FunASR model's lid_dict / textnorm_dict.
    """
    sp = spm.SentencePieceProcessor()
    if not sp.Load(str(bpe_model_path)):
        raise SourceError(f"cannot load sentencepiece model {bpe_model_path}")
    n = sp.GetPieceSize()
    tokens = [sp.IdToPiece(i) for i in range(n)]
    index = {p: i for i, p in enumerate(tokens)}

    def lookup(name: str, required: bool = True) -> int | None:
        piece = tag_piece(name)
        i = index.get(piece)
        if i is None:
            if required:
                raise SourceError(f"special token {piece!r} missing from tokenizer {bpe_model_path}")
            return None
        return i

    assets: dict[str, Any] = {"blank_id": int(blank_id)}
    if not 0 <= blank_id < n:
        raise ValueError(f"blank_id {blank_id} outside vocabulary of {n}")
    for family, names in TAG_FAMILIES.items():
        assets[family] = {name: lookup(name) for name in names}
    for name in OPTIONAL_EVENT_TAGS:
        i = lookup(name, required=False)
        if i is not None:
            assets["event"][name] = i
    tag_ids = [i for fam in TAG_FAMILIES for i in assets[fam].values()]
    if blank_id in tag_ids:
        raise ValueError(f"blank_id {blank_id} collides with a tag token")

    assets["language_query_ids"] = {k: int(v) for k, v in lid_dict.items()}
    assets["textnorm_query_ids"] = {k: int(v) for k, v in textnorm_dict.items()}
    assets["vocab_size"] = n
    assets["blank_piece"] = tokens[blank_id]
    assets["tokens"] = tokens
    assets["bpe_model"] = Path(bpe_model_path).name
    assets["bpe_model_path"] = str(Path(bpe_model_path).resolve())
    return assets


__all__ = ["CTC_BLANK_ID", "decode_assets", "train_standin_bpe"]
