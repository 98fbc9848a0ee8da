"""`toneserve eval diarization DIR`: the diarization error rate of whatever the gateway serves.

Every recording in DIR that has an RTTM reference beside it (`NAME.wav` / `.flac` / `.mp3` ... with
`NAME.rttm`, as `python -m toneserve.loadtest.diarization_corpus DIR` writes them) is sent whole to the
gateway (`AnalyzeUpload`, over gRPC itself: loadtest/ stays off the client package), as a user's file
would be; each segment (start, end, speaker) is the hypothesis. Scored by loadtest/der.py (pyannote.metrics, collar 0.25 s either side, overlapped speech
not scored; `--overlap` also prints the scores with overlap scored): DER, missed, false alarm, confusion
and the speaker count, per file and overall. `--json PATH` keeps everything.

`--serve-pid PID` (the `toneserve serve` process on this machine) also says what diarization costs: the
CPU seconds of each part (the gateway, tritonserver, each model's stubs; loadtest/process_cpu.py) over
the run, the speaker model's share of them, and its CPU seconds per hour of audio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from toneserve.console import CommandError
from toneserve.contract import DIARIZATION_MODES
from toneserve.loadtest import der
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm"})
CHUNK_BYTES = 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="recordings with NAME.rttm references beside them")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    p.add_argument("--overlap", action="store_true", help="also print the scores with overlapped speech scored")
    p.add_argument("--diarization", choices=DIARIZATION_MODES, default="auto", help="diarization mode (default auto)")
    p.add_argument("--speakers-expected", type=int, default=0, metavar="N", help="the speaker count hint (default: none)")
    p.add_argument("--min-speakers", type=int, default=0, metavar="N")
    p.add_argument("--max-speakers", type=int, default=0, metavar="N")
    p.add_argument("--language", default="auto")
    p.add_argument("--address", default="127.0.0.1:50051", help="the gateway (default 127.0.0.1:50051)")
    p.add_argument("--api-key", help="API key (sent as authorization: Bearer KEY)")
    p.add_argument("--ca-cert", metavar="PEM", help="TLS with this root certificate")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per file (default 600)")
    p.add_argument("--serve-pid", type=int, metavar="PID",
                   help="the local `toneserve serve` process: also report CPU seconds per part and the speaker "
                        "model's share")


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(recording, reference) for every recording with an RTTM of the same name, sorted by name."""
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder")
    found = [(audio, audio.with_suffix(".rttm")) for audio in sorted(folder.iterdir())
             if audio.suffix.lower() in AUDIO_EXTENSIONS and audio.with_suffix(".rttm").is_file()]
    if not found:
        raise CommandError(f"no recording in {folder} has a NAME.rttm reference beside it "
                           "(python -m toneserve.loadtest.diarization_corpus DIR builds a corpus)")
    return found


def hypothesis(response: pb.AnalyzeResponse) -> list[tuple[float, float, str]]:
    return [(s.start_ms / 1000, s.end_ms / 1000, s.speaker) for s in response.segments]


def request(args) -> pb.AnalyzeRequest:
    """The options of every file's request (the gateway checks them, as for any client)."""
    return pb.AnalyzeRequest(language=args.language, diarization=pb.Diarization(
        mode=pb.Diarization.Mode.Value(args.diarization.upper()), speakers_expected=args.speakers_expected,
        min_speakers=args.min_speakers, max_speakers=args.max_speakers))


def _upload(options: pb.AnalyzeRequest, path: Path):
    yield pb.UploadRequest(options=options)
    with open(path, "rb") as audio:
        while chunk := audio.read(CHUNK_BYTES):
            yield pb.UploadRequest(chunk=chunk)


def _channel(args) -> grpc.Channel:
    if args.ca_cert:
        return grpc.secure_channel(args.address, grpc.ssl_channel_credentials(Path(args.ca_cert).read_bytes()))
    return grpc.insecure_channel(args.address)


def _cpu(pid: int | None):
    if pid is None:
        return None
    from toneserve.loadtest.process_cpu import snapshot
    return snapshot(pid)


def _cpu_spent(pid: int | None, before) -> dict[str, float]:
    """CPU seconds of each part of the serving process tree since `before` (empty without a pid)."""
    if pid is None:
        return {}
    after = _cpu(pid)
    return {part: after[part] - before.get(part, 0.0) for part in after if after[part] - before.get(part, 0.0) > 0}


def run(args) -> int:
    folder = Path(args.path)
    files = pairs(folder)
    options = request(args)
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    reference: dict[str, list[der.Turn]] = {}
    found: dict[str, list[tuple[float, float, str]]] = {}
    audio_seconds = processing_ms = 0.0
    cpu_before = _cpu(args.serve_pid)
    started = time.perf_counter()
    with _channel(args) as channel:
        stub = pb_grpc.AnalyzerStub(channel)
        for number, (audio, rttm) in enumerate(files, 1):
            turns = der.read_rttm(rttm)
            if len(turns) != 1:
                raise CommandError(f"{rttm} holds {len(turns)} files' turns; one per recording is expected")
            reference[audio.stem] = next(iter(turns.values()))
            try:
                result = stub.AnalyzeUpload(_upload(options, audio), timeout=args.timeout, metadata=metadata)
            except grpc.RpcError as exc:
                raise CommandError(f"{audio.name}: the gateway answered {exc.code().name}: {exc.details()}") from None
            found[audio.stem] = hypothesis(result)
            audio_seconds += result.metadata.audio_seconds
            processing_ms += result.metadata.processing_ms
            print(f"[{number}/{len(files)}] {audio.name}: {len({s for _, _, s in found[audio.stem]})} speaker(s)",
                  file=sys.stderr, flush=True)
    cpu = _cpu_spent(args.serve_pid, cpu_before)
    report, with_overlap = der.score_both(reference, found)
    der.print_table(report)
    if args.overlap:
        print()
        der.print_table(with_overlap)
    print(f"\n{len(files)} files, {audio_seconds:.0f} s of audio in {time.perf_counter() - started:.0f} s "
          f"(the gateway's processing time: {processing_ms / 1000:.0f} s)")
    if cpu:
        total = sum(cpu.values())
        speaker = sum(v for k, v in cpu.items() if k.startswith("model speaker"))
        print("CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])))
        print(f"speaker model: {speaker:.1f} of {total:.1f} CPU s ({100 * speaker / total:.1f} %), "
              f"{3600 * speaker / audio_seconds:.0f} CPU s per hour of audio")
    if args.json:
        Path(args.json).write_text(json.dumps({"overlap_not_scored": report.as_dict(),
                                               "overlap_scored": with_overlap.as_dict(),
                                               "options": MessageToDict(options),
                                               "audio_seconds": audio_seconds, "cpu_seconds": cpu}, indent=2))
    return 0
