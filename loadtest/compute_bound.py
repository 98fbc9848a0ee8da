"""The raw compute bound: the served models, run in-process in the runtime that serves each, no server.

    python -m toneserve.loadtest.compute_bound --repository ~/.cache/toneserve/repository/base-cpu \
        --corpus DIR [--durations 30 60] [--formats wav] [--streams N] [--json out.json]

Takes the graphs, thread settings and instance counts from a rendered model repository (the
very files, `intra_op_threads` and `instance_group` Triton serves), and the corpus recordings a
load test sends. The recordings are decoded first, as the gateway decodes them (not timed).
Then each is cut into utterances exactly as the gateway does (30.72 s VAD blocks with 0.5 s of
context, its segmenter, 5 s emotion windows) and every model call the gateway would make goes
straight to the model's runtime (ONNX Runtime, or OpenVINO compiled with the properties its runner
uses): silero VAD per block, emotion2vec+ (softmax in its graph) per window, the
SenseVoice frontend, encoder and CTC decoding per utterance, one call at a time per stream.
Streams (default: the instances of the heavy models times their streams) take recordings from a shared list, each
with its own sessions, as Triton's instances would.

The wall time of that is what the machine needs for model compute alone to answer the corpus
once, so audio seconds / wall seconds (RTFx) bounds a server running these graphs with these
settings at batch size 1, and `1 - served RTFx / compute-bound RTFx` is the serving overhead:
everything that is not model compute (decoding, gRPC, queueing, copies, Python, pitch and
sentiment). Per-model seconds say which model the compute goes to.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from toneserve.contract import concurrency
from toneserve.gateway.audio import open_audio
from toneserve.gateway.pipeline import emotion_windows
from toneserve.gateway.segmenter import Segmentation, block_seconds
from toneserve.gateway.settings import Settings
from toneserve.gateway.thresholds import DEFAULTS
from toneserve.loadtest import corpus as corpus_module
from toneserve.model_repository.runners.openvino_compile import compile_properties
from toneserve.model_repository.runners.sensevoice_decode import ctc_greedy_decode, load_decode_assets
from toneserve.samples import speechlike

MODELS = ("vad", "emotion2vec", "sensevoice_frontend", "sensevoice_encoder", "sensevoice_decoder")


def model_config(repository: Path, name: str):
    """The model's config.pbtxt as Triton's ModelConfig protobuf."""
    path = Path(repository) / name / "config.pbtxt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: is {repository} a toneserve cpu model repository?")
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def config_parameters(config) -> dict[str, str]:
    """A ModelConfig's parameters as {key: value}."""
    return {key: value.string_value for key, value in config.parameters.items()}


def _ort_session(path: Path, threads: int):
    options = ort.SessionOptions()
    # as model_repository/runners/onnx_runner.py sets them
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(None, feed)))


def _openvino_session(path: Path, params: dict[str, str], cache_dir: Path):
    import openvino as ov

    # as model_repository/runners/openvino_runner.py compiles it
    # One stream: this bound computes `streams` recordings at once, each on its own compiled model.
    compiled = ov.Core().compile_model(str(path), "CPU", compile_properties(params, str(cache_dir)))
    request = compiled.create_infer_request()
    inputs = [port.get_names() for port in compiled.inputs]  # compiling may add names (fused Casts)
    outputs = list(compiled.outputs)

    def run(feed: dict) -> dict:
        arrays = [np.ascontiguousarray(next(feed[name] for name in names if name in feed)) for names in inputs]
        # OpenVINO's binding knows numpy's int64 under one of its two C type numbers: a view, as the runner does
        request.infer([a.view(np.int64) if a.dtype == np.int64 else a for a in arrays])
        return {name: np.array(request.get_tensor(port).data) for port in outputs for name in port.get_names()}
    return run


