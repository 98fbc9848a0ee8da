"""The gateway's operating limits, with their defaults (the README's table repeats them;
test_thresholds.py checks it does so faithfully).

Standard library and toneserve.contract only: the `toneserve` command builds its options from
these defaults where only the client extra is installed (no numpy, no PyAV, no gRPC server).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from toneserve.contract import Code, ToneserveError


@dataclass(frozen=True)
class Limits:
    """What one recording may be; checked as it is read and decoded (gateway/audio.py)."""
    # A whole upload. The unary RPC is held to its (smaller) gRPC message size before this.
    max_bytes: int = 1024**3
    max_seconds: float = 4 * 3600.0
    max_channels: int = 8
    # Below this there is not one analysis frame of the models (25 ms fbank window, 400-sample
    # emotion2vec receptive field) with room to spare.
    min_seconds: float = 0.1
    # Source sample rates accepted. Everything is resampled to 16 kHz, so the work grows with
    # 16 kHz / rate below it: a 1 Hz file of 164 bytes would be a minute of audio to analyse.
    min_rate: int = 4000
    max_rate: int = 192000
    # Per-request budget of samples: rate x channels x seconds, the rate counted as at least 16 kHz
    # (what the models see). Checked against the header's duration before decoding, and as the
    # samples are decoded. 1.5e9: 4 h of 48 kHz stereo, or 3 h of 8 channels at 16 kHz.
    max_samples: float = 1.5e9


@dataclass(frozen=True)
class Settings:
    limits: Limits = field(default_factory=Limits)
    # Largest Analyze request; bigger recordings go through AnalyzeUpload.
    max_message_bytes: int = 64 * 1024 * 1024
    # emotion2vec+ window inside an utterance (an utterance is cut into equal windows no longer than this).
    window_seconds: float = 5.0
    min_window_seconds: float = 0.5
    max_window_seconds: float = 30.0
    # silero splits longer utterances at their longest pause; SenseVoice is trained on utterances below 30 s.
    max_utterance_seconds: float = 30.0
    # Triton calls in flight from this gateway to each model, shared fairly between tenants; None: the runs
    # Triton computes of the model at once (instances x streams of its busiest step, x its max batch size on a
    # GPU, read from Triton, times its replicas), so that calls wait here, in the fair queue, not in Triton's
    # FIFO or in a batch.
    max_inflight: int | None = None
    # Runs of the long audio models (ASR, emotion) in flight from this gateway together, shared fairly between
    # tenants, beside each model's own slots; None: where they compute on CPUs, the runs the busiest of them
    # computes at once (the cores it was tuned for), times the replicas; on a GPU no such budget. 0: none.
    max_triton_runs: int | None = None
    # Pieces of CPU work in the gateway's threads at once (decoding, pitch, reconciliation, clustering),
    # shared fairly between tenants the same way; None: the cores this process may use (`cores()`).
    cpu_slots: int | None = None
    # Requests analysed at once; one more is answered OVERLOADED with a retry hint.
    max_requests: int = 32
    # Requests of one tenant (API key) analysed at once, so one tenant cannot take every slot; None: no cap.
    max_requests_per_tenant: int | None = None
    # Utterances of one request analysed at once: bounds its memory (30 s each) and keeps one long
    # recording from taking every Triton slot.
    utterances_per_request: int = 8
    # Retry hint sent with OVERLOADED and TRITON_UNAVAILABLE (gRPC's grpc-retry-pushback-ms trailer).
    retry_after_ms: int = 1000
    # Every Triton call is given up after this long (TRITON_UNAVAILABLE), so that a stalled Triton
    # cannot hold requests without a deadline forever; the client's earlier deadline wins.
    triton_timeout_seconds: float = 120.0
    # Triton's readiness is polled this often; the gateway's gRPC health follows it (NOT_SERVING,
    # and new requests refused at once with a retry hint, while Triton is not ready).
    triton_poll_seconds: float = 1.0
    # Audio seconds a tenant may have analysed per UTC minute / day, for tenants whose key-file line
    # sets none (seconds_per_minute=, seconds_per_day=); None: unlimited. Failed requests count too.
    tenant_audio_seconds_per_minute: float | None = None
    tenant_audio_seconds_per_day: float | None = None
    # Server-side cap on a request's time when the client sets no (or a longer) deadline; None: none.
    # An AnalyzeStream lasts as long as its live audio: the default is the longest recording plus 30 min.
    max_request_seconds: float | None = 4.5 * 3600.0
    # AnalyzeUpload and AnalyzeStream: a client that sends nothing for this long (between its options
    # and the first chunk, or between two chunks) is answered DEADLINE_EXCEEDED.
    chunk_timeout_seconds: float = 30.0
    # AnalyzeUpload: the whole upload must have arrived within this (1 GiB at 2.4 Mbit/s).
    upload_timeout_seconds: float = 3600.0
    # AnalyzeStream: audio received but not decoded yet, at most (a single larger chunk is taken
    # alone); beyond it the gateway stops reading and gRPC's flow control holds the client back.
    live_buffer_bytes: int = 4 * 1024 * 1024
    # AnalyzeUpload keeps this much of an upload in memory, the rest in a temporary file.
    spool_memory_bytes: int = 8 * 1024 * 1024
    # AnalyzeStream decodes and runs VAD on blocks of this many 32 ms frames (0.256 s): an utterance
    # is analysed within about a block (plus min_silence_ms and the models' time) of its end. VAD
    # restarts on a 1.024 s grid whatever the block (gateway/segmenter.py), so 8, 16 or 32 give the
    # same segments. Measured (loadtest/live_lag.py, base int8, two 15 s calls on a 2-core host): median
    # lag 1.64 s with 32, 0.75-1.0 s with 8 (0.27 s of it the silence that closes an utterance, about
    # half a block waiting for the block, the rest the models; live_early below overlaps the silence
    # with the models); 4 saves ~0.06 s more for twice the VAD calls. Recordings sent whole take 30.72 s
    # blocks (fewer VAD calls).
    live_block_frames: int = 8
    # AnalyzeStream: an utterance is analysed as soon as silence follows it, while min_silence_ms confirms
    # its end; where speech resumes first, that analysis is cancelled (compute spent for nothing) and the
    # longer utterance analysed when it ends. The segments are the same either way; the lag is shorter.
    live_early: bool = True
    # Diarization: the most speakers told apart in one channel, and the largest hint a request may give
    # (AWS Transcribe's MaxSpeakerLabels goes to 30 too).
    max_speakers: int = 30
    # Who scores the words: "model" (the text-sentiment model Triton serves, every language) or "lexicon"
    # (VADER for en and SnowNLP for zh inside the gateway; the lexicon extra, not in the gateway image).
    text_sentiment: str = "model"
    # AnalyzeText: the longest text taken, in characters (about 300 sentences).
    max_text_chars: int = 16000
    # A client connection is closed (gRPC GOAWAY; HTTP `Connection: close` on its next response) once it is
    # this old, so clients reconnect and find replicas added since; None: connections live for ever.
    # The grace: how long calls in progress on a connection closed for its age still get; None: unlimited.
    max_connection_age_seconds: float | None = None
    max_connection_age_grace_seconds: float | None = None
    # How often the TLS certificate and key files are checked for a change (then served to new connections;
    # SIGHUP reloads at once). Kubernetes updates a mounted Secret within about a minute of its change.
    tls_poll_seconds: float = 5.0

    def __post_init__(self):
        # A zero here would not mean "off": no thread to decode with, no Triton slot, every request refused.
        counts = {"max_requests": self.max_requests, "max_inflight (--max-triton-calls)": self.max_inflight,
                  "cpu_slots (--cpu-slots)": self.cpu_slots,
                  "utterances_per_request": self.utterances_per_request, "max_speakers": self.max_speakers}
        quotas = {"tenant_audio_seconds_per_minute": self.tenant_audio_seconds_per_minute,
                  "tenant_audio_seconds_per_day": self.tenant_audio_seconds_per_day,
                  "max_requests_per_tenant": self.max_requests_per_tenant,
                  "max_connection_age_seconds (--max-connection-age)": self.max_connection_age_seconds}
        wrong = [f"{name} must be at least 1, got {value}" for name, value in counts.items()
                 if value is not None and value < 1]
        wrong += [f"{name} must be above 0 (or unset: unlimited), got {value}"
                  for name, value in quotas.items() if value is not None and value <= 0]
        if self.max_triton_runs is not None and self.max_triton_runs < 0:
            wrong.append(f"max_triton_runs (--max-triton-runs) must be 0 (no budget) or more, got "
                         f"{self.max_triton_runs}")
        grace = self.max_connection_age_grace_seconds
        if grace is not None and grace < 0:
            wrong.append(f"max_connection_age_grace_seconds (--max-connection-age-grace) must be 0 or more "
                         f"(or unset: unlimited), got {grace}")
        if self.text_sentiment not in ("model", "lexicon"):
            wrong.append(f"text_sentiment must be model or lexicon, got {self.text_sentiment!r}")
        if self.max_text_chars < 1:
            wrong.append(f"max_text_chars must be at least 1, got {self.max_text_chars}")
        if wrong:
            raise ValueError("; ".join(wrong))

    def window(self, requested: float) -> float:
        if requested == 0:
            return self.window_seconds
        lo, hi = self.min_window_seconds, self.max_window_seconds
        if not lo <= requested <= hi:
            raise ToneserveError(Code.INVALID_ARGUMENT, f"window_seconds must be in [{lo}, {hi}], got {requested:g}")
        return requested


def cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a container's CPU
    limit, cgroup v2 `cpu.max`) where it has one."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as file:
            quota, period = file.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)
