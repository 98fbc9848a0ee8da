"""Prometheus metrics of the gateway (prometheus-client), on their own HTTP port.

Each Gateway owns its registry, so several gateways in one process (tests) never
share or clash over counters.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Request latency spans a 1 s clip (tens of ms) to an hour-long upload (minutes).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        # Tenants come from the API key file (bounded); "default" without one, "" before the key is checked.
        self.requests = Counter("toneserve_requests", "Requests answered, by RPC, toneserve code (OK on success) "
                                "and tenant", ["rpc", "code", "tenant"], registry=self.registry)
        self.audio_seconds = Counter("toneserve_audio_seconds", "Seconds of audio analysed (all channels once)",
                                     ["rpc", "tenant"], registry=self.registry)
        self.latency = Histogram("toneserve_request_latency_seconds", "Time from request to answer",
                                 ["rpc"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("toneserve_requests_in_flight", "Requests being analysed", registry=self.registry)
        self.triton_in_flight = Gauge("toneserve_triton_calls_in_flight", "Calls to Triton awaiting an answer",
                                      registry=self.registry)
        # Per tenant: what its quotas are charged (every outcome: a failed request is charged the audio
        # it had decoded), and its Triton calls waiting for a fair share of the slots.
        self.tenant_audio_seconds = Counter("toneserve_tenant_audio_seconds", "Seconds of audio charged to a "
                                            "tenant's quotas, failed requests included", ["tenant"],
                                            registry=self.registry)
        self.triton_waiting = Gauge("toneserve_triton_calls_waiting", "Calls waiting for a Triton slot (of their "
                                    "model's pool)", registry=self.registry)
        self.triton_slots = Gauge("toneserve_triton_call_slots", "Triton calls to the model this gateway keeps in "
                                  "flight at once (its fair pool's size)", ["model"], registry=self.registry)
        self.triton_run_budget = Gauge("toneserve_triton_run_budget", "Runs of the long audio models (asr, emotion) "
                                       "this gateway keeps in flight together, shared fairly between tenants; 0: no "
                                       "such budget", registry=self.registry)
        self.cpu_waiting = Gauge("toneserve_cpu_work_waiting", "Pieces of the gateway's CPU work (decoding, pitch, "
                                 "reconciliation) waiting for a CPU slot", registry=self.registry)
        self.live_early = Counter("toneserve_live_early_analyses", "AnalyzeStream utterances analysed as soon as "
                                  "silence followed them, before min_silence_ms confirmed their end, by outcome: used, "
                                  "or dropped (speech resumed: that compute was spent for nothing)", ["outcome"],
                                  registry=self.registry)
        self.triton_ready = Gauge("toneserve_triton_ready", "1 while Triton answers ready, 0 while the gateway "
                                  "reports NOT_SERVING", registry=self.registry)
        self.triton_ready.set(1)
        # A gateway given --quota-store registers these two (quota_store()); one without has neither.
        self.quota_store_up = None
        self.quota_store_fallbacks = None
        self.server = None

    def quota_store(self) -> None:
        """The shared quota store's state: registered only by a gateway that has one."""
        self.quota_store_up = Gauge("toneserve_quota_store_up", "1 while the shared quota store (--quota-store) "
                                    "answers, 0 while this replica counts quotas alone", registry=self.registry)
        self.quota_store_fallbacks = Counter("toneserve_quota_store_fallbacks", "Quota checks and charges made "
                                             "with this replica's own counters because the store was down",
                                             ["op"], registry=self.registry)

    def tls(self) -> Gauge:
        """The served certificate's expiry: registered only by a gateway that serves TLS."""
        return Gauge("toneserve_tls_certificate_expiry_timestamp_seconds", "When the TLS certificate the gateway "
                     "serves expires (its notAfter, unix seconds); follows the certificate as it is reloaded",
                     registry=self.registry)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP."""
        self.server, _ = start_http_server(port, addr=host, registry=self.registry)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
