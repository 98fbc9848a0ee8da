"""Helpers the tests share: starting and stopping stacks and gateways, certificates, shared test data.

Fixtures and hooks live in the conftest files; everything here is a plain function or class that
test modules import (`from tests.support import ...`)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
# Real recordings (not in the repository): tests that need them skip on a fresh clone.
SHARED_SPEECH = ROOT.parent / "shared" / "data" / "speech"


@dataclass
class Stack:
    gateway: str
    triton_grpc: str
    triton_http: str
    process: subprocess.Popen
    log: Path
    metrics: str  # the gateway's Prometheus endpoint


@dataclass
class GatewayProcess:
    address: str
    metrics: str
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def gateway_process(triton_grpc: str, log: Path, *flags: str, root_certificates: bytes | None = None):
    """A gateway of its own (`toneserve gateway FLAGS`) against a running Triton; stopped with Ctrl-C.
    `root_certificates`: the gateway serves TLS (--tls-cert) and is trusted through these."""
    from toneserve.triton import free_port

    port, metrics = free_port(), free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "toneserve.cli", "gateway", "--triton-url", triton_grpc,
                                    "--port", str(port), "--metrics-port", str(metrics), *flags],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_health(f"127.0.0.1:{port}", process, log, timeout=120, root_certificates=root_certificates)
        yield GatewayProcess(f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics", process, log)
    finally:
        assert stop_stack(process) == 0, log.read_text()


def wait_for_health(address: str, process: subprocess.Popen, log: Path, timeout: float = 240.0,
                    root_certificates: bytes | None = None) -> None:
    deadline = time.monotonic() + timeout
    channel = (grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates)) if root_certificates
               else grpc.insecure_channel(address))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"toneserve serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"gateway at {address} not healthy after {timeout} s:\n{log.read_text()}")


def stop_stack(process: subprocess.Popen, timeout: float = 60.0) -> int:
    """Ctrl-C, as a user would; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class RedisServer:
    """A redis-server of the test's own on a free loopback port, nothing kept on disk (`--save ""
    --appendonly no`): never a system service. `kill()` is SIGKILL; `start()` again on the same port."""

    def __init__(self, folder: Path):
        from toneserve.triton import free_port

        if shutil.which("redis-server") is None:  # scripts/setup installs it
            raise RuntimeError("redis-server is not installed: run scripts/setup (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> RedisServer:
        import redis

        log = open(self.folder / f"redis-{self.port}.log", "ab")
        with log:
            self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                                            stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}: "
                                       f"{(self.folder / f'redis-{self.port}.log').read_text()}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def client(self):
        import redis
        return redis.Redis.from_url(self.url, socket_timeout=5, decode_responses=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def redis_server(folder: Path):
    server = RedisServer(folder).start()
    try:
        yield server
    finally:
        server.stop()


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (orphan detection)."""
    found = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


def self_signed(folder):
    """A certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def metric(url: str, name: str, **labels) -> float:
    """One sample of the gateway's Prometheus text (0 when absent)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}" + (rf"\{{{re.escape(selector)}\}}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# --- Silero VAD: the runner's core on numpy + ONNX Runtime, tested in the unit, export and stack tiers ---

RUNNERS = ROOT / "model_repository" / "runners"
VAD_WINDOW = 512


def load_file(name: str, path: Path):
    """A module from a file, by plain name: how tritonserver's Python backend loads a runner."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def silero_vad_onnx() -> Path | None:
    """silero_vad.onnx from the silero-vad wheel, found without importing the package (which imports torch);
    None when the wheel is not installed."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


def talk(seed: int, tail: int = 0) -> np.ndarray:
    """Speech-like bursts, true silence and a little noise; `tail` extra samples make a partial last frame."""
    from toneserve.samples import speechlike

    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(rng.integers(0, 8000)), np.float32),
             speechlike(float(rng.uniform(1.0, 2.5)), seed=seed, f0=float(rng.uniform(100, 220))),
             np.zeros(int(rng.integers(2000, 20000)), np.float32),
             (0.003 * rng.standard_normal(int(rng.integers(1000, 6000)))).astype(np.float32),
             speechlike(float(rng.uniform(0.5, 2.0)), seed=seed + 100),
             np.zeros(tail, np.float32)]
    return np.concatenate(parts).astype(np.float32)


def triton_ports():
    """Three free ports (http, grpc, metrics) for an EmbeddedTriton of a test's own."""
    from toneserve.triton import TritonPorts, free_port

    return TritonPorts(free_port(), free_port(), free_port())


# --- `toneserve analyze` on a folder of mixed recordings (the recordings_folder fixture builds it) ---

# name -> (seconds, rate, channels, format, seed): 8 and 16 kHz, mono and stereo, five containers.
CLIPS = {
    "calls/stereo16.wav": (8.0, 16000, 2, "wav", 11),
    "calls/phone8.flac": (8.0, 8000, 2, "flac", 12),
    "calls/mono16.mp3": (8.0, 16000, 1, "mp3", 13),
    "calls/archive/mono8.ogg": (8.0, 8000, 1, "ogg", 14),
    "calls/archive/stereo16.m4a": (8.0, 16000, 2, "m4a", 15),
}
GARBAGE = "calls/garbage.wav"


def toneserve_analyze(*arguments: str, cwd: Path, env: dict | None = None, stderr=subprocess.PIPE):
    """`toneserve analyze ARGUMENTS` run as a user runs it, in `cwd`."""
    return subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", *arguments], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


# --- a DNS server on loopback: replicas behind one name whose records a test changes ---

class LoopbackDns:
    """Answers A queries (UDP, 127.0.0.1, a free port) for the names of `records`, which a test may change
    while it runs (`set`); other names are NXDOMAIN, other types get no records. gRPC's c-ares resolver asks
    it through a target's authority: dns://{address}/NAME:PORT. Use as a context manager."""

    def __init__(self, records: dict[str, list[str]] | None = None):
        import socket
        import threading

        self.records = {name.lower().rstrip("."): list(ips) for name, ips in (records or {}).items()}
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # a closed socket does not wake a blocked recvfrom: look at `_stop` now and then
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-dns", daemon=True)

    def set(self, name: str, addresses: list[str]) -> None:
        self.records[name.lower().rstrip(".")] = list(addresses)

    def reply(self, query: bytes) -> bytes | None:
        import socket
        import struct

        if len(query) < 17:
            return None
        ident, flags = struct.unpack(">HH", query[:4])
        end, labels = 12, []
        while end < len(query) and query[end]:
            labels.append(query[end + 1:end + 1 + query[end]].decode("ascii", "replace"))
            end += 1 + query[end]
        qtype = struct.unpack(">H", query[end + 1:end + 3])[0]
        name = ".".join(labels).lower()
        self.queries += 1
        answers = self.records.get(name, []) if qtype == 1 else []
        rcode = 0 if name in self.records else 3
        # A response, authoritative, the query's recursion-desired bit; the question echoed, then the records
        # (each names the question through a pointer to offset 12), with a TTL of 0.
        head = struct.pack(">HHHHHH", ident, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        records = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(ip) for ip in answers)
        return head + query[12:end + 5] + records

    def _serve(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            answer = self.reply(query)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def __enter__(self) -> "LoopbackDns":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
