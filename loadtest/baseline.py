"""The baseline: what users do today, behind the same toneserve.v1 API.

    python -m toneserve.loadtest.baseline --size base --port 50061 \
        [--workers CORES] [--threads 1] [--check-against 127.0.0.1:50051]

A small gRPC server answering `Analyzer.Analyze` the way a team without toneserve would:
FunASR's `AutoModel` loaded in-process, `generate()` called per utterance, one request at a
time per worker (a thread pool of `--workers`, each with its own models). Per request: decode
(the gateway's decoder, so decoding costs the same on both sides), silero-vad in-process
(`get_speech_timestamps` on the graph Triton serves, with the gateway's VAD settings) per
channel, then per utterance SenseVoiceSmall (`AutoModel.generate`) and emotion2vec+ on the
same <= 5 s windows the gateway cuts (`AutoModel.generate(granularity="utterance")`).

Same models, same weights: the FunASR model folders are written with
`export.sources.save_local_layout` from the weights `toneserve export` exported (random weights
are rebuilt from the preset and seed in the export manifests, tokenizer and am.mvn copied from
the export; hub or local weights are loaded from where the export read them). `--check-against
GATEWAY` proves it before serving: one call through both, emotion probabilities within 1e-3,
the same utterances, the same transcripts (see `parity`).

The answer carries a subset of AnalyzeResponse: segments (times, channel, speaker, transcript,
language when SenseVoice tagged one, emotion distribution), per-speaker segment counts and talk
time, and metadata. No prosody, text sentiment or reconciliation: they are not what is measured.

Two deliberate departures from FunASR's defaults, both needed for parity and neither changing
the cost: the fbank `dither` is 0 (FunASR's WavFrontend adds random noise by default, so its
transcripts vary run to run), and torch runs `--threads` threads.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import sentencepiece as spm
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from toneserve import paths
from toneserve.console import say
from toneserve.contract import ERROR_CODE_METADATA, Code, ToneserveError
from toneserve.export import sources
from toneserve.gateway.audio import decode
from toneserve.gateway.pipeline import emotion_windows
from toneserve.model_repository.catalog import load_manifest
from toneserve.model_repository.runners.sensevoice_decode import (
    LANGUAGE_TAGS,
    OPTIONAL_EVENT_TAGS,
    OPTIONAL_OTHER_TAGS,
    TAG_FAMILIES,
)
from toneserve.samples import call, wav_bytes
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

# torch, FunASR, silero-vad and the exporters (which import torch) are imported inside the functions that
# load and run the models: they take seconds to import, and the parity check needs none of them.

SAMPLE_RATE = 16000
# The gateway's VAD settings (gateway/thresholds.py, gateway/segmenter.py, gateway/settings.py).
VAD_THRESHOLD, MIN_SILENCE_MS, SPEECH_PAD_MS, MIN_SPEECH_MS, MAX_UTTERANCE_S = 0.5, 300, 30, 250, 30.0
WINDOW_SECONDS = 5.0
MAX_MESSAGE = 80 * 1024 * 1024
LEADING_TAG = re.compile(r"^<\|([^|]*)\|>")
NOTE = ("BASELINE: FunASR AutoModel in-process, one request per worker; segments carry transcript, "
        "language tag and emotion only")


# ------------------------------------------------------------------------------ model folders


def _write_random_layout(family: str, manifest: dict, export_dir: Path, folder: Path) -> None:
    """Rebuild the random weights the export used (same preset, same seed) as a FunASR folder."""
    if family == "emotion2vec":
        from toneserve.export import emotion2vec

        tokens = emotion2vec.read_tokens(export_dir / "tokens.txt")
        model = emotion2vec.build_model(manifest["preset"], manifest["seed"], vocab_size=len(tokens))
        sources.save_local_layout(model, family, folder, tokens=tokens)
    else:
        from toneserve.export import sensevoice

        vocab = spm.SentencePieceProcessor(model_file=str(export_dir / "bpe.model")).GetPieceSize()
        model = sensevoice.build_model(manifest["preset"], vocab, seed=manifest["seed"])
        sources.save_local_layout(model, family, folder, bpe_model=export_dir / "bpe.model",
                                  cmvn_file=export_dir / "am.mvn")


def funasr_folder(family: str, models_dir: Path, work: Path) -> Path:
    """A FunASR model folder holding the weights the export of `family` under `models_dir` used."""
    manifest = load_manifest(models_dir, family)
    source = manifest["source"]
    if source["kind"] == "local":
        return Path(source["ref"])
    if source["kind"] == "hub":
        return sources.resolve(sources.Source("hub", source["ref"], family, hub=source.get("hub"),
                                              revision=source.get("revision")))
    folder = work / family
    stamp = {"export_files": manifest["files"], "preset": manifest["preset"], "seed": manifest["seed"]}
    marker = folder / "toneserve-export.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return folder
    say(f"{family}: rebuilding the export's random weights ({manifest['preset']}, seed {manifest['seed']}) "
        f"as a FunASR model folder in {folder}", "baseline")
    _write_random_layout(family, manifest, models_dir / family, folder)
    marker.write_text(json.dumps(stamp))
    return folder


# ------------------------------------------------------------------------------ the analysis


@dataclass
class Worker:
    """One request at a time: its own FunASR models and VAD (none of them is shared between threads)."""
    asr: object
    emotion: object
    vad: object


def load_worker(folders: dict[str, Path], threads: int) -> Worker:
    with contextlib.redirect_stdout(io.StringIO()):  # FunASR prints notices on import
        from funasr import AutoModel
    from silero_vad import load_silero_vad

    common = dict(device="cpu", disable_update=True, disable_pbar=True, disable_log=True, ncpu=threads)
    asr = AutoModel(model=str(folders["sensevoice"]), frontend_conf={"dither": 0.0}, **common)
    emotion = AutoModel(model=str(folders["emotion2vec"]), **common)
    # The graph Triton's vad model runs (silero-vad's ONNX), through silero-vad's own wrapper.
    return Worker(asr=asr, emotion=emotion, vad=load_silero_vad(onnx=True))


def split_tags(text: str) -> tuple[str, list[str]]:
    """FunASR's SenseVoice text '<|en|><|NEUTRAL|><|Speech|><|woitn|>hello' -> ('hello', [tags]):
    the known tags SenseVoice's four query frames put in front (what users strip), nothing else."""
    known = {tag for family in TAG_FAMILIES.values() for tag in family} | {*OPTIONAL_EVENT_TAGS, *OPTIONAL_OTHER_TAGS}
    tags = []
    while len(tags) < 4 and (match := LEADING_TAG.match(text)) and match.group(1) in known:
        tags.append(match.group(1))
        text = text[match.end():]
    return text.strip(), tags


