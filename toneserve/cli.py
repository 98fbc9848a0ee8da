"""The `toneserve` command.

The package installs in parts (pyproject.toml's extras), so this module imports only the core:
each subcommand loads its options and its implementation when it is the one asked for, and a
subcommand whose part is not installed says which extra brings it.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toneserve import paths, version
from toneserve.console import CommandError, say
from toneserve.contract import ToneserveError


@dataclass(frozen=True)
class Part:
    """What a subcommand needs beyond the core. `modules`: its implementation, imported before it
    starts, so a missing extra fails at once rather than after minutes of work; `later`: third-party
    modules it imports only once running (looked up, not imported: torch and FunASR take seconds)."""
    extras: tuple[str, ...]
    modules: tuple[str, ...] = ()
    later: tuple[str, ...] = ()

    def __add__(self, other: Part) -> Part:
        return Part(self.extras + other.extras, self.modules + other.modules, self.later + other.later)


_EXPORT = Part(("export",), ("toneserve.export.build", "toneserve.model_repository.catalog",
                             "toneserve.model_repository.render"),
               ("torch", "funasr", "onnxruntime", "onnxscript", "kaldi_native_fbank", "silero_vad", "modelscope",
                "huggingface_hub"))
_GATEWAY = ("toneserve.gateway.server", "toneserve.gateway.auth")
# The runners inside tritonserver import onnxruntime and sentencepiece from this environment.
_SERVE = Part(("serve",), ("toneserve.triton", *_GATEWAY),
              ("pytriton", "onnxruntime", "openvino", "sentencepiece", "tokenizers"))
PARTS = {
    "export": _EXPORT,
    "serve": _SERVE,
    "gateway": Part(("gateway",), _GATEWAY, ("openai",)),
    "analyze": Part(("client",), ("toneserve.client.cli", "toneserve.client.sdk"), ("tqdm", "matplotlib")),
    "stream": Part(("client",), ("toneserve.client.stream_cli", "toneserve.client.sdk")),
    "analyze-text": Part(("client",), ("toneserve.client.text_cli", "toneserve.client.sdk")),
    "demo": _EXPORT + _SERVE + Part((), ("toneserve.samples", "toneserve.client.sdk")),
    "plan": Part(("loadtest",), ("toneserve.loadtest.plan", "toneserve.loadtest.run", "toneserve.loadtest.corpus",
                                 "toneserve.loadtest.triton_metrics", "toneserve.loadtest.process_cpu"),
                 ("locust", "gevent", "matplotlib", "psutil", "prometheus_client", "grpc_health")),
    "soak": Part(("loadtest",), ("toneserve.loadtest.soak", "toneserve.loadtest.reliability", "toneserve.loadtest.machine",
                                 "toneserve.loadtest.corpus", "toneserve.loadtest.process_cpu"),
                 ("matplotlib", "psutil", "grpc_health")),
    # The autoscaling rules name the catalog's models: the catalog reads the export manifests.
    "k8s": Part(("kube", "export"), ("toneserve.kube.render", "toneserve.model_repository.catalog")),
    "pack": Part(("kube",), ("toneserve.kube.pack",)),
    "eval": Part(("loadtest",), ("toneserve.loadtest.eval_diarization", "toneserve.loadtest.der",
                                 "toneserve.loadtest.eval_sentiment"), ("pyannote.metrics", "sklearn")),
}


class MissingExtra(CommandError):
    """A subcommand whose part is not installed."""

    def __init__(self, command: str, extras: tuple[str, ...], module: str):
        self.extras = extras
        names = f"the {' and '.join(extras)} extra{'s' if len(extras) > 1 else ''}"
        super().__init__(f'toneserve {command} needs {names}: pip install "toneserve[{",".join(extras)}]" '
                         f"({module} is not installed)")


@contextmanager
def _needs(command: str):
    """A third-party module missing while `command` loads means its extra is not installed. A missing
    toneserve module is a broken installation, and any other failure a bug: both keep their traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if not top or top == "toneserve":
            raise
        raise MissingExtra(command, PARTS[command].extras, top) from exc


def load(command: str) -> None:
    """Import `command`'s implementation, or raise MissingExtra."""
    part = PARTS[command]
    with _needs(command):
        for module in part.modules:
            importlib.import_module(module)
    for module in dict.fromkeys(part.later):
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(command, part.extras, module)


def _repository(args) -> Path:
    return Path(args.repository) if args.repository else paths.repository_dir(args.size, args.profile, args.precision)


def _serve_repository(args) -> Path:
    """The repository `serve` serves. --precision auto is bf16 where the CPU computes in bf16 natively
    (OpenVINO), else fp32; auto falls back to fp32 when no bf16 repository was rendered."""
    if args.repository or args.precision != "auto":
        return _repository(args)
    return _auto_repository(args.size, args.profile)


def _auto_repository(size: str, profile: str) -> Path:
    """The repository --precision auto serves (`serve`, `demo`)."""
    from toneserve.model_repository.cpu import default_precision

    precision = default_precision()
    repository = paths.repository_dir(size, profile, precision)
    if precision != "fp32" and not repository.is_dir():
        say(f"no {precision} repository at {repository} (`toneserve export --variants openvino` renders it); "
            "serving fp32")
        precision, repository = "fp32", paths.repository_dir(size, profile, "fp32")
    say(f"--precision auto: serving {precision}")
    return repository