class Models:
    """The repository's graphs, each in the runtime that serves it, each timed per call."""

    def __init__(self, repository: Path):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.threads: dict[str, int] = {}
        self.sessions = {}
        for name in ("emotion2vec", "sensevoice_frontend", "sensevoice_encoder"):
            params = config_parameters(model_config(repository, name))
            self.threads[name] = int(params.get("intra_op_threads", "1"))
            version = Path(repository) / name / "1"
            # The OpenVINO runner names its graph graph_file, the ONNX Runtime runner onnx_file.
            self.sessions[name] = (_openvino_session(version / params["graph_file"], params, version / "ov_cache")
                                   if "graph_file" in params else _ort_session(version / params["onnx_file"],
                                                                               self.threads[name]))
        vad_params = config_parameters(model_config(repository, "vad"))
        spec = importlib.util.spec_from_file_location("vad_core", Path(repository) / "vad" / "1" / "vad_core.py")
        vad_core = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vad_core)
        self.threads["vad"] = int(vad_params.get("intra_op_threads", "1"))
        vad_file = Path(repository) / "vad" / "1" / vad_params.get("onnx_file", "silero_vad.onnx")
        self.vad_model = vad_core.SileroVad(vad_file, threads=self.threads["vad"])
        self.assets = load_decode_assets(Path(repository) / "sensevoice_decoder" / "1" / "decode_assets.json")
        asr = config_parameters(model_config(repository, "asr"))
        self.language = int(json.loads(asr["language_query_ids"])["auto"])
        self.textnorm = int(json.loads(asr["textnorm_query_ids"])["woitn"])
        self.precision = asr.get("precision", "?")

    def _timed(self, name: str, work):
        started = time.perf_counter()
        result = work()
        self.seconds[name] += time.perf_counter() - started
        self.calls[name] += 1
        return result

    def _run(self, name: str, feed: dict):
        session = self.sessions[name]
        return self._timed(name, lambda: session(feed))

    def vad(self, rows: np.ndarray) -> np.ndarray:
        lens = np.full(len(rows), rows.shape[1], np.int64)
        return self._timed("vad", lambda: self.vad_model.probabilities(np.ascontiguousarray(rows, np.float32), lens))[0]

    def emotion(self, wav: np.ndarray) -> np.ndarray:
        return self._run("emotion2vec", {"wav": wav[None], "wav_lens": np.array([len(wav)], np.int64)})["probs"][0]

    def asr(self, wav: np.ndarray) -> str:
        front = self._run("sensevoice_frontend", {"wav": wav[None], "wav_lens": np.array([len(wav)], np.int64)})
        out = self._run("sensevoice_encoder", {"speech": front["feats"], "speech_lengths": front["feat_lens"],
                                               "language": np.array([self.language], np.int64),
                                               "textnorm": np.array([self.textnorm], np.int64)})
        decoded = self._timed("sensevoice_decoder", lambda: ctc_greedy_decode(
            out["ctc_logits"][0], int(out["encoder_out_lens"][0]), self.assets))
        return decoded["text"]

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def decoded_blocks(path: Path) -> list[np.ndarray]:
    """A recording as the gateway decodes it: 16 kHz float32 [channels, n] blocks of 30.72 s."""
    with open_audio(path) as stream:
        return list(stream.blocks(block_seconds()))


def utterances(blocks: list[np.ndarray], models: Models):
    """The gateway's utterances of one recording (its `Segmentation`), VAD on `models`."""
    segmentation = Segmentation(range(len(blocks[0])), DEFAULTS.vad_threshold, DEFAULTS.min_silence_ms,
                                Settings().max_utterance_seconds)
    for block in blocks:
        yield from segmentation.feed(block, models.vad(segmentation.vad_input(block)))
    yield from segmentation.finish()


def instances(repository: Path) -> int:
    """How many requests the repository computes at once: its heavy models' instances times their streams."""
    configs = [model_config(repository, name) for name in ("emotion2vec", "sensevoice_encoder")]
    return max(concurrency(json_format.MessageToDict(config, preserving_proto_field_name=True))
               for config in configs)


