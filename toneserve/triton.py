"""Start and stop the embedded tritonserver (the binary inside the nvidia-pytriton wheel).

The wheel carries Triton 2.51 with the Python backend only, plus one Python
backend stub per interpreter version. We assemble a backend directory with the
stub for the running interpreter, point the server at a rendered model
repository, wait for readiness, and own the whole process group so that no
server or stub process outlives us (Ctrl-C, failed start or normal stop).

The server listens on a loopback address only (127.0.0.1 unless told another of 127.0.0.0/8),
whatever address the gateway serves: Triton has no authentication, and the 2.51 in the wheel
predates the fixes of release 25.07 (2.59) for unauthenticated flaws in its HTTP front end and
Python backend (docs/security.md). Only processes of this machine can reach it; the gateway is
its one intended client. Several loopback addresses let replicas share one port, as pods behind
one name do.
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from toneserve import paths
from toneserve.console import CommandError
from toneserve.contract import CORES


class TritonStartError(CommandError):
    """Triton could not be started; the message says why, quoting Triton's own log."""


HOST = "127.0.0.1"  # the default; never an address outside 127.0.0.0/8: see the module's docstring


def loopback_host(host: str) -> str:
    """`host` if it is an IPv4 loopback address (127.0.0.0/8); anything else is refused."""
    try:
        if ipaddress.IPv4Address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise TritonStartError(f"the embedded tritonserver listens on loopback addresses (127.0.0.0/8) only, "
                           f"not {host!r}: it has no authentication")


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise TritonStartError(
            "tritonserver not found: the embedded CPU profile uses the binary shipped in the "
            "nvidia-pytriton wheel, which the serve extra installs: pip install \"toneserve[serve]\"") from exc
    return Path(pytriton.__file__).parent


def find_binary() -> Path:
    binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise TritonStartError(f"tritonserver binary missing or not executable at {binary}; "
                               "reinstall nvidia-pytriton")
    return binary


