"""What toneserve serves: every model described once, from the export manifests.

The ensemble, tensor and parameter names the gateway relies on come from toneserve.contract.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from toneserve.console import CommandError
from toneserve.contract import (
    ASR,
    ASR_DISTRIBUTIONS,
    ASR_LABELS,
    EMBEDDING,
    EMOTION,
    EMOTION_LABELS,
    FAMILY,
    FRAMES,
    LANGUAGE,
    LANGUAGE_QUERY_IDS,
    MAX_TOKENS,
    PRECISION,
    PRESET,
    PROBS,
    RUNTIME,
    SAMPLE_RATE,
    SPEAKER,
    SPEECH_PROBS,
    TEXT,
    TEXT_SENTIMENT,
    TEXT_SENTIMENT_LABELS,
    TEXTNORM,
    TEXTNORM_QUERY_IDS,
    TOKEN_END_MS,
    TOKEN_MS,
    TOKENS,
    VAD,
    WAV,
    WAV_LENS,
    WEIGHTS_ORIGIN,
)
from toneserve.model_repository.cpu import has_bf16
from toneserve.model_repository.runners import sensevoice_decode
from toneserve.model_repository.spec import Batching, Ensemble, OnnxModel, PythonModel, Step, Tensor
from toneserve.samples import speechlike

RUNNERS = Path(__file__).parent / "runners"

@dataclass(frozen=True)
class Tuning:
    """How the models are scheduled. The defaults are chosen from measurement: see
    docs/BENCHMARKS.md ("Choosing the batching settings") for the runs and the reasons."""

    batching: Batching = Batching(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000)
    # Instances, streams per instance and threads per stream of the heavy models (emotion2vec+, the
    # SenseVoice encoder, the text classifier); the light steps (softmax, fbank, CTC decoding) keep one of each.
    # Two single-threaded runs at once: with the whole pipeline loaded (both models computing at once), two
    # single-threaded instances beat one two-threaded instance by 26-40 % at a lower p95 on 2 cores
    # (docs/BENCHMARKS.md, "Load tests"); one model alone had favoured 2 threads. They are two streams of one
    # instance, not two instances: each instance is a process with its own copy of the weights
    # (docs/BENCHMARKS.md, "Memory").
    instances: int = 1
    streams: int = 2
    intra_op_threads: int = 1
    # cpu runner: items whose padded size would exceed this multiple of their own run apart.
    max_pad_ratio: float = 1.25
    # cpu runner: the audio one run of an audio model pads to at most (several items of that much in all; one
    # longer item alone). A runtime keeps the buffers of the largest run it computed, so this bounds memory at no
    # cost in speed on CPU. Measured (loadtest/openvino_precisions.py, int8 weights, 2 streams, docs/BENCHMARKS.md
    # "Int8 weights"): emotion2vec+ computed 16 windows of 5 s in 3.01 s in runs of 8 (holding 1297 MB after),
    # 3.12 s in runs of 2 (639 MB), 3.01 s one at a time (531 MB); the SenseVoice encoder 16 utterances each of
    # 2, 10 and 30 s in 17.9 s in runs of 8 (2516 MB), 17.5 s one at a time (1406 MB).
    max_run_seconds: float = 10.0
    # cpu profile: the heavy instances share the machine's cores through Triton's rate limiter, so
    # no more of them compute at once than there are cores (docs/BENCHMARKS.md, "Where int8's
    # overhead goes").
    share_cores: bool = False

    def changed(self, *, instances: int | None = None, threads: int | None = None, max_batch_size: int | None = None,
                queue_delay_us: int | None = None, max_pad_ratio: float | None = None,
                share_cores: bool | None = None, streams: int | None = None) -> "Tuning":
        """These settings with the given ones changed (None keeps a setting); preferred batch sizes
        above a smaller max_batch_size are dropped."""
        batching = self.batching
        if max_batch_size is not None:
            batching = replace(batching, max_batch_size=max_batch_size, preferred_batch_sizes=tuple(
                b for b in batching.preferred_batch_sizes if b <= max_batch_size))
        if queue_delay_us is not None:
            batching = replace(batching, max_queue_delay_us=queue_delay_us)
        return replace(self, batching=batching,
                       instances=self.instances if instances is None else instances,
                       streams=self.streams if streams is None else streams,
                       intra_op_threads=self.intra_op_threads if threads is None else threads,
                       max_pad_ratio=self.max_pad_ratio if max_pad_ratio is None else max_pad_ratio,
                       share_cores=self.share_cores if share_cores is None else share_cores)

    def heavy(self, volume_per_second: float | None = None) -> dict:
        """The scheduling fields of a heavy model; `volume_per_second`: the elements per item of its largest
        input per second of audio (an audio model: its runs are capped at ``max_run_seconds``)."""
        parameters = {"intra_op_threads": str(self.intra_op_threads), "max_pad_ratio": str(self.max_pad_ratio)}
        if volume_per_second is not None:
            parameters["max_run_volume"] = str(int(self.max_run_seconds * volume_per_second))
        return {"batching": self.batching, "instances": self.instances, "streams": self.streams,
                "cores": self.intra_op_threads * self.streams if self.share_cores else 0,
                "parameters": parameters}


DEFAULT_TUNING = Tuning()


def _audio(seconds: float = 1.0) -> dict[str, np.ndarray]:
    """One clip as warm-up input for a model taking (wav, wav_lens)."""
    wav = speechlike(seconds)
    return {"wav": wav, "wav_lens": np.array([len(wav)], np.int64)}


def load_manifest(models_root: Path, family: str) -> dict:
    path = Path(models_root) / family / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no exported {family} model at {path.parent}; run `toneserve export` first")
    return json.loads(path.read_text())


PRECISIONS = ("fp32", "bf16", "int8", "fp16")
RUNTIMES = ("auto", "onnxruntime", "openvino")
# The models whose runtime and precision are chosen (the rest run fp32 in ONNX Runtime or numpy).
HEAVY = ("emotion2vec", "sensevoice_encoder", "text_sentiment_classifier")
# What a bf16 request serves, first passed first: ordered by speed measured on an AMD EPYC with avx512_bf16 and
# VNNI (base models, 2 streams x 1 thread, loadtest/openvino_precisions.py, docs/BENCHMARKS.md "Int8 weights" and
# "Static int8, the first layer float"), seconds for the tool's workload. Static int8 first: emotion2vec+ 0.58 s
# (float layers in bf16) and 0.67 (f32) against 0.75 with int8 weights in bf16, in the same memory; int8w-bf16
# before bf16 (emotion2vec+ 0.71 vs 0.78 in an earlier session); bf16 before int8w (emotion2vec+ 0.78 vs 1.17).
BF16_PREFERENCE = ("int8-bf16", "int8", "int8w-bf16", "bf16", "int8w")
# A candidate of an order that is not OpenVINO's: ONNX Runtime's dynamic int8 variant (`toneserve export --variants
# int8`), judged by the same gate at export.
ORT_INT8 = "onnxruntime-int8"
# The SenseVoice encoder's: static int8 2.68 s with its float layers in f32, 2.89 in bf16; ONNX Runtime's dynamic
# int8 3.25 s in 960 MB against int8 weights with bf16 activations 3.74 s in 1228 MB, with f32 ones 4.53 s in 1316
# MB; plain bf16 4.03 in an earlier session. On random weights both static int8 and ONNX Runtime's int8 fail the
# gate (CTC top-1 77.2 %, 93.5 %; gate 97 %), and so does int8w-bf16 on the base size: int8w is served.
ENCODER_BF16_PREFERENCE = ("int8", "int8-bf16", ORT_INT8, "int8w-bf16", "bf16", "int8w")
# The text classifier's: no static int8, which was faster (0.059 s against int8w-bf16's 0.087) but held 818 MB
# against 369 (OpenVINO keeps its embedding table unpacked), nor ONNX Runtime's int8 (0.058 s against 0.069, but
# 626 MB against 352); int8w-bf16 before bf16 (0.087 vs 0.111). emotion2vec+'s order has no ONNX Runtime int8
# either: 1.14 s against int8w-bf16's 0.73.
TEXT_BF16_PREFERENCE = ("int8w-bf16", "bf16", "int8w")


@dataclass(frozen=True)
class Choice:
    """What serves a heavy model: the runtime, the precision it computes in, the graph and any
    OpenVINO compile properties (from the export's accuracy gate)."""

    runtime: str
    precision: str
    graph: Path
    compile_config: dict


def _ort_graph(folder: Path, manifest: dict, fp32_name: str, precision: str) -> Path:
    """The ONNX Runtime graph: the fp32 export, or the variant of it the manifest records."""
    if precision == "fp32":
        return folder / fp32_name
    entry = manifest.get("variants", {}).get(precision)
    if entry is None:
        raise CommandError(f"no {precision} variant of {manifest['model']} in {folder}; "
                           f"run `toneserve export --variants {precision}`")
    (name,) = entry["files"]
    return folder / name


def choose(folder: Path, manifest: dict, fp32_name: str, precision: str, runtime: str = "auto",
           cpu: Iterable[str] | None = None, preference: tuple[str, ...] = BF16_PREFERENCE) -> Choice:
    """The runtime and graph of one heavy model for a requested precision.

    auto: OpenVINO where the export's openvino entry says the precision passed its accuracy gate. bf16 (what
    `serve` serves on a CPU with native bf16) takes the first of the model's ``preference`` that passed
    (``BF16_PREFERENCE`` and the others above: OpenVINO's precisions, the bf16 ones on a CPU that computes in bf16,
    and ``ORT_INT8``, ONNX Runtime's dynamic int8 variant where its gate passed); where none did,
    bf16 is served as fp32 and chosen as fp32 is. Else ONNX Runtime: the fp32 graph for fp32, the dynamic-int8
    variant for int8, the fp16 variant for fp16 (the gpu profile's). "onnxruntime" forces ONNX Runtime
    (bf16 then serves fp32); "openvino" forces OpenVINO whatever the gates said (it needs the openvino entry)."""
    if runtime not in RUNTIMES:
        raise CommandError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
    openvino = manifest.get("variants", {}).get("openvino")
    gates = (openvino or {}).get("precisions", {})
    if precision == "bf16" and runtime == "auto":
        # The cost-efficient request (serve's default on a bf16 CPU): the fastest graph whose gate passed.
        for candidate in preference:
            if candidate == ORT_INT8:
                if manifest.get("variants", {}).get("int8", {}).get("passed"):
                    return Choice("onnxruntime", "int8", _ort_graph(folder, manifest, fp32_name, "int8"), {})
                continue
            gate = gates.get(candidate, {})
            if gate.get("passed") and (has_bf16(cpu) or not candidate.endswith("bf16")):
                graph = folder / gate["file"] if "file" in gate else folder / fp32_name
                return Choice("openvino", candidate, graph, dict(gate.get("compile_config", {})))
        precision = "fp32"  # none passed here: served as fp32 and chosen as fp32 is (OpenVINO f32 where it passed)
    elif precision == "bf16" and not has_bf16(cpu):
        precision = "fp32"  # no bf16 here: OpenVINO would silently run f32
    if precision != "fp16" and runtime != "onnxruntime" and openvino is not None:
        gate = gates.get(precision, {})
        if runtime == "openvino" or gate.get("passed", False):
            if precision == "int8":
                if "file" not in gate:
                    raise CommandError(f"the openvino export of {manifest['model']} has no int8 IR; "
                                       "run `toneserve export --variants openvino`")
                graph = folder / gate["file"]
            else:
                graph = folder / fp32_name
            return Choice("openvino", precision, graph, dict(gate.get("compile_config", {})))
    if runtime == "openvino":
        why = ("fp16 is the gpu profile's" if precision == "fp16" else
               f"no openvino export of {manifest['model']} in {folder}; run `toneserve export --variants openvino`")
        raise CommandError(f"cannot serve {manifest['model']} {precision} on OpenVINO: {why}")
    if precision == "bf16":
        precision = "fp32"  # ONNX Runtime has no bf16 on CPU: the fp32 graph
    return Choice("onnxruntime", precision, _ort_graph(folder, manifest, fp32_name, precision), {})


def _provenance(manifest: dict, choice: Choice) -> dict[str, str]:
    """The ensemble's provenance: the runtime and precision its heavy model actually got."""
    return {FAMILY: manifest["model"], PRESET: manifest["preset"],
            WEIGHTS_ORIGIN: manifest["weights_origin"], PRECISION: choice.precision, RUNTIME: choice.runtime}


def _heavy(tuning: Tuning, choice: Choice, volume_per_second: float | None = None) -> dict:
    """The OnnxModel fields of a heavy model: tuning, runtime, precision, compile properties."""
    settings = tuning.heavy(volume_per_second)
    parameters = dict(settings.pop("parameters"))
    if choice.compile_config:
        parameters["compile_config"] = json.dumps(choice.compile_config, sort_keys=True)
    return {**settings, "parameters": parameters, "onnx_file": choice.graph, "runtime": choice.runtime,
            "precision": choice.precision}


def emotion_models(models_root: Path, precision: str = "fp32", tuning: Tuning = DEFAULT_TUNING,
                   runtime: str = "auto", cpu: Iterable[str] | None = None) -> list:
    manifest = load_manifest(models_root, "emotion2vec")
    folder = Path(models_root) / "emotion2vec"
    serving = manifest["serving"]
    classes, dim = len(serving["labels"]), serving["embedding_dim"]
    choice = choose(folder, manifest, "model.onnx", precision, runtime, cpu)
    labels = tuple(serving["labels"])
    # The graph computes the probabilities itself (serving.probs_output): one execution per request
    # instead of the encoder and a separate softmax model, which a short clip paid for twice.
    probs = serving["probs_output"]
    encoder = OnnxModel(
        name="emotion2vec", **_heavy(tuning, choice, SAMPLE_RATE),
        inputs=(Tensor("wav", "float32", (-1,), ragged=True), Tensor("wav_lens", "int64", (1,), is_length=True)),
        outputs=(Tensor(probs, "float32", (classes,), labels=labels), Tensor("embedding", "float32", (dim,))),
        warmup=_audio())
    ensemble = Ensemble(
        name=EMOTION, max_batch_size=tuning.batching.max_batch_size,
        inputs=(Tensor(WAV, "float32", (-1,)), Tensor(WAV_LENS, "int64", (1,))),
        outputs=(Tensor(PROBS, "float32", (classes,), labels=labels), Tensor(EMBEDDING, "float32", (dim,))),
        steps=(Step("emotion2vec", {"wav": WAV, "wav_lens": WAV_LENS}, {probs: PROBS, "embedding": EMBEDDING}),),
        parameters={**_provenance(manifest, choice), EMOTION_LABELS: json.dumps(serving["labels"])})
    return [encoder, ensemble]


def asr_models(models_root: Path, precision: str = "fp32", tuning: Tuning = DEFAULT_TUNING,
               runtime: str = "auto", cpu: Iterable[str] | None = None) -> list:
    manifest = load_manifest(models_root, "sensevoice")
    folder = Path(models_root) / "sensevoice"
    assets = json.loads((folder / "decode_assets.json").read_text())
    feat_dim, vocab = manifest["serving"]["feat_dim"], manifest["serving"]["vocab_size"]
    frontend = OnnxModel(
        name="sensevoice_frontend", onnx_file=folder / "frontend.onnx", batching=tuning.batching,
        inputs=(Tensor("wav", "float32", (-1,), ragged=True), Tensor("wav_lens", "int64", (1,), is_length=True)),
        outputs=(Tensor("feats", "float32", (-1, feat_dim)), Tensor("feat_lens", "int64", (1,), is_length=True)),
        trim={"feats": ("feat_lens", 1)}, warmup=_audio())
    query = {"language": assets["language_query_ids"]["auto"], "textnorm": assets["textnorm_query_ids"]["woitn"]}
    choice = choose(folder, manifest, "encoder.onnx", precision, runtime, cpu, ENCODER_BF16_PREFERENCE)
    encoder = OnnxModel(
        name="sensevoice_encoder", **_heavy(tuning, choice, feat_dim * 1000 / sensevoice_decode.FRAME_SHIFT_MS),
        inputs=(Tensor("speech", "float32", (-1, feat_dim), ragged=True),
                Tensor("speech_lengths", "int64", (1,), is_length=True),
                Tensor("language", "int64", (1,), is_length=True),
                Tensor("textnorm", "int64", (1,), is_length=True)),
        outputs=(Tensor("ctc_logits", "float32", (-1, vocab)),
                 Tensor("encoder_out_lens", "int64", (1,), is_length=True)),
        trim={"ctc_logits": ("encoder_out_lens", 1)},
        warmup={"speech": np.zeros((16, feat_dim), np.float32), "speech_lengths": np.array([16], np.int64),
                **{name: np.array([value], np.int64) for name, value in query.items()}})
    decoder = PythonModel(
        name="sensevoice_decoder", source=RUNNERS / "sensevoice_decoder.py", batching=tuning.batching,
        files=(Path(sensevoice_decode.__file__), folder / "decode_assets.json", folder / "bpe.model"),
        inputs=(Tensor("ctc_logits", "float32", (-1, vocab), ragged=True),
                Tensor("encoder_out_lens", "int64", (1,))),
        outputs=(Tensor(TEXT, "bytes", (1,)), Tensor(TOKENS, "bytes", (-1,)), Tensor(TOKEN_MS, "int32", (-1,)),
                 Tensor(TOKEN_END_MS, "int32", (-1,)),
                 *(Tensor(out, "float32", (len(assets[name]),), labels=tuple(assets[name]))
                   for name, out in ASR_DISTRIBUTIONS.items())),
        parameters={"distribution_outputs": json.dumps(ASR_DISTRIBUTIONS)},
        warmup={"ctc_logits": np.zeros((20, vocab), np.float32), "encoder_out_lens": np.array([20], np.int64)})
    ensemble = Ensemble(
        name=ASR, max_batch_size=tuning.batching.max_batch_size,
        inputs=(Tensor(WAV, "float32", (-1,)), Tensor(WAV_LENS, "int64", (1,)),
                Tensor(LANGUAGE, "int64", (1,)), Tensor(TEXTNORM, "int64", (1,))),
        outputs=decoder.outputs,
        steps=(Step("sensevoice_frontend", {"wav": WAV, "wav_lens": WAV_LENS},
                    {"feats": "_feats", "feat_lens": "_feat_lens"}),
               Step("sensevoice_encoder", {"speech": "_feats", "speech_lengths": "_feat_lens",
                                           "language": LANGUAGE, "textnorm": TEXTNORM},
                    {"ctc_logits": "_ctc_logits", "encoder_out_lens": "_encoder_out_lens"}),
               Step("sensevoice_decoder", {"ctc_logits": "_ctc_logits", "encoder_out_lens": "_encoder_out_lens"},
                    {t.name: t.name for t in decoder.outputs})),
        parameters={**_provenance(manifest, choice),
                    **{ASR_LABELS[name]: json.dumps(list(assets[name])) for name in ASR_DISTRIBUTIONS},
                    LANGUAGE_QUERY_IDS: json.dumps(assets["language_query_ids"]),
                    TEXTNORM_QUERY_IDS: json.dumps(assets["textnorm_query_ids"])})
    return [frontend, encoder, decoder, ensemble]


def speaker_models(models_root: Path, tuning: Tuning = DEFAULT_TUNING) -> list:
    """The speaker-embedding model (diarization): light like the VAD and the fbank frontend, so always the
    fp32 graph in ONNX Runtime, whatever precision the heavy models get; its features are inside the graph."""
    manifest = load_manifest(models_root, "speaker")
    folder = Path(models_root) / "speaker"
    serving = manifest["serving"]
    dim = serving["embedding_dim"]
    graph = folder / "model.onnx"
    encoder = OnnxModel(
        name="speaker_encoder", onnx_file=graph, batching=tuning.batching,
        inputs=(Tensor("wav", "float32", (-1,), ragged=True), Tensor("wav_lens", "int64", (1,), is_length=True)),
        outputs=(Tensor("embedding", "float32", (dim,)),), warmup=_audio(2.0))
    ensemble = Ensemble(
        name=SPEAKER, max_batch_size=tuning.batching.max_batch_size,
        inputs=(Tensor(WAV, "float32", (-1,)), Tensor(WAV_LENS, "int64", (1,))),
        outputs=(Tensor(EMBEDDING, "float32", (dim,)),),
        steps=(Step("speaker_encoder", {"wav": WAV, "wav_lens": WAV_LENS}, {"embedding": EMBEDDING}),),
        parameters=_provenance(manifest, Choice("onnxruntime", "fp32", graph, {})))
    return [encoder, ensemble]


# The text-sentiment model takes a call's sentences in one request (gateway/sentiment.py): larger batches
# than the audio models, whose rows are seconds of audio where these are a sentence's tokens (<= max_tokens).
TEXT_BATCHING = Batching(max_batch_size=32, preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=2000)


def text_sentiment_models(models_root: Path, precision: str = "fp32", tuning: Tuning = DEFAULT_TUNING,
                          runtime: str = "auto", cpu: Iterable[str] | None = None) -> list:
    """The words' sentiment: the checkpoint's own tokenizer (a Python model, runners/text_tokenizer.py), then the
    classifier graph (heavy: runtime and precision chosen like emotion2vec+'s), as the ``text_sentiment``
    ensemble taking TEXT and answering PROBS in the model's id2label order."""
    manifest = load_manifest(models_root, "text_sentiment")
    folder = Path(models_root) / "text_sentiment"
    serving = manifest["serving"]
    labels = tuple(serving["labels"])
    batching = replace(TEXT_BATCHING, max_batch_size=max(tuning.batching.max_batch_size, TEXT_BATCHING.max_batch_size))
    tokenizer = PythonModel(
        name="text_sentiment_tokenizer", source=RUNNERS / "text_tokenizer.py", batching=batching,
        files=(folder / serving["tokenizer"],),
        inputs=(Tensor(TEXT, "bytes", (1,)),),
        outputs=(Tensor("input_ids", "int64", (-1,)), Tensor("input_lens", "int64", (1,))),
        parameters={"tokenizer_file": serving["tokenizer"], MAX_TOKENS: str(serving["max_tokens"]),
                    "pad_id": str(serving["pad_id"])})
    choice = choose(folder, manifest, "model.onnx", precision, runtime, cpu, TEXT_BF16_PREFERENCE)
    heavy = _heavy(tuning, choice)
    classifier = OnnxModel(
        name="text_sentiment_classifier", **{**heavy, "batching": batching},
        inputs=(Tensor("input_ids", "int64", (-1,), ragged=True), Tensor("input_lens", "int64", (1,), is_length=True)),
        outputs=(Tensor("probs", "float32", (len(labels),), labels=labels),),
        warmup={"input_ids": np.zeros(16, np.int64), "input_lens": np.array([16], np.int64)})
    ensemble = Ensemble(
        name=TEXT_SENTIMENT, max_batch_size=batching.max_batch_size,
        inputs=(Tensor(TEXT, "bytes", (1,)),),
        outputs=(Tensor(PROBS, "float32", (len(labels),), labels=labels),),
        steps=(Step("text_sentiment_tokenizer", {TEXT: TEXT}, {"input_ids": "_input_ids", "input_lens": "_input_lens"}),
               Step("text_sentiment_classifier", {"input_ids": "_input_ids", "input_lens": "_input_lens"},
                    {"probs": PROBS})),
        parameters={**_provenance(manifest, choice), TEXT_SENTIMENT_LABELS: json.dumps(list(labels)),
                    MAX_TOKENS: str(serving["max_tokens"])})
    return [tokenizer, classifier, ensemble]


def silero_onnx() -> Path:
    """The standard silero VAD graph that the silero-vad wheel ships (MIT), 8 and 16 kHz."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the silero-vad package is not installed (pip install silero-vad==6.2.3)")
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


def vad_models(tuning: Tuning = DEFAULT_TUNING) -> list:
    audio = _audio()
    model = PythonModel(
        name=VAD, source=RUNNERS / "vad_model.py", files=(RUNNERS / "vad_core.py", silero_onnx()),
        batching=tuning.batching,
        inputs=(Tensor(WAV, "float32", (-1,), ragged=True), Tensor(WAV_LENS, "int64", (1,))),
        outputs=(Tensor(SPEECH_PROBS, "float32", (-1,)), Tensor(FRAMES, "int64", (1,))),
        # Real weights from the silero-vad wheel: the preset names the package version they came with.
        parameters={FAMILY: "silero_vad", PRESET: f"silero-vad {metadata.version('silero-vad')}",
                    WEIGHTS_ORIGIN: "package", PRECISION: "fp32", RUNTIME: "onnxruntime",
                    "onnx_file": "silero_vad.onnx"},
        warmup={WAV: audio["wav"], WAV_LENS: audio["wav_lens"]})
    return [model]


def describe(models_root: Path, precision: str = "fp32", tuning: Tuning = DEFAULT_TUNING, runtime: str = "auto",
             cpu: Iterable[str] | None = None) -> list:
    """All models of the repository, built from the manifests under `models_root`.

    `precision` is what the heavy models (emotion2vec+, the SenseVoice encoder) should compute in, and
    `runtime` what runs them ("auto", "onnxruntime", "openvino"): see `choose` for how each heavy model
    gets its runtime and graph, and `summary` for what they got. `cpu`: OpenVINO's capabilities to
    choose for (default: this machine's). The light models (softmax, the fbank frontend, CTC decoding,
    VAD) always run fp32 in ONNX Runtime / numpy: they are cheap and the frontend is precision-sensitive.
    """
    if precision not in PRECISIONS:
        raise CommandError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    return (emotion_models(models_root, precision, tuning, runtime, cpu)
            + asr_models(models_root, precision, tuning, runtime, cpu) + vad_models(tuning)
            + speaker_models(models_root, tuning) + text_sentiment_models(models_root, precision, tuning, runtime, cpu))


def summary(models: list) -> str:
    """One line naming the runtime and precision each heavy model got, e.g.
    "emotion2vec openvino bf16, sensevoice_encoder onnxruntime fp32"."""
    return ", ".join(f"{m.name} {m.runtime} {m.precision}" for m in models if m.name in HEAVY)
