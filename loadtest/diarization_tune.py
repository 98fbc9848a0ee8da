"""Which diarization recipe, at which threshold: the gateway's pipeline without oracle turns, scored.

    python -m toneserve.loadtest.diarization_tune CORPUS_DIR [--out results.json] [--threads 2] [--per-file]
                                                 [--cache cuts.pkl]

CORPUS_DIR is what ``python -m toneserve.loadtest.diarization_corpus`` wrote. For every file the gateway's
own steps run: decoding and resampling to 16 kHz (gateway/audio.py), silero VAD (the wheel's
``silero_vad.onnx`` through model_repository/runners/vad_core.py) cut into utterances by
gateway/segmenter.py's ``Segmentation`` at the default thresholds (gateway/thresholds.py), Resemblyzer's
``VoiceEncoder.embed_utterance`` on the raw 16 kHz audio of each unit (what the ``speaker`` model serves),
gateway/diarization.py's ``cluster``, and loadtest/der.py's DER (0.25 s collar, overlap not scored; also
with overlap scored). Variants:

* ``utt``: one embedding per VAD utterance, the utterance labelled whole;
* ``win``: 1.5 s windows every 0.75 s over each utterance (a shorter utterance is one window), every
  10 ms frame labelled by the window whose centre is nearest (with half-overlapping windows each frame
  has two voters; the nearer centre breaks their tie);
* ``utt+cp``: utterances split where ``change_points`` finds a change in their windows, one embedding per
  piece;
* ``win, staged``: ``win`` with the staged clustering forced (16 units per linkage instead of 512, as a
  4-hour call gets); ``win, online``: ``OnlineClusters``' provisional labels, windows fed in time order;
* ablations of ``utt``: all units in the tree (``reliable_s=0``), no folding of small clusters, and the
  speaker count given (``Hints(expected=...)``, the oracle count).

The threshold of ``cluster`` is swept; it is chosen on the 16 kHz files (DER, then count accuracy) and the
8 kHz copies are reported at the same value; each variant is also reported at ``diarization.THRESHOLD``
("@default"). ``utt+cp`` is what the gateway runs (gateway/speakers.py), so the defaults are its best
values; ``--per-file`` prints its per-file table at the defaults. The embedding cost (encoder seconds per audio hour, one
process with `--threads` torch threads) is timed for each kind of unit.
"""
from __future__ import annotations

import argparse
import functools
import json
import pickle
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toneserve.gateway import diarization as dz
from toneserve.loadtest import der
from toneserve.loadtest.diarization_corpus import load

RATE = 16000
WINDOW_S = 1.5
SHIFT_S = 0.75
FRAME_S = 0.01
THRESHOLDS = tuple(round(x, 3) for x in np.arange(0.20, 0.601, 0.025))
CHANGE_THRESHOLDS = (0.25, 0.30, 0.35, 0.40)
CP_MIN_UTTERANCE_S = 3.0  # utterances shorter than this are not searched for changes