def _models(args) -> Path:
    return Path(args.models_dir) if args.models_dir else paths.models_dir(args.size)


def cmd_export(args) -> int:
    if args.check:
        from toneserve.export.check import check

        reports = [check(spec, trust_checkpoint=args.trust_checkpoint, revision=args.revision)
                   for spec in args.check]
        print("\n".join(str(r) for r in reports))
        return 0 if all(r.loads for r in reports) else 1

    from toneserve.export.build import export_models
    from toneserve.model_repository.catalog import DEFAULT_TUNING, describe, summary
    from toneserve.model_repository.render import render_repository

    tuning = _tuning(args, DEFAULT_TUNING)
    models = export_models(_models(args), size=args.size, seed=args.seed, force=args.force,
                           sources={"emotion2vec": args.emotion2vec, "sensevoice": args.sensevoice,
                                    "speaker": args.speaker, "text_sentiment": args.text_sentiment},
                           variants=args.variants, revision=args.revision, trust_checkpoint=args.trust_checkpoint,
                           calibration=Path(args.calibration) if args.calibration else None)
    for profile, precision in _renderings(args.profiles, args.variants):
        out = (Path(args.repository) / paths.repository_name(profile, precision) if args.repository
               else paths.repository_dir(args.size, profile, precision))
        described = describe(models, precision, tuning)
        render_repository(described, profile, out)
        got = summary(described) if profile == "cpu" else "onnxruntime backend"
        say(f"rendered the {profile} model repository ({precision}: {got}) -> {out}", "export")
    return 0


def _renderings(profiles, variants) -> list[tuple[str, str]]:
    """(profile, precision) of each repository `export` renders. The cpu profile gets one per precision
    it can serve, so `serve --precision` picks without re-rendering (bf16 once the openvino variant is
    built: OpenVINO computes it); the gpu profile serves fp16 when it was built, else fp32."""
    out = []
    for profile in profiles:
        if profile == "cpu":
            out += ([("cpu", "fp32")] + ([("cpu", "bf16")] if "openvino" in variants else [])
                    + ([("cpu", "int8")] if "int8" in variants else []))
        else:
            out.append(("gpu", "fp16" if "fp16" in variants else "fp32"))
    return out


def _tuning(args, defaults):
    """The measured defaults, with whatever scheduling flags were given."""
    for flag in ("instances", "streams", "threads", "max_batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    return defaults.changed(instances=args.instances, streams=args.streams, threads=args.threads,
                            max_batch_size=args.max_batch_size,
                            queue_delay_us=args.queue_delay_us, max_pad_ratio=args.max_pad_ratio,
                            share_cores=args.share_cores)


def _triton_ports(args):
    """Ports from the flags; 0 means any free port."""
    from toneserve.triton import TritonPorts, free_port
    chosen = [port or free_port() for port in (args.triton_http_port, args.triton_grpc_port, args.triton_metrics_port)]
    return TritonPorts(*chosen)


def _settings(args):
    """Gateway settings from the limit flags (defaults: gateway/settings.py)."""
    from dataclasses import replace

    from toneserve.gateway.settings import Settings

    defaults = Settings()
    limits = replace(defaults.limits, max_seconds=args.max_minutes * 60, max_channels=args.max_channels,
                     max_bytes=args.max_upload_mb * 1024 * 1024, max_samples=args.max_samples)
    try:
        return _replace_settings(args, defaults, limits)
    except ValueError as exc:  # a flag out of range: a usage error, not a traceback
        raise CommandError(f"gateway settings: {exc}") from None


def _replace_settings(args, defaults, limits):
    from dataclasses import replace
    return replace(defaults, limits=limits, max_requests=args.max_requests,
                   max_request_seconds=args.max_request_minutes * 60 if args.max_request_minutes else None,
                   chunk_timeout_seconds=args.chunk_timeout, upload_timeout_seconds=args.upload_timeout_minutes * 60,
                   max_requests_per_tenant=args.max_requests_per_tenant,
                   max_message_bytes=args.max_message_mb * 1024 * 1024,
                   triton_timeout_seconds=args.triton_timeout, max_inflight=args.max_triton_calls,
                   max_triton_runs=args.max_triton_runs,
                   cpu_slots=args.cpu_slots, live_early=args.live_early,
                   tenant_audio_seconds_per_minute=args.tenant_seconds_per_minute,
                   tenant_audio_seconds_per_day=args.tenant_seconds_per_day, max_speakers=args.max_speakers,
                   text_sentiment=args.text_sentiment, max_text_chars=args.max_text_chars,
                   max_connection_age_seconds=args.max_connection_age,
                   max_connection_age_grace_seconds=args.max_connection_age_grace)


def _judge(args):
    """The LLM judge's settings from --judge-*, or None without --judge-url."""
    if not args.judge_url:
        if args.judge_model or args.judge_key_file:
            raise CommandError("--judge-model and --judge-key-file need --judge-url")
        return None
    from toneserve.gateway.verdict import JudgeSettings, api_key_from

    if not args.judge_model:
        raise CommandError("--judge-url needs --judge-model (the model name the endpoint serves)")
    try:
        return JudgeSettings(url=args.judge_url, model=args.judge_model, api_key=api_key_from(args.judge_key_file),
                             timeout_seconds=args.judge_timeout, max_tokens=args.judge_max_tokens,
                             input_chars=args.judge_input_chars)
    except ValueError as exc:
        raise CommandError(f"judge: {exc}") from None


