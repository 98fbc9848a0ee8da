"""Locust users that load toneserve over gRPC, fed from a generated corpus (loadtest/corpus.py).

    locust -f loadtest/locustfile.py --headless -u 4 -r 4 -t 60s --host 127.0.0.1:50051 \
        --corpus DIR --mix analyze:3,upload:1 [--durations 15,30] [--formats wav,flac] \
        [--rates 8000] [--channels 2] [--triton-host 127.0.0.1:8001] [--ledger FILE]

(`python -m toneserve.loadtest.run` wraps this: headless, CSV + HTML, parsed results.)

Users, each a closed loop (the next request leaves when the last is answered):
  analyze  Analyzer.Analyze: the whole recording in one message        (name "Analyze")
  upload   Analyzer.AnalyzeUpload: options, then the bytes in chunks   (name "AnalyzeUpload")
  triton   Triton directly (KServe v2 gRPC), the `emotion` and `asr` ensembles, one turn of a
           corpus call per request, as the gateway sends them         (names "triton emotion/asr")
`--mix` picks the users and their weights. Requests take corpus entries round-robin (one
counter shared by all users), so a run's traffic follows the corpus mix.

Every request is reported to Locust (request_type "grpc") and booked in the ledger
(loadtest/ledger.py): sent, answered, audio seconds, exact latency; it is written to `--ledger`
when Locust quits.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

# gRPC runs its own I/O threads; under Locust's gevent they must hand control back to the
# gevent hub, or a blocking call stalls every other user. Must run before any channel exists.
import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import gevent  # noqa: E402
import numpy as np  # noqa: E402
import tritonclient.grpc as triton  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.stats import CSV_STATS_INTERVAL_SEC  # noqa: E402

from toneserve import contract  # noqa: E402
from toneserve.gateway.audio import decode  # noqa: E402
from toneserve.gateway.inference import query_input, wav_inputs  # noqa: E402
from toneserve.loadtest import corpus  # noqa: E402
from toneserve.loadtest.ledger import Ledger  # noqa: E402
from toneserve.loadtest.traffic import USERS, parse_mix, split  # noqa: E402
from toneserve.v1 import toneserve_pb2 as pb  # noqa: E402
from toneserve.v1 import toneserve_pb2_grpc as pb_grpc  # noqa: E402

ROLES = {0: "agent", 1: "customer"}
MAX_MESSAGE = 80 * 1024 * 1024  # above the gateway's 64 MiB Analyze limit: the server decides
TRITON_CLIPS = 64  # turns decoded for the Triton user: plenty of variety, bounded start-up

LEDGER = Ledger()
_state: dict = {}  # options, corpus entries and their bytes, Triton clips: built once per process
_next_entry = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("toneserve", "Traffic mix (the gateway address is --host, e.g. 127.0.0.1:50051)")
    group.add_argument("--corpus", env_var="TONESERVE_CORPUS", default="", help="corpus folder (manifest.json)")
    group.add_argument("--mix", env_var="TONESERVE_MIX", default="analyze:1",
                       help="users and weights: analyze, upload, triton (default analyze:1)")
    group.add_argument("--durations", env_var="TONESERVE_DURATIONS", default="",
                       help="only calls of these lengths in s, comma-separated (default all)")
    group.add_argument("--formats", env_var="TONESERVE_FORMATS", default="", help="only these formats (default all)")
    group.add_argument("--rates", env_var="TONESERVE_RATES", default="", help="only these sample rates (default all)")
    group.add_argument("--channels", env_var="TONESERVE_CHANNELS", default="", help="only these channel counts")
    group.add_argument("--triton-host", env_var="TONESERVE_TRITON", default="127.0.0.1:8001",
                       help="Triton gRPC address for the triton user")
    group.add_argument("--request-timeout", type=float, default=600.0, help="deadline of each request in s")
    group.add_argument("--upload-chunk-kib", type=int, default=256, help="AnalyzeUpload chunk size")
    group.add_argument("--ledger", env_var="TONESERVE_LEDGER", default="",
                       help="write the per-request accounting (JSON) here when Locust quits")


@events.init.add_listener
def _init(environment, **_) -> None:
    # SystemExit, not an exception: Locust logs exceptions raised in listeners and carries on.
    options = environment.parsed_options
    if options is None:
        raise SystemExit("error: run this locustfile with the locust command: its users need its options")
    if not options.corpus:
        raise SystemExit("error: --corpus DIR is required (generate one with python -m toneserve.loadtest.corpus)")
    try:
        mix = parse_mix(options.mix)
        entries = corpus.select(corpus.load(options.corpus), durations=[float(d) for d in split(options.durations)],
                                formats=split(options.formats), rates=split(options.rates),
                                channels=split(options.channels))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if (mix.get("analyze") or mix.get("upload")) and not options.host:
        raise SystemExit("error: the analyze and upload users need the gateway address: --host HOST:PORT")
    # Weights come from --mix; users it leaves out (or gives 0) do not run at all.
    for name, class_name in USERS.items():
        globals()[class_name].weight = mix.get(name, 0)
    environment.user_classes[:] = [cls for cls in environment.user_classes if cls.weight > 0]
    if not environment.user_classes:
        raise SystemExit(f"error: --mix {options.mix!r} selects none of the user classes given on the command line")
    folder = Path(options.corpus)
    _state.update(options=options, entries=entries,
                  audio={e.file: (folder / e.file).read_bytes() for e in entries})


@events.spawning_complete.add_listener
def _steady(**_) -> None:
    LEDGER.mark("steady_from")


@events.test_stopping.add_listener
def _stopping(**_) -> None:
    LEDGER.mark("steady_until")


@events.quitting.add_listener
def _write_ledger(environment, **_) -> None:
    options = environment.parsed_options
    if options.ledger:
        LEDGER.write(options.ledger)
    if options.csv_prefix:
        # Locust rewrites its CSV every CSV_STATS_INTERVAL_SEC and closes the files at exit without
        # a last write: let the writer run once more, now that every request is answered.
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.25)


def next_entry() -> corpus.Entry:
    entries = _state["entries"]
    return entries[next(_next_entry) % len(entries)]


def _error_text(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class _GrpcUser(User):
    abstract = True
    wait_time = constant(0)  # closed loop: offered load is the number of users

    def call(self, name: str, audio_seconds: float, send):
        """Run `send()` (a blocking gRPC call), book it and report it to Locust. A user killed
        mid-call (GreenletExit) is booked as sent and never answered: a lost request."""
        sent_at = LEDGER.send(name)
        started = time.perf_counter()
        error, length = None, 0
        try:
            reply = send()
            length = reply.ByteSize() if hasattr(reply, "ByteSize") else 0
        except Exception as exc:  # every failure is an answer: an error status, a timeout, a broken channel
            error = exc
        elapsed = (time.perf_counter() - started) * 1000.0
        text = None if error is None else _error_text(error)
        LEDGER.answer(name, sent_at, elapsed, audio_seconds, text)
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=elapsed, response_length=length,
            exception=None if error is None else RuntimeError(text), context={"audio_seconds": audio_seconds})


class _GatewayUser(_GrpcUser):
    abstract = True

    def on_start(self) -> None:
        self.options = _state["options"]
        self.channel = grpc.insecure_channel(self.host, options=[("grpc.max_send_message_length", MAX_MESSAGE),
                                                                 ("grpc.max_receive_message_length", MAX_MESSAGE)])
        self.stub = pb_grpc.AnalyzerStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    @staticmethod
    def request_options(entry: corpus.Entry) -> pb.AnalyzeRequest:
        roles = ROLES if entry.channels == 2 else {}
        return pb.AnalyzeRequest(channel_roles=roles, request_id=f"loadtest-{entry.file}")


class AnalyzeUser(_GatewayUser):
    @task
    def analyze(self) -> None:
        entry = next_entry()
        request = self.request_options(entry)
        request.audio = _state["audio"][entry.file]
        self.call("Analyze", entry.seconds, lambda: self.stub.Analyze(request, timeout=self.options.request_timeout))


class UploadUser(_GatewayUser):
    @task
    def upload(self) -> None:
        entry = next_entry()
        data, size = _state["audio"][entry.file], self.options.upload_chunk_kib * 1024

        def messages():
            yield pb.UploadRequest(options=self.request_options(entry))
            for start in range(0, len(data), size):
                yield pb.UploadRequest(chunk=data[start:start + size])

        self.call("AnalyzeUpload", entry.seconds,
                  lambda: self.stub.AnalyzeUpload(messages(), timeout=self.options.request_timeout))


def triton_clips(entries: list[corpus.Entry], limit: int = TRITON_CLIPS) -> list[np.ndarray]:
    """Turns of the corpus calls as 16 kHz float32 clips (the channel of their speaker; mono
    calls: the mix), decoded the way the gateway decodes them."""
    clips = []
    folder = Path(_state["options"].corpus)
    for entry in entries:
        samples = decode(folder / entry.file).samples
        for speaker, start, end in entry.turns:
            row = samples[speaker if entry.channels > 1 else 0]
            clips.append(np.ascontiguousarray(row[int(start * contract.SAMPLE_RATE):int(end * contract.SAMPLE_RATE)]))
            if len(clips) >= limit:
                return clips
    return clips


class TritonUser(_GrpcUser):
    """What the gateway sends Triton for one utterance, without the gateway: load on the model
    server alone. The host is --triton-host, not --host."""

    def on_start(self) -> None:
        self.options = _state["options"]
        self.client = triton.InferenceServerClient(self.options.triton_host)
        if "clips" not in _state:
            _state["clips"] = triton_clips(_state["entries"])
        self.ragged = {}
        for model in (contract.EMOTION, contract.ASR):
            config = self.client.get_model_config(model, as_json=True)["config"]
            wav = next(i for i in config["input"] if i["name"] == contract.WAV)
            self.ragged[model] = bool(wav.get("allow_ragged_batch", False))
            if model == contract.ASR:
                parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
                self.language = int(json.loads(parameters["language_query_ids"])["auto"])
                self.textnorm = int(json.loads(parameters["textnorm_query_ids"])["woitn"])

    def on_stop(self) -> None:
        self.client.close()

    def _inputs(self, model: str, wav: np.ndarray) -> list:
        inputs = wav_inputs(wav, self.ragged[model])  # as the gateway sends them
        if model == contract.ASR:
            inputs += [query_input(contract.LANGUAGE, self.language), query_input(contract.TEXTNORM, self.textnorm)]
        return inputs

    def _infer(self, model: str) -> None:
        clip = _state["clips"][next(_next_entry) % len(_state["clips"])]
        inputs = self._inputs(model, clip)
        self.call(f"triton {model}", len(clip) / contract.SAMPLE_RATE,
                  lambda: self.client.infer(model, inputs, client_timeout=self.options.request_timeout)
                  .get_response())

    @task
    def emotion(self) -> None:
        self._infer(contract.EMOTION)

    @task
    def asr(self) -> None:
        self._infer(contract.ASR)
