"""A call-like corpus for load tests, generated (no download, no licence question).

    python -m toneserve.loadtest.corpus --out DIR --calls 16 \
        [--durations 15 30 60 120] [--weights 4 3 2 1] [--rates 8000 16000] \
        [--formats wav flac mp3 ogg] [--channels 2] [--seed 0]

Each recording is `toneserve.samples.call`: two speakers taking turns with silences and
overlaps, one speaker per channel (or both mixed down to one channel where `--channels`
asks for 1). Durations are shared out in proportion to `--weights` and shuffled; formats,
rates and channel counts rotate from call to call, so even a small corpus mixes them all.
Everything is a function of `--seed`: the same command writes the same audio.

    python -m toneserve.loadtest.corpus --out DIR --short 32 [--clip-seconds 2] [--rates ...] [--formats ...]

`--short N` writes short clips instead of calls: N mono recordings of `--clip-seconds` +- 1 s
(at least 0.5 s), each one continuous speech-like turn (`toneserve.samples.speechlike`) with
0.1-0.3 s of silence before and after, as a voice command or a clipped utterance has; formats
and rates rotate as for calls. The benchmark runs them with `--short-corpus`.

`manifest.json` lists every file: file, seconds, rate, channels, format, bytes, the call's
seed and its turns (speaker, start s, end s) as ground truth. The load-test users, the
baseline and the compute bound all read the corpus through `load` / `select` here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from toneserve.samples import FORMATS, call_blocks, call_turns, speechlike, write_encoded

MANIFEST = "manifest.json"
DEFAULT_DURATIONS = (15.0, 30.0, 60.0, 120.0)
DEFAULT_RATES = (8000, 16000)
DEFAULT_FORMATS = ("wav", "flac", "mp3", "ogg")


@dataclass(frozen=True)
class Entry:
    file: str  # relative to the corpus folder
    seconds: float
    rate: int  # the rate the call was rendered at (ogg/opus keeps 8 and 16 kHz as they are)
    channels: int
    format: str
    bytes: int
    seed: int  # seed of toneserve.samples.call
    turns: tuple[tuple[int, float, float], ...]  # (speaker, start s, end s)

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for _, start, end in self.turns)


def shares(count: int, weights: list[float]) -> list[int]:
    """`count` split in proportion to `weights` (largest remainders get the leftovers)."""
    if count < 0 or not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"need a non-negative count and non-negative weights with a positive sum, got "
                         f"{count} and {weights}")
    exact = [count * w / sum(weights) for w in weights]
    out = [int(x) for x in exact]
    for index in sorted(range(len(weights)), key=lambda i: out[i] - exact[i])[:count - sum(out)]:
        out[index] += 1
    return out


def plan(calls: int, durations, weights, rates, formats, channels, seed: int) -> list[dict]:
    """What to render: one dict per call (no audio yet)."""
    for name, values in (("durations", durations), ("rates", rates), ("formats", formats), ("channels", channels)):
        if not values:
            raise ValueError(f"--{name} needs at least one value")
    weights = list(weights) if weights else [1.0] * len(durations)
    if len(weights) != len(durations):
        raise ValueError(f"{len(weights)} weights for {len(durations)} durations")
    if min(durations) <= 0:
        raise ValueError(f"durations must be positive, got {list(durations)}")
    rng = np.random.default_rng([seed, 0xC0])
    lengths = [d for d, n in zip(durations, shares(calls, weights)) for _ in range(n)]
    rng.shuffle(lengths)
    out = []
    for index, seconds in enumerate(lengths):
        # Each option rotates on every call, shifted by one per full turn of the options before it:
        # a few calls already mix every rate and format, a full cycle holds every combination.
        fmt = formats[index % len(formats)]
        rate = int(rates[(index + index // len(formats)) % len(rates)])
        count = int(channels[(index + index // (len(formats) * len(rates))) % len(channels)])
        out.append({"index": index, "seconds": float(seconds), "rate": rate, "format": fmt, "channels": count,
                    "seed": int(rng.integers(2**31))})
    return out


def _blocks(seconds: float, rate: int, seed: int, channels: int) -> Iterator[np.ndarray]:
    for block in call_blocks(seconds, rate, seed=seed, speakers=2):
        # one channel: both speakers mixed down, as a mono recording of the call would have them
        yield np.clip(block.sum(axis=1), -1.0, 1.0).astype(np.float32) if channels == 1 else block


def render(item: dict, out: Path) -> Entry:
    """Write one planned call into `out`, atomically; return its manifest entry."""
    if item["channels"] not in (1, 2):
        raise ValueError(f"a call has two speakers: 1 (mixed) or 2 channels, not {item['channels']}")
    name = (f"call-{item['index']:04d}-{item['seconds']:g}s-{item['rate'] // 1000}k-"
            f"{item['channels']}ch.{item['format']}")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=out)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write_encoded(file, _blocks(item["seconds"], item["rate"], item["seed"], item["channels"]),
                          item["rate"], item["format"])
        os.replace(temporary, out / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    turns = tuple((int(speaker), float(start), float(end))
                  for speaker, start, end in call_turns(item["seconds"], seed=item["seed"], speakers=2))
    return Entry(file=name, seconds=item["seconds"], rate=item["rate"], channels=item["channels"],
                 format=item["format"], bytes=(out / name).stat().st_size, seed=item["seed"], turns=turns)


def plan_short(count: int, clip_seconds: float, rates, formats, seed: int) -> list[dict]:
    """What to render for `--short`: one dict per clip (no audio yet)."""
    if count < 1:
        raise ValueError("--short must be at least 1")
    if clip_seconds < 0.5:
        raise ValueError(f"--clip-seconds must be at least 0.5, got {clip_seconds:g}")
    if not rates or not formats:
        raise ValueError("--rates and --formats need at least one value")
    rng = np.random.default_rng([seed, 0x5C])
    out = []
    for index in range(count):
        seconds = round(float(rng.uniform(max(0.5, clip_seconds - 1.0), clip_seconds + 1.0)), 2)
        lead = round(float(rng.uniform(0.1, 0.3)), 2)
        trail = round(float(rng.uniform(0.1, 0.3)), 2)
        speech = round(max(0.3, seconds - lead - trail), 2)
        out.append({"index": index, "seconds": round(lead + speech + trail, 2), "lead": lead, "speech": speech,
                    "rate": int(rates[(index + index // len(formats)) % len(rates)]),
                    "format": formats[index % len(formats)], "channels": 1, "seed": int(rng.integers(2**31)),
                    "f0": round(float(rng.uniform(100, 220)), 1)})
    return out


def render_short(item: dict, out: Path) -> Entry:
    """Write one planned clip into `out`, atomically; return its manifest entry."""
    rate = item["rate"]
    speech = speechlike(item["speech"], rate, seed=item["seed"], f0=item["f0"], pauses=False)
    lead = np.zeros(int(round(item["lead"] * rate)), np.float32)
    samples = np.concatenate([lead, speech, np.zeros(int(round(item["seconds"] * rate)) - len(lead) - len(speech),
                                                     np.float32)])
    name = f"clip-{item['index']:04d}-{item['seconds']:g}s-{rate // 1000}k-1ch.{item['format']}"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=out)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write_encoded(file, [samples], rate, item["format"])
        os.replace(temporary, out / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    turn: tuple[int, float, float] = (0, item["lead"], round(item["lead"] + item["speech"], 2))
    return Entry(file=name, seconds=item["seconds"], rate=rate, channels=1, format=item["format"],
                 bytes=(out / name).stat().st_size, seed=item["seed"],
                 turns=(turn,))


def generate_short(out: Path, count: int, clip_seconds: float = 2.0, rates=DEFAULT_RATES, formats=DEFAULT_FORMATS,
                   seed: int = 0, progress: bool = True) -> list[Entry]:
    """Render a short-clip corpus into `out` and write its manifest (the calls' manifest format)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    items = plan_short(count, clip_seconds, list(rates), list(formats), seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = [render_short(item, out) for item in items]
    manifest = {"generator": "toneserve.samples.speechlike", "seed": seed, "clips": count,
                "options": {"clip_seconds": clip_seconds, "rates": list(rates), "formats": list(formats)},
                "audio_seconds": sum(e.seconds for e in entries), "entries": [asdict(e) for e in entries]}
    temporary = out / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, out / MANIFEST)
    if progress:
        print(f"[corpus] {len(entries)} clips, {manifest['audio_seconds']:.1f} s of audio -> {out / MANIFEST}",
              file=sys.stderr, flush=True)
    return entries


