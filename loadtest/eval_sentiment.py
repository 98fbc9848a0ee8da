"""`toneserve eval sentiment FILE.tsv`: how well the gateway's text sentiment labels a labelled set.

FILE is a TSV whose header names the columns `lang`, `label` and `text` (any order; an optional `kind`
column, and any other column, is kept or ignored), one sentence a line, as tests/data/sentiment/callcentre.tsv
(call-centre speech in zh, en, yue, ja and ko). Every sentence is sent with its language through
`AnalyzeText` (over gRPC itself: loadtest/ stays off the client package), `--concurrency` at a time; the
prediction is the response's `average.sentiment`. Reported per language and overall: n, accuracy, macro-F1
(over negative / neutral / positive) and the confusion matrix (rows: true, columns: predicted), plus the
accuracy per kind when the set has a `kind` column, and what scored (the text model the metadata names, and
whether it runs random weights: then every figure is meaningless). `--json PATH` keeps every figure and every
sentence's prediction and score.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from sklearn.metrics import f1_score

from toneserve.console import CommandError
from toneserve.v1 import toneserve_pb2 as pb
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

LANGUAGES = ("zh", "en", "yue", "ja", "ko")
# The order of the confusion matrix's rows and columns.
LABELS = ("negative", "neutral", "positive")
REQUIRED_COLUMNS = ("lang", "label", "text")
# A prediction outside LABELS (e.g. an empty label): a column of its own in the confusion matrix.
OTHER = "other"
RANDOM_WARNING = ("RANDOM WEIGHTS: the text model answering runs random (untrained) weights; "
                  "every figure {where} is MEANINGLESS (it only shows that the plumbing works)")


@dataclass(frozen=True)
class Row:
    lang: str
    label: str
    text: str
    kind: str = ""
    line: int = 0  # 1-based line number in the file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="FILE", help="TSV with the columns lang, label, text (and optionally kind)")
    p.add_argument("--address", default="127.0.0.1:50051", help="the gateway (default 127.0.0.1:50051)")
    p.add_argument("--api-key", help="API key (sent as authorization: Bearer KEY)")
    p.add_argument("--ca-cert", metavar="PEM", help="TLS with this root certificate")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--json", metavar="PATH", help="also write every figure and every prediction as JSON")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    p.add_argument("--languages", metavar="LANG[,LANG...]",
                   help=f"only these languages of the set (comma-separated; of {', '.join(LANGUAGES)})")
    p.add_argument("--sentiment-break", type=float, metavar="B",
                   help="the label break point sent with every request (default: the server's)")


def read_set(path: Path | str) -> list[Row]:
    """The rows of a labelled TSV, checked: a header naming lang, label and text; known languages and labels;
    no empty text. Blank lines are skipped. Errors name the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise CommandError(f"{path}: empty (a header lang, label, text is expected, then one sentence a line)")
    header_line, header = numbered[0]
    names = [name.strip().lower() for name in header.split("\t")]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CommandError(f"{path}:{header_line}: the header must name the tab-separated columns lang, label and "
                           f"text (missing: {', '.join(missing)}; found: {header.strip()!r})")
    where = {name: names.index(name) for name in (*REQUIRED_COLUMNS, "kind") if name in names}
    rows = []
    for number, line in numbered[1:]:
        cells = line.split("\t")
        if len(cells) <= max(where[name] for name in REQUIRED_COLUMNS):
            raise CommandError(f"{path}:{number}: {len(cells)} column(s); the header names {len(names)} "
                               "(columns are separated by tabs)")
        lang, label, text = (cells[where[name]].strip() for name in REQUIRED_COLUMNS)
        kind = cells[where["kind"]].strip() if "kind" in where and where["kind"] < len(cells) else ""
        if lang not in LANGUAGES:
            raise CommandError(f"{path}:{number}: unknown language {lang!r} (one of {', '.join(LANGUAGES)})")
        if label not in LABELS:
            raise CommandError(f"{path}:{number}: unknown label {label!r} (one of {', '.join(LABELS)})")
        if not text:
            raise CommandError(f"{path}:{number}: empty text")
        rows.append(Row(lang=lang, label=label, text=text, kind=kind, line=number))
    if not rows:
        raise CommandError(f"{path}: a header but no sentences")
    return rows


def languages_wanted(value: str | None) -> tuple[str, ...] | None:
    """The --languages filter: None for all, else the named languages (checked)."""
    if not value:
        return None
    wanted = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [lang for lang in wanted if lang not in LANGUAGES]
    if unknown or not wanted:
        raise CommandError(f"--languages {value!r}: unknown language(s) {', '.join(unknown) or '(none named)'} "
                           f"(of {', '.join(LANGUAGES)})")
    return wanted


