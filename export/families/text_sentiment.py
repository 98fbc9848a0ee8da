"""Text sentiment as a model family: a Hugging Face sequence classifier (transformers' own classes) as one
graph ``model.onnx`` plus the ``tokenizer.json`` that feeds it.

Graph contract (``toneserve.export.text_sentiment``): inputs ``input_ids`` int64 [batch, tokens] and
``input_lens`` int64 [batch]; output ``probs`` float32 [batch, num_labels] = softmax(logits) in id2label's id
order. Padding is masked inside the graph (and its ids replaced by ``pad_id``), so a zero-padded batch gives each
row's unbatched probabilities (gated at 1e-5).

``manifest.serving``: ``labels`` (id order), ``num_labels``, ``positive`` / ``negative`` (the label names of
the score P(positive) - P(negative)), ``score``, ``max_tokens`` (128: the truncation bound, special tokens
included: a longer text keeps its first ``max_tokens - 2`` tokens, the rest is not read), ``truncation``,
``pad_id``, ``architecture``, ``model_type``, ``tokenizer`` ("tokenizer.json": ``tokenizers.Tokenizer.from_file``
of it truncates to ``max_tokens`` and does not pad), ``probs_output``.

Sources:

* presets (``presets.TEXT_SENTIMENT``): ``random:distilbert_tiny`` (tests, ``--size tiny``),
  ``random:distilbert_multilingual`` (the architecture of lxyuan/distilbert-base-multilingual-cased-sentiments-
  student, what ``--size base`` falls back to when the hub is unreachable), ``random:xlmr_twitter``
  (cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual's). Random weights come with a tokenizer built
  from the project's own texts; the model and tokenizer are first written as a published folder (``save_layout``)
  in a temporary folder, then exported from it exactly as a folder is.
* a local folder as the hub publishes a sequence classifier: ``config.json`` with ``id2label`` (labels are
  always read from it in id order; refused unless it names a "positive" and a "negative" label,
  case-insensitively), ``model.safetensors`` (or ``pytorch_model.bin``, opened with ``weights_only=True`` only),
  and ``tokenizer.json`` or what transformers' fast tokenizer converts (``vocab.txt``,
  ``sentencepiece.bpe.model``). Loaded by transformers (AutoConfig, AutoTokenizer,
  AutoModelForSequenceClassification: any architecture it supports).
* a hub id (Hugging Face, through the project's hub code; it fails within seconds when the hub is unreachable).

Parity (enforced at export, recorded in ``manifest.parity``): against transformers'
``pipeline("text-classification", model=<folder>, top_k=None)`` on the same folder, on ``text_sentiment_texts``'
sentences (zh, en, yue, ja, ko) and a long text past the truncation bound: probabilities within 1e-4; the
exported ``tokenizer.json``'s ids identical to the pipeline tokenizer's (``truncation=True,
max_length=max_tokens``; gate: 0 texts differ); a zero-padded batch against each row alone within 1e-5.

Variants: ``graph = "model.onnx"``, ``gate_kind = "classification"``: ``build_variants`` derives int8 (ONNX
Runtime dynamic), fp16 and the openvino entry; the openvino int8 calibrates on the family's own token windows
(``calibration_feeds``), and the classification gate compares the graph's probabilities as they are
(``probability_outputs``; they are not logits to softmax first).

Light at import time: torch, transformers and the graph code are imported by the methods that need them.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_json, check_graph_io, sha256_file, versions
from toneserve.export.errors import MissingModelFiles, SourceError
from toneserve.export.family import LoadedModel, Manifest, ModelFiles, Parity, loaded_weights_entry, source_entry

GRAPH = "model.onnx"
TOKENIZER = "tokenizer.json"
PARITY_GATE = 1e-4  # ONNX Runtime vs transformers' pipeline, probabilities
BATCH_GATE = 1e-5  # a zero-padded batch vs its rows run alone
LXYUAN_HUB_ID = "lxyuan/distilbert-base-multilingual-cased-sentiments-student"
CARDIFF_HUB_ID = "cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual"
# What decides whether a folder's config is a preset's architecture (labels and dropouts aside).
_ARCH_KEYS = ("model_type", "vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "hidden_size",
              "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings",
              "type_vocab_size", "activation", "hidden_act", "pad_token_id", "sinusoidal_pos_embds")
_CONFIG_DROP = ("id2label", "label2id", "transformers_version", "_name_or_path")


class TextSentimentFamily:
    name = "text_sentiment"
    title = "text sentiment"
    presets: dict[str, dict] = presets.TEXT_SENTIMENT
    default_preset = "distilbert_multilingual"  # a bare "random": the default model's architecture
    size_presets: dict[str, str] = {"tiny": "distilbert_tiny", "base": "distilbert_multilingual"}
    default_hub_id: str | None = LXYUAN_HUB_ID
    hub_ids: dict[str, str] = {LXYUAN_HUB_ID: "hf", CARDIFF_HUB_ID: "hf"}
    hub_aliases: dict[str, str] = {}
    model_class: str | None = None  # not a FunASR model: transformers' classes
    required_files: tuple[str, ...] = ("config.json", "model.safetensors", "tokenizer.json")
    graph: str | None = GRAPH
    exported = True
    gate_kind: str | None = "classification"  # one label per text
    probability_outputs: tuple[str, ...] = ("probs",)  # judged as they are (openvino_variants), not softmaxed

    def unconfirmed(self, preset: str) -> list[str]:
        return list(presets.TEXT_SENTIMENT_UNCONFIRMED.get(preset, []))

    def locate(self, root: Path) -> ModelFiles:
        """config.json, the weights (model.safetensors, else pytorch_model.bin) and the tokenizer (tokenizer.json,
        else vocab.txt, else sentencepiece.bpe.model); MissingModelFiles names what is missing."""
        from toneserve.export.text_sentiment import TOKENIZER_FILES, WEIGHT_FILES

        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise MissingModelFiles(f"{self.name} model directory {root} does not exist", [str(root)])
        roles = {"config": ("config.json",), "weights": WEIGHT_FILES, "tokenizer": TOKENIZER_FILES}
        chosen = {role: next((n for n in names if (root / n).is_file()), None) for role, names in roles.items()}
        missing = [" or ".join(roles[r]) for r, n in chosen.items() if n is None]
        if missing:
            present = sorted(p.name for p in root.iterdir())
            raise MissingModelFiles(
                f"{self.name} model directory {root} lacks {'; '.join(missing)} (a Hugging Face sequence-classification "
                f"folder holds config.json with id2label, model.safetensors or pytorch_model.bin, and tokenizer.json "
                f"or the vocab.txt / sentencepiece.bpe.model transformers converts; found: "
                f"{', '.join(present) or 'nothing'})", [" or ".join(roles[r]) for r, n in chosen.items() if n is None])
        parts = {role: root / str(name) for role, name in chosen.items()}
        if (root / "tokenizer_config.json").is_file():
            parts["tokenizer_config"] = root / "tokenizer_config.json"
        return ModelFiles(family=self.name, root=root, parts=parts)

    def arch_config(self, config: dict) -> dict:
        if not isinstance(config, dict):
            raise SourceError("config.json is not a JSON object")
        return {k: v for k, v in config.items() if k not in _CONFIG_DROP}

    def detect_preset(self, arch_config: dict) -> str:
        """The preset with the same architecture (sizes, vocabulary, positions, pad id), else custom."""
        for name, conf in self.presets.items():
            theirs = conf["config"]
            if all(arch_config.get(k) == theirs[k] for k in _ARCH_KEYS if k in theirs):
                return name
        return "custom"

    def build_random(self, preset: str, seed: int = 0) -> Any:
        """The preset's transformers classifier with random weights (its tokenizer: ``random_tokenizer``)."""
        from toneserve.export import text_sentiment

        self._preset(preset)
        return text_sentiment.build_model(preset, seed)

    def random_tokenizer(self, preset: str) -> Any:
        """The ``tokenizers.Tokenizer`` random weights of ``preset`` are exported with (built from the project's
        own texts; ``text_sentiment.build_tokenizer``)."""
        from toneserve.export import text_sentiment

        self._preset(preset)
        return text_sentiment.preset_tokenizer(preset)

    def load(self, root: Path, *, trust_checkpoint: bool = False, hash_weights: bool = True) -> LoadedModel:
        """A folder through transformers; ``LoadedModel.model`` is the ``text_sentiment.Loaded`` (model, tokenizer,
        labels, pad id, max_tokens). ``trust_checkpoint`` is not used: a pytorch_model.bin is only ever opened with
        ``weights_only=True`` (a refused one is to be re-saved as model.safetensors)."""
        from toneserve.export import text_sentiment

        files = self.locate(root)
        loaded = text_sentiment.load_folder(files.root, files.config, files.weights)
        arch = self.arch_config(loaded.config)
        preset = self.detect_preset(arch)
        loaded.model.toneserve_preset = preset
        return LoadedModel(family=self.name, model=loaded, files=files, config=loaded.config, preset=preset,
                           arch_config=arch, load=loaded.load,
                           weights_sha256=sha256_file(files.weights) if hash_weights else "")

    def _preset(self, preset: str) -> dict:
        if preset not in self.presets:
            raise SourceError(f"unknown text_sentiment preset {preset!r}; choose from {', '.join(self.presets)}")
        return self.presets[preset]

    # ------------------------------------------------------------------------------------------ export

    def export(self, out_dir: Path, *, preset: str | None = None, seed: int = 0, model_dir: Path | None = None,
               source: dict | None = None, verify: bool = True, trust_checkpoint: bool = False) -> dict:
        """Export into ``out_dir`` (``model.onnx``, ``tokenizer.json``, ``manifest.json``) from a folder
        (``model_dir``) or random weights of a preset (written as a published folder first, in a temporary
        folder). Files are written under temporary names and renamed into place only once the gates passed."""
        out = Path(out_dir)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="toneserve-text-sentiment-") as scratch:
            if model_dir is not None:
                folder = Path(model_dir)
                loaded = self.load(folder, trust_checkpoint=trust_checkpoint)
                source = source_entry(source, folder, loaded.preset)
                preset_name, weights = loaded.preset, loaded_weights_entry(loaded)
                config_source = str(loaded.files.config)
                unconfirmed = list(presets.TEXT_SENTIMENT_UNCONFIRMED_LOADED.get(loaded.preset, []))
                tokenizer_note = (f"transformers' AutoTokenizer of the folder ({loaded.files.parts['tokenizer'].name}), "
                                  f"its backend as transformers builds it")
            else:
                preset_name = preset or self.default_preset
                conf = self._preset(preset_name)
                source = source_entry(source, None, preset_name)
                folder = self.save_layout(self.build_random(preset_name, seed), Path(scratch) / "layout",
                                          tokenizer=self.random_tokenizer(preset_name))
                loaded = self.load(folder)
                loaded.preset = preset_name
                weights = None
                config_source = f"preset {preset_name!r}: {conf['source']}"
                unconfirmed = self.unconfirmed(preset_name)
                tokenizer_note = (f"built from the project's texts (text_sentiment_texts.vocabulary_texts(), "
                                  f"{conf['tokenizer']['kind']}, {len(loaded.model.tokenizer)} ids): not the "
                                  f"published model's vocabulary")
            return self._write(out, folder, loaded, preset_name, source, seed, weights, config_source, unconfirmed,
                               tokenizer_note, verify, started)

    def _write(self, out: Path, folder: Path, loaded: LoadedModel, preset: str, source: dict, seed: int,
               weights: dict | None, config_source: str, unconfirmed: list[str], tokenizer_note: str, verify: bool,
               started: float) -> dict:
        from toneserve.export import text_sentiment

        model = loaded.model
        labels = model.labels
        out.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}.{time.monotonic_ns()}"
        tmp = {name: out / f".{name}.{tag}.tmp" for name in (GRAPH, TOKENIZER, "manifest.json")}
        try:
            text_sentiment.export_onnx(model.model, model.pad_id, tmp[GRAPH])
            text_sentiment.serving_tokenizer(model.tokenizer, model.max_tokens).save(str(tmp[TOKENIZER]), pretty=True)
            graph = {"inputs": text_sentiment.INPUTS, "outputs": text_sentiment.outputs(len(labels.names))}
            check_graph_io(tmp[GRAPH], graph, "text_sentiment")
            parity = None
            if verify:
                parity = _parity(tmp[GRAPH], tmp[TOKENIZER], folder, model)
                if not parity.passed():
                    raise RuntimeError(f"text_sentiment ONNX parity gate failed: {parity}")
            config = model.model.config
            serving = {"labels": list(labels.names), "num_labels": len(labels.names), "positive": labels.positive,
                       "negative": labels.negative, "score": "P(positive) - P(negative)",
                       "max_tokens": model.max_tokens, "truncation": "right", "pad_id": model.pad_id,
                       "architecture": (config.architectures or [type(model.model).__name__])[0],
                       "model_type": str(config.model_type), "tokenizer": TOKENIZER, "probs_output": "probs"}
            manifest = Manifest(
                model=self.name, preset=preset, source=source, seed=seed,
                files={GRAPH: sha256_file(tmp[GRAPH]), TOKENIZER: sha256_file(tmp[TOKENIZER])},
                graphs={GRAPH: graph}, parity=None if parity is None else asdict(parity), serving=serving,
                config=_jsonable(loaded.arch_config), config_source=config_source, unconfirmed=unconfirmed,
                exporter={"torch.onnx.export": "dynamo=False", "opset": 17, "attention": "eager"},
                versions=versions(("torch", "transformers", "tokenizers", "safetensors", "onnx", "onnxruntime")),
                export_seconds=round(time.perf_counter() - started, 3), weights=weights,
                notes=_notes(model.max_tokens, model.pad_id, tokenizer_note)).to_dict()
            atomic_write_json(tmp["manifest.json"], manifest)
            os.replace(tmp[GRAPH], out / GRAPH)
            os.replace(tmp[TOKENIZER], out / TOKENIZER)
            os.replace(tmp["manifest.json"], out / "manifest.json")
            return manifest
        finally:
            for p in tmp.values():
                if p.exists():
                    p.unlink()

    def parity_inputs(self, folder: Path) -> tuple[dict, dict]:
        """The parity texts tokenized by the export's tokenizer.json, as one zero-padded batch."""
        from tokenizers import Tokenizer

        from toneserve.export import text_sentiment
        from toneserve.export.text_sentiment_texts import parity_texts

        rows = text_sentiment.encode(Tokenizer.from_file(str(Path(folder) / TOKENIZER)), parity_texts())
        ids, lens = text_sentiment.padded(rows, 0)
        return {"input_ids": ids, "input_lens": lens}, {"top1_axis": {"probs": -1}}

    def calibration_feeds(self, folder: Path, user_folder: Path | None = None) -> tuple[list[dict], dict]:
        """What the openvino int8 variant calibrates on: windows of token ids of the project's texts (never the
        parity sentences). A folder of recordings (``--calibration``) is audio: it does not apply here."""
        from toneserve.export import text_sentiment

        feeds = text_sentiment.calibration_feeds(Path(folder))
        return feeds, {"items": len(feeds), "item_tokens": text_sentiment.CALIBRATION_TOKENS,
                       "sources": self.calibration_sources(user_folder)}

    def calibration_sources(self, user_folder: Path | None = None) -> list:
        return ["text_sentiment_texts.VOCABULARY", None]

    def audio_feeds(self, folder: Path, wav: Any, wav_lens: Any) -> dict:
        raise TypeError("the text_sentiment graph reads token ids, not audio (see parity_inputs / calibration_feeds)")

    def after_export(self, folder: Path, manifest: dict) -> None:
        """Nothing more: the tokenizer is written with the graph (it is part of the export's files)."""

    def save_layout(self, model: Any, out_dir: Path, **assets) -> Path:
        """Write a transformers sequence classifier as the hub publishes it (config.json with id2label /
        label2id, model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json). Assets:
        ``tokenizer`` (required): a transformers tokenizer, or a ``tokenizers.Tokenizer`` (e.g.
        ``random_tokenizer(preset)``), saved as the tokenizer class AutoTokenizer picks for the model type."""
        from toneserve.export import text_sentiment

        tokenizer = assets.pop("tokenizer", None)
        if assets:
            raise TypeError(f"unknown assets for {self.name}: {sorted(assets)}")
        if tokenizer is None:
            raise TypeError(f"{self.name}.save_layout needs tokenizer=... (a folder without one cannot be exported)")
        if not hasattr(model, "save_pretrained") or not hasattr(getattr(model, "config", None), "id2label"):
            raise SourceError(f"save_layout writes transformers sequence classifiers, not {type(model).__name__}")
        return text_sentiment.save_layout(model, Path(out_dir), tokenizer)


