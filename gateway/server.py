"""The gateway's gRPC server: Analyzer plus standard health checking and reflection."""
from __future__ import annotations

import asyncio
import ipaddress
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from toneserve.console import CommandError
from toneserve.gateway.auth import ApiKeys
from toneserve.gateway.http import HttpApi
from toneserve.gateway.inference import Inference
from toneserve.gateway.metrics import Metrics
from toneserve.gateway.quota import RedisStore, SharedQuotas, check_store_url, describe
from toneserve.gateway.sentiment import lexicon_installed
from toneserve.gateway.service import AnalyzerService
from toneserve.gateway.settings import Settings
from toneserve.gateway.tasks import cancel
from toneserve.gateway.tls import CertificateError, ServedCertificate
from toneserve.gateway.triton_watch import TritonWatch, load_until_ready
from toneserve.gateway.verdict import Judge, JudgeSettings
from toneserve.v1 import toneserve_pb2, toneserve_pb2_grpc

log = logging.getLogger("toneserve.gateway")


class GatewayStartError(CommandError):
    """The gateway could not start; the message says why and what to do."""


# One try at loading the models' configs from Triton is given up after this long (then tried again).
LOAD_ATTEMPT_SECONDS = 10.0
# How often the Triton replicas behind --triton-url are counted again (the Triton call slots follow them).
REPLICA_POLL_SECONDS = 30.0
# When a drain's time is over, the requests still running are ended SHUTTING_DOWN: how long they get to send it.
DRAIN_END_SECONDS = 2.0
SERVICE_NAME = toneserve_pb2.DESCRIPTOR.services_by_name["Analyzer"].full_name


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host`. A name other than localhost counts as the network:
    what it resolves to can change."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: ApiKeys, allow_unauthenticated: bool = False) -> None:
    """Refuse to serve the network without API keys, unless told to on purpose."""
    if not keys.enabled and not is_loopback(host) and not allow_unauthenticated:
        raise GatewayStartError(
            f"refusing to listen on {host} without API keys: anyone who can reach it could use it. Give keys "
            "(--api-keys FILE, TONESERVE_API_KEYS_FILE or TONESERVE_API_KEYS; docs/security.md), listen on "
            "127.0.0.1, or pass --allow-unauthenticated if the network in front of it does the checking")


def connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC server options that close a client's connection (GOAWAY) once it is `max_connection_age_seconds`
    old, so clients reconnect and resolve their target again; none when unset (gRPC's default: never)."""
    options = []
    if settings.max_connection_age_seconds is not None:
        options.append(("grpc.max_connection_age_ms", max(1, round(settings.max_connection_age_seconds * 1000))))
    if settings.max_connection_age_grace_seconds is not None:
        options.append(("grpc.max_connection_age_grace_ms", round(settings.max_connection_age_grace_seconds * 1000)))
    return options


class Gateway:
    def __init__(self, triton_url: str, host: str = "127.0.0.1", port: int = 50051,
                 settings: Settings = Settings(), metrics_port: int | None = None,
                 keys: ApiKeys = ApiKeys(), tls: tuple[bytes, bytes] | ServedCertificate | None = None,
                 metrics_host: str = "127.0.0.1", allow_unauthenticated: bool = False,
                 health_port: int | None = None, judge: JudgeSettings | None = None,
                 http_port: int | None = None, playground: bool = False, quota_store: str | None = None):
        """`keys`: API keys -> tenants (default: no authentication, which only a loopback `host` allows
        unless `allow_unauthenticated`); `tls`: (PEM private key, PEM certificate chain) to serve TLS
        instead of plaintext, or a ServedCertificate of files, reloaded on `reload_tls()` and when they
        change; metrics (tenant names and volumes) on `metrics_host`, loopback by default;
        `health_port`: standard gRPC health checking alone, in plaintext, on `host` (Kubernetes' own gRPC
        probes speak no TLS): it tells what the main port's health tells, and serves nothing else. `judge`: the
        OpenAI-compatible endpoint asked for each call's verdict (gateway/verdict.py); None: no verdicts.
        `http_port`: the HTTP/JSON API (gateway/http.py) on `host`, with the same keys and TLS; None: off.
        `playground`: the playground page at / on that port. `quota_store`: redis://HOST:PORT[/DB], where the
        replicas share the tenants' quota counters (gateway/quota.py); None: each replica counts alone."""
        if playground and http_port is None:
            raise GatewayStartError("--playground is served on the HTTP port: give --http-port too")
        check_exposure(host, keys, allow_unauthenticated)
        if keys.enabled and not tls and not is_loopback(host):
            log.warning("API keys travel in plaintext to %s: serve TLS (--tls-cert, --tls-key) or put a TLS "
                        "proxy in front", host)
        self.triton_url = triton_url
        self.host = host
        self.address = f"{host}:{port}"
        self.settings = settings
        self.metrics = Metrics()
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.keys = keys
        try:
            self.tls = ServedCertificate(*tls) if isinstance(tls, tuple) else tls
        except CertificateError as exc:
            raise GatewayStartError(f"cannot serve TLS: {exc}") from None
        self.inference: Inference | None = None
        self.server: grpc.aio.Server | None = None
        self.health_port = health_port
        self.health_server: grpc.aio.Server | None = None
        self.health: health_aio.HealthServicer | None = None
        self.watch: TritonWatch | None = None
        self.judge_settings = judge
        self.judge: Judge | None = None
        self.http_port = http_port
        self.playground = playground
        self.http: HttpApi | None = None
        self.loader: asyncio.Task | None = None  # loads from Triton, trying again until it answers
        self.loaded = asyncio.Event()  # set once it has: health follows Triton from then on
        self.replica_counter: asyncio.Task | None = None  # follows the Triton replicas (`_follow_replicas`)
        try:
            self.quota_store = check_store_url(quota_store) if quota_store else None
        except ValueError as exc:
            raise GatewayStartError(str(exc)) from None
        self.shared_quotas: SharedQuotas | None = None
        self.service: AnalyzerService | None = None
        self.stopping = False

    async def start(self) -> None:
        """Listen (gRPC, health, metrics, HTTP) with health NOT_SERVING, then load the models' configs from Triton;
        returns SERVING when the first try loads them, else NOT_SERVING with the tries going on in the background
        (`loaded` is set once they succeed). Requests meanwhile are answered TRITON_UNAVAILABLE, with a retry hint."""
        self.inference = Inference(self.triton_url, self.settings.triton_timeout_seconds)
        self.metrics.triton_ready.set(0)
        # Room for the largest Analyze audio plus the rest of the message (a larger one gets gRPC's
        # own RESOURCE_EXHAUSTED before it reaches us).
        max_message = self.settings.max_message_bytes + 1024 * 1024
        # Responses are bounded too (roles and request ids are short, recordings limited in length).
        # RPCs in progress at once: the admitted requests, as many being refused OVERLOADED, and room
        # for health checks; gRPC refuses more before any handler runs.
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message),
                                               ("grpc.max_send_message_length", max_message),
                                               ("grpc.so_reuseport", 0), *connection_age_options(self.settings)],
                                      maximum_concurrent_rpcs=2 * self.settings.max_requests + 32)
        if self.settings.text_sentiment == "lexicon" and not lexicon_installed():
            raise GatewayStartError("--text-sentiment lexicon needs VADER and SnowNLP: pip install 'toneserve[lexicon]'")
        self.judge = Judge(self.judge_settings) if self.judge_settings is not None else None
        store = RedisStore(self.quota_store) if self.quota_store else None
        service = AnalyzerService(self.inference, self.settings, self.metrics, self.keys, self.judge, store,
                                  f"the quota store {describe(self.quota_store)}" if self.quota_store else "")
        self.service = service
        self.shared_quotas = service.shared_quotas
        if self.shared_quotas is not None:  # a store down now is no reason not to serve: counted alone meanwhile
            await self.shared_quotas.start()
        toneserve_pb2_grpc.add_AnalyzerServicer_to_server(service, self.server)
        health = self.health = health_aio.HealthServicer()
        for name in (SERVICE_NAME, ""):  # until the models are loaded from Triton
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        try:
            if self.tls:
                self.server.add_secure_port(self.address, self.tls.grpc_credentials())
            else:
                self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GatewayStartError(f"cannot listen on {self.address} ({exc}); "
                                    "is the port taken? choose another with --port") from None
        await self.server.start()
        if self.health_port is not None:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=32)
            health_pb2_grpc.add_HealthServicer_to_server(health, self.health_server)
            try:
                self.health_server.add_insecure_port(f"{self.host}:{self.health_port}")
            except RuntimeError as exc:
                await self.server.stop(0)
                raise GatewayStartError(f"cannot serve health on {self.host}:{self.health_port} ({exc}); "
                                        "choose another with --health-port") from None
            await self.health_server.start()
        if self.metrics_port is not None:
            try:
                self.metrics.serve(self.metrics_host, self.metrics_port)
            except OSError as exc:
                await self.server.stop(0)
                if self.health_server is not None:
                    await self.health_server.stop(0)
                raise GatewayStartError(f"cannot serve metrics on {self.metrics_host}:{self.metrics_port} ({exc}); "
                                        "choose another with --metrics-port") from None
        if self.http_port is not None:  # listening before the health says SERVING
            self.http = HttpApi(service, lambda: not self.stopping and service.triton_ready(), self.playground,
                                self.settings.max_connection_age_seconds)
            try:
                await self.http.start(self.host, self.http_port, self.tls.ssl_context() if self.tls else None)
            except OSError as exc:
                await self.stop(0)
                raise GatewayStartError(f"cannot serve HTTP on {self.host}:{self.http_port} ({exc}); "
                                        "choose another with --http-port") from None
        if self.tls is not None:
            expiry = self.metrics.tls()
            expiry.set(self.tls.expiry)
            self.tls.on_change = expiry.set
            self.tls.watch(self.settings.tls_poll_seconds)
        service.triton_ready = lambda: self.watch is not None and self.watch.ready
        tried = asyncio.Event()
        self.loader = asyncio.create_task(self._load(tried), name="triton-load")
        await tried.wait()  # SERVING at once where Triton is ready, as before; else the tries go on
        log.info("gateway listening on %s (Triton at %s)", self.address, self.triton_url)

    async def _load(self, tried: asyncio.Event) -> None:
        """Load the models' configs from Triton, trying again until it answers; then SERVING, and follow Triton."""
        try:
            assert self.inference is not None and self.health is not None
            inference, health = self.inference, self.health
            failed = await load_until_ready(inference.load, f"Triton at {self.triton_url}", LOAD_ATTEMPT_SECONDS,
                                            tried.set)

            async def follow(ready: bool) -> None:
                status = (health_pb2.HealthCheckResponse.SERVING if ready
                          else health_pb2.HealthCheckResponse.NOT_SERVING)
                self.metrics.triton_ready.set(1 if ready else 0)
                for name in (SERVICE_NAME, ""):
                    await health.set(name, status)

            await follow(True)
            self.watch = TritonWatch(inference.ready, follow, self.settings.triton_poll_seconds)
            self.watch.start()
            assert self.service is not None
            log.info("Triton call slots per model (%d Triton replica(s)), shared fairly between tenants: %s",
                     inference.replicas, self.service.resize_slots())
            self.replica_counter = asyncio.create_task(self._follow_replicas(), name="triton-replicas")
            self.loaded.set()
            if failed:  # said as loudly as the failures were
                log.warning("the models' configs are loaded from Triton at %s after %d failed tries: SERVING",
                            self.triton_url, failed)
        finally:
            tried.set()  # `start` returns whatever happened

    async def _follow_replicas(self) -> None:
        """Count the Triton replicas behind --triton-url every REPLICA_POLL_SECONDS; when they change, each model's
        Triton call slots follow (what the replicas compute at once)."""
        assert self.inference is not None and self.service is not None
        while True:
            await asyncio.sleep(REPLICA_POLL_SECONDS)
            before = self.inference.replicas
            try:
                now = await self.inference.count_replicas()
            except Exception as exc:  # a failed lookup keeps the slots as they are
                log.warning("cannot count the Triton replicas behind %s: %s", self.triton_url, exc)
                continue
            if now != before:
                log.info("%d Triton replica(s) behind %s (were %d): Triton call slots per model now %s", now,
                         self.triton_url, before, self.service.resize_slots())

    def reload_tls(self) -> None:
        """SIGHUP: serve the TLS files again, to new connections (a bad new pair is logged, the old one kept)."""
        if self.tls is not None:
            self.tls.reload()

    async def stop(self, grace: float = 5.0) -> None:
        """Drain, then stop: new calls are refused at once (gRPC refuses new RPCs; the HTTP API new connections, and
        new requests on kept-alive ones with SHUTTING_DOWN); those in progress get `grace` seconds, after which each
        still running ends with SHUTTING_DOWN (UNAVAILABLE: retry on another replica), a live stream after the
        segments it had analysed; they get DRAIN_END_SECONDS more to send that, then whatever is left is cut."""
        # NOT_SERVING first, for good: health checkers and load balancers stop sending calls here while
        # the calls in progress drain (for up to `grace`), instead of sending ones that would be refused.
        self.stopping = True  # the HTTP health answers NOT_SERVING from now on
        if self.service is not None:
            self.service.draining = True
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        await cancel(self.loader)
        await cancel(self.replica_counter)
        if self.watch is not None:
            await self.watch.stop()

        async def end_drain() -> None:
            await asyncio.sleep(grace)
            if self.service is not None and (ended := self.service.end_drain()):
                log.warning("the drain's %g s are over: %d request(s) still running end SHUTTING_DOWN", grace, ended)

        ender = asyncio.create_task(end_drain(), name="drain-end")
        # gRPC and HTTP drain together; gRPC's stop returns once no call is left.
        limit = grace + DRAIN_END_SECONDS
        await asyncio.gather(*([self.server.stop(limit)] if self.server is not None else []),
                             *([self.http.stop(limit)] if self.http is not None else []))
        ender.cancel()
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.tls is not None:
            await self.tls.stop()
        self.metrics.stop()
        if self.inference is not None:
            await self.inference.close()
        if self.judge is not None:
            await self.judge.close()
        if self.shared_quotas is not None:
            await self.shared_quotas.close()