def figures(truth: list[str], predicted: list[str]) -> dict:
    """n, correct, accuracy, macro-F1 (sklearn, labels fixed to LABELS, 0 for a class with no true and no
    predicted sentence), F1 per label and the confusion matrix (rows: true, columns: predicted, both in LABELS
    order) of one group of sentences. `other` counts, per true label, predictions outside LABELS."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    n = len(truth)
    correct = sum(t == p for t, p in zip(truth, predicted))
    confusion = [[sum(t == true and p == guess for t, p in zip(truth, predicted)) for guess in LABELS]
                 for true in LABELS]
    other = [sum(t == true and p not in LABELS for t, p in zip(truth, predicted)) for true in LABELS]
    if n:
        per_label = f1_score(truth, predicted, labels=list(LABELS), average=None, zero_division=0)
        macro = float(f1_score(truth, predicted, labels=list(LABELS), average="macro", zero_division=0))
    else:
        per_label, macro = [0.0] * len(LABELS), 0.0
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "macro_f1": macro,
            "f1": {label: float(f) for label, f in zip(LABELS, per_label)},
            "confusion": confusion, "other": other}


def _kinds(rows: list[Row], predictions: list[str]) -> dict[str, dict]:
    kinds: dict[str, dict] = {}
    for row, predicted in zip(rows, predictions):
        if row.kind:
            entry = kinds.setdefault(row.kind, {"n": 0, "correct": 0})
            entry["n"] += 1
            entry["correct"] += row.label == predicted
    for entry in kinds.values():
        entry["accuracy"] = entry["correct"] / entry["n"]
    return dict(sorted(kinds.items()))


def score(rows: list[Row], predictions: list[str]) -> dict:
    """Every figure of a run: `overall` and `languages` {lang: ...} (figures() each, in LANGUAGES order, only
    languages with sentences); `kinds` {kind: {n, correct, accuracy}} overall, and the same inside each
    language, when the rows have kinds."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} rows but {len(predictions)} predictions")
    result: dict = {"overall": figures([r.label for r in rows], list(predictions)), "languages": {}}
    for lang in LANGUAGES:
        picked = [(row, p) for row, p in zip(rows, predictions) if row.lang == lang]
        if not picked:
            continue
        result["languages"][lang] = figures([row.label for row, _ in picked], [p for _, p in picked])
        if any(row.kind for row, _ in picked):
            result["languages"][lang]["kinds"] = _kinds([row for row, _ in picked], [p for _, p in picked])
    if any(row.kind for row in rows):
        result["kinds"] = _kinds(rows, list(predictions))
    return result


def _pad(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))


def table(header: list[str], body: list[list[str]]) -> str:
    """Columns aligned: the first to the left, the others to the right."""
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    return "\n".join(_pad(line, widths).rstrip() for line in (header, *body))


def confusion_table(figs: dict) -> str:
    """The confusion matrix of figures(): rows true, columns predicted (an `other` column when any)."""
    with_other = any(figs["other"])
    header = ["true \\ predicted", *LABELS, *([OTHER] if with_other else [])]
    body = [[label, *(str(c) for c in counts), *([str(figs["other"][i])] if with_other else [])]
            for i, (label, counts) in enumerate(zip(LABELS, figs["confusion"]))]
    return table(header, body)


def report(scores: dict) -> str:
    """The printed report of score()'s figures."""
    groups = [(lang, figs) for lang, figs in scores["languages"].items()] + [("all", scores["overall"])]
    out = [table(["language", "n", "accuracy", "macro-F1", *(f"F1 {label}" for label in LABELS)],
                 [[name, str(f["n"]), f"{f['accuracy']:.3f}", f"{f['macro_f1']:.3f}",
                   *(f"{f['f1'][label]:.3f}" for label in LABELS)] for name, f in groups])]
    for name, figs in groups:
        out += ["", f"confusion, {name} (rows: true, columns: predicted)", confusion_table(figs)]
    if "kinds" in scores:
        langs = list(scores["languages"])
        body = []
        for kind, overall in scores["kinds"].items():
            cells = []
            for lang in langs:
                entry = scores["languages"][lang].get("kinds", {}).get(kind)
                cells.append(f"{entry['correct']}/{entry['n']}" if entry else "-")
            body.append([kind, *cells, f"{overall['correct']}/{overall['n']}", f"{overall['accuracy']:.3f}"])
        out += ["", "correct per kind", table(["kind", *langs, "all", "accuracy"], body)]
    return "\n".join(out)