class Baseline:
    def __init__(self, workers: list[Worker], labels: list[str], models: list, random_weights: bool):
        self.pool: queue.Queue[Worker] = queue.Queue()
        for worker in workers:
            self.pool.put(worker)
        self.labels = labels  # emotion2vec+ labels, the export's names, in the model's order
        self.models = models
        self.random_weights = random_weights

    def analyze(self, request, worker: Worker):
        import torch
        from silero_vad import get_speech_timestamps

        started = time.perf_counter()
        audio = decode(request.audio)
        channels = audio.samples.mean(axis=0, keepdims=True) if request.mix_channels else audio.samples
        roles = dict(request.channel_roles)
        t = request.thresholds
        threshold = t.vad_threshold if t.HasField("vad_threshold") else VAD_THRESHOLD
        min_silence = t.min_silence_ms if t.HasField("min_silence_ms") else MIN_SILENCE_MS
        window = request.window_seconds or WINDOW_SECONDS
        language = request.language or "auto"
        segments, speakers = [], []
        for index, wav in enumerate(channels):
            channel = -1 if request.mix_channels else index
            name = "mix" if request.mix_channels else roles.get(index) or f"channel_{index}"
            spans = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wav)), worker.vad, threshold=threshold,
                                          sampling_rate=SAMPLE_RATE, min_speech_duration_ms=MIN_SPEECH_MS,
                                          max_speech_duration_s=MAX_UTTERANCE_S,
                                          min_silence_duration_ms=min_silence, speech_pad_ms=SPEECH_PAD_MS)
            talk = 0.0
            for span in spans:
                utterance = wav[span["start"]:span["end"]]
                text = worker.asr.generate(input=utterance, language=language, use_itn=request.use_itn,
                                           disable_pbar=True)[0]["text"]
                cuts = emotion_windows(len(utterance), window)
                scores = [np.asarray(worker.emotion.generate(input=utterance[a:b], granularity="utterance",
                                                             extract_embedding=False, disable_pbar=True)[0]["scores"])
                          for a, b in cuts]
                weights = np.array([b - a for a, b in cuts], np.float64)
                probs = sum(w * s for w, s in zip(weights, scores)) / weights.sum()
                transcript, tags = split_tags(text)
                segment = pb.Segment(start_ms=span["start"] * 1000 // SAMPLE_RATE,
                                     end_ms=span["end"] * 1000 // SAMPLE_RATE, channel=channel, speaker=name,
                                     transcript=transcript, emotion_windows=len(cuts),
                                     emotion=pb.Distribution(labels=self.labels, probabilities=probs.tolist(),
                                                             top=self.labels[int(np.argmax(probs))]))
                spoken = [tag for tag in tags if tag in LANGUAGE_TAGS]
                if spoken:  # FunASR gives the language as a tag, not a distribution
                    segment.language.CopyFrom(pb.Distribution(
                        labels=list(LANGUAGE_TAGS), top=spoken[0],
                        probabilities=[float(tag == spoken[0]) for tag in LANGUAGE_TAGS]))
                segments.append(segment)
                talk += len(utterance) / SAMPLE_RATE
            speakers.append(pb.SpeakerSummary(speaker=name, channel=channel, talk_seconds=talk,
                                              segments=len(spans)))
        if not segments:
            raise ToneserveError(Code.NO_SPEECH, f"VAD found no speech in {audio.seconds:.1f} s of audio")
        segments.sort(key=lambda s: (s.start_ms, s.channel))
        warnings = [NOTE] + (["RANDOM WEIGHTS: transcripts and emotions are meaningless"]
                             if self.random_weights else [])
        metadata = pb.Metadata(request_id=request.request_id or uuid.uuid4().hex, models=self.models,
                               random_weights=self.random_weights, audio_seconds=audio.seconds,
                               sample_rate_in=audio.source_rate, channels_in=audio.source_channels,
                               processing_ms=(time.perf_counter() - started) * 1000.0, warnings=warnings,
                               emotion_labels=self.labels, container=audio.container, codec=audio.codec)
        return pb.AnalyzeResponse(segments=segments, speakers=speakers, metadata=metadata,
                                  call=pb.CallSummary(duration_seconds=audio.seconds, segments=len(segments)))


