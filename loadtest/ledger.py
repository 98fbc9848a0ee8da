"""Per-request accounting of a load test, kept beside Locust's own statistics.

Locust counts what was *answered*; it cannot see a request that was sent and never answered
(a user killed mid-call at the end of a run, a hang). The users book every request twice
here, when it is sent and when its answer (or error) arrives, with the audio seconds it
carried and its exact latency. `run.py` compares the two books: every request sent must be
answered, and Locust must have counted exactly the answers booked here.

The ledger also gives what Locust does not:
- throughput in audio seconds per wall second (RTFx), measured over the *steady window*, from
  the moment every user is running to the moment the run time is up. Requests last seconds,
  so each one is credited pro rata: its audio seconds spread evenly over its time in flight,
  and the window gets the share that fell inside it. Neither the ramp-up nor the drain at the
  end (users finishing their last request, nobody starting a new one) dilutes the figure.
- exact latency percentiles (Locust rounds response times above 100 ms to two significant
  digits in its percentiles).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()  # gevent-safe as well: nothing inside yields
        self.sent: Counter[str] = Counter()
        # per name: [sent at (epoch s), answered at, latency ms, audio s, ok]
        self.answers: dict[str, list[list]] = defaultdict(list)
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)
        self.steady_from: float | None = None  # every user spawned
        self.steady_until: float | None = None  # run time up: users asked to stop

    def send(self, name: str) -> float:
        with self.lock:
            self.sent[name] += 1
        return time.time()

    def answer(self, name: str, sent_at: float, latency_ms: float, audio_seconds: float, error: str | None) -> None:
        with self.lock:
            self.answers[name].append([sent_at, time.time(), latency_ms, audio_seconds, error is None])
            if error is not None:
                self.errors[name][error] += 1

    def mark(self, which: str) -> None:
        setattr(self, which, time.time())

    def to_json(self) -> dict:
        with self.lock:
            return {"steady_from": self.steady_from, "steady_until": self.steady_until,
                    "names": {n: {"sent": self.sent[n], "answers": list(self.answers[n]),
                                  "errors": dict(self.errors[n])} for n in sorted(self.sent)}}

    def write(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(self.to_json()))
        os.replace(temporary, path)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(np.max(values))}


def _window(book: dict, answers: list[list]) -> tuple[float, float]:
    """The steady window; without the marks (a run stopped early), first send to last answer."""
    start, end = book.get("steady_from"), book.get("steady_until")
    if start is None or end is None or end <= start:
        start = min((a[0] for a in answers), default=0.0)
        end = max((a[1] for a in answers), default=0.0)
    return start, end


def summarise(book: dict, names: list[str] | None = None) -> dict:
    """Totals over `names` (default all) of a ledger's JSON: counts, latency percentiles over
    every answer, and audio seconds, requests and RTFx credited pro rata to the steady window."""
    chosen = {n: v for n, v in book["names"].items() if names is None or n in names}
    answers = [a for v in chosen.values() for a in v["answers"]]
    start, end = _window(book, answers)
    credit_audio = credit_requests = 0.0
    for sent_at, answered_at, _, audio, ok in answers:
        span = max(answered_at - sent_at, 1e-9)
        share = max(0.0, min(answered_at, end) - max(sent_at, start)) / span
        credit_requests += share
        credit_audio += share * audio if ok else 0.0
    window = end - start
    sent = sum(v["sent"] for v in chosen.values())
    ok = sum(1 for a in answers if a[4])
    errors: Counter[str] = Counter()
    for v in chosen.values():
        errors.update(v["errors"])
    return {"sent": sent, "answered": len(answers), "ok": ok, "failed": len(answers) - ok,
            "lost": sent - len(answers), "audio_seconds": sum(a[3] for a in answers if a[4]),
            "window_s": window, "rtfx": credit_audio / window if window > 0 else 0.0,
            "rps": credit_requests / window if window > 0 else 0.0,
            "latency_ms": percentiles([a[2] for a in answers]), "errors": dict(errors)}