def measure(repository: Path, corpus: Path, durations=(), formats=(), rates=(), channels=(),
            streams: int | None = None, progress: bool = True) -> dict:
    """Answer every selected corpus recording once, `streams` recordings at a time (default: as
    many as the repository has instances of its heavy models), each stream with its own
    sessions; RTFx is audio seconds over the wall time of that (decoding done beforehand)."""
    entries = corpus_module.select(corpus_module.load(corpus), durations, formats, rates, channels)
    streams = streams or instances(repository)
    started = time.perf_counter()
    recordings = [(entry, decoded_blocks(Path(corpus) / entry.file)) for entry in entries]
    decode_seconds = time.perf_counter() - started
    workers = [Models(repository) for _ in range(streams)]
    warm = speechlike(3.0)
    for models in workers:
        models.vad(warm[None])
        models.emotion(warm)
        models.asr(warm)
        models.reset()
    window = Settings().window_seconds
    pending = list(reversed(recordings))
    lock = threading.Lock()
    counts = {"utterances": 0, "speech": 0.0, "done": 0}
    errors: list[BaseException] = []

    def stream(models: Models) -> None:
        try:
            while True:
                with lock:
                    if not pending:
                        return
                    entry, blocks = pending.pop()
                for utterance in utterances(blocks, models):
                    models.asr(utterance.samples)
                    for a, b in emotion_windows(len(utterance.samples), window):
                        models.emotion(utterance.samples[a:b])
                    with lock:
                        counts["utterances"] += 1
                        counts["speech"] += len(utterance.samples) / 16000
                with lock:
                    counts["done"] += 1
                    if progress:
                        print(f"[compute_bound] {counts['done']}/{len(recordings)} {entry.file}",
                              file=sys.stderr, flush=True)
        except BaseException as exc:  # reported by the caller, not lost in a thread
            errors.append(exc)

    started, cpu_started = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    threads = [threading.Thread(target=stream, args=(models,)) for models in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu_ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_ended.ru_utime + cpu_ended.ru_stime) - (cpu_started.ru_utime + cpu_started.ru_stime)
    if errors:
        raise errors[0]
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for models in workers:
        for name in models.seconds:
            seconds[name] += models.seconds[name]
            calls[name] += models.calls[name]
    audio = sum(entry.seconds for entry in entries)
    return {"repository": str(repository), "precision": workers[0].precision, "corpus": str(corpus),
            "recordings": len(entries), "utterances": counts["utterances"], "audio_seconds": audio,
            "speech_seconds": counts["speech"], "streams": streams, "threads": dict(workers[0].threads),
            "model_seconds": dict(seconds), "model_calls": dict(calls), "compute_seconds": sum(seconds.values()),
            "wall_seconds": wall, "rtfx": audio / wall if wall > 0 else 0.0, "decode_seconds": decode_seconds,
            # every thread of this process, ONNX Runtime's included: the cores the bound kept busy
            "cpu_cores": cpu / wall if wall > 0 else 0.0}


def markdown(result: dict) -> str:
    lines = ["| model | threads | calls | seconds | share |", "|---|---:|---:|---:|---:|"]
    for name in MODELS:
        if name in result["model_seconds"]:
            s = result["model_seconds"][name]
            lines.append(f"| {name} | {result['threads'].get(name, 1)} | {result['model_calls'][name]} | {s:.1f} | "
                         f"{s / result['compute_seconds']:.0%} |")
    lines.append(f"| **all models** | | | **{result['compute_seconds']:.1f}** | |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.compute_bound", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, required=True, help="rendered cpu model repository")
    p.add_argument("--corpus", type=Path, required=True, help="corpus folder (python -m toneserve.loadtest.corpus)")
    p.add_argument("--durations", type=float, nargs="*", default=[], help="only calls of these lengths (s)")
    p.add_argument("--formats", nargs="*", default=[], help="only these formats")
    p.add_argument("--rates", type=int, nargs="*", default=[], help="only these sample rates")
    p.add_argument("--channels", type=int, nargs="*", default=[], help="only these channel counts")
    p.add_argument("--streams", type=int,
                   help="recordings computed at once (default: the repository's instances of its heavy models)")
    p.add_argument("--json", type=Path, help="write every figure here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = measure(args.repository, args.corpus, args.durations, args.formats, args.rates, args.channels,
                         args.streams)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"\n{result['audio_seconds']:.0f} s of audio ({result['recordings']} recordings, {result['utterances']} "
          f"utterances, {result['precision']}): {result['compute_seconds']:.1f} s of model compute in "
          f"{result['wall_seconds']:.1f} s on {result['streams']} stream(s) using {result['cpu_cores']:.2f} cores, "
          f"RTFx {result['rtfx']:.1f}; "
          f"decoding ({result['decode_seconds']:.1f} s) not counted")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