def servicer(baseline: Baseline):
    class Analyzer(pb_grpc.AnalyzerServicer):
        def Analyze(self, request, context):
            worker = baseline.pool.get()  # as many workers as server threads: never waits long
            try:
                return baseline.analyze(request, worker)
            except ToneserveError as error:
                context.set_trailing_metadata(((ERROR_CODE_METADATA, error.code.name),))
                context.abort(grpc.StatusCode[error.code.status], error.message)
            finally:
                baseline.pool.put(worker)

    return Analyzer()


def build(models_dir: Path, workers: int, threads: int) -> Baseline:
    """Load `workers` sets of models, each answering one request at a time."""
    work = paths.home() / "baseline" / models_dir.name
    folders = {family: funasr_folder(family, models_dir, work) for family in ("emotion2vec", "sensevoice")}
    say(f"loading {workers} worker(s) of FunASR AutoModel ({threads} torch threads) from "
        f"{folders['emotion2vec']} and {folders['sensevoice']}", "baseline")
    loaded = [load_worker(folders, threads) for _ in range(workers)]
    logging.getLogger().setLevel(logging.WARNING)  # FunASR turns the root logger to INFO on load
    manifests = {family: load_manifest(models_dir, family) for family in folders}
    models = [pb.ModelInfo(name=f"funasr:{family}", family=family, preset=m["preset"],
                           weights_origin=m["weights_origin"], precision="fp32") for family, m in manifests.items()]
    return Baseline(loaded, list(manifests["emotion2vec"]["serving"]["labels"]), models,
                    any(m["weights_origin"] == "random" for m in manifests.values()))


