"""What the parts of toneserve agree on, in one place.

The model repository serves these names, the gateway and the load tests call them, the client
reads the error codes: each fact is defined here once and imported everywhere else. This module
imports nothing but the standard library, so every part (and every extra) can import it.

The code that runs inside tritonserver (model_repository/runners/) is copied flat into the
rendered repository; the renderer copies this file beside it, and the runners import it as
`contract`. So this module must stay standard library only, and Python 3.10 compatible (the
Python backend of the NGC image).
"""
from __future__ import annotations

import enum

# Every model takes and returns audio at this rate; the gateway resamples whatever it is sent.
SAMPLE_RATE = 16000

# --- Triton: the models the gateway calls, and their tensors -----------------------------------

# Ensembles (emotion, asr) and the VAD model the gateway calls directly.
EMOTION = "emotion"
ASR = "asr"
VAD = "vad"
# The speaker-embedding ensemble (diarization): EMBEDDING float32 [batch, dim], L2-normalised.
SPEAKER = "speaker"

# The text-sentiment ensemble: TEXT in (bytes [batch, 1], one UTF-8 sentence per row; tokenised inside
# Triton), PROBS out (float32 [batch, labels], in the order of its TEXT_SENTIMENT_LABELS parameter).
TEXT_SENTIMENT = "text_sentiment"
# The languages SenseVoice transcribes, which the gateway's text sentiment and AnalyzeText take.
TEXT_LANGUAGES = ("zh", "en", "yue", "ja", "ko")

# Audio in: WAV float32 [batch, samples], WAV_LENS int64 [batch, 1] (the true length of each row).
WAV, WAV_LENS = "WAV", "WAV_LENS"
# SenseVoice's query ids: int64 [batch, 1], chosen from the asr ensemble's *_QUERY_IDS parameters.
LANGUAGE, TEXTNORM = "LANGUAGE", "TEXTNORM"
# emotion: probabilities over the label set, and the utterance embedding.
PROBS, EMBEDDING = "PROBS", "EMBEDDING"
# asr: the transcript; token pieces, their start and end times (ms from the clip start, as FunASR's
# timestamps give them; -1 / b"" pad a batch).
TEXT, TOKENS, TOKEN_MS, TOKEN_END_MS = "TEXT", "TOKENS", "TOKEN_MS", "TOKEN_END_MS"
# SenseVoice's four query frames, in output order: distribution name -> output tensor.
ASR_DISTRIBUTIONS = {"language": "LANGUAGE_PROBS", "emotion": "EMOTION_PROBS",
                     "event": "EVENT_PROBS", "itn": "ITN_PROBS"}
# vad: speech probability per 32 ms frame (512 samples), and each row's frame count.
SPEECH_PROBS, FRAMES = "SPEECH_PROBS", "FRAMES"
VAD_FRAME = 512

# --- Triton: the ensembles' config parameters the gateway reads once at start ------------------

# Provenance, copied into every response's metadata.
FAMILY, PRESET, WEIGHTS_ORIGIN, PRECISION = "family", "preset", "weights_origin", "precision"
# What runs the ensemble's heavy model: "onnxruntime" or "openvino" (cpu profile); with PRECISION ("fp32",
# "bf16", "int8", "fp16"; "int8-bf16": static int8, its float layers in bf16; "int8w" / "int8w-bf16": int8
# weights, f32 / bf16 activations), what that runtime actually computes in.
RUNTIME = "runtime"
PROVENANCE = (FAMILY, PRESET, WEIGHTS_ORIGIN, PRECISION, RUNTIME)
# What each OpenVINO precision computes in (its INFERENCE_PRECISION_HINT): the renderer sets it, the export's
# gates judge each precision at it. An int8 IR carries its own quantized precision; the layers it leaves
# unquantized run at f32, so int8's gate holds whatever the CPU; int8-bf16 is the same IR with those layers in
# bf16. int8w / int8w-bf16: int8 weights (an IR), the activations in f32 / bf16.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8-bf16": "bf16", "int8w": "f32",
                       "int8w-bf16": "bf16"}