def prepare_backends(cache: Path | None = None) -> Path:
    """A backend directory whose Python backend has the stub for this interpreter."""
    source = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        shipped = sorted(p.name for p in (source / "python_backend_stubs").iterdir())
        raise TritonStartError(f"nvidia-pytriton ships no Python backend stub for Python {version} "
                               f"(it has {', '.join(shipped)}); use one of those interpreters")
    target = (cache or paths.home() / "triton") / f"backends-py{version}"
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".backends.", dir=target.parent))
    shutil.copytree(source / "backends" / "python", staging / "python",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
    try:
        os.replace(staging, target)
    except OSError:  # another process won the race; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return target


# glibc's malloc in tritonserver and its Python backend stubs: at most 2 arenas (a threaded process otherwise gets up
# to 8 per core, each holding its freed memory), and a fixed mmap threshold of 256 KB (glibc raises its own, up to
# 32 MB, each time a larger block is freed; from then on tensors up to that size come from the heap, where their
# freed pages stay). Measured in `toneserve soak` (docs/BENCHMARKS.md, "Int8 weights"): the default replica's RSS
# sum 2.7 GB instead of 3.3 GB after 8 minutes, PSS 2.3 GB instead of 2.9 GB. A GLIBC_TUNABLES of the caller's own
# is kept. The container images set the same (deploy/triton-cpu, deploy/gateway: tests/unit/test_triton.py checks it).
MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD = 2, 262144
MALLOC_TUNABLES = f"glibc.malloc.arena_max={MALLOC_ARENA_MAX}:glibc.malloc.mmap_threshold={MALLOC_MMAP_THRESHOLD}"
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's malloc.h


def bound_malloc() -> bool:
    """The same bounds for this process, set with glibc's ``mallopt`` (GLIBC_TUNABLES is read only when a process
    starts, and `toneserve serve` runs the gateway in its own): called where the gateway starts. Nothing where
    the caller set GLIBC_TUNABLES or the C library is not glibc. Returns whether both were set."""
    if "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENA_MAX)) and bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD))


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    libs = [str(_pytriton_dir().parent / "nvidia_pytriton.libs")]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # The stub links libpython3.X: let it find this interpreter's own copy first
        # (otherwise it needs the distribution's libpython3.X package).
        libs.insert(0, sysconfig.get_config_var("LIBDIR"))
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (*libs, env.get("LD_LIBRARY_PATH")) if p)
    # The stub embeds its own interpreter; give it this environment's packages
    # (numpy, onnxruntime, sentencepiece) so model code imports what we tested.
    site_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env["PYTHONPATH"] = ":".join([*site_dirs, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def error_lines(log: str, limit: int = 20) -> list[str]:
    """Triton's own error lines: glog 'E' records and explicit load failures."""
    keep = [line.strip() for line in log.splitlines()
            if line.startswith("E") or "failed to load" in line or line.startswith("error:")]
    # CUDA probing always complains on a CPU-only host; that is not why a start failed.
    keep = [line for line in keep if "CudaDriverHelper" not in line and "CUDA driver version" not in line]
    return keep[-limit:]


class EmbeddedTriton:
    """A tritonserver child process serving one model repository; use as a context manager."""

    def __init__(self, repository: Path, ports: TritonPorts = TritonPorts(),
                 log_path: Path | None = None, startup_timeout: float = 180.0,
                 binary: Path | None = None, log_verbose: int = 0, loopback: str = HOST,
                 max_connection_age: float | None = None):
        """`loopback`: the address to listen on, within 127.0.0.0/8; `max_connection_age`: seconds after
        which Triton ends each client connection (after a grace as long, for calls in progress), so that
        clients balancing over a DNS name look it up again and find replicas added since."""
        self.repository = Path(repository).resolve()
        self.ports = ports
        self.host = loopback_host(loopback)
        self.max_connection_age = max_connection_age
        self.log_path = Path(log_path) if log_path else paths.home() / "logs" / f"tritonserver-{ports.grpc}.log"
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.log_verbose = log_verbose
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _command(self, binary: Path, backends: Path) -> list[str]:
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            *self._connection_age(),
            *self._rate_limit(),
        ]

    def _connection_age(self) -> list[str]:
        if self.max_connection_age is None:
            return []
        ms = max(int(self.max_connection_age * 1000), 1)
        return [f"--grpc-max-connection-age={ms}", f"--grpc-max-connection-age-grace={ms}"]

    def _rate_limit(self) -> list[str]:
        """Triton's rate limiter, when the repository's instances share the cores (Tuning.share_cores):
        the pool is this process's usable cores. Without the flag Triton would make the pool as
        large as the largest single need, and run one heavy execution at a time; an instance that
        needs more threads than the machine has still gets to run, alone."""
        needs = [int(count) for config in self.repository.glob("*/config.pbtxt")
                 for count in re.findall(rf'name: "{CORES}"\s+global: true\s+count: (\d+)', config.read_text())]
        if not needs:
            return []
        pool = max(len(os.sched_getaffinity(0)), *needs)
        return ["--rate-limit=execution_count", f"--rate-limit-resource={CORES}:{pool}"]

    def start(self) -> "EmbeddedTriton":
        binary = self.binary or find_binary()
        if not os.access(binary, os.X_OK):
            raise TritonStartError(f"tritonserver binary {binary} is missing or not executable")
        if not self.repository.is_dir():
            raise TritonStartError(f"model repository {self.repository} does not exist; "
                                   "run `toneserve export` first")
        for name, port in (("http", self.ports.http), ("grpc", self.ports.grpc), ("metrics", self.ports.metrics)):
            if port_in_use(self.host, port):
                raise TritonStartError(f"Triton {name} port {port} on {self.host} is already in use; "
                                       f"choose another with --triton-{name}-port or stop what holds it")
        backends = prepare_backends()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # Own session = own process group: stopping kills the server and its stubs together.
            self.process = subprocess.Popen(self._command(binary, backends), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=_server_env(), start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                lines = error_lines(self.log()) or self.log().splitlines()[-10:]
                raise TritonStartError(f"tritonserver exited with code {code} before it was ready "
                                       f"(full log: {self.log_path}):\n  " + "\n  ".join(lines))
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                lines = error_lines(self.log()) or self.log().splitlines()[-10:]
                raise TritonStartError(f"tritonserver not ready after {self.startup_timeout:.0f} s "
                                       f"(full log: {self.log_path}):\n  " + "\n  ".join(lines))
            time.sleep(0.25)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Stubs may linger a moment after the server; take the group down for sure.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "EmbeddedTriton":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