def _quota_store(args) -> str | None:
    """--quota-store's URL, else TONESERVE_QUOTA_STORE's, checked (a mistake is known before Triton takes a
    minute to start)."""
    from toneserve.gateway.quota import ENV_QUOTA_STORE, check_store_url

    url = args.quota_store or os.environ.get(ENV_QUOTA_STORE)
    if not url:
        return None
    try:
        return check_store_url(url)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _security(args):
    """(API keys, the served TLS certificate) from the flags; a bad file is a clear error."""
    from toneserve.gateway.auth import ApiKeys, KeyFileError
    from toneserve.gateway.server import GatewayStartError
    from toneserve.gateway.tls import CertificateError, ServedCertificate

    try:
        keys = ApiKeys.load(args.api_keys)
    except KeyFileError as exc:
        raise GatewayStartError(str(exc)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise GatewayStartError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls_cert:
        try:
            tls = ServedCertificate.from_files(Path(args.tls_key), Path(args.tls_cert))
        except CertificateError as exc:
            raise GatewayStartError(f"cannot serve TLS: {exc}") from None
    return keys, tls


async def _run_gateway(triton_url: str, args, security=None) -> None:
    from toneserve.gateway.server import Gateway
    from toneserve.triton import bound_malloc

    bound_malloc()  # `serve` and `gateway` both run the gateway in this process: its allocator bounded too

    host, port = args.host, args.port
    keys, tls = security or _security(args)
    gateway = Gateway(triton_url, host=host, port=port, settings=_settings(args),
                      metrics_port=args.metrics_port or None, keys=keys, tls=tls, metrics_host=args.metrics_host,
                      allow_unauthenticated=args.allow_unauthenticated, health_port=args.health_port or None,
                      judge=_judge(args), http_port=args.http_port or None, playground=args.playground,
                      quota_store=_quota_store(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:  # a bad new key file keeps the old keys, a bad TLS pair the old pair (both logged)
        keys.reload()
        gateway.reload_tls()

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await gateway.start()
        scheme = "https" if tls else "http"
        say(f"toneserve gateway listening on {host}:{port}"
            + (f", HTTP on {scheme}://{host}:{args.http_port}" if args.http_port else "")
            + (f" (playground: {scheme}://{host}:{args.http_port}/)" if args.playground and args.http_port else "")
            + (f", metrics on http://{args.metrics_host}:{args.metrics_port}/metrics" if args.metrics_port else "")
            + (f", API keys of {len(keys.tenants)} tenant(s)" if keys.enabled else ", no API keys")
            + ("" if gateway.loaded.is_set() else f"; NOT_SERVING until Triton at {triton_url} answers (tried again "
                                                  "with a backoff)"))
        await stop.wait()
    finally:
        # New calls are refused at once; those in progress get up to --drain-seconds to finish.
        await gateway.stop(args.drain_seconds)


def cmd_serve(args) -> int:
    from toneserve.gateway.server import check_exposure
    from toneserve.triton import EmbeddedTriton
    # Key and exposure mistakes are known before Triton takes a minute to start.
    security = _security(args)
    check_exposure(args.host, security[0], args.allow_unauthenticated)
    _judge(args)
    _quota_store(args)
    repository = _serve_repository(args)
    # Triton listens on 127.0.0.1 whatever --host says (toneserve/triton.py): only the gateway serves the network.
    with EmbeddedTriton(repository, _triton_ports(args)) as triton:
        say(f"tritonserver ready on {triton.grpc_url} (repository {repository}, log {triton.log_path})")
        asyncio.run(_run_gateway(triton.grpc_url, args, security))
    say("stopped")
    return 0


def cmd_gateway(args) -> int:
    asyncio.run(_run_gateway(args.triton_url, args))
    return 0


def cmd_analyze(args) -> int:
    from toneserve.client.cli import run
    return run(args)


def cmd_demo(args) -> int:
    """The README's main job: export, start Triton and the gateway, analyse a sample, stop."""
    import threading

    from toneserve.client.sdk import Client
    from toneserve.samples import call, wav_bytes
    from toneserve.triton import EmbeddedTriton, free_port

    # The demo serves the cpu profile's default (bf16 through OpenVINO where the CPU has it and the parity
    # gates pass, fp32 elsewhere): the openvino variant is built; int8 / fp16 are `toneserve export`'s job.
    cmd_export(parser().parse_args(["export", "--size", args.size, "--seed", str(args.seed), "--profiles", "cpu",
                                    "--variants", "openvino",
                                    *(["--models-dir", args.models_dir] if args.models_dir else [])]))
    roles = {}
    if args.file:
        audio, name = Path(args.file).read_bytes(), args.file
    else:
        sample = paths.home() / "samples" / "call-20s.wav"
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_bytes(wav_bytes(call(20.0).samples, 16000))
        roles = {0: "agent", 1: "customer"}
        audio, name = sample.read_bytes(), str(sample)
    port = args.port or free_port()
    with EmbeddedTriton(_auto_repository(args.size, "cpu"), _triton_ports(args)) as triton:
        say(f"tritonserver ready on {triton.grpc_url}", "demo")
        from toneserve.gateway.server import Gateway

        loop = asyncio.new_event_loop()
        gateway = Gateway(triton.grpc_url, port=port)
        loop.run_until_complete(gateway.start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            say(f"gateway ready on 127.0.0.1:{port}; analysing {name}", "demo")
            with Client(f"127.0.0.1:{port}", tls=False) as client:  # plaintext, whatever TONESERVE_CA_CERT says
                result = client.analyze(audio, channel_roles=roles).to_dict()
        finally:
            asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    say(summary(result))
    return 0


def cmd_eval(args) -> int:
    if args.subject == "sentiment":
        from toneserve.loadtest.eval_sentiment import run
        return run(args)
    from toneserve.loadtest.eval_diarization import run
    return run(args)


def cmd_analyze_text(args) -> int:
    from toneserve.client.text_cli import run
    return run(args)


def cmd_stream(args) -> int:
    from toneserve.client.stream_cli import run
    return run(args)


def cmd_plan(args) -> int:
    from toneserve.loadtest.plan import run_plan
    return run_plan(args)


def cmd_soak(args) -> int:
    from toneserve.loadtest.soak import run
    return run(args)


def cmd_k8s(args) -> int:
    from toneserve.kube import observability
    from toneserve.kube.render import files, pieces, secrets_digest, write
    from toneserve.model_repository.catalog import describe

    # Only the models' names matter here (which compute, which are ensembles): any size gives the same.
    models = describe(_models(args))
    rendered = files(models, secrets=secrets_digest(Path(args.secrets)) if args.secrets else None)
    out, root = Path(args.out), Path(args.root)
    # Outside the base: the pool Component and the cpu sites' resources, and the observability pack.
    rest = {**pieces(), **observability.files(models, observability.read_pool(root))}
    if args.check:
        differ = [out / name for name, text in rendered.items()
                  if not (out / name).is_file() or (out / name).read_text() != text]
        differ += [root / name for name in observability.stale(root, rest)]
        for path in differ:
            say(f"{path} differs from a fresh render", "k8s")
        return 1 if differ else 0
    for path in [*write(out, rendered), *observability.write(root, rest)]:
        say(f"wrote {path}", "k8s")
    return 0


def cmd_pack(args) -> int:
    import os

    from toneserve.kube.pack import kustomize_snippet, pack
    from toneserve.kube.render import dump
    from toneserve.kube.tracks import front_service, track, track_kustomization

    repository = Path(args.repository) if args.repository else paths.repository_dir(args.size, "gpu")
    packed = pack(repository, Path(args.out))
    say(f"packed {repository} -> {packed.path} (sha256 {packed.sha256})", "pack")
    url = f"{args.url.rstrip('/')}/{packed.name}" if args.url else f"https://YOUR-STORE/{packed.name}"
    if not args.track:
        print(kustomize_snippet(packed, url), end="")
        return 0
    folder = Path(args.track) / track(packed.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    site = os.path.relpath(Path(args.site).resolve(), folder.resolve())
    header = f"# Written by `toneserve pack --track` for the repository {packed.name} (docs/kubernetes.md).\n"
    (folder / "kustomization.yaml").write_text(dump([track_kustomization(packed.sha256, url, site)], header))
    (folder / "front-service.yaml").write_text(dump([front_service(packed.sha256)], header))
    say(f"track {folder}: upload {packed.path.name} to {url}, then `kubectl apply -k {folder}`; once its pods are "
        f"ready, `kubectl apply -n NAMESPACE -f {folder / 'front-service.yaml'}` moves clients to it", "pack")
    return 0


def summary(result: dict) -> str:
    """A few lines a person can read: one per segment, then one per speaker."""
    def top(dist: dict) -> str:
        return f"{dist['top']} {max(dist['probabilities']):.2f}"

    meta = result["metadata"]
    lines = ["", f"{'segment':>13}  {'speaker':<10}{'sentiment':<17}{'emotion':<15}{'flags':<22}transcript"]
    for seg in result["segments"]:
        span = f"{seg['start_ms'] / 1000:.1f}-{seg['end_ms'] / 1000:.1f} s"
        judgement = seg["judgement"]
        flags = ",".join(f.lower() for f in judgement["flags"])
        lines.append(f"{span:>13}  {seg['speaker']:<10}{judgement['sentiment']:<9}{judgement['score']:+.2f}   "
                     f"{top(seg['emotion']):<15}{flags:<22}{seg['transcript'][:40]}")
    lines.append("")
    for speaker in result["speakers"]:
        lines.append(f"{speaker['speaker']}: talks {speaker['talk_seconds']:.1f} s, average sentiment "
                     f"{speaker['average_sentiment']:+.2f}, {speaker['interruptions']} interruption(s), "
                     f"{speaker['speaking_rate_wpm']:.0f} words/min")
    call = result["call"]
    verdict = call.get("verdict")
    if verdict:
        lines.append(f"verdict ({verdict['model']}): {verdict['sentiment']} {verdict['score']:+.2f}: "
                     f"{verdict['reason']} (segments {', '.join(str(i) for i in verdict['segment_ids'])})")
    lines.append(f"{len(result['segments'])} segments, {meta['audio_seconds']:.1f} s of audio "
                 f"({call['overlap_seconds']:.1f} s overlapping, {call['non_talk_seconds']:.1f} s silent), "
                 f"{meta['processing_ms']:.0f} ms; everything stopped.")
    if meta["random_weights"]:
        lines.append("NOTE: served by RANDOM-WEIGHT models: the plumbing is real, the answers are not.")
    return "\n".join(lines)


def _add_size(p, default):
    p.add_argument("--size", default=default, choices=["tiny", "base"],
                   help="tiny: test-size random models; base: the real models from the hub, or random weights "
                        f"of their real architectures where no hub is reachable (default {default})")


def _add_gateway_options(p):
    from toneserve.gateway.settings import Settings

    defaults = Settings()
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics port; 0: off (default 9464)")
    p.add_argument("--max-minutes", type=float, default=defaults.limits.max_seconds / 60,
                   help=f"longest recording accepted (default {defaults.limits.max_seconds / 60:g})")
    p.add_argument("--max-channels", type=int, default=defaults.limits.max_channels,
                   help=f"most channels (speakers) accepted (default {defaults.limits.max_channels})")
    p.add_argument("--max-upload-mb", type=int, default=defaults.limits.max_bytes // 2**20,
                   help="largest AnalyzeUpload or AnalyzeStream in MiB "
                        f"(default {defaults.limits.max_bytes // 2**20})")
    p.add_argument("--max-message-mb", type=int, default=defaults.max_message_bytes // 2**20,
                   help=f"largest Analyze request in MiB (default {defaults.max_message_bytes // 2**20})")
    p.add_argument("--max-samples", type=float, default=defaults.limits.max_samples,
                   help="a request's budget of sample rate x channels x seconds, the rate counted as at least "
                        f"16 kHz (default {defaults.limits.max_samples:g})")
    request_minutes = (defaults.max_request_seconds or 0) / 60
    p.add_argument("--max-request-minutes", type=float, default=request_minutes,
                   help="longest any request may take, when its client's deadline is longer or unset; 0: no cap "
                        f"(default {request_minutes:g})")
    p.add_argument("--chunk-timeout", type=float, default=defaults.chunk_timeout_seconds, metavar="S",
                   help="an upload or stream that sends nothing for this long is ended: DEADLINE_EXCEEDED "
                        f"(default {defaults.chunk_timeout_seconds:g})")
    p.add_argument("--upload-timeout-minutes", type=float, default=defaults.upload_timeout_seconds / 60,
                   help="an AnalyzeUpload must have arrived whole within this "
                        f"(default {defaults.upload_timeout_seconds / 60:g})")
    p.add_argument("--max-requests", type=int, default=defaults.max_requests,
                   help="requests analysed at once; more are refused with a retry hint "
                        f"(default {defaults.max_requests})")
    p.add_argument("--max-requests-per-tenant", type=int,
                   help="requests one tenant may have in progress (default: no cap)")
    p.add_argument("--tenant-seconds-per-minute", type=float, metavar="S",
                   help="audio seconds a tenant may have analysed per UTC minute, failures included, unless its "
                        "key line says otherwise (default: no quota)")
    p.add_argument("--tenant-seconds-per-day", type=float, metavar="S",
                   help="the same per UTC day (default: no quota)")
    p.add_argument("--quota-store", metavar="URL",
                   help="redis://HOST:PORT[/DB] (rediss:// for TLS): the replicas share each tenant's per-minute and "
                        "per-day counters there, so N replicas give a tenant its quota once, not N times; while it "
                        "is unreachable each replica counts alone and goes on serving (default: "
                        "TONESERVE_QUOTA_STORE, else none: each replica counts alone)")
    p.add_argument("--max-triton-calls", type=int, default=defaults.max_inflight, metavar="N",
                   help="Triton calls in flight at once to each model, shared fairly between tenants (key-file "
                        "weight=) (default: the runs the Triton replicas compute of the model at once, read from Triton: "
                        "instances x streams of its busiest step (x its max batch size on a GPU), times the replicas "
                        "that --triton-url resolves to; "
                        "so tenants wait in the gateway's fair queue, not in Triton's FIFO or behind a batch)")
    p.add_argument("--max-triton-runs", type=int, default=defaults.max_triton_runs, metavar="N",
                   help="runs of the long audio models (asr, emotion) in flight at once together, beside each "
                        "model's own slots, shared fairly between tenants: the fair queue decides whose run computes "
                        "next across both (default: where they compute on CPUs, the runs the busiest of them computes "
                        "at once, times the Triton replicas; on a GPU no such budget; 0: none)")
    p.add_argument("--cpu-slots", type=int, default=defaults.cpu_slots, metavar="N",
                   help="pieces of the gateway's CPU work (decoding, pitch, reconciliation) run at once, shared "
                        "fairly between tenants (default: the cores this process may use)")
    p.add_argument("--live-early", action=argparse.BooleanOptionalAction, default=defaults.live_early,
                   help="AnalyzeStream: analyse an utterance as soon as silence follows it, while min_silence_ms "
                        "confirms its end (a shorter lag; where speech resumes first, that compute is spent for "
                        "nothing: toneserve_live_early_analyses_total{outcome=\"dropped\"}) (default on)")
    p.add_argument("--max-speakers", type=int, default=defaults.max_speakers, metavar="N",
                   help="diarization: the most speakers told apart in one channel, and the largest speaker-count hint "
                        f"a request may give (default {defaults.max_speakers})")
    p.add_argument("--text-sentiment", choices=("model", "lexicon"), default=defaults.text_sentiment,
                   help="who scores the words: model (the text-sentiment model Triton serves, every language) or "
                        "lexicon (VADER for en, SnowNLP for zh; pip install 'toneserve[lexicon]') "
                        f"(default {defaults.text_sentiment})")
    p.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars, metavar="N",
                   help=f"AnalyzeText: the longest text taken (default {defaults.max_text_chars})")
    p.add_argument("--judge-url", metavar="URL",
                   help="an OpenAI-compatible API (vLLM, llama.cpp server, Ollama: e.g. http://127.0.0.1:8000/v1) "
                        "asked once per call for a verdict with a reason (default: off)")
    p.add_argument("--judge-model", metavar="NAME", help="the model name that endpoint serves")
    p.add_argument("--judge-key-file", metavar="FILE",
                   help="its API key, read from FILE (default: TONESERVE_JUDGE_API_KEY, else none)")
    p.add_argument("--judge-timeout", type=float, default=10.0, metavar="S",
                   help="the verdict is given up after this long; the analysis answers without it (default 10)")
    p.add_argument("--judge-max-tokens", type=int, default=200, metavar="N",
                   help="the verdict's max_tokens (default 200)")
    p.add_argument("--judge-input-chars", type=int, default=12000, metavar="N",
                   help="the segments sent to the judge are cut to this many characters (default 12000)")
    p.add_argument("--triton-timeout", type=float, default=defaults.triton_timeout_seconds, metavar="S",
                   help="give up a Triton call after this long: TRITON_UNAVAILABLE "
                        f"(default {defaults.triton_timeout_seconds:g})")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of /metrics, which names tenants and their volumes (default 127.0.0.1)")
    p.add_argument("--api-keys", metavar="FILE",
                   help="require API keys: `KEY TENANT [weight=W] [seconds_per_minute=S] [seconds_per_day=S]` per "
                        "line, KEY raw or sha256:HEX; reloaded on SIGHUP (default: TONESERVE_API_KEYS_FILE, "
                        "TONESERVE_API_KEYS, else no keys, which only a loopback --host allows)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve a non-loopback --host without API keys (anyone who reaches it may use it)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (with --tls-key); both are "
                                                     "read again on SIGHUP and when they change (a rotated Secret)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--drain-seconds", type=float, default=5.0, metavar="S",
                   help="on SIGTERM / SIGINT, new calls are refused and those in progress get this long to finish; "
                        "any still running then ends with SHUTTING_DOWN (UNAVAILABLE: retry on another replica), a "
                        "live stream after its segments analysed so far (default 5; under an orchestrator, below the "
                        "pod's grace period by the preStop pause and exit: the Kubernetes base gives 570 within 600)")
    p.add_argument("--max-connection-age", type=float, default=defaults.max_connection_age_seconds, metavar="S",
                   help="close a client's connection once it is this old (gRPC GOAWAY; HTTP: Connection: close on "
                        "its next response), so clients reconnect and reach replicas added since; calls in progress "
                        "finish (default: unlimited)")
    p.add_argument("--max-connection-age-grace", type=float, default=defaults.max_connection_age_grace_seconds,
                   metavar="S", help="gRPC: how long calls in progress on a connection closed for its age may still "
                                     "run before they are cancelled (default: unlimited)")
    p.add_argument("--health-port", type=int, default=0,
                   help="also serve gRPC health checking alone, in plaintext, on this port (Kubernetes' gRPC probes "
                        "speak no TLS); 0: off (default)")
    p.add_argument("--http-port", type=int, default=0,
                   help="also serve the HTTP/JSON API (POST /v1/analyze with the recording as the body, GET /v1/health, "
                        "GET /v1/openapi.json) on this port of --host, with the same keys, quotas and TLS; 0: off "
                        "(default)")
    p.add_argument("--playground", action="store_true",
                   help="serve the playground page at / on --http-port: upload a recording, see its timeline")


def _add_triton_ports(p, defaults=(8000, 8001, 8002)):
    for name, default in zip(("http", "grpc", "metrics"), defaults):
        p.add_argument(f"--triton-{name}-port", type=int, default=default, help=f"default {default or 'any free port'}")


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _add_listen(p, port_help: str) -> None:
    """--host and --port of the gateway (`serve`, `gateway`)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address the gateway listens on; a non-loopback one needs API keys (default %(default)s)")
    p.add_argument("--port", type=int, default=50051, help=f"{port_help} (default %(default)s)")


def _export_arguments(p):
    _add_size(p, default="base")
    p.add_argument("--emotion2vec", metavar="SOURCE",
                   help="hub id (ModelScope iic/emotion2vec_plus_base, iic/emotion2vec_plus_large; Hugging Face "
                        "emotion2vec/emotion2vec_plus_*; ms:ID / hf:ID name the hub), a local model folder "
                        "(config.yaml, model.pt, tokens.txt) or random:PRESET (tiny, base, large)")
    p.add_argument("--sensevoice", metavar="SOURCE",
                   help="hub id (iic/SenseVoiceSmall on ModelScope, FunAudioLLM/SenseVoiceSmall on Hugging Face), "
                        "a local model folder (config.yaml, model.pt, am.mvn, chn_jpn_yue_eng_ko_spectok.bpe.model) "
                        "or random:PRESET (tiny, small)")
    p.add_argument("--speaker", metavar="SOURCE",
                   help="the speaker-embedding model (diarization): random:resemblyzer_wheel (default: Resemblyzer's "
                        "real weights from its wheel), random:resemblyzer, random:campplus, a CAM++ hub id "
                        "(iic/speech_campplus_sv_zh-cn_16k-common) or folder, a WeSpeaker ResNet34 ONNX folder or "
                        "Hugging Face id (Wespeaker/wespeaker-voxceleb-resnet34-LM)")
    p.add_argument("--text-sentiment", metavar="SOURCE",
                   help="the words' sentiment model: a Hugging Face sequence-classification folder (config.json with "
                        "id2label, tokenizer.json, model.safetensors), a hub id (default at --size base: "
                        "lxyuan/distilbert-base-multilingual-cased-sentiments-student; or "
                        "cardiffnlp/twitter-xlm-roberta-base-sentiment-multilingual), or random:PRESET "
                        "(distilbert_tiny, distilbert_multilingual, xlmr_twitter)")
    p.add_argument("--revision", help="pin the hub ids given to this revision (branch, tag or commit)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load model.pt files that torch.load(weights_only=True) refuses with a full load, which "
                        "runs code stored in them: only for folders you trust")
    p.add_argument("--check", metavar="SOURCE", action="append",
                   help="say what a model folder or hub id is (family, preset, files, whether it loads) without "
                        "exporting; FAMILY=SOURCE says which family it should be; repeatable")
    p.add_argument("--variants", nargs="*", default=["int8", "fp16", "openvino"], choices=["int8", "fp16", "openvino"],
                   help="derived graphs to build next to fp32 (default: int8 fp16 openvino; openvino: OpenVINO "
                        "f32/bf16 parity and an NNCF static int8 IR for the cpu profile)")
    p.add_argument("--calibration", metavar="DIR",
                   help="folder of wav/flac recordings the openvino int8 variant calibrates on as well as the "
                        "project's speech-like audio (the first 4 s of up to 16 files)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights")
    # The flags default to None (keep the measured setting); their help states the measured one.
    from toneserve.model_repository.catalog import DEFAULT_TUNING as measured

    tuning = p.add_argument_group("scheduling (defaults measured: docs/BENCHMARKS.md)")
    tuning.add_argument("--instances", type=int,
                        help=f"instances of each heavy model (default {measured.instances})")
    tuning.add_argument("--streams", type=int,
                        help="cpu profile: runs of each heavy model that compute at once inside one instance, "
                             f"sharing its one copy of the weights (default {measured.streams}; the gpu profile "
                             "runs instances x streams instances)")
    tuning.add_argument("--threads", type=int,
                        help=f"threads per stream (cpu profile; default {measured.intra_op_threads})")
    tuning.add_argument("--max-batch-size", type=int,
                        help=f"largest batch Triton may form (default {measured.batching.max_batch_size})")
    tuning.add_argument("--queue-delay-us", type=int, help="how long the dynamic batcher waits to fill a batch "
                                                           f"(default {measured.batching.max_queue_delay_us})")
    tuning.add_argument("--max-pad-ratio", type=float,
                        help="cpu runner: requests whose padding would exceed this factor run apart (inf: never; "
                             f"default {measured.max_pad_ratio:g})")
    tuning.add_argument("--share-cores", action=argparse.BooleanOptionalAction, default=None,
                        help="cpu profile: heavy instances take turns on the machine's cores (Triton's rate "
                             f"limiter) instead of all computing at once (default {_on_off(measured.share_cores)})")
    p.add_argument("--models-dir", help=f"where exported models go (default {paths.home()}/models/SIZE)")
    p.add_argument("--repository", help="where rendered repositories go, one folder per profile")
    p.add_argument("--profiles", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"],
                   help="which Triton repositories to render (default: cpu gpu)")
    p.add_argument("--force", action="store_true", help="rebuild even when current exports exist")


def _serve_arguments(p):
    _add_size(p, default="base")
    p.add_argument("--profile", default="cpu", choices=["cpu"],
                   help="the repository's profile; the embedded Triton serves the cpu one (default %(default)s)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                   help="which rendered repository to serve: fp32; bf16 (OpenVINO on a CPU with native bf16: per model "
                        "int8 weights with bf16 or f32 activations, or bf16, the fastest that passed its accuracy gate); "
                        "int8 (quantised: faster on CPU, see docs/BENCHMARKS.md); auto (default): bf16 where the "
                        "CPU has it and `export` rendered it, else fp32")
    p.add_argument("--repository", help="rendered model repository (default: the one `export` wrote for "
                                        "--size and --precision)")
    _add_listen(p, "gateway gRPC port")
    _add_gateway_options(p)
    _add_triton_ports(p)


def _gateway_arguments(p):
    p.add_argument("--triton-url", default="127.0.0.1:8001", metavar="URL",
                   help="Triton's gRPC address: HOST:PORT, a list IP:PORT,IP:PORT, or dns:///NAME:PORT (a name whose "
                        "records change, e.g. a headless Service); calls are balanced round robin over every "
                        "address, and one whose replica goes away is tried once on another (default %(default)s)")
    _add_listen(p, "gRPC port")
    _add_gateway_options(p)


def _analyze_arguments(p):
    from toneserve.client.cli import add_arguments
    add_arguments(p)


def _stream_arguments(p):
    from toneserve.client.stream_cli import add_arguments
    add_arguments(p)


def _analyze_text_arguments(p):
    from toneserve.client.text_cli import add_arguments
    add_arguments(p)


def _eval_arguments(p):
    from toneserve.loadtest import eval_diarization, eval_sentiment
    subjects = p.add_subparsers(dest="subject", required=True, metavar="SUBJECT")
    eval_diarization.add_arguments(subjects.add_parser(
        "diarization", help="diarization error rate of recordings with RTTM references (DIR)"))
    eval_sentiment.add_arguments(subjects.add_parser(
        "sentiment", help="accuracy, macro-F1 and confusion per language of a labelled TSV (lang, label, text)"))


def _demo_arguments(p):
    _add_size(p, default="base")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir")
    p.add_argument("--file", help="analyse this file instead of the generated sample")
    p.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    _add_triton_ports(p, defaults=(0, 0, 0))


def _plan_arguments(p):
    from toneserve.loadtest.plan import add_arguments
    add_arguments(p)


def _soak_arguments(p):
    from toneserve.loadtest.soak import add_arguments
    add_arguments(p)


def _k8s_arguments(p):
    p.add_argument("--out", default="deploy/k8s/base", help="the Kustomize base's folder (default deploy/k8s/base)")
    _add_size(p, default="base")
    p.add_argument("--models-dir", help=f"exported models, for the catalog's model names (default "
                                        f"{paths.home()}/models/SIZE)")
    p.add_argument("--secrets", metavar="DIR",
                   help="folder of the gateway's Secret files (api_keys.txt, tls.crt, tls.key): their digest "
                        "goes into the pods' annotation, so applying after a rotation rolls the gateway")
    p.add_argument("--root", default="deploy/k8s", help="the folder of what is rendered outside the base: the pool "
                                                        "and observability Components, the cpu sites' resources, "
                                                        "deploy/k8s/monitoring (default deploy/k8s)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a rendered file differs from a "
                                                        "fresh render")


def _pack_arguments(p):
    p.add_argument("repository", nargs="?", help="rendered model repository (default: the gpu one `export` wrote "
                                                 "for --size)")
    _add_size(p, default="base")
    p.add_argument("--out", default=".", help="folder for repository-<sha256[:16]>.tar.gz and its .sha256 "
                                                   "(default: the current one)")
    p.add_argument("--url", help="where the tarball will be served from (a folder URL): printed in the overlay lines")
    p.add_argument("--track", metavar="DIR",
                   help="blue/green: write this repository's track overlay to DIR/<sha256[:16]>/ (with the front "
                        "Service that moves clients to it)")
    p.add_argument("--site", default="deploy/k8s/overlays/gpu",
                   help="the site overlay each track builds on (default deploy/k8s/overlays/gpu; "
                        "deploy/k8s/overlays/cpu for a cluster without GPUs)")


# name: (help, options, implementation)
COMMANDS = {
    "export": ("build the models (ONNX, int8, fp16) and render the Triton model repository",
               _export_arguments, cmd_export),
    "serve": ("start the embedded tritonserver (cpu profile) and the gateway", _serve_arguments, cmd_serve),
    "gateway": ("run only the gateway, against a Triton already running", _gateway_arguments, cmd_gateway),
    "analyze": ("analyse files, folders or globs: JSON, JSONL or CSV, and HTML/PNG reports",
                _analyze_arguments, cmd_analyze),
    "analyze-text": ("the sentiment of a text: its sentences scored and their average",
                     _analyze_text_arguments, cmd_analyze_text),
    "stream": ("analyse live audio (a file or a pipe) and print each segment as it comes",
               _stream_arguments, cmd_stream),
    "demo": ("export, start everything, analyse a sample clip, print, stop", _demo_arguments, cmd_demo),
    "plan": ("capacity plan: sweep load on a running gateway, find the most within a p95 SLO",
             _plan_arguments, cmd_plan),
    "soak": ("the soak: a replica under a mixed load for 30 min, every process's RSS sampled each 30 s, growth "
             "over the last 20 min judged (<= 5 %%)", _soak_arguments, cmd_soak),
    "k8s": ("render the Kubernetes (Kustomize) base: Triton, the gateway, policies, autoscaling",
            _k8s_arguments, cmd_k8s),
    "pack": ("pack a rendered model repository into a tarball named by its sha256, for Kubernetes",
             _pack_arguments, cmd_pack),
    "eval": ("evaluate what the gateway serves against references: eval diarization DIR (DER per file), "
             "eval sentiment FILE.tsv (accuracy and macro-F1 per language)",
             _eval_arguments, cmd_eval),
}


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser, whose options are added when it is the one parsed: they come from
    its part (client/, loadtest/), which may not be installed or, in the gateway image, not there."""

    def __init__(self, *args, command: str = "", options=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._command, self._options = command, options

    def parse_known_args(self, args=None, namespace=None):
        if self._options is not None:
            options, self._options = self._options, None
            with _needs(self._command):
                options(self)
        return super().parse_known_args(args, namespace)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="toneserve", description="Speech emotion and sentiment service.")
    root.add_argument("-v", "--verbose", action="store_true")
    root.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = root.add_subparsers(dest="command", required=True, parser_class=_Subcommand)
    for name, (text, options, func) in COMMANDS.items():
        sub.add_parser(name, help=text, command=name, options=options).set_defaults(func=func)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # What a person can act on is one line and exit 2; anything else is a bug and keeps its traceback.
    try:
        load(args.command)
        return args.func(args)
    except (CommandError, ToneserveError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