# The emotion ensemble's label set (a JSON list, in PROBS order).
EMOTION_LABELS = "labels"
# The text_sentiment ensemble's label set (a JSON list, in PROBS order: the model's id2label) and the
# longest token sequence it scores (a longer sentence is cut there).
TEXT_SENTIMENT_LABELS, MAX_TOKENS = "labels", "max_tokens"
# The asr ensemble's label sets, one JSON list per distribution.
ASR_LABELS = {name: f"labels_{name}" for name in ASR_DISTRIBUTIONS}
# The asr ensemble's query ids: JSON objects, language -> id and "withitn" / "woitn" -> id.
LANGUAGE_QUERY_IDS, TEXTNORM_QUERY_IDS = "language_query_ids", "textnorm_query_ids"

# Triton's rate-limiter resource for the cpu profile's heavy instances (--share-cores): the
# rendered configs ask for it and the embedded server is started with as many as the machine has.
CORES = "cpu_cores"
# A cpu-profile model's parameter: runs of a batch that compute at once inside one instance (its streams).
STREAMS = "streams"


def concurrency(config: dict) -> int:
    """How many runs a model computes at once: its instances (the counts of its instance groups) times the
    streams each runs (its STREAMS parameter; default 1). `config`: the model's config in Triton's JSON form
    (get_model_config(as_json=True); a ModelConfig through json_format.MessageToDict with
    preserving_proto_field_name=True)."""
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", []))
    streams = config.get("parameters", {}).get(STREAMS, {}).get("string_value", "1")
    return max(1, instances) * max(1, int(streams))

# --- The gateway's API: error codes and trailing metadata ---------------------------------------

# Trailing metadata of a failed call: the stable code, and the id the gateway logged the request under.
ERROR_CODE_METADATA = "toneserve-error-code"
REQUEST_ID_METADATA = "toneserve-request-id"
# gRPC's own retry hint (gRFC A6), sent with OVERLOADED, QUOTA_EXCEEDED and TRITON_UNAVAILABLE.
RETRY_PUSHBACK_METADATA = "grpc-retry-pushback-ms"

# Request options the SDK checks before sending and the gateway before reading any audio. The
# request id travels back in trailing metadata (ASCII only, a few KiB in all) and into logs; a
# role is copied into every segment and timeline point of the response.
MAX_REQUEST_ID_CHARS = 64
REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")
MAX_ROLE_CHARS = 64
# Diarization modes as the SDK and the command line name them (the proto's Diarization.Mode, lower case).
DIARIZATION_MODES = ("auto", "on", "off")


