"""`toneserve analyze PATH...`: files, folders and globs through the SDK, a few at a time.

stdout carries only results; progress, notes and the summary of failures go to stderr.
Exit code: 0 every file was analysed, 1 any failed (the summary says which and why), 2 the
command itself was wrong (argparse, an unreadable CA certificate).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from toneserve.client.connection import DEFAULT_ADDRESS, ENV_ADDRESS, ENV_API_KEY, ENV_CA_CERT
from toneserve.client.errors import AnalyzeError
from toneserve.client.formats import FORMATS, open_output
from toneserve.client.inputs import AUDIO_EXTENSIONS, expand, output_names
from toneserve.client.results import Result
from toneserve.client.retry import RetryPolicy
from toneserve.contract import DIARIZATION_MODES
from toneserve.v1 import toneserve_pb2 as pb


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (f"Analyse recordings: files, folders (searched for {', '.join(sorted(AUDIO_EXTENSIONS))}) "
                     "and globs. Exit code 0: all analysed; 1: any failed; 2: usage error.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a file, a folder or a glob (quote it: 'calls/**/*.wav')")
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="json",
                     help="json: the whole result per file; jsonl / csv: one line / row per segment (default json)")
    out.add_argument("--out", metavar="PATH",
                     help="jsonl / csv: the file to write; json: a folder of <name>.json (or, for a single input, "
                          "a file ending in .json). Default: stdout")
    out.add_argument("--report", metavar="DIR", help="also write DIR/<name>.html and DIR/<name>.png per call")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes on stderr")
    add_request_arguments(p)
    server = add_connection_arguments(p)
    server.add_argument("--jobs", type=_positive_int, default=4, help="files analysed at once (default 4)")
    server.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per file, retries included (default 300)")
    server.add_argument("--attempts", type=_positive_int, default=RetryPolicy.max_attempts,
                        help=f"tries per file when the gateway is unreachable or busy (default {RetryPolicy.max_attempts})")


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    """The analysis options (what `request_options` reads), shared with `toneserve stream`."""
    request = p.add_argument_group("analysis")
    request.add_argument("--roles", help="speaker names of the channels in order, e.g. agent,customer")
    request.add_argument("--mix-channels", action="store_true", help="one speaker for all channels")
    request.add_argument("--diarization", choices=DIARIZATION_MODES, default="auto",
                         help="tell voices apart inside a channel: auto (mono and mixed-down audio), on (every "
                              "channel too) or off (default auto)")
    request.add_argument("--speakers-expected", type=int, default=0, metavar="N",
                         help="the number of speakers per diarized channel, if known (default: estimated)")
    request.add_argument("--min-speakers", type=int, default=0, metavar="N", help="at least N speakers (default: no bound)")
    request.add_argument("--max-speakers", type=int, default=0, metavar="N", help="at most N speakers (default: the server's cap)")
    request.add_argument("--language", default="auto", help="auto, zh, en, yue, ja or ko (default auto)")
    request.add_argument("--itn", action="store_true", help="punctuation and digits in transcripts")
    request.add_argument("--window-seconds", type=float, default=0.0,
                         help="longest emotion window (default: the server's)")
    request.add_argument("--include-embeddings", action="store_true",
                         help="each segment's emotion2vec+ embedding (768 floats at base) in the JSON output "
                              "(--format json only: jsonl and csv leave it out)")
    for field in pb.Thresholds.DESCRIPTOR.fields:
        kind = int if field.type == field.TYPE_INT32 else float
        request.add_argument(f"--{field.name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper(),
                             help=f"threshold {field.name} (default: the server's; README, \"The API\")")


def add_connection_arguments(p: argparse.ArgumentParser):
    """Where the gateway is and how to reach it, shared with `toneserve stream`; returns the group."""
    server = p.add_argument_group("server")
    server.add_argument("--address", help=f"gateway host:port (default ${ENV_ADDRESS}, else {DEFAULT_ADDRESS})")
    server.add_argument("--api-key", help=f"API key (default ${ENV_API_KEY}; the variable keeps it out of your "
                                          "shell history)")
    server.add_argument("--ca-cert", metavar="PEM", help=f"TLS with this root certificate (default ${ENV_CA_CERT})")
    server.add_argument("--tls", action="store_true", help="TLS trusting the system's root certificates")
    return server


@dataclass
class Outcome:
    file: Path
    result: Result | None = None
    # On failure, "CODE: message": toneserve's code (or the gRPC status when the gateway sent none), or
    # NOT_FOUND, UNREADABLE, NOT_ATTEMPTED, WRITE_FAILED for what went wrong on this side.
    error: str = ""
    unreachable: str = ""  # why no gateway answered (said once in the summary, not once per file)


def _failed(file: Path, code: str, message: str) -> Outcome:
    return Outcome(file, error=f"{code}: {message}")


def _analyze(client, file: Path, options: dict, stop: threading.Event) -> Outcome:
    if stop.is_set():
        return _failed(file, "NOT_ATTEMPTED", "the gateway could not be reached")
    try:
        return Outcome(file, client.analyze(file, **options))
    except AnalyzeError as exc:
        if exc.unreachable:
            stop.set()  # every later file would fail the same way, after a round of retries each
            return Outcome(file, error=f"{exc.status}: the gateway could not be reached", unreachable=str(exc))
        return Outcome(file, error=str(exc))
    except OSError as exc:
        return _failed(file, "UNREADABLE", f"cannot read the file: {exc.strerror or exc}")


def request_options(args) -> dict:
    """The SDK's keyword arguments from `add_request_arguments`' flags, and --timeout."""
    thresholds = {f.name: getattr(args, f.name) for f in pb.Thresholds.DESCRIPTOR.fields
                  if getattr(args, f.name) is not None}
    return dict(language=args.language, window_seconds=args.window_seconds, use_itn=args.itn,
                channel_roles=[r.strip() for r in args.roles.split(",")] if args.roles else None,
                mix_channels=args.mix_channels, thresholds=thresholds, timeout=args.timeout,
                diarization=args.diarization, speakers_expected=args.speakers_expected,
                min_speakers=args.min_speakers, max_speakers=args.max_speakers,
                include_embeddings=args.include_embeddings)


def _note(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


@dataclass
class Tally:
    analysed: int = 0
    segments: int = 0
    random_weights: bool = False


def run(args) -> int:
    from toneserve.client.sdk import Client

    inputs = expand(args.paths)
    failures = [_failed(Path(a), "NOT_FOUND", "no such file, and no audio files in it or matching it")
                for a in inputs.unmatched]
    try:
        client = Client(args.address, api_key=args.api_key, ca_cert=args.ca_cert, tls=args.tls or None,
                        max_attempts=args.attempts)
    except ValueError as exc:  # an unreadable CA certificate
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        output = open_output(args.format, args.out, several=len(inputs.files) > 1)
    except OSError as exc:
        client.close()
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    started, tally = time.monotonic(), Tally()
    try:
        failures += _analyse_all(args, client, output, inputs.files, tally)
    except BrokenPipeError:
        # Whoever read stdout went away (`| head`): stop quietly, as other command-line tools do, and
        # keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        output.close()
        client.close()
    _note(args, f"analysed {tally.analysed} of {len(inputs.files)} file(s), {tally.segments} segments, "
                f"in {time.monotonic() - started:.1f} s")
    if tally.random_weights:
        _note(args, "NOTE: served by RANDOM-WEIGHT models: the plumbing is real, the answers are not.")
    _summarise(failures, len(inputs.files) + len(inputs.unmatched))
    return 1 if failures else 0


def _analyse_all(args, client, output, files: list[Path], tally: Tally) -> list[Outcome]:
    """`args.jobs` files at a time; returns the failures."""
    from tqdm import tqdm

    names = output_names(files)
    options = request_options(args)
    failures = []
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="analyze")
    progress = tqdm(total=len(files), unit="file", file=sys.stderr, dynamic_ncols=True,
                    disable=args.quiet or not sys.stderr.isatty())
    try:
        futures = {pool.submit(_analyze, client, file, options, stop): index for index, file in enumerate(files)}
        # Results are written in input order (so outputs are the same from run to run), each as soon as
        # every file before it is done; the progress bar ticks as files finish, in any order.
        done: dict[int, Outcome] = {}
        next_index = 0
        for future in concurrent.futures.as_completed(futures):
            progress.update()
            done[futures[future]] = future.result()
            while next_index in done:
                outcome = done.pop(next_index)
                next_index += 1
                failure = _deliver(args, output, outcome, names[outcome.file], tally)
                if failure:
                    failures.append(failure)
    except (KeyboardInterrupt, BrokenPipeError):
        stop.set()
        client.close()  # ends the calls in flight (CANCELLED), so the workers return at once
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return failures


def _deliver(args, output, outcome: Outcome, name: str, tally: Tally) -> Outcome | None:
    """Writes a file's results (and report); returns the failure, if any."""
    if outcome.result is None:
        return outcome
    try:
        output.write(str(outcome.file), name, outcome.result)
        if args.report:
            from toneserve.client.report import write_report
            write_report(outcome.result, str(outcome.file), args.report, name)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _failed(outcome.file, "WRITE_FAILED", str(exc))
    tally.analysed += 1
    tally.segments += len(outcome.result.segments)
    tally.random_weights |= outcome.result.metadata.random_weights
    return None


def _summarise(failures: list[Outcome], total: int) -> None:
    """Every failure, one line each (file, code, message), after everything else so that it is what the
    user sees last; then, if no gateway answered, why, once."""
    if not failures:
        return
    lines = [f"{len(failures)} of {total} failed:"] + [f"  {f.file}: {f.error}" for f in failures]
    unreachable = next((f.unreachable for f in failures if f.unreachable), "")
    if unreachable:
        lines.append(f"error: {unreachable}")
    print("\n".join(lines), file=sys.stderr, flush=True)
