"""Text sentiment: a Hugging Face sequence classifier as one ONNX graph, and the tokenizer that feeds it.

Graph contract (``model.onnx``, opset 17, TorchScript-based exporter):

  input_ids [batch, tokens] int64 (each row's ids first, then anything) + input_lens [batch] int64
  -> probs [batch, num_labels] float32 = softmax(logits), labels in id2label's id order.

Inside the graph: ``attention_mask = arange(tokens) < input_lens`` and the ids at masked positions are replaced
by the config's ``pad_token_id``, so the padding value does not matter (RoBERTa / XLM-R count their position ids
from the non-pad ids: replacing the padding keeps them right). Each row therefore gives its unbatched
probabilities, whatever the batch was padded to. Attention is transformers' "eager" implementation (plain
matmul + additive mask, which traces to ordinary ONNX ops).

Tokenizer (``tokenizer.json`` beside the graph): the backend JSON of the fast tokenizer transformers' own
``AutoTokenizer`` builds for the folder (transformers 5 rebuilds a class's normaliser / pre-tokeniser from the
vocabulary, so it is this object, not the folder's file, that defines the ids), with truncation to
``max_tokens`` set and padding off. ``tokenizers.Tokenizer.from_file(...).encode(text).ids`` then gives exactly
``tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]``: the special tokens included, a
longer text keeps its first ``max_tokens - 2`` tokens and the rest is cut (right truncation).

Random weights need a tokenizer without any hub: ``build_tokenizer`` builds one deterministically with the
``tokenizers`` library from the project's own texts (``text_sentiment_texts.vocabulary_texts()``):

* ``wordpiece`` (DistilBERT / BERT, cased): BertNormalizer (clean text, spaces around CJK ideographs, no
  lower-casing, no accent stripping, so Hangul and kana are not decomposed), BertPreTokenizer, WordPiece with
  ``##`` continuations, ``[CLS] $A [SEP]``; ids ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4,
  then every character, every ``##`` character, then the texts' words by frequency.
* ``unigram`` (XLM-R): XLM-R's special-token layout ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, then
  characters and ``▁``-words scored by their log frequency, ``<mask>`` last; WhitespaceSplit + Metaspace
  (``▁``, always prepended), ``<s> $A </s>``. No normaliser: transformers keeps only a sentencepiece
  ``Precompiled`` one when it rebuilds XLMRobertaTokenizer, so any other would not survive a reload.

Both are exactly what transformers' BertTokenizer / XLMRobertaTokenizer rebuild from the saved folder (the
tests check it), and every id is below the preset's ``vocab_size``.

Imports torch at module level: the family module (``toneserve.export.families.text_sentiment``) imports this
one only inside the methods that need it.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from toneserve.export import presets
from toneserve.export import text_sentiment_texts as texts
from toneserve.export.errors import SourceError

GRAPH = "model.onnx"
TOKENIZER = "tokenizer.json"
PROBS = "probs"
MAX_TOKENS = 128  # the truncation bound, special tokens included
INPUTS = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "tokens"]},
          {"name": "input_lens", "dtype": "int64", "shape": ["batch"]}]
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
UNIGRAM_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R's (fairseq) order; <mask> comes last
UNIGRAM_MAX_WORD = 8  # longest "▁word" piece (characters) a unigram vocabulary keeps
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")  # in order of preference
# Calibration (openvino int8): windows of this many ids (special tokens included) cut from the vocabulary
# texts, every window the same length (NNCF stacks per-item statistics), none of them padding.
CALIBRATION_ITEMS = 12
CALIBRATION_TOKENS = 48


def outputs(num_labels: int) -> list[dict]:
    return [{"name": PROBS, "dtype": "float32", "shape": ["batch", num_labels]}]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' progress bars and info logging off (they would tear the export's progress bar)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def sentencepiece_protobuf() -> Iterator[None]:
    """Let transformers read a ``sentencepiece.bpe.model`` here. It parses the model's protobuf with the module
    sentencepiece ships when sentencepiece is installed, and sentencepiece 0.2.3's module is generated by
    protobuf 7.36, which refuses the pinned runtime (protobuf 6.33: "Detected incompatible Protobuf
    Gencode/Runtime versions"); the conversion then fails. transformers ships its own generated module of the
    same proto, which this runtime loads: while this context is open, transformers is given that one. Nothing
    changes when sentencepiece's module imports."""
    try:
        from sentencepiece import sentencepiece_model_pb2  # type: ignore[import-untyped]  # noqa: F401

        usable = True
    except Exception:  # noqa: BLE001 - protobuf's VersionError, or an ImportError
        usable = False
    if usable:
        yield
        return
    from transformers.utils import sentencepiece_model_pb2_new

    # The module, not the function of the same name transformers also exports at its top level.
    convert_slow_tokenizer = importlib.import_module("transformers.convert_slow_tokenizer")

    original = convert_slow_tokenizer.import_protobuf
    convert_slow_tokenizer.import_protobuf = lambda error_message="": sentencepiece_model_pb2_new
    try:
        yield
    finally:
        convert_slow_tokenizer.import_protobuf = original


# ============================================================================================ tokenizers


def _wordpiece(vocab_size: int, lowercase: bool) -> Any:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                            lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts.vocabulary_texts() for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    base = [*WORDPIECE_SPECIALS, *chars, *(f"##{c}" for c in chars)]
    if len(base) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} holds fewer than the {len(base)} special tokens and characters")
    whole = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    pieces = list(dict.fromkeys([*base, *whole]))[:vocab_size]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(WORDPIECE_SPECIALS))
    return tok