def serve(baseline: Baseline, host: str, port: int, workers: int):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.so_reuseport", 0)])
    pb_grpc.add_AnalyzerServicer_to_server(servicer(baseline), server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}; is the port taken?")
    server.start()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


# ------------------------------------------------------------------------------ parity


def transcripts_match(baseline: str, toneserve: str, random_weights: bool) -> bool:
    """FunASR decodes SenseVoice's four query frames too, as text in front of the transcript.
    Trained weights emit the <|language|><|emotion|><|event|><|itn|> tags there, which the
    baseline strips, so the transcripts must be equal. Random weights emit arbitrary pieces
    there, so the baseline's transcript must end with toneserve's."""
    return baseline.endswith(toneserve) if random_weights else baseline == toneserve


def parity(gateway: str, baseline: str, seconds: float = 12.0, seed: int = 3, tolerance: float = 1e-3) -> dict:
    """One generated stereo call through both servers; a report whose "ok" says they agree:
    the same utterances, emotion probabilities within `tolerance`, matching transcripts."""
    audio = wav_bytes(call(seconds, 16000, seed=seed).samples, 16000)
    answers = {}
    for name, address in (("toneserve", gateway), ("baseline", baseline)):
        with grpc.insecure_channel(address) as channel:
            answers[name] = pb_grpc.AnalyzerStub(channel).Analyze(
                pb.AnalyzeRequest(audio=audio, channel_roles={0: "agent", 1: "customer"}), timeout=600)
    ours, theirs = answers["toneserve"].segments, answers["baseline"].segments
    random_weights = answers["baseline"].metadata.random_weights
    report = {"clip_seconds": seconds, "segments": [len(ours), len(theirs)], "tolerance": tolerance,
              "same_utterances": [(s.channel, s.start_ms, s.end_ms) for s in ours]
              == [(s.channel, s.start_ms, s.end_ms) for s in theirs], "max_emotion_diff": None,
              "transcripts_match": False, "examples": []}
    if report["same_utterances"] and ours:
        report["max_emotion_diff"] = max(float(np.max(np.abs(np.subtract(a.emotion.probabilities,
                                                                          b.emotion.probabilities))))
                                         for a, b in zip(ours, theirs))
        report["transcripts_match"] = all(transcripts_match(b.transcript, a.transcript, random_weights)
                                          for a, b in zip(ours, theirs))
        report["examples"] = [{"toneserve": a.transcript, "baseline": b.transcript} for a, b in zip(ours[:2], theirs)]
    report["ok"] = bool(report["same_utterances"] and ours and report["max_emotion_diff"] <= tolerance
                        and report["transcripts_match"])
    return report


# ------------------------------------------------------------------------------ command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="base", choices=["tiny", "base"],
                   help="which `toneserve export --size` to take the weights from (default base)")
    p.add_argument("--models-dir", type=Path, help="exported models (default $TONESERVE_HOME/models/SIZE)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50061)
    # Measured on 2 cores (docs/BENCHMARKS.md): 2 workers x 1 thread answer twice what 1 x 2 does.
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="requests analysed at once, each with its own models (default: one per core)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, shared by all workers (default 1)")
    p.add_argument("--check-against", metavar="GATEWAY",
                   help="before serving, check parity with toneserve at this address; exit 1 if they differ")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    models_dir = args.models_dir or paths.models_dir(args.size)
    try:
        baseline = build(Path(models_dir), args.workers, args.threads)
        server = serve(baseline, args.host, args.port, args.workers)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.check_against:
            say(f"parity check against toneserve at {args.check_against} ...", "baseline")
            report = parity(args.check_against, f"{args.host}:{args.port}")
            say("parity: " + json.dumps(report, ensure_ascii=False), "baseline")
            if not report["ok"]:
                say("parity FAILED: the baseline does not run what toneserve runs; not serving", "baseline")
                return 1
        say(f"baseline listening on {args.host}:{args.port} ({args.workers} worker(s), {args.threads} threads)",
            "baseline")
        stop.wait()
    except grpc.RpcError as exc:
        print(f"error: parity check: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    finally:
        server.stop(5).wait()
    say("stopped", "baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
