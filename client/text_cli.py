"""`toneserve analyze-text`: the sentiment of a text (an argument, a file or standard input).

Prints one line per sentence (its sentiment, score and words) and the average; `--json` prints the
whole answer (segments, average, metadata) as JSON instead.
"""
from __future__ import annotations

import argparse
import json
import sys

from toneserve.client.cli import add_connection_arguments
from toneserve.client.errors import AnalyzeError
from toneserve.contract import TEXT_LANGUAGES


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("text", nargs="?", help="the text; - reads standard input")
    source.add_argument("--file", metavar="PATH", help="read the text from this UTF-8 file")
    p.add_argument("--language", default="auto", choices=("auto", *TEXT_LANGUAGES),
                   help="how words and sentences are counted (default auto: by script)")
    p.add_argument("--sentiment-break", type=float, metavar="B",
                   help="label break points: >= +B positive, <= -B negative (default: the server's)")
    p.add_argument("--json", action="store_true", help="print the whole answer as JSON")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the call, retries included (default 60)")
    add_connection_arguments(p)


def _text(args) -> str:
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    if args.text == "-":
        return sys.stdin.read()
    return args.text


def run(args) -> int:
    from toneserve.client.sdk import Client

    try:
        text = _text(args)
        client = Client(args.address, api_key=args.api_key, ca_cert=args.ca_cert, tls=args.tls or None)
        with client:
            result = client.analyze_text(text, language=args.language, sentiment_break=args.sentiment_break,
                                         timeout=args.timeout)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:  # unreadable file, bad option, empty text
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AnalyzeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    for segment in result.segments:
        print(f"{segment.sentiment:<9}{segment.sentiment_score:+.2f}  words {segment.start_word}-{segment.end_word}"
              f"  {segment.text}")
    methods = ", ".join(f"{m.family}/{m.preset} {m.precision}" for m in result.metadata.models) or "?"
    print(f"average: {result.average.sentiment} {result.average.sentiment_score:+.2f} "
          f"({len(result.segments)} sentence(s), {methods})")
    for warning in result.metadata.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