def _unigram(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                   pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")])
    words = Counter(w for t in texts.vocabulary_texts() for w, _ in pre.pre_tokenize_str(t))
    chars: Counter[str] = Counter()
    for w, n in words.items():
        for c in w:
            chars[c] += n
    total = sum(chars.values())
    if len(UNIGRAM_SPECIALS) + len(chars) + 1 > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} holds fewer than the special tokens and {len(chars)} characters")
    scored = [(c, math.log(n / total)) for c, n in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))]
    scored += [(w, math.log(n / total)) for w, n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
               if 1 < len(w) <= UNIGRAM_MAX_WORD and w not in chars]
    vocab = [(s, 0.0) for s in UNIGRAM_SPECIALS] + scored[:vocab_size - len(UNIGRAM_SPECIALS) - 1] + [("<mask>", 0.0)]
    tok = Tokenizer(Unigram(vocab, unk_id=UNIGRAM_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens([*UNIGRAM_SPECIALS, "<mask>"])
    return tok


def build_tokenizer(kind: str, vocab_size: int, *, lowercase: bool = False) -> Any:
    """A ``tokenizers.Tokenizer`` of ``kind`` ("wordpiece" or "unigram") built from the project's texts, with at
    most ``vocab_size`` ids (module docstring). Deterministic."""
    if kind == "wordpiece":
        return _wordpiece(vocab_size, lowercase)
    if kind == "unigram":
        return _unigram(vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose wordpiece or unigram")


def preset_tokenizer(preset: str) -> Any:
    conf = presets.TEXT_SENTIMENT[preset]
    return build_tokenizer(conf["tokenizer"]["kind"], int(conf["config"]["vocab_size"]),
                           lowercase=bool(conf["tokenizer"].get("lowercase", False)))


def transformers_tokenizer(tokenizer: Any, model_type: str, model_max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` as the transformers tokenizer class AutoTokenizer uses for ``model_type``
    (BertTokenizer for DistilBERT, XLMRobertaTokenizer for XLM-R), for ``save_pretrained``."""
    from transformers import TokenizersBackend
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    name = TOKENIZER_MAPPING_NAMES.get(model_type)
    name = name[-1] if isinstance(name, (tuple, list)) else name
    cls = (tokenizer_class_from_name(name) if name else None) or TokenizersBackend
    extra: dict[str, Any] = {}
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer":
        extra = {"do_lower_case": bool(normalizer.get("lowercase")),
                 "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars")),
                 "strip_accents": normalizer.get("strip_accents")}
    with quiet():
        return cls(tokenizer_object=tokenizer, model_max_length=model_max_length, **extra)


# ============================================================================================ models


def build_model(preset: str, seed: int = 0) -> Any:
    """The preset's classifier (transformers' AutoModelForSequenceClassification) with random weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    conf = dict(presets.TEXT_SENTIMENT[preset]["config"])
    config = AutoConfig.for_model(conf.pop("model_type"), **conf)
    config.architectures = [presets.TEXT_SENTIMENT[preset]["architecture"]]
    with quiet(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config)
    model.toneserve_preset = preset
    return model.eval()


def save_layout(model: Any, out_dir: Path, tokenizer: Any) -> Path:
    """Write ``model`` (a transformers sequence classifier) and ``tokenizer`` (a transformers tokenizer, or a
    ``tokenizers.Tokenizer``, wrapped as the class AutoTokenizer picks for the model type) as the hub publishes
    such a model: config.json (id2label / label2id), model.safetensors, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json. Written in a temporary folder beside ``out_dir``, then moved in file by file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not hasattr(tokenizer, "save_pretrained"):
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        pad = getattr(model.config, "pad_token_id", None)
        if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") and pad is not None:
            limit -= int(pad) + 1  # positions start after the pad id
        tokenizer = transformers_tokenizer(tokenizer, str(model.config.model_type), limit)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with quiet():
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
        special = tmp / "special_tokens_map.json"
        if not special.is_file():  # transformers 5 keeps them in tokenizer_config.json only; the hub has both
            special.write_text(json.dumps({k: str(v) for k, v in tokenizer.special_tokens_map.items()}, indent=2,
                                          ensure_ascii=False) + "\n", encoding="utf-8")
        for path in sorted(tmp.iterdir()):
            os.chmod(path, 0o644)
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ============================================================================================ loading


@dataclass
class Labels:
    names: list[str]  # in id order
    positive: str
    negative: str


def labels_of(id2label: Any, where: str) -> Labels:
    """The labels in id order from a config's ``id2label``, refused unless the ids are 0..n-1, the names are
    distinct (case-insensitively) and two of them are "positive" and "negative" (case-insensitively)."""
    if not isinstance(id2label, dict) or not id2label:
        raise SourceError(f"{where}: no id2label; a sentiment folder's config.json names its labels there "
                          f"(for example {{\"0\": \"negative\", \"1\": \"neutral\", \"2\": \"positive\"}})")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise SourceError(f"{where}: id2label keys {sorted(map(str, id2label))} are not integer ids") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise SourceError(f"{where}: id2label ids {sorted(by_id)} are not 0..{len(by_id) - 1}")
    names = [by_id[i] for i in range(len(by_id))]
    low = [n.lower() for n in names]
    if len(set(low)) != len(low):
        raise SourceError(f"{where}: id2label names a label twice ({names})")
    missing = [w for w in ("positive", "negative") if w not in low]
    if missing:
        raise SourceError(f"{where}: id2label {dict(enumerate(names))} has no {' and no '.join(map(repr, missing))} "
                          f"label (case-insensitive): the sentiment score is P(positive) - P(negative), so the "
                          f"labels must say which output is which. Set id2label (and label2id) in config.json to "
                          f"the model's real label names")
    return Labels(names, names[low.index("positive")], names[low.index("negative")])


@dataclass
class Loaded:
    model: Any  # transformers sequence classifier, eval, eager attention
    tokenizer: Any  # transformers fast tokenizer, as AutoTokenizer builds it
    config: dict  # config.json as read
    labels: Labels
    pad_id: int
    max_tokens: int
    load: dict  # what loading did


def read_config_json(path: Path) -> dict:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise SourceError(f"{path}: not a JSON object")
    return config


def _check_bin(path: Path) -> None:
    """A ``pytorch_model.bin`` must open with ``torch.load(weights_only=True)`` (no code runs)."""
    import pickle

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SourceError(f"{path}: torch.load(weights_only=True) refused it ({str(e).splitlines()[0]}): it holds "
                          f"objects only a full (unpickling) load builds, which runs code stored in the file. Re-save "
                          f"its state dict as model.safetensors (transformers: model.save_pretrained(dir))") from None
    except Exception as e:  # truncated, not a checkpoint
        raise SourceError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


def load_folder(root: Path, config_path: Path, weights: Path) -> Loaded:
    """A Hugging Face sequence-classification folder through transformers (AutoConfig, AutoTokenizer,
    AutoModelForSequenceClassification, local files only), with errors that say what is wrong."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    root = Path(root)
    config = read_config_json(config_path)
    model_type = config.get("model_type")
    if model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise SourceError(f"{config_path}: model_type {model_type!r} has no sequence-classification model in "
                          f"transformers {_version('transformers')} (AutoModelForSequenceClassification)")
    labels = labels_of(config.get("id2label"), str(config_path))
    problem = config.get("problem_type")
    if problem not in (None, "single_label_classification"):
        raise SourceError(f"{config_path}: problem_type {problem!r}; the graph's probabilities are a softmax over "
                          f"the labels (single-label classification)")
    if weights.name.endswith(".bin"):
        _check_bin(weights)
    with quiet():
        try:
            hf_config = AutoConfig.from_pretrained(str(root), local_files_only=True)
        except Exception as e:
            raise SourceError(f"{config_path}: transformers cannot read it ({type(e).__name__}: {e})") from None
        try:
            with sentencepiece_protobuf():
                tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        except Exception as e:
            raise SourceError(f"{root}: transformers' AutoTokenizer cannot build the tokenizer from "
                              f"{', '.join(n for n in TOKENIZER_FILES if (root / n).is_file())} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
            raise SourceError(f"{root}: AutoTokenizer gave {type(tokenizer).__name__}, not a fast tokenizer with a "
                              f"tokenizers backend: tokenizer.json cannot be written")
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(root), config=hf_config, local_files_only=True, attn_implementation="eager",
                output_loading_info=True, dtype=torch.float32, ignore_mismatched_sizes=True)
        except Exception as e:
            raise SourceError(f"{weights}: transformers cannot load it into {hf_config.architectures or model_type} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [f"{m[0]} (file {tuple(m[1])}, config {tuple(m[2])})" if isinstance(m, (tuple, list)) and len(m) == 3
                  else str(m) for m in info.get("mismatched_keys") or []]
    if missing or mismatched:
        raise SourceError(f"{weights} does not fit config.json: "
                          + (f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''} (left at random "
                             f"initial values) " if missing else "")
                          + (f"shapes differ for {', '.join(mismatched[:6])}" if mismatched else ""))
    num_labels = int(model.config.num_labels)
    if num_labels != len(labels.names):
        raise SourceError(f"{config_path}: id2label has {len(labels.names)} labels, the model {num_labels} outputs")
    vocab = int(model.config.vocab_size)
    if len(tokenizer) > vocab:
        raise SourceError(f"{root}: the tokenizer has {len(tokenizer)} ids, the model's embedding only {vocab} "
                          f"(vocab_size): ids past it would index outside the embedding")
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    pad_id = int(pad) if pad is not None else 0
    limit = int(tokenizer.model_max_length) if 0 < int(tokenizer.model_max_length) < 1_000_000 else MAX_TOKENS
    load = {"unexpected": sorted(info.get("unexpected_keys") or []), "left_at_init": missing,
            "loader": "transformers AutoModelForSequenceClassification.from_pretrained (safetensors; .bin with "
                      "weights_only=True)", "attention": "eager"}
    return Loaded(model.eval(), tokenizer, config, labels, pad_id, min(MAX_TOKENS, limit), load)


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


# ============================================================================================ graph


class SentimentGraph(nn.Module):
    """input_ids [B, T] + input_lens [B] -> probs [B, L] (module docstring)."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = int(pad_id)

    def forward(self, input_ids: torch.Tensor, input_lens: torch.Tensor) -> torch.Tensor:
        ids = input_ids.to(torch.int64)
        positions = torch.arange(ids.shape[1], dtype=torch.int64, device=ids.device).unsqueeze(0)
        mask = positions < input_lens.to(torch.int64).unsqueeze(1)
        ids = torch.where(mask, ids, torch.full_like(ids, self.pad_id))
        logits = self.model(input_ids=ids, attention_mask=mask.to(torch.int64)).logits
        return torch.softmax(logits.to(torch.float32), dim=-1)


def export_onnx(model: nn.Module, pad_id: int, path: str | os.PathLike, opset: int = 17) -> None:
    """Export with the TorchScript-based exporter (dynamo=False), ``batch`` and ``tokens`` dynamic."""
    graph = SentimentGraph(model.eval(), pad_id).eval()
    # Dummy shapes unlike any served batch, lengths unequal, so nothing about them gets baked in.
    ids = torch.full((2, 11), 5, dtype=torch.int64)
    lens = torch.tensor([11, 6], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (ids, lens), str(path), dynamo=False, opset_version=opset,
                          input_names=["input_ids", "input_lens"], output_names=[PROBS],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "input_lens": {0: "batch"},
                                        PROBS: {0: "batch"}},
                          do_constant_folding=True)


def serving_tokenizer(tokenizer: Any, max_tokens: int) -> Any:
    """A copy of the transformers tokenizer's backend (``tokenizers.Tokenizer``) truncating to ``max_tokens`` ids
    (special tokens included; right, longest_first, no stride) and not padding."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(max_length=int(max_tokens))
    backend.no_padding()
    return backend


def ort_session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encode(tokenizer: Any, items: list[str]) -> list[list[int]]:
    return [list(e.ids) for e in tokenizer.encode_batch(list(items))]


def padded(rows: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids [B, T] padded with ``pad``, input_lens [B])."""
    lens = np.array([len(r) for r in rows], np.int64)
    ids = np.full((len(rows), max(int(lens.max()), 1)), pad, np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, lens


def probs(session: Any, rows: list[list[int]], pad: int = 0) -> np.ndarray:
    """The graph's probabilities of ``rows`` (token ids) as one batch padded with ``pad``."""
    ids, lens = padded(rows, pad)
    return session.run([PROBS], {"input_ids": ids, "input_lens": lens})[0]


def pipeline_reference(folder: Path, items: list[str], labels: list[str], max_tokens: int) -> tuple[np.ndarray, Any]:
    """transformers' own ``pipeline("text-classification", model=folder, top_k=None)`` on each text (truncated as
    the export truncates): probabilities [N, L] in id order, and the pipeline's tokenizer."""
    from transformers import pipeline

    with quiet(), sentencepiece_protobuf():
        pipe = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
        results = pipe(list(items), truncation=True, max_length=int(max_tokens))
    index = {name: i for i, name in enumerate(labels)}
    out = np.full((len(items), len(labels)), np.nan, np.float64)
    for n, scores in enumerate(results):
        for entry in scores:
            out[n, index[entry["label"]]] = float(entry["score"])
    return out, pipe.tokenizer


def calibration_feeds(folder: Path, items: int = CALIBRATION_ITEMS, tokens: int = CALIBRATION_TOKENS) -> list[dict]:
    """Equal-length feeds (batch 1, ``tokens`` ids, no padding) cut from the vocabulary texts of every language in
    turn, each window between the tokenizer's own leading and trailing special tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / TOKENIZER))
    tok.no_truncation()
    windows: list[list[list[int]]] = []
    for sentences in texts.VOCABULARY.values():
        enc = tok.encode(" ".join(sentences))
        special = enc.special_tokens_mask
        body = [i for i, s in zip(enc.ids, special) if not s]
        head = [i for i, s in zip(enc.ids, special) if s][:1] if special and special[0] else []
        tail = [enc.ids[-1]] if special and special[-1] else []
        width = tokens - len(head) - len(tail)
        step = max(width // 2, 1)  # half-overlapping: enough windows from the short texts of a large vocabulary
        windows.append([head + body[k:k + width] + tail for k in range(0, len(body) - width + 1, step)])
    feeds: list[dict] = []
    for k in range(max(len(w) for w in windows)):
        for lang in windows:
            if k < len(lang) and len(feeds) < items:
                feeds.append({"input_ids": np.array([lang[k]], np.int64),
                              "input_lens": np.array([len(lang[k])], np.int64)})
    return feeds


__all__ = [
    "CALIBRATION_ITEMS", "CALIBRATION_TOKENS", "GRAPH", "INPUTS", "Labels", "Loaded", "MAX_TOKENS", "PROBS",
    "SentimentGraph", "TOKENIZER", "build_model", "build_tokenizer", "calibration_feeds", "encode", "export_onnx",
    "labels_of", "load_folder", "ort_session", "outputs", "padded", "pipeline_reference", "preset_tokenizer", "probs",
    "save_layout", "serving_tokenizer", "transformers_tokenizer",
]
