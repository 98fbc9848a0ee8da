"""`toneserve stream SOURCE`: live audio through AnalyzeStream, each segment printed as it comes.

    ffmpeg -loglevel error -i rtsp://pbx/call-42 -ac 2 -ar 8000 -f wav - | toneserve stream - --roles agent,customer

SOURCE is a file or `-` (standard input): its bytes are sent as they can be read, so a pipe
from a capture (ffmpeg, arecord, a media-stream bridge) is analysed while it runs; ffmpeg and
arecord write WAV with the unknown-length header a live stream needs. stdout gets one JSON line
per segment as soon as the gateway has analysed it (the columns of `analyze --format jsonl`),
and `--result FILE` the whole result once the source ends. Exit code 0: analysed; 1: the
gateway answered with an error (printed on stderr, no traceback); 2: usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from toneserve.client.cli import add_connection_arguments, add_request_arguments, request_options
from toneserve.client.errors import AnalyzeError
from toneserve.client.formats import document, segment_row
from toneserve.client.results import Result

CHUNK_BYTES = 4096  # what one read of a pipe gives at most; a live source sends less, as it comes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Analyse live audio through AnalyzeStream: each segment is printed (a JSON line) as soon as it "
                     "is analysed. Exit code 0: analysed; 1: the gateway answered with an error; 2: usage error.")
    p.add_argument("source", metavar="SOURCE", help="a file, or - for standard input (a capture piped in)")
    p.add_argument("--result", metavar="FILE", help="write the whole result here (JSON) when the source ends")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    add_request_arguments(p)
    server = add_connection_arguments(p)
    server.add_argument("--timeout", type=float, default=None, help="seconds for the whole stream (default: none)")


def _chunks(stream):
    # read1: whatever the pipe holds now (up to CHUNK_BYTES), without waiting to fill the buffer.
    while chunk := stream.read1(CHUNK_BYTES):
        yield chunk


def run(args) -> int:
    from toneserve.client.sdk import Client

    name = "stdin" if args.source == "-" else args.source
    try:
        # Opened here: gRPC reads the chunks in a thread of its own, where an error would only cancel the call.
        source = sys.stdin.buffer if args.source == "-" else open(args.source, "rb")
        client = Client(args.address, api_key=args.api_key, ca_cert=args.ca_cert, tls=args.tls or None)
        started = time.monotonic()
        with client, source:
            for event in client.analyze_stream(_chunks(source), **request_options(args)):
                if isinstance(event, Result):
                    result = event
                else:
                    print(json.dumps(segment_row(name, event), ensure_ascii=False), flush=True)
    except (OSError, ValueError) as exc:  # an unreadable source or CA certificate
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AnalyzeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.result:
        with open(args.result, "w", encoding="utf-8") as out:
            json.dump(document(name, result), out, ensure_ascii=False, indent=2)
    if not args.quiet:
        print(f"{len(result.segments)} segments, {result.metadata.audio_seconds:.1f} s of audio, "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