def request_id_problem(request_id: str) -> str | None:
    """Why `request_id` cannot be used ("" is fine: the server makes one), or None."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_CHARS} are allowed"
    if not set(request_id) <= REQUEST_ID_CHARS:
        return "request_id may hold only ASCII letters, digits and - _ . :"
    return None


def role_problem(role: str) -> str | None:
    """Why `role` cannot name a channel's speaker ("" is fine: the channel's default name), or None."""
    if len(role) > MAX_ROLE_CHARS:
        return f"a channel role is {len(role)} characters; at most {MAX_ROLE_CHARS} are allowed"
    if not role.isprintable():
        return f"channel role {role[:MAX_ROLE_CHARS]!r} holds characters that are not printable"
    return None


class Retry(enum.Enum):
    """Whether, and how, a request that failed with a code can be tried again. The SDK retries exactly the
    codes whose gRPC status is UNAVAILABLE or RESOURCE_EXHAUSTED (client/errors.py); every code whose
    Retry is not NEVER has one of those statuses (tests/unit/test_reference_docs.py)."""

    NEVER = "do not retry: the same request fails the same way"
    AFTER_HINT = ("wait the delay the gateway hints, in gRPC's grpc-retry-pushback-ms trailer or HTTP's "
                  "Retry-After header, then retry; the SDK does, with backoff")
    ANOTHER_REPLICA = ("retry at once: another replica serves it; the SDK retries with backoff, and its round robin "
                       "or a new connection through a load balancer reaches another replica")


class Code(enum.Enum):
    """Every error a client can see: its gRPC status (by name), its HTTP status (the gateway's HTTP/JSON
    API), a default message, whether a retry can pass (Retry), and its usual cause with what to do (the
    error reference, docs/errors.md, is generated from this table by scripts/gen-docs). Clients switch on
    the code (sent as the status message prefix and in ERROR_CODE_METADATA over gRPC, as `code` in the
    JSON body over HTTP), never on message text."""

    INVALID_AUDIO = ("INVALID_ARGUMENT", 400, "the audio could not be decoded", Retry.NEVER,
                     "The bytes are not a media container FFmpeg recognises, a stream is corrupt or truncated, the "
                     "sample rate is outside 4000-192000 Hz, or float samples are NaN or infinite. Check that the "
                     "file plays (`ffprobe FILE`); re-encode it (e.g. to WAV or FLAC).")
    UNSUPPORTED_CODEC = ("INVALID_ARGUMENT", 400, "the audio codec is not supported", Retry.NEVER,
                         "The container is read but FFmpeg in the gateway cannot decode its audio codec. Convert "
                         "it to a common codec (PCM WAV, FLAC, MP3, Opus, AAC).")
    NO_AUDIO_STREAM = ("INVALID_ARGUMENT", 400, "the input contains no audio stream", Retry.NEVER,
                       "The container holds only video, subtitles or data. Send the recording's audio.")
    EMPTY_AUDIO = ("INVALID_ARGUMENT", 400, "the audio holds no samples", Retry.NEVER,
                   "The request's audio has no bytes, or its stream decodes to no samples (an empty upload, a "
                   "header alone). Check what the client sends.")
    AUDIO_TOO_LARGE = ("INVALID_ARGUMENT", 413, "the audio is larger than the server allows", Retry.NEVER,
                       "More bytes than `Analyze` takes (`--max-message-mb`) or than an upload may hold "
                       "(`--max-upload-mb`; over HTTP declared by Content-Length or found while streaming). "
                       "Use `AnalyzeUpload` (the SDK does above 32 MiB), or raise the limit.")
    AUDIO_TOO_LONG = ("INVALID_ARGUMENT", 413, "the audio is longer than the server allows", Retry.NEVER,
                      "The recording is longer than `--max-minutes`, or its rate x channels x seconds exceed "
                      "`--max-samples`; checked against the declared duration before decoding. Split the "
                      "recording, or raise the limit.")
    AUDIO_TOO_SHORT = ("INVALID_ARGUMENT", 400, "the audio is too short to analyse", Retry.NEVER,
                       "The recording decodes to less than 0.1 s. Send a longer recording.")
    TOO_MANY_CHANNELS = ("INVALID_ARGUMENT", 400, "the audio has more channels than the server allows",
                         Retry.NEVER,
                         "More channels than `--max-channels`. Mix the channels down (`mix_channels`) before "
                         "sending, or raise the limit.")
    # The request was well formed and its audio decoded, but there is nothing to analyse in it.
    NO_SPEECH = ("FAILED_PRECONDITION", 422, "no speech was found in the audio", Retry.NEVER,
                 "The voice activity detector found no utterance: silence, music, tones, or speech it scores "
                 "below `vad_threshold`. Check the recording; a lower `vad_threshold` (per request, in "
                 "`thresholds`) admits less certain speech.")
    INVALID_ARGUMENT = ("INVALID_ARGUMENT", 400, "a request field is out of range", Retry.NEVER,
                        "An option is refused before any audio is read: a threshold out of range, an unknown "
                        "language, a bad `request_id` or channel role, an impossible diarization hint, a text "
                        "too long for `AnalyzeText`, an unknown or repeated HTTP query parameter. The message "
                        "names the field.")
    UNAUTHENTICATED = ("UNAUTHENTICATED", 401, "a valid API key is required", Retry.NEVER,
                       "The gateway has API keys and the request sent no `authorization: Bearer KEY`, or a key it "
                       "does not know. Send the key (`--api-key`, `TONESERVE_API_KEY`); after a rotation, check "
                       "that the key file was reloaded (SIGHUP) or the pods restarted.")
    OVERLOADED = ("RESOURCE_EXHAUSTED", 429, "the gateway is at capacity; retry after the hinted delay",
                  Retry.AFTER_HINT,
                  "`--max-requests` requests (or the tenant's `--max-requests-per-tenant`) are in progress; the "
                  "gateway refuses at once instead of queueing. Retry after the hint; if it persists, add "
                  "replicas or capacity (docs/BENCHMARKS.md, `toneserve plan`).")
    QUOTA_EXCEEDED = ("RESOURCE_EXHAUSTED", 429, "the tenant's audio quota for this minute or day is used up; "
                                                 "retry after the hinted delay", Retry.AFTER_HINT,
                      "The tenant's audio seconds for this UTC minute or day are used up; the hint is the end of "
                      "the window. The SDK does not wait hints over two minutes (a day quota): it fails with this "
                      "code. Raise the key's `seconds_per_minute=` / `seconds_per_day=`, or wait.")
    TRITON_UNAVAILABLE = ("UNAVAILABLE", 503, "the inference server is unavailable", Retry.AFTER_HINT,
                          "The gateway's Triton failed two readiness probes (stopped, restarting, models "
                          "unloaded), a Triton call timed out (`--triton-timeout`), or Triton could not be "
                          "reached. The gateway serves again after one good probe, without a restart; check "
                          "Triton's log and `toneserve_triton_ready`.")
    # A request still running when the gateway's drain ends, or a new HTTP request on a kept-alive
    # connection during a drain: the replica is going away, another one can serve it.
    SHUTTING_DOWN = ("UNAVAILABLE", 503, "the gateway is shutting down; retry on another replica",
                     Retry.ANOTHER_REPLICA,
                     "The gateway is draining (SIGTERM: a rolling update, a scale-down, a stop): a new request "
                     "reached it during the drain (over HTTP, on a kept-alive connection), or the request was "
                     "still running when the drain's time (`--drain-seconds`) ended; a live stream gets the "
                     "segments analysed so far first. Retry: another replica serves it. If it happens at every "
                     "rollout, the drain is shorter than the longest request.")
    DEADLINE_EXCEEDED = ("DEADLINE_EXCEEDED", 504, "the request ran out of time", Retry.NEVER,
                         "The client's deadline (or `--max-request-minutes`) passed during the analysis or a "
                         "Triton call in it, or an upload or stream sent nothing for "
                         "`--chunk-timeout` or ran past `--upload-timeout-minutes`. Give a longer timeout, or "
                         "send the audio faster. The SDK does not retry it: the same call would take as long.")
    INTERNAL = ("INTERNAL", 500, "internal error", Retry.NEVER,
                "A bug, or a model that returned what the gateway cannot use (wrong shape, non-finite values). "
                "The request id (`toneserve-request-id`, `request_id` in the JSON body) finds the gateway's "
                "log line; report it.")

    @property
    def status(self) -> str:
        """The gRPC status name (grpc.StatusCode[status])."""
        return self.value[0]

    @property
    def http_status(self) -> int:
        """The HTTP status of the gateway's HTTP/JSON API."""
        return self.value[1]

    @property
    def default_message(self) -> str:
        return self.value[2]

    @property
    def retry(self) -> Retry:
        """Whether, and how, a later try of the same request can pass."""
        return self.value[3]

    @property
    def retryable(self) -> bool:
        return self.retry is not Retry.NEVER

    @property
    def guide(self) -> str:
        """Its usual cause, and what to do (docs/errors.md)."""
        return self.value[4]


class ToneserveError(Exception):
    """A failure with a code from the table; its message is what the client reads."""

    def __init__(self, code: Code, detail: str | None = None):
        self.code = code
        self.detail = detail or code.default_message
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.code.name}: {self.detail}"
