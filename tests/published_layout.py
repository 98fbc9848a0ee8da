"""Checkpoint folders in the layouts the hub publishes, with random weights.

``emotion2vec_plus_large(dst)`` and ``sensevoice_small(dst)`` write what ModelScope's
``iic/emotion2vec_plus_large`` and ``iic/SenseVoiceSmall`` hold, file for file and name for name,
from the real text files in ``tests/data/real-model-files`` (see its PROVENANCE.md): the real
``config.yaml`` and ``configuration.json``, the real token list, and a ``model.pt`` of random
weights for the architecture that config describes, stored the way the hub stores it. FunASR's
``AutoModel(model=dst)`` loads either folder as it loads the published one, so an exporter that
reads them differently from FunASR is caught without the real weights.

The folders are big (about 0.66 GB and 0.94 GB of float32 weights): build them once per session.
"""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from omegaconf import OmegaConf

REAL_FILES = Path(__file__).resolve().parent / "data" / "real-model-files"
EMOTION2VEC_FILES = REAL_FILES / "emotion2vec_plus_large"
SENSEVOICE_FILES = REAL_FILES / "SenseVoiceSmall"

SENSEVOICE_BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
SENSEVOICE_VOCAB_SIZE = 25055
# emotion2vec+ checkpoints keep the fairseq wrapper's names: the backbone under "d2v_model." (what the
# config's scope_map tells FunASR to strip) and the classifier as "proj.*", beside it.
EMOTION2VEC_PREFIX = "d2v_model."


def read_real_tokens() -> list[str]:
    """The 25055 pieces of SenseVoiceSmall's sentencepiece model in id order, "▁" restored (the list
    writes it as a space)."""
    text = (SENSEVOICE_FILES / "tokens-from-bpe.txt").read_text(encoding="utf-8")
    pieces = [line.replace(" ", "\u2581") for line in text.split("\n")]
    if pieces and pieces[-1] == "":
        pieces.pop()
    if len(pieces) != SENSEVOICE_VOCAB_SIZE or len(set(pieces)) != len(pieces):
        raise ValueError(f"{SENSEVOICE_FILES / 'tokens-from-bpe.txt'}: {len(pieces)} pieces "
                         f"({len(set(pieces))} distinct), expected {SENSEVOICE_VOCAB_SIZE} distinct")
    return pieces


