"""Triton's Prometheus metrics (`--triton-metrics-port`, /metrics): where a model's time goes.

Triton keeps cumulative counters per model (and version): requests that succeeded / failed,
inferences and executions (their ratio is the average batch size), and the microseconds its
requests spent queued and in compute (input, infer, output). A snapshot before and after a
load step gives, per model, what that step cost: queue vs compute time per request.

A request's compute time is the time of the whole batch it ran in, so compute per request is
latency, not cost: how busy a model keeps the cores is process_cpu.py's to say.
"""
from __future__ import annotations

import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}


class MetricsUnavailable(RuntimeError):
    """Triton's metrics endpoint did not answer; the message names the URL and the flag."""


def metrics_url(address: str) -> str:
    """HOST:PORT (or a full URL) -> the /metrics URL."""
    if address.startswith(("http://", "https://")):
        return address if address.rstrip("/").endswith("/metrics") else address.rstrip("/") + "/metrics"
    return f"http://{address}/metrics"


def parse(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {model: {counter: value}}, summed over versions and failure reasons."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COUNTERS.values(), 0.0))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = COUNTERS.get(sample.name) or COUNTERS.get(sample.name.removesuffix("_total"))
            if key and "model" in sample.labels:
                out[sample.labels["model"]][key] += sample.value
    return dict(out)


def scrape(address: str, timeout: float = 5.0) -> dict[str, dict[str, float]]:
    url = metrics_url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return parse(reply.read().decode("utf-8"))
    except OSError as exc:
        raise MetricsUnavailable(f"no Triton metrics at {url} ({exc}); give the port `toneserve serve` "
                                 "uses for --triton-metrics-port (default 8002)") from None


def delta(before: dict, after: dict) -> dict[str, dict[str, float]]:
    zero = dict.fromkeys(COUNTERS.values(), 0.0)
    return {model: {k: after[model][k] - before.get(model, zero)[k] for k in zero} for model in after}


def summarise(d: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per model that ran during the step: requests, failures, average batch, queue and compute
    ms per request."""
    out = {}
    for model, c in sorted(d.items()):
        requests = c["success"] + c["failure"]
        if requests <= 0:
            continue
        compute_us = c["compute_input_us"] + c["compute_infer_us"] + c["compute_output_us"]
        out[model] = {
            "requests": int(requests), "failures": int(c["failure"]),
            "avg_batch": c["inferences"] / c["executions"] if c["executions"] else None,
            "queue_ms": c["queue_us"] / requests / 1000.0,
            "compute_ms": compute_us / requests / 1000.0,
            "request_ms": c["request_us"] / requests / 1000.0,
        }
    return out


def markdown(summary: dict[str, dict], models: list[str] | None = None) -> str:
    lines = ["| model | requests | failures | avg batch | queue ms / request | compute ms / request |",
             "|---|---:|---:|---:|---:|---:|"]
    for model, s in summary.items():
        if models is not None and model not in models:
            continue
        batch = "–" if s["avg_batch"] is None else f"{s['avg_batch']:.2f}"
        lines.append(f"| {model} | {s['requests']} | {s['failures']} | {batch} | {s['queue_ms']:.1f} | "
                     f"{s['compute_ms']:.1f} |")
    return "\n".join(lines)