def _parity(graph: Path, tokenizer_file: Path, folder: Path, model: Any) -> Parity:
    """The graph and its tokenizer against transformers' pipeline on the same folder (module docstring)."""
    import numpy as np
    from tokenizers import Tokenizer

    from toneserve.export import text_sentiment
    from toneserve.export.text_sentiment_texts import parity_texts

    items = parity_texts()
    expected, pipe_tokenizer = text_sentiment.pipeline_reference(folder, items, model.labels.names, model.max_tokens)
    theirs = [list(pipe_tokenizer(t, truncation=True, max_length=model.max_tokens)["input_ids"]) for t in items]
    ours = text_sentiment.encode(Tokenizer.from_file(str(tokenizer_file)), items)
    differ = sum(a != b for a, b in zip(ours, theirs))
    with text_sentiment.quiet():  # "longer than the specified maximum": what this count is for
        untruncated = len(pipe_tokenizer(items[-1])["input_ids"])
    session = text_sentiment.ort_session(graph)
    batched = text_sentiment.probs(session, ours, 0)
    single = np.concatenate([text_sentiment.probs(session, [row]) for row in ours])
    err = np.abs(batched - expected)
    return Parity(
        reference=(f"transformers {text_sentiment._version('transformers')} pipeline('text-classification', "
                   f"model=<folder>, top_k=None)(text, truncation=True, max_length={model.max_tokens}), the same "
                   f"folder; token_ids: texts whose tokenizer.json ids differ from the pipeline tokenizer's"),
        max_abs_err={"probs": float(err.max()) if np.isfinite(err).all() else float("inf"),
                     "token_ids": float(differ),
                     "batched_vs_single": float(np.abs(batched - single).max())},
        gates={"probs": PARITY_GATE, "token_ids": 0.0, "batched_vs_single": BATCH_GATE},
        inputs=(f"{len(items) - 2} sentences (zh, en, yue, ja, ko; text_sentiment_texts.PARITY), one with unknown "
                f"symbols and a long text of {untruncated} tokens truncated to {len(ours[-1])}; token lengths "
                f"{[len(r) for r in ours]}; one zero-padded batch and each text alone (ONNX Runtime CPU)"))


def _jsonable(conf: dict) -> dict:
    import json

    return json.loads(json.dumps(conf, default=str))


def _notes(max_tokens: int, pad_id: int, tokenizer_note: str) -> dict[str, str]:
    return {
        "truncation": (f"tokenizer.json truncates every text to max_tokens = {max_tokens} ids, special tokens "
                       f"included: a longer text keeps its first {max_tokens - 2} tokens and the rest is not read "
                       f"(right truncation, as tokenizer(text, truncation=True, max_length={max_tokens}))"),
        "padding": (f"the graph masks positions >= input_lens and replaces their ids by pad_id {pad_id}: any padding "
                    f"value works; a zero-padded batch gives each row's unbatched probabilities (gated: "
                    f"batched_vs_single)"),
        "positions": ("the graph reads at most the model's position count (max_position_embeddings; RoBERTa / XLM-R: "
                      "less the pad id + 1); serving never exceeds max_tokens"),
        "tokenizer": tokenizer_note,
        "probabilities": "probs = softmax(logits) in id2label's id order (labels); score = P(positive) - P(negative)",
    }


TEXT_SENTIMENT = TextSentimentFamily()