# ---------------------------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _randomize_constants(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded noise on the parameters FunASR initialises to constants (LayerNorm 1/0, zero biases and
    extra tokens, ALiBi scales), so that a loader which leaves one of them at its initial value, or an
    exporter that drops one, changes the outputs. ALiBi scales stay positive (FunASR clamps them)."""
    for name, p in model.named_parameters():
        if p.numel() > 1 and float(p.detach().std()) > 0:
            continue
        if name.endswith("alibi_scale"):
            p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype))
        else:
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _model_kwargs(config: dict, **extra) -> dict:
    """What ``AutoModel.build_model`` passes the model class: the whole config with ``model_conf`` merged
    in at the top, plus what the tokenizer and frontend give (``vocab_size``, ``input_size``)."""
    kwargs = copy.deepcopy(config)
    kwargs.update(extra)
    return {**copy.deepcopy(config.get("model_conf") or {}), **kwargs}


def _build(cls, kwargs: dict, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**kwargs)
    _randomize_constants(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def _read_config(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def _copy_text(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


# ---------------------------------------------------------------------------------------------
# emotion2vec_plus_large
# ---------------------------------------------------------------------------------------------


def emotion2vec_plus_large(dst: Path, seed: int = 0) -> Path:
    """``dst`` laid out as ``iic/emotion2vec_plus_large``: its config.yaml, configuration.json and
    tokens.txt, and ``model.pt`` = ``{"model": {"d2v_model.<key>": ..., "proj.weight": ..., "proj.bias":
    ...}}`` holding seeded random weights of FunASR's ``Emotion2vec`` built from that config (every
    parameter and buffer the class has). Returns ``dst``."""
    import funasr.models.emotion2vec.model  # noqa: F401  (registers the class)
    from funasr.register import tables

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "configuration.json", "tokens.txt"):
        _copy_text(EMOTION2VEC_FILES / name, dst / name)
    config = _read_config(dst / "config.yaml")
    # FunASR's CharTokenizer reads one token per line; the file has no trailing newline.
    n_tokens = len((dst / "tokens.txt").read_text(encoding="utf-8").splitlines())
    model = _build(tables.model_classes["Emotion2vec"], _model_kwargs(config, vocab_size=n_tokens), seed)
    state = {}
    for key, value in model.state_dict().items():
        stored = key if key.startswith("proj.") else EMOTION2VEC_PREFIX + key
        state[stored] = value.detach().clone().contiguous()
    torch.save({"model": state}, dst / "model.pt")
    return dst


# ---------------------------------------------------------------------------------------------
# SenseVoiceSmall
# ---------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _top_level_fields(data: bytes) -> list[tuple[int, bytes]]:
    """(field number, raw bytes of the whole field) of a serialized protobuf message, in order."""
    fields, i = [], 0
    while i < len(data):
        start = i
        tag = 0
        shift = 0
        while True:
            b = data[i]
            i += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        wire = tag & 7
        if wire == 0:
            while data[i] & 0x80:
                i += 1
            i += 1
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length = shift = 0
            while True:
                b = data[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            i += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        fields.append((tag >> 3, data[start:i]))
    return fields


# sentencepiece's ModelProto.SentencePiece.Type
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4
_TAG = re.compile(r"^<\|.+\|>$")


def _piece_type(i: int, piece: str) -> int:
    if i == 0:
        return _UNKNOWN
    if piece in ("<s>", "</s>"):
        return _CONTROL
    # The tags come out of DecodeIds as text ("<|en|><|NEUTRAL|>..."), which FunASR's rich
    # transcription relies on: user-defined pieces, not control ones (those decode to nothing).
    return _USER_DEFINED if _TAG.match(piece) else _NORMAL


def standin_bpe_bytes(pieces: list[str]) -> bytes:
    """A sentencepiece BPE model whose vocabulary is ``pieces`` at their ids.

    The trainer and normalizer specs come from a tiny BPE model trained here (nmt_nfkc, a dummy "▁"
    prefix, <unk>/<s>/</s> at 0/1/2, as in SenseVoice's model); the pieces replace the trained ones.
    Merge scores follow the ids (earlier piece, earlier merge), since the real scores are not at hand:
    ids decode exactly as with the real model, text may be segmented differently."""
    import io

    corpus = ["the quick brown fox jumps over the lazy dog", "hello world", "speech emotion"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, model_type="bpe",
                                   vocab_size=40, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, num_threads=1, minloglevel=2)
    # ModelProto: 1 = pieces (repeated), 2 = trainer_spec, 3 = normalizer_spec, 4 = self_test_data,
    # 5 = denormalizer_spec. The trained pieces and self-test samples go; the specs stay.
    kept = [raw for number, raw in _top_level_fields(buf.getvalue()) if number not in (1, 4)]
    out = bytearray()
    for i, piece in enumerate(pieces):
        kind = _piece_type(i, piece)
        score = -float(i) if kind == _NORMAL else 0.0
        body = (_field_bytes(1, piece.encode("utf-8")) + _varint(2 << 3 | 5) + struct.pack("<f", score)
                + _varint(3 << 3) + _varint(kind))
        out += _field_bytes(1, body)
    data = bytes(out) + b"".join(kept)
    sp = spm.SentencePieceProcessor(model_proto=data)
    if sp.GetPieceSize() != len(pieces) or any(sp.IdToPiece(i) != p for i, p in enumerate(pieces)):
        raise RuntimeError("the stand-in sentencepiece model does not hold the pieces at their ids")
    return data


def real_cmvn() -> tuple[np.ndarray, np.ndarray]:
    """SenseVoiceSmall's am.mvn as (shift, scale), 560 values each, read from the C header."""
    text = (SENSEVOICE_FILES / "sense-voice-cmvn.h").read_text(encoding="utf-8")

    def array(name: str) -> np.ndarray:
        m = re.search(name + r"\[\]\s*=\s*\{([^}]*)\}", text)
        if m is None:
            raise ValueError(f"sense-voice-cmvn.h: no {name} array")
        return np.array([float(v) for v in m.group(1).replace(",", " ").split()], dtype=np.float64)

    shift, scale = array("CMVN_MEANS"), array("CMVN_VARS")
    if shift.shape != (560,) or scale.shape != (560,):
        raise ValueError(f"sense-voice-cmvn.h: {shift.shape} shifts, {scale.shape} scales; expected 560 each")
    return shift, scale


def cmvn_text(shift: np.ndarray, scale: np.ndarray) -> str:
    """Kaldi nnet text as in SenseVoice's am.mvn (what FunASR's ``load_cmvn`` parses)."""
    dim = len(shift)

    def vec(v: np.ndarray) -> str:
        return " ".join(f"{x:.8f}" for x in v)

    return (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
            f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n")


def sensevoice_small(dst: Path, seed: int = 0) -> Path:
    """``dst`` laid out as ``iic/SenseVoiceSmall``: its config.yaml and configuration.json, a stand-in
    ``chn_jpn_yue_eng_ko_spectok.bpe.model`` with the real 25055 pieces at their ids, ``am.mvn`` from
    the real CMVN values, and ``model.pt`` = the plain state dict of FunASR's ``SenseVoiceSmall`` built
    from that config with seeded random weights. Returns ``dst``."""
    from funasr.models.sense_voice.model import SenseVoiceSmall

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "configuration.json"):
        _copy_text(SENSEVOICE_FILES / name, dst / name)
    metas = json.loads((dst / "configuration.json").read_text(encoding="utf-8"))["file_path_metas"]
    bpe_name, cmvn_name = metas["tokenizer_conf"]["bpemodel"], metas["frontend_conf"]["cmvn_file"]
    if bpe_name != SENSEVOICE_BPE_NAME:
        raise ValueError(f"configuration.json names {bpe_name!r}, expected {SENSEVOICE_BPE_NAME!r}")
    (dst / bpe_name).write_bytes(standin_bpe_bytes(read_real_tokens()))
    (dst / cmvn_name).write_text(cmvn_text(*real_cmvn()), encoding="utf-8")

    config = _read_config(dst / "config.yaml")
    fconf = config["frontend_conf"]
    kwargs = _model_kwargs(config, vocab_size=SENSEVOICE_VOCAB_SIZE,
                           input_size=int(fconf["n_mels"]) * int(fconf["lfr_m"]))
    model = _build(SenseVoiceSmall, kwargs, seed)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, dst / "model.pt")
    return dst




# ---------------------------------------------------------------------------------------------
# Once per test session
# ---------------------------------------------------------------------------------------------

BUILDERS = {"emotion2vec_plus_large": emotion2vec_plus_large, "SenseVoiceSmall": sensevoice_small}


def published(tmp_path_factory, name: str, seed: int = 0) -> Path:
    """The folder ``name`` (a key of :data:`BUILDERS`) under the session's base temporary directory, built
    on first use; the session fixtures of every tier share it through the marker written last."""
    root = Path(tmp_path_factory.getbasetemp()) / "published" / f"{name}-seed{seed}"
    done = root / ".complete"
    if not done.exists():
        BUILDERS[name](root, seed)
        done.write_text("", encoding="utf-8")
    return root


__all__ = ["BUILDERS", "EMOTION2VEC_FILES", "REAL_FILES", "SENSEVOICE_BPE_NAME", "SENSEVOICE_FILES",
           "SENSEVOICE_VOCAB_SIZE", "cmvn_text", "emotion2vec_plus_large", "published", "read_real_tokens",
           "real_cmvn", "sensevoice_small", "standin_bpe_bytes"]