def generate(out: Path, calls: int, durations=DEFAULT_DURATIONS, weights=None, rates=DEFAULT_RATES,
             formats=DEFAULT_FORMATS, channels=(2,), seed: int = 0, progress: bool = True) -> list[Entry]:
    """Render the corpus into `out` and write its manifest (last, so a manifest means a complete corpus)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; choose from {sorted(FORMATS)}")
    if calls < 1:
        raise ValueError("--calls must be at least 1")
    items = plan(calls, list(durations), weights, list(rates), list(formats), list(channels), seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    started = time.perf_counter()
    for item in items:
        entry = render(item, out)
        entries.append(entry)
        if progress:
            print(f"[corpus] {len(entries)}/{len(items)} {entry.file} ({entry.bytes / 1e6:.1f} MB, "
                  f"{entry.speech_seconds:.0f} s of speech)", file=sys.stderr, flush=True)
    manifest = {"generator": "toneserve.samples.call", "seed": seed, "calls": calls,
                "options": {"durations": list(durations), "weights": weights, "rates": list(rates),
                            "formats": list(formats), "channels": list(channels)},
                "audio_seconds": sum(e.seconds for e in entries),
                "entries": [asdict(e) for e in entries]}
    temporary = out / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, out / MANIFEST)
    if progress:
        print(f"[corpus] {len(entries)} calls, {manifest['audio_seconds']:.0f} s of audio in "
              f"{time.perf_counter() - started:.1f} s -> {out / MANIFEST}", file=sys.stderr, flush=True)
    return entries


def load(folder: Path) -> list[Entry]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {folder} ({MANIFEST} missing); generate one with "
                                f"`python -m toneserve.loadtest.corpus --out {folder} --calls 16`")
    entries = json.loads(path.read_text())["entries"]
    return [Entry(**{**e, "turns": tuple(tuple(t) for t in e["turns"])}) for e in entries]


def select(entries: list[Entry], durations=None, formats=None, rates=None, channels=None) -> list[Entry]:
    """The entries matching every given filter (None or empty: any); an empty result is an error."""
    keep = [e for e in entries
            if (not durations or any(abs(e.seconds - float(d)) < 1e-6 for d in durations))
            and (not formats or e.format in formats)
            and (not rates or e.rate in {int(r) for r in rates})
            and (not channels or e.channels in {int(c) for c in channels})]
    if not keep:
        have = sorted({(e.seconds, e.format, e.rate, e.channels) for e in entries})
        raise ValueError(f"no corpus entry matches durations={durations} formats={formats} rates={rates} "
                         f"channels={channels}; the corpus has (seconds, format, rate, channels) {have}")
    return keep


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toneserve.loadtest.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write the recordings and manifest.json into")
    count = p.add_mutually_exclusive_group(required=True)
    count.add_argument("--calls", type=int, help="how many call recordings")
    count.add_argument("--short", type=int, metavar="N", help="write N short clips instead of calls")
    p.add_argument("--clip-seconds", type=float, default=2.0,
                   help="--short: mean clip length; clips are this +- 1 s (default 2)")
    p.add_argument("--durations", type=float, nargs="+", default=list(DEFAULT_DURATIONS),
                   help="call lengths in seconds (default 15 30 60 120)")
    p.add_argument("--weights", type=float, nargs="+", help="share of each duration (default equal)")
    p.add_argument("--rates", type=int, nargs="+", default=list(DEFAULT_RATES),
                   help="sample rates (default 8000 16000)")
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), help="containers (default wav flac mp3 ogg)")
    p.add_argument("--channels", type=int, nargs="+", default=[2], choices=[1, 2],
                   help="2: one speaker per channel (default); 1: both speakers mixed down")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.short is not None:
            generate_short(args.out, args.short, args.clip_seconds, args.rates, args.formats, args.seed)
        else:
            generate(args.out, args.calls, args.durations, args.weights, args.rates, args.formats, args.channels,
                     args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
