"""Calls to the Triton ensembles over KServe v2 gRPC (tritonclient.grpc.aio).

At start-up the gateway reads each ensemble's config once: label sets and
provenance (which weights serve) live in the config parameters that the
model repository rendered from the export manifests.

One channel reaches every Triton replica: gRPC balances it round robin per call over all the
addresses its target resolves to (`channel_target`), not over one long-lived connection to
whichever replica answered first. A call that fails because its replica went away is tried once
more, which round robin sends to another replica.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.grpc import aio as triton
from tritonclient.utils import InferenceServerException

from toneserve import contract
from toneserve.console import CommandError
from toneserve.contract import Code, ToneserveError
from toneserve.gateway.backend import AsrResult, Distribution, ModelInfo
from toneserve.gateway.words import Piece

log = logging.getLogger("toneserve.gateway")

# What the asr ensemble tells the words' times by: each piece, its start and its end.
WORD_OUTPUTS = (contract.TOKENS, contract.TOKEN_MS, contract.TOKEN_END_MS)

# Lengths audio is zero-padded to (WAV_LENS keeps the true length) where a model's server
# batches only identical shapes: the onnxruntime / TensorRT backends of the gpu profile.
# Steps of at most 1.5x bound the padding; 32 s holds the longest utterance (30 s + pads).
BUCKET_SECONDS = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def bucket_samples(n: int, rate: int = contract.SAMPLE_RATE) -> int:
    """The bucket length for `n` samples (n itself past the largest bucket)."""
    return next((int(b * rate) for b in BUCKET_SECONDS if b * rate >= n), n)


@functools.lru_cache(maxsize=64)
def _parsed(text: str):
    return json.loads(text)


@dataclass(frozen=True)
class EnsembleInfo(ModelInfo):
    """A model as Triton serves it: its config parameters as well."""
    parameters: dict[str, str] = field(default_factory=dict)
    # True when the server pads mixed lengths itself (cpu profile: allow_ragged_batch on WAV);
    # otherwise the gateway pads to BUCKET_SECONDS so that requests can share a batch.
    ragged: bool = False
    outputs: frozenset[str] = frozenset()  # the names of its outputs

    def json(self, key: str):
        # Read per utterance and window (labels, query ids): parsed once per distinct text.
        return _parsed(self.parameters[key])


# tritonclient's own channel options (passing any replaces them all), and a short reconnection backoff:
# once a restarted Triton listens again the gateway reaches it within a couple of seconds, not gRPC's
# default of up to 2 min. Round robin spreads the calls over every address of the target (gRPC's
# default, pick_first, would send them all to one). gRPC looks a DNS name up again only when a
# connection ends (Triton's --grpc-max-connection-age ends them on purpose), and then at most once
# per 30 s by default: once a second lets a replica added behind the name take calls within seconds.
_KEEPALIVE = KeepAliveOptions()
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
                    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
                    ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
                    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
                    ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                    ("grpc.lb_policy_name", "round_robin"), ("grpc.dns_min_time_between_resolutions_ms", 1000)]


def replica_count(target: str) -> int:
    """How many Triton replicas a gRPC target reaches now: the addresses of a list, or those its name resolves
    to (of the address family with the most, so that localhost's 127.0.0.1 and ::1 count as one server); 1 where
    it cannot be told (a unix socket, a name looked up by its own DNS server, a lookup that fails)."""
    if target.startswith(("ipv4:", "ipv6:")):
        return len(target.split(":", 1)[1].split(","))
    if target.startswith("dns:///"):
        target = target[len("dns:///"):]
    elif ":/" in target or target.startswith(("unix:", "unix-abstract:")):
        return 1
    host = target.rpartition(":")[0].strip("[]") or target
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return 1
    families: dict[int, set[str]] = {}
    for family, *_, address in found:
        families.setdefault(family, set()).add(str(address[0]))
    return max((len(addresses) for addresses in families.values()), default=1)


class TritonUrlError(CommandError):
    """--triton-url is not an address gRPC can balance over; the message says what is."""


def channel_target(url: str) -> str:
    """The gRPC target for --triton-url: HOST:PORT (every address the name resolves to), a comma-separated
    list of IP:PORT (a fixed set of replicas), or a gRPC target as is (dns:///NAME:PORT, whose records
    may change; dns://DNS-SERVER/NAME:PORT; ipv4:, ipv6:, unix:)."""
    url = url.strip()
    if ":/" in url or url.split(":", 1)[0] in ("ipv4", "ipv6", "unix", "unix-abstract"):
        return url
    parts = [part.strip() for part in url.split(",")]
    if len(parts) == 1:
        return parts[0]
    families = set()
    for part in parts:
        host, _, port = part.rpartition(":")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise TritonUrlError(f"--triton-url {url!r}: a list takes IP:PORT addresses, {part!r} is not one; "
                                 "for replicas behind a name use dns:///NAME:PORT") from None
        if not port.isdigit():
            raise TritonUrlError(f"--triton-url {url!r}: {part!r} has no port")
    if len(families) > 1:
        raise TritonUrlError(f"--triton-url {url!r}: a list is all IPv4 or all IPv6 addresses")
    return f"ipv{families.pop()}:{','.join(parts)}"


# Before the second try: the channel learns that a connection is lost a moment after the calls on it
# fail, and until it has, round robin could pick the lost replica again.
RETRY_PAUSE_SECONDS = 0.25


def _replica_gone(exc: InferenceServerException) -> bool:
    """Whether a call failed because its replica is gone or going (connection lost or refused, server
    stopping), so that another replica may answer it; not a deadline, nor an error of the request."""
    return "UNAVAILABLE" in str(exc.status() or "")


def _error(exc: InferenceServerException, stalled: float | None = None) -> ToneserveError:
    """`stalled`: the gateway's own timeout of the call, when it (not the client's deadline) expired."""
    status = str(exc.status() or "")
    if "DEADLINE_EXCEEDED" in status or "Deadline" in str(exc):
        if stalled is not None:
            return ToneserveError(Code.TRITON_UNAVAILABLE, f"Triton did not answer within {stalled:g} s")
        return ToneserveError(Code.DEADLINE_EXCEEDED, f"Triton did not answer in time: {exc.message()}")
    if "UNAVAILABLE" in status:
        return ToneserveError(Code.TRITON_UNAVAILABLE, f"Triton: {exc.message()}")
    return ToneserveError(Code.INTERNAL, f"Triton: {exc.message()}")


def checked(model: str, output: str, array: np.ndarray, width: int | None = None) -> np.ndarray:
    """A model's output, refused (INTERNAL, naming the model) unless every value is finite and, for a
    distribution, there is one value per label: a broken model must not answer with garbage."""
    if width is not None and (array.ndim == 0 or array.shape[-1] != width):
        raise ToneserveError(Code.INTERNAL, f"model {model!r} returned {output} of shape {list(array.shape)}; "
                                            f"its label set has {width} labels")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ToneserveError(Code.INTERNAL, f"model {model!r} returned non-finite values in {output}")
    return array


def _input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


def wav_inputs(wav: np.ndarray, ragged: bool) -> list[triton.InferInput]:
    """One clip as (WAV [1, S], WAV_LENS [1, 1]), zero-padded to its length bucket unless the model
    pads ragged batches itself (also what loadtest/locustfile.py sends Triton directly)."""
    width = len(wav) if ragged else bucket_samples(len(wav))
    padded = np.zeros((1, width), np.float32)
    padded[0, :len(wav)] = wav
    return [_input(contract.WAV, padded), _input(contract.WAV_LENS, np.array([[len(wav)]], np.int64))]


def pieces(result) -> tuple[Piece, ...]:
    """The asr ensemble's TOKENS, TOKEN_MS and TOKEN_END_MS of one clip as pieces (the padding of a batch's
    shorter rows, b"" and -1, left out)."""
    tokens = result.as_numpy(contract.TOKENS).reshape(-1)
    starts = result.as_numpy(contract.TOKEN_MS).reshape(-1)
    ends = result.as_numpy(contract.TOKEN_END_MS).reshape(-1)
    if not len(tokens) == len(starts) == len(ends):
        raise ToneserveError(Code.INTERNAL, f"model {contract.ASR!r} returned {len(tokens)} {contract.TOKENS} but "
                                            f"{len(starts)} {contract.TOKEN_MS} and {len(ends)} {contract.TOKEN_END_MS}")
    return tuple(Piece(token.decode("utf-8", errors="replace"), int(start), int(end))
                 for token, start, end in zip(tokens, starts, ends) if start >= 0)


def query_input(name: str, value: int) -> triton.InferInput:
    """A [1, 1] int64 query id (SenseVoice's LANGUAGE / TEXTNORM)."""
    return _input(name, np.array([[value]], np.int64))


class Inference:
    """The gateway's `Backend`: the models served by the Triton at `url`."""

    def __init__(self, url: str, timeout: float | None = None):
        """`url`: --triton-url (see `channel_target`); `timeout`: seconds after which any Triton call is given
        up (TRITON_UNAVAILABLE); None: none."""
        self.url = url
        self.timeout = timeout
        self.client = triton.InferenceServerClient(channel_target(url), channel_args=_CHANNEL_OPTIONS)
        self.models: dict[str, EnsembleInfo] = {}
        self.retried = 0  # calls tried again because their replica went away
        self.replicas = 1  # Triton replicas the calls are spread over (`count_replicas`)

    async def count_replicas(self) -> int:
        """Count the Triton replicas --triton-url reaches now (`replica_count`), kept in `replicas`."""
        self.replicas = await asyncio.to_thread(replica_count, channel_target(self.url))
        return self.replicas

    async def ready(self, timeout: float) -> bool:
        """Whether Triton answers that it and every model are ready (the server runs with strict readiness).
        With several replicas: whether one of two asked is; round robin sends the second probe to another
        replica, so one replica down or loading does not make the gateway's health flap."""
        for _ in range(2):
            try:
                if await self.client.is_server_ready(client_timeout=timeout):
                    return True
            except InferenceServerException:
                pass
        return False

    async def load(self) -> None:
        """Read the ensembles' configs; fails with TRITON_UNAVAILABLE when Triton or a model is not ready.
        The speaker and text-sentiment models are optional: a repository rendered before they existed has
        none, and the gateway then serves without diarization / text scores (each request says so in a
        warning)."""
        optional = {contract.SPEAKER: "diarization is off",
                    contract.TEXT_SENTIMENT: "transcripts get no text sentiment (unless --text-sentiment lexicon)"}
        for name in (contract.EMOTION, contract.ASR, contract.VAD, contract.SPEAKER, contract.TEXT_SENTIMENT):
            try:
                if name in optional and not await self._serves(name):
                    log.warning("Triton serves no %r model: %s", name, optional[name])
                    continue
                if not await self.client.is_model_ready(name):
                    raise ToneserveError(Code.TRITON_UNAVAILABLE, f"model {name!r} is not ready on {self.url}")
                config = (await self.client.get_model_config(name, as_json=True))["config"]
                versions = await self.client.get_model_metadata(name, as_json=True)
            except InferenceServerException as exc:
                raise _error(exc) from None
            parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            wav: dict = next((i for i in config.get("input", []) if i["name"] == contract.WAV), {})
            concurrency, gpu = await self._concurrency(config)
            self.models[name] = EnsembleInfo(
                name=name, version=str(max(versions.get("versions", ["1"]), key=int)),
                family=parameters[contract.FAMILY], preset=parameters[contract.PRESET],
                weights_origin=parameters[contract.WEIGHTS_ORIGIN], precision=parameters[contract.PRECISION],
                # A repository rendered before the runtime parameter existed ran ONNX Runtime.
                runtime=parameters.get(contract.RUNTIME, "onnxruntime"),
                parameters=parameters, ragged=bool(wav.get("allow_ragged_batch", False)),
                max_batch_size=int(config.get("max_batch_size", 0)), concurrency=concurrency, gpu=gpu,
                outputs=frozenset(o["name"] for o in config.get("output", [])))
        await self.count_replicas()
        if not self.models[contract.ASR].outputs.issuperset(WORD_OUTPUTS):
            log.warning("Triton's %r model returns no %s (a repository rendered before them): segments carry no "
                        "words; render the repository again for word times", contract.ASR, "/".join(WORD_OUTPUTS))

    async def _concurrency(self, config: dict) -> tuple[int, bool]:
        """The calls one replica computes of a model at once: of its busiest step (each step of an ensemble; the
        model itself otherwise), its runs, instances x streams (contract.concurrency); on a GPU times its max batch
        size. Not so on a CPU: there a batch's run lasts about as long as its rows one after the other, so a call
        batched behind others waits for all of them (docs/BENCHMARKS.md, "Fair by default"); a GPU computes a
        batch in about the time of one row. And whether any step runs on a GPU."""
        steps = [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]
        configs = [(await self.client.get_model_config(step, as_json=True))["config"] for step in steps] or [config]
        most, any_gpu = 0, False
        for step in configs:
            gpu = any(group.get("kind") == "KIND_GPU" for group in step.get("instance_group", []))
            rows = max(1, int(step.get("max_batch_size", 0))) if gpu else 1
            most = max(most, contract.concurrency(step) * rows)
            any_gpu = any_gpu or gpu
        return most, any_gpu

    async def _serves(self, name: str) -> bool:
        """Whether Triton has model `name` ready. Asked last, of a server that just answered for the others:
        an unknown model (the repository index is an admin API the gateway may not reach) is an error."""
        try:
            return bool(await self.client.is_model_ready(name))
        except InferenceServerException as exc:
            if "UNAVAILABLE" in str(exc.status() or ""):
                raise
            return False

    def label_sets(self) -> dict[str, list[str]]:
        asr = self.models[contract.ASR]
        # Named as the Segment fields they label.
        return {"emotion": self.emotion_labels, "asr_emotion": asr.json(contract.ASR_LABELS["emotion"]),
                **{name: asr.json(contract.ASR_LABELS[name]) for name in ("language", "event", "itn")}}

    @property
    def emotion_labels(self) -> list[str]:
        return self.models[contract.EMOTION].json(contract.EMOTION_LABELS)

    def language_query_id(self, language: str) -> int:
        ids = self.models[contract.ASR].json(contract.LANGUAGE_QUERY_IDS)
        if language not in ids:
            raise ToneserveError(Code.INVALID_ARGUMENT,
                                 f"language {language!r} is not supported; choose one of {sorted(ids)}")
        return int(ids[language])

    def textnorm_query_id(self, use_itn: bool) -> int:
        return int(self.models[contract.ASR].json(contract.TEXTNORM_QUERY_IDS)["withitn" if use_itn else "woitn"])

    async def _infer(self, model: str, inputs, outputs: list[str], request_id: str, timeout: float | None):
        """One inference; tried once more (within the same time) when its replica went away. The caller
        holds its Triton slot throughout, and gets one result or one error."""
        own = self.timeout is not None and (timeout is None or self.timeout < timeout)
        limit = self.timeout if own else timeout
        deadline = None if limit is None else time.monotonic() + limit
        requested = [triton.InferRequestedOutput(o) for o in outputs]
        for attempt in (1, 2):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                return await self.client.infer(model, inputs, outputs=requested, request_id=request_id,
                                               client_timeout=left)
            except InferenceServerException as exc:
                if attempt == 1 and _replica_gone(exc) and (
                        deadline is None or time.monotonic() + RETRY_PAUSE_SECONDS < deadline):
                    self.retried += 1
                    log.warning("request %s: %s call failed (%s); trying another Triton replica",
                                request_id, model, exc.message())
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
                    continue
                error = _error(exc, self.timeout if own else None)
                if error.code is Code.INTERNAL:
                    # Triton's text can quote a runner's traceback, naming the server's files: the log has it.
                    log.error("request %s: %s call failed: %s", request_id, model, exc.message())
                    error = ToneserveError(Code.INTERNAL, f"model {model!r} failed (request id {request_id})")
                elif error.code is Code.TRITON_UNAVAILABLE and "UNAVAILABLE" in str(exc.status() or ""):
                    # gRPC's text names Triton's addresses (pod IPs, ports): the log has it, the client a summary.
                    log.warning("request %s: %s call failed: %s", request_id, model, exc.message())
                    error = ToneserveError(Code.TRITON_UNAVAILABLE, f"Triton could not be reached for model {model!r}")
                raise error from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def vad(self, block: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        """Speech probability per 512-sample frame for each row of `block` [channels, n]."""
        inputs = [_input(contract.WAV, np.ascontiguousarray(block, np.float32)),
                  _input(contract.WAV_LENS, np.full((len(block), 1), block.shape[1], np.int64))]
        result = await self._infer(contract.VAD, inputs, [contract.SPEECH_PROBS], request_id, timeout)
        probs = checked(contract.VAD, contract.SPEECH_PROBS, result.as_numpy(contract.SPEECH_PROBS))
        if probs.ndim != 2 or len(probs) != len(block):
            raise ToneserveError(Code.INTERNAL, f"model {contract.VAD!r} returned {contract.SPEECH_PROBS} of shape "
                                                f"{list(probs.shape)} for {len(block)} rows")
        return probs

    async def emotion(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> Distribution:
        inputs = wav_inputs(wav, self.models[contract.EMOTION].ragged)
        result = await self._infer(contract.EMOTION, inputs, [contract.PROBS], request_id, timeout)
        labels = self.emotion_labels
        return labels, checked(contract.EMOTION, contract.PROBS, result.as_numpy(contract.PROBS)[0], len(labels))

    async def emotion_embedding(self, wav: np.ndarray, request_id: str = "",
                                timeout: float | None = None) -> tuple[Distribution, np.ndarray]:
        inputs = wav_inputs(wav, self.models[contract.EMOTION].ragged)
        result = await self._infer(contract.EMOTION, inputs, [contract.PROBS, contract.EMBEDDING], request_id, timeout)
        labels = self.emotion_labels
        probs = checked(contract.EMOTION, contract.PROBS, result.as_numpy(contract.PROBS)[0], len(labels))
        return (labels, probs), checked(contract.EMOTION, contract.EMBEDDING, result.as_numpy(contract.EMBEDDING)[0])

    async def asr(self, wav: np.ndarray, language: str = "auto", use_itn: bool = False,
                  request_id: str = "", timeout: float | None = None) -> AsrResult:
        inputs = [*wav_inputs(wav, self.models[contract.ASR].ragged),
                  query_input(contract.LANGUAGE, self.language_query_id(language)),
                  query_input(contract.TEXTNORM, self.textnorm_query_id(use_itn))]
        info = self.models[contract.ASR]
        timed = info.outputs.issuperset(WORD_OUTPUTS)
        outputs = [contract.TEXT, *contract.ASR_DISTRIBUTIONS.values(), *(WORD_OUTPUTS if timed else ())]
        result = await self._infer(contract.ASR, inputs, outputs, request_id, timeout)
        distributions = {}
        for name, out in contract.ASR_DISTRIBUTIONS.items():
            labels = info.json(contract.ASR_LABELS[name])
            distributions[name] = (labels, checked(contract.ASR, out, result.as_numpy(out)[0], len(labels)))
        return AsrResult(text=result.as_numpy(contract.TEXT).reshape(-1)[0].decode("utf-8"),
                         distributions=distributions, pieces=pieces(result) if timed else ())

    async def speaker(self, wav: np.ndarray, request_id: str = "", timeout: float | None = None) -> np.ndarray:
        inputs = wav_inputs(wav, self.models[contract.SPEAKER].ragged)
        result = await self._infer(contract.SPEAKER, inputs, [contract.EMBEDDING], request_id, timeout)
        return checked(contract.SPEAKER, contract.EMBEDDING, result.as_numpy(contract.EMBEDDING)[0])

    async def sentiment(self, texts: Sequence[str], request_id: str = "", timeout: float | None = None) -> Distribution:
        tensor = triton.InferInput(contract.TEXT, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(-1, 1))
        result = await self._infer(contract.TEXT_SENTIMENT, [tensor], [contract.PROBS], request_id, timeout)
        labels = self.models[contract.TEXT_SENTIMENT].json(contract.TEXT_SENTIMENT_LABELS)
        probs = checked(contract.TEXT_SENTIMENT, contract.PROBS, result.as_numpy(contract.PROBS), len(labels))
        if len(probs) != len(texts):
            raise ToneserveError(Code.INTERNAL, f"model {contract.TEXT_SENTIMENT!r} returned {len(probs)} rows for "
                                                f"{len(texts)} texts")
        return labels, probs

    async def close(self) -> None:
        await self.client.close()