@dataclass
class FileData:
    name: str
    rate: int
    seconds: float
    reference: list
    utterances: list  # (start sample, end sample)
    utt_emb: np.ndarray = field(default_factory=lambda: np.zeros((0, 256), np.float32))
    windows: list = field(default_factory=list)  # per utterance: [(start sample, end sample)]
    win_emb: list = field(default_factory=list)  # per utterance: [W, 256]
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def vad_session():
    import silero_vad

    from toneserve.model_repository.runners.vad_core import SileroVad

    return SileroVad(str(Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"))


def gateway_utterances(path: Path, vad) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(16 kHz mono audio, the gateway's utterances as (start, end) samples)."""
    from toneserve.gateway.audio import open_audio
    from toneserve.gateway.segmenter import Segmentation, block_seconds
    from toneserve.gateway.settings import Settings
    from toneserve.gateway.thresholds import DEFAULTS

    with open_audio(path) as stream:
        blocks = list(stream.blocks(block_seconds()))
    segmentation = Segmentation([0], DEFAULTS.vad_threshold, DEFAULTS.min_silence_ms, Settings().max_utterance_seconds)
    out = []
    for block in blocks:
        block = block[:1]
        wav = segmentation.vad_input(block)
        probs, _ = vad.probabilities(wav, np.array([wav.shape[1]]))
        out += segmentation.feed(block, probs)
    out += segmentation.finish()
    audio = np.concatenate([b[0] for b in blocks]).astype(np.float32)
    return audio, [(u.start, u.end) for u in out]


def window_bounds(start: int, end: int) -> list[tuple[int, int]]:
    """1.5 s windows every 0.75 s over [start, end); the last one ends at `end`; a short span is one window."""
    width, shift = int(WINDOW_S * RATE), int(SHIFT_S * RATE)
    if end - start <= width:
        return [(start, end)]
    starts = list(range(start, end - width + 1, shift))
    if starts[-1] + width < end - int(0.1 * RATE):
        starts.append(end - width)
    return [(s, s + width) for s in starts]


def frame_turns(utterances, windows, labels_per_utt) -> list[tuple[float, float, str]]:
    """Each 10 ms frame of each utterance labelled by the nearest window centre; runs merged."""
    turns = []
    for (start, end), bounds, labels in zip(utterances, windows, labels_per_utt):
        frames = np.arange(start, end, int(FRAME_S * RATE)) + int(FRAME_S * RATE) // 2
        centres = np.array([(a + b) / 2 for a, b in bounds])
        nearest = np.argmin(np.abs(frames[:, None] - centres[None, :]), axis=1)
        frame_labels = np.asarray(labels)[nearest]
        change = np.flatnonzero(np.diff(frame_labels)) + 1
        edges = [0, *change.tolist(), len(frames)]
        for a, b in zip(edges, edges[1:]):
            t0 = start / RATE if a == 0 else (frames[a] - FRAME_S * RATE / 2) / RATE
            t1 = end / RATE if b == len(frames) else (frames[b] - FRAME_S * RATE / 2) / RATE
            turns.append((t0, t1, str(frame_labels[a])))
    return turns


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.audio: dict[str, float] = {}

    def add(self, kind: str, seconds: float, audio_seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.audio[kind] = self.audio.get(kind, 0.0) + audio_seconds

    def per_hour(self) -> dict[str, float]:
        return {k: self.seconds[k] / self.audio[k] * 3600 for k in self.seconds}


def prepare(corpus: Path, encoder, timer: Timer) -> list[FileData]:
    vad = vad_session()
    files = []
    for entry in load(corpus):
        reference = der.read_rttm(corpus / entry.rttm)[entry.name]
        audio, utterances = gateway_utterances(corpus / entry.file, vad)
        data = FileData(entry.name, entry.rate, entry.seconds, reference, utterances, audio=audio)
        embeddings = []
        for start, end in utterances:
            started = time.perf_counter()
            embeddings.append(encoder.embed_utterance(audio[start:end]))
            timer.add("utterance", time.perf_counter() - started, (end - start) / RATE)
        data.utt_emb = np.array(embeddings, np.float32).reshape(-1, 256)
        for start, end in utterances:
            bounds = window_bounds(start, end)
            started = time.perf_counter()
            data.win_emb.append(np.array([encoder.embed_utterance(audio[a:b]) for a, b in bounds], np.float32))
            timer.add("window 1.5 s / 0.75 s", time.perf_counter() - started, (end - start) / RATE)
            data.windows.append(bounds)
        files.append(data)
        print(f"  {entry.name}: {len(utterances)} utterances, {sum(len(w) for w in data.windows)} windows",
              file=sys.stderr)
    return files


def run_utt(files, threshold, oracle: bool = False, **options):
    hyp = {}
    for f in files:
        durations = np.array([(b - a) / RATE for a, b in f.utterances])
        hints = dz.Hints(expected=len({s for _, _, s in f.reference})) if oracle else dz.Hints()
        labels = dz.cluster(f.utt_emb, durations, hints, threshold=threshold, **options)
        hyp[f.name] = [(a / RATE, b / RATE, str(k)) for (a, b), k in zip(f.utterances, labels)]
    return hyp


def run_win(files, threshold):
    hyp = {}
    for f in files:
        if not f.utterances:
            hyp[f.name] = []
            continue
        emb = np.concatenate(f.win_emb)
        durations = np.array([(b - a) / RATE for bounds in f.windows for a, b in bounds])
        labels = dz.cluster(emb, durations, threshold=threshold)
        per_utt, offset = [], 0
        for bounds in f.windows:
            per_utt.append(labels[offset:offset + len(bounds)])
            offset += len(bounds)
        hyp[f.name] = frame_turns(f.utterances, f.windows, per_utt)
    return hyp


def run_win_staged(files, threshold, block: int = 16):
    """`run_win` with the staged clustering forced (BLOCK units per linkage, as a 4-hour call needs)."""
    saved = dz.BLOCK
    dz.BLOCK = block
    try:
        return run_win(files, threshold)
    finally:
        dz.BLOCK = saved


def run_online(files, threshold):
    """OnlineClusters' provisional labels, windows fed in time order."""
    hyp = {}
    for f in files:
        online = dz.OnlineClusters(threshold=threshold)
        per_utt = [[online.add(e, (b - a) / RATE) for e, (a, b) in zip(emb, bounds)]
                   for emb, bounds in zip(f.win_emb, f.windows)]
        hyp[f.name] = frame_turns(f.utterances, f.windows, per_utt)
    return hyp


def split_pieces(files, change_threshold, encoder, timer):
    """Per file: pieces (start, end) and their embeddings, utterances split at change_points."""
    out = {}
    for f in files:
        pieces, emb = [], []
        for (start, end), bounds, windows, e in zip(f.utterances, f.windows, f.win_emb, f.utt_emb):
            cuts = dz.change_points(windows, change_threshold) if (end - start) / RATE >= CP_MIN_UTTERANCE_S else []
            if not cuts:
                pieces.append((start, end))
                emb.append(e)
                continue
            edges = [start, *[bounds[i][0] for i in cuts], end]
            for a, b in zip(edges, edges[1:]):
                started = time.perf_counter()
                emb.append(encoder.embed_utterance(f.audio[a:b]))
                timer.add("change-point pieces (extra)", time.perf_counter() - started, (b - a) / RATE)
                pieces.append((a, b))
        out[f.name] = (pieces, np.array(emb, np.float32).reshape(-1, 256))
    return out


def run_pieces(files, threshold, pieces):
    hyp = {}
    for f in files:
        spans, emb = pieces[f.name]
        labels = dz.cluster(emb, np.array([(b - a) / RATE for a, b in spans]), threshold=threshold)
        hyp[f.name] = [(a / RATE, b / RATE, str(k)) for (a, b), k in zip(spans, labels)]
    return hyp


def summary(files, hyp) -> dict:
    ref = {f.name: f.reference for f in files}
    no_overlap, with_overlap = der.score_both(ref, {f.name: hyp[f.name] for f in files})
    return {"der": no_overlap.der, "missed": no_overlap.missed, "false_alarm": no_overlap.false_alarm,
            "confusion": no_overlap.confusion, "count": no_overlap.count_accuracy, "der_overlap": with_overlap.der,
            "report": no_overlap}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toneserve.loadtest.diarization_tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-file", action="store_true", help="print the per-file table of the chosen variant")
    parser.add_argument("--cache", type=Path, help="keep the VAD cuts and embeddings here (pickle) and reuse them")
    args = parser.parse_args(argv)

    import torch
    from resemblyzer import VoiceEncoder

    torch.set_num_threads(args.threads)
    encoder = VoiceEncoder("cpu", verbose=False)
    encoder.embed_utterance(np.zeros(RATE * 2, np.float32) + 1e-3)  # warm (librosa's first call compiles)
    timer = Timer()
    if args.cache and args.cache.exists():
        with args.cache.open("rb") as file:
            files, timer = pickle.load(file)
    else:
        files = prepare(args.corpus, encoder, timer)
        if args.cache:
            with args.cache.open("wb") as file:
                pickle.dump((files, timer), file)
    groups = {"16k": [f for f in files if f.rate == RATE and not f.name.startswith("pyannote")],
              "8k": [f for f in files if f.rate != RATE],
              "pyannote": [f for f in files if f.name.startswith("pyannote")]}

    variants = {
        "utt": lambda fs, t: run_utt(fs, t),
        "utt, all units in tree": lambda fs, t: run_utt(fs, t, reliable_s=0.0),
        "utt, no small-cluster folding": lambda fs, t: run_utt(fs, t, merge_small=False),
        "win 1.5/0.75": run_win,
        "win, staged (BLOCK=16)": run_win_staged,
        "win, online (provisional)": run_online,
    }
    piece_sets = {ct: split_pieces(files, ct, encoder, timer) for ct in CHANGE_THRESHOLDS}
    for ct, pieces in piece_sets.items():
        variants[f"utt+cp {ct:g}"] = functools.partial(run_pieces, pieces=pieces)

    results: dict = {"cpu": cpu_name(), "threads": args.threads, "python": platform.python_version(),
                     "embedding_s_per_audio_hour": timer.per_hour(), "variants": {}}
    rows = []
    for name, run in variants.items():
        sweep = {t: summary(groups["16k"], run(groups["16k"], t)) for t in THRESHOLDS}
        best = min(THRESHOLDS, key=lambda t: (round(sweep[t]["der"], 3), -sweep[t]["count"]))
        at = {"16k": sweep[best], "8k": summary(groups["8k"], run(groups["8k"], best))}
        if groups["pyannote"]:
            at["pyannote"] = summary(groups["pyannote"], run(groups["pyannote"], best))
        at_default = {g: summary(groups[g], run(groups[g], dz.THRESHOLD)) for g in ("16k", "8k") if groups[g]}
        results["variants"][name] = {
            "best_threshold": best,
            "sweep_16k": {str(t): {k: v for k, v in s.items() if k != "report"} for t, s in sweep.items()},
            "at_best": {g: {k: v for k, v in s.items() if k != "report"} for g, s in at.items()},
            "at_default": {g: {k: v for k, v in s.items() if k != "report"} for g, s in at_default.items()}}
        for g, s in at.items():
            rows.append((name, best, g, s))
        for g, s in at_default.items():
            rows.append((name + " @default", dz.THRESHOLD, g, s))
    oracle = {g: summary(groups[g], run_utt(groups[g], dz.THRESHOLD, oracle=True)) for g in groups if groups[g]}
    for g, s in oracle.items():
        rows.append(("utt, count given (oracle K)", float("nan"), g, s))
    results["variants"]["utt, count given"] = {g: {k: v for k, v in s.items() if k != "report"}
                                               for g, s in oracle.items()}

    print(f"\n{'variant':<34} {'thr':>5} {'set':>8} {'DER%':>6} {'miss%':>6} {'FA%':>5} {'conf%':>6} "
          f"{'count':>6} {'DER+ovl%':>8}")
    for name, t, g, s in rows:
        print(f"{name:<34} {t:5.3f} {g:>8} {100 * s['der']:6.1f} {100 * s['missed']:6.1f} {100 * s['false_alarm']:5.1f} "
              f"{100 * s['confusion']:6.1f} {100 * s['count']:5.0f}% {100 * s['der_overlap']:8.1f}")
    print("\nthreshold sweep (16 kHz, DER % / count %):")
    for name in variants:
        sweep = results["variants"][name]["sweep_16k"]
        print(f"{name:<34} " + " ".join(f"{t}:{100 * s['der']:.1f}/{100 * s['count']:.0f}" for t, s in sweep.items()))
    print(f"\nembedding cost on {results['cpu']} ({args.threads} torch threads), encoder s per audio hour:")
    for kind, value in results["embedding_s_per_audio_hour"].items():
        print(f"  {kind:<30} {value:8.1f}")
    if args.per_file:
        # the gateway's recipe at the defaults: utterances split at change_points, one embedding per piece
        chosen = piece_sets.get(dz.CHANGE_THRESHOLD) or split_pieces(files, dz.CHANGE_THRESHOLD, encoder, timer)
        for g in ("16k", "8k", "pyannote"):
            if groups[g]:
                print(f"\nutt+cp {dz.CHANGE_THRESHOLD:g}, threshold {dz.THRESHOLD:g}, {g}:")
                der.print_table(summary(groups[g], run_pieces(groups[g], dz.THRESHOLD, chosen))["report"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