def _channel(args) -> grpc.Channel:
    if args.ca_cert:
        return grpc.secure_channel(args.address, grpc.ssl_channel_credentials(Path(args.ca_cert).read_bytes()))
    return grpc.insecure_channel(args.address)


def _method(response: pb.AnalyzeTextResponse) -> str:
    """What scored a response: the models its metadata names, or the lexicon when it names none."""
    names = []
    for m in response.metadata.models:
        name = f"{m.name}: {m.family}/{m.preset} {m.precision}".strip()
        details = [m.runtime] if m.runtime else []
        if m.weights_origin:
            details.append(f"{m.weights_origin} weights")
        names.append(f"{name} ({', '.join(details)})" if details else name)
    return "; ".join(names) or "no model named in the metadata (a lexicon of the gateway?)"


def _request(row: Row, args) -> pb.AnalyzeTextRequest:
    request = pb.AnalyzeTextRequest(text=row.text, language=row.lang, request_id=f"eval-sentiment-{row.line}")
    if getattr(args, "sentiment_break", None) is not None:
        request.thresholds.sentiment_break = args.sentiment_break
    return request


def analyse(rows: list[Row], args, path: Path | str = "") -> list[pb.AnalyzeTextResponse]:
    """Every row through AnalyzeText, `args.concurrency` at a time, the responses in the rows' order. A gRPC
    error stops the run as a CommandError naming the line, the status and the gateway's message."""
    if args.concurrency < 1:
        raise CommandError(f"--concurrency {args.concurrency}: at least 1")
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    responses: list[pb.AnalyzeTextResponse] = []
    step = max(len(rows) // 10, 1)
    with _channel(args) as channel:
        stub = pb_grpc.AnalyzerStub(channel)

        def call(row: Row) -> pb.AnalyzeTextResponse:
            return stub.AnalyzeText(_request(row, args), timeout=args.timeout, metadata=metadata)

        pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="eval-sentiment")
        try:
            futures = [pool.submit(call, row) for row in rows]
            for number, (row, future) in enumerate(zip(rows, futures), 1):
                try:
                    responses.append(future.result())
                except grpc.RpcError as exc:
                    raise CommandError(f"{path}:{row.line} ({row.lang}): the gateway at {args.address} answered "
                                       f"{exc.code().name}: {exc.details()}") from None
                if number % step == 0 or number == len(rows):
                    print(f"[{number}/{len(rows)}] sentences scored", file=sys.stderr, flush=True)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return responses


def run(args) -> int:
    path = Path(args.path)
    rows = read_set(path)
    wanted = languages_wanted(getattr(args, "languages", None))
    if wanted:
        rows = [row for row in rows if row.lang in wanted]
        if not rows:
            raise CommandError(f"{path}: no sentence in {', '.join(wanted)}")
    started = time.perf_counter()
    responses = analyse(rows, args, path)
    seconds = time.perf_counter() - started
    predictions = [response.average.sentiment for response in responses]
    scores = score(rows, predictions)
    random_weights = any(response.metadata.random_weights for response in responses)
    methods: dict[str, Counter] = {}
    for row, response in zip(rows, responses):
        methods.setdefault(row.lang, Counter())[_method(response)] += 1
    warnings = Counter(w for response in responses for w in response.metadata.warnings)

    if random_weights:
        print(f"!!! {RANDOM_WARNING.format(where='below')} !!!\n", flush=True)
        print(f"!!! {RANDOM_WARNING.format(where='of this run')} !!!", file=sys.stderr, flush=True)
    print(f"sentiment of {len(rows)} sentences of {path} ({', '.join(scores['languages'])}) from {args.address}, "
          f"{seconds:.1f} s")
    distinct = {method for counter in methods.values() for method in counter}
    if len(distinct) == 1:
        print(f"scored by: {distinct.pop()}")
    else:
        for lang, counter in methods.items():
            print(f"scored by, {lang}: " + ", ".join(f"{method} ({n})" for method, n in counter.most_common()))
    for warning, n in warnings.most_common():
        print(f"warning ({n} request{'s' if n > 1 else ''}): {warning}")
    print()
    print(report(scores))
    if random_weights:
        print(f"\n!!! {RANDOM_WARNING.format(where='above')} !!!")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "file": str(path), "address": args.address, "labels": list(LABELS),
            "random_weights": random_weights,
            "methods": {lang: dict(counter) for lang, counter in methods.items()},
            "warnings": dict(warnings), "seconds": seconds, "scores": scores,
            "rows": [{**asdict(row), "predicted": response.average.sentiment,
                      "score": round(response.average.sentiment_score, 6), "correct": row.label == response.average.sentiment,
                      "language": response.language, "random_weights": response.metadata.random_weights}
                     for row, response in zip(rows, responses)],
        }, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0
