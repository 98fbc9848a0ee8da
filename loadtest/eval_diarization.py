"""`toneserve eval diarization DIR`: the diarization error rate of whatever the gateway serves.

Every recording in DIR that has an RTTM reference beside it (`NAME.wav` / `.flac` / `.mp3` ... with
`NAME.rttm`, as `python -m toneserve.loadtest.diarization_corpus DIR` writes them) is analysed through
the gateway with the SDK, as a user's file would be; each segment (start, end, speaker) is the
hypothesis. Scored by loadtest/der.py (pyannote.metrics, collar 0.25 s either side, overlapped speech
not scored; `--overlap` also prints the scores with overlap scored): DER, missed, false alarm, confusion
and the speaker count, per file and overall. `--json PATH` keeps everything.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from toneserve.client.cli import add_connection_arguments, add_request_arguments, request_options
from toneserve.client.inputs import AUDIO_EXTENSIONS
from toneserve.console import CommandError
from toneserve.loadtest import der


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="recordings with NAME.rttm references beside them")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--overlap", action="store_true", help="also print the scores with overlapped speech scored")
    add_request_arguments(p)
    server = add_connection_arguments(p)
    server.add_argument("--timeout", type=float, default=600.0, help="seconds per file (default 600)")


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(recording, reference) for every recording with an RTTM of the same name, sorted by name."""
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder")
    found = [(audio, audio.with_suffix(".rttm")) for audio in sorted(folder.iterdir())
             if audio.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS and audio.with_suffix(".rttm").is_file()]
    if not found:
        raise CommandError(f"no recording in {folder} has a NAME.rttm reference beside it "
                           "(python -m toneserve.loadtest.diarization_corpus DIR builds a corpus)")
    return found


def hypothesis(result) -> list[tuple[float, float, str]]:
    return [(s.start, s.end, s.speaker) for s in result.segments]


def run(args) -> int:
    from toneserve.client.sdk import Client

    folder = Path(args.path)
    files = pairs(folder)
    options = request_options(args)
    reference: dict[str, list[der.Turn]] = {}
    found: dict[str, list[tuple[float, float, str]]] = {}
    audio_seconds = processing_ms = 0.0
    started = time.perf_counter()
    with Client(args.address, api_key=args.api_key, ca_cert=args.ca_cert, tls=args.tls) as client:
        for number, (audio, rttm) in enumerate(files, 1):
            turns = der.read_rttm(rttm)
            if len(turns) != 1:
                raise CommandError(f"{rttm} holds {len(turns)} files' turns; one per recording is expected")
            reference[audio.stem] = next(iter(turns.values()))
            result = client.analyze(audio, **options)
            found[audio.stem] = hypothesis(result)
            audio_seconds += result.metadata.audio_seconds
            processing_ms += result.metadata.processing_ms
            print(f"[{number}/{len(files)}] {audio.name}: {len({s for _, _, s in found[audio.stem]})} speaker(s)",
                  file=sys.stderr, flush=True)
    report, with_overlap = der.score_both(reference, found)
    der.print_table(report)
    if args.overlap:
        print()
        der.print_table(with_overlap)
    print(f"\n{len(files)} files, {audio_seconds:.0f} s of audio in {time.perf_counter() - started:.0f} s "
          f"(the gateway's processing time: {processing_ms / 1000:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"overlap_not_scored": report.as_dict(),
                                               "overlap_scored": with_overlap.as_dict(),
                                               "options": {k: v for k, v in options.items() if k != "timeout"},
                                               "audio_seconds": audio_seconds}, indent=2))
    return 0
