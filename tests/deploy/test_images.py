"""The images built for real, with buildah, and run.

The default bases (python:3.11.14-slim-bookworm, nvcr.io/...) cannot be pulled everywhere. The images take
their base as a build argument (BASE_IMAGE); here the base is made from Debian's own packages with
deploy/base/debian-base (debootstrap's minbase plus the packages the Dockerfile's `# debian-base:` line names),
the Dockerfile is built on it with `buildah bud`, and the image's own command runs its gateway (`buildah run
--isolation chroot`, host network) against a real tritonserver on this host, with keys and TLS from
/run/secrets as in docker-compose.yml. A call analysed through it from here must come back with segments.
The cpu profile's Triton image (deploy/triton-cpu/Dockerfile) is built on the same base and run with the
admin-token wrapper and the flags of kube/facts.py on the tiny cpu repository; a gateway analyses a call through it.

buildah works in a storage of its own under a temporary folder (vfs, chroot isolation: no daemon, no cgroups),
removed at the end. The base's archive is kept in pytest's cache (.pytest_cache), keyed by what makes it, so
a rerun skips debootstrap. pip reaches the index through this machine's CA bundle, mounted into the build only.
Without buildah, debootstrap or root these tests skip; under CI (CI=true) they fail instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import processes_using, self_signed, wait_for_health

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_BASE = ROOT / "deploy" / "base" / "debian-base"
GATEWAY_DOCKERFILE = ROOT / "deploy" / "gateway" / "Dockerfile"
GATEWAY_IGNORE = ROOT / "deploy" / "gateway" / "Dockerfile.dockerignore"
TRITON_CPU_DOCKERFILE = ROOT / "deploy" / "triton-cpu" / "Dockerfile"
ADMIN_TOKEN = "t-image-test-9Xq2Lw5Rb8Nc3Vd6Hf1Jk4Mz7Ps0Ty"
API_KEY = "k-image-Hq5Wd8Lm2Rx7Tb4Nc9Vz3Pk6"
# Where pip finds this machine's CA bundle, in the order pip and requests look (first that exists).
CA_BUNDLE_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
CA_BUNDLE_DEFAULT = "/etc/ssl/certs/ca-certificates.crt"
HOST_CA = "/run/host-ca.crt"  # where the build sees it (never in the image: checked below)


def _missing(reason: str):
    """A missing tool fails the run in CI, where scripts/setup installs it, and skips elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the images must be built there)", pytrace=False)
    pytest.skip(reason)


def ca_bundle() -> str | None:
    for candidate in [os.environ.get(name) for name in CA_BUNDLE_VARIABLES] + [CA_BUNDLE_DEFAULT]:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def dockerfile_debian_packages(dockerfile: Path) -> list[str]:
    """The packages its `# debian-base:` line names (what a base from Debian's packages needs)."""
    lines = [line.split(":", 1)[1].split() for line in dockerfile.read_text().splitlines()
             if line.startswith("# debian-base:")]
    assert len(lines) == 1 and lines[0], f"{dockerfile}: one `# debian-base: PACKAGE...` line"
    return lines[0]


@dataclass
class Buildah:
    """buildah on a storage of its own (vfs) under `root`."""
    root: Path

    def command(self, *arguments: str) -> list[str]:
        return ["buildah", "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
                "--storage-driver", "vfs", *arguments]

    def __call__(self, *arguments: str, timeout: float = 900) -> str:
        done = subprocess.run(self.command(*arguments), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"buildah {' '.join(arguments)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout.strip()

    def inspect(self, image: str) -> dict:
        return json.loads(self("inspect", "--type", "image", image))


@pytest.fixture(scope="module")
def buildah(tmp_path_factory):
    for tool in ("buildah", "debootstrap"):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            _missing(f"{tool} is not installed (scripts/setup installs it)")
    if os.geteuid() != 0:
        _missing("building images with debootstrap and buildah's chroot isolation needs root")
    tool = Buildah(tmp_path_factory.mktemp("buildah"))
    try:
        yield tool
    finally:
        subprocess.run(tool.command("rm", "--all"), capture_output=True, timeout=300)
        subprocess.run(tool.command("rmi", "--all", "--force"), capture_output=True, timeout=300)
        leftovers = processes_using(tool.root)
        shutil.rmtree(tool.root, ignore_errors=True)
        assert not leftovers, f"processes outlived the image tests: {leftovers}"


@pytest.fixture(scope="module")
def base(buildah, request) -> str:
    """One base from Debian's packages for both images: the packages their `# debian-base:` lines name."""
    packages = sorted({p for path in (GATEWAY_DOCKERFILE, TRITON_CPU_DOCKERFILE) for p in dockerfile_debian_packages(path)})
    started = time.monotonic()
    image = debian_base(buildah, Path(request.config.cache.mkdir("toneserve-images")), packages)
    print(f"base {time.monotonic() - started:.0f} s")
    return image


def debian_base(buildah: Buildah, cache: Path, packages: list[str]) -> str:
    """The id of a base made by deploy/base/debian-base with `packages`, pulled into buildah's storage; its
    archive is made once per key (the script, the suite, the mirror and the packages) and kept in `cache`."""
    env = {"DEBIAN_SUITE": "bookworm", "DEBIAN_MIRROR": "http://deb.debian.org/debian"}
    key = hashlib.sha256(json.dumps([DEBIAN_BASE.read_text(), env, sorted(packages)]).encode()).hexdigest()[:16]
    archive = cache / f"debian-{env['DEBIAN_SUITE']}-{key}.tar"
    if not archive.is_file():
        made = subprocess.run([str(DEBIAN_BASE), str(archive), *packages], capture_output=True, text=True,
                              timeout=900, env={**os.environ, **env})
        assert made.returncode == 0, f"deploy/base/debian-base failed:\n{made.stdout}\n{made.stderr}"
    return buildah("pull", "--quiet", f"oci-archive:{archive}").splitlines()[-1]


def build(buildah: Buildah, dockerfile: Path, context: Path, tag: str, base: str, ignorefile: Path | None) -> dict:
    """`buildah bud` of `dockerfile` on `base`, the CA bundle mounted for pip; returns the image's inspection."""
    arguments = ["bud", "--isolation", "chroot", "--file", str(dockerfile), "--tag", tag,
                 "--build-arg", f"BASE_IMAGE={base}"]
    if ignorefile:
        arguments += ["--ignorefile", str(ignorefile)]
    bundle = ca_bundle()
    if bundle:
        arguments += ["--volume", f"{bundle}:{HOST_CA}:ro", "--build-arg", f"PIP_CERT={HOST_CA}"]
    buildah(*arguments, str(context), timeout=1500)
    return buildah.inspect(tag)


def child_named(process: subprocess.Popen, name: str, timeout: float = 60.0):
    """The process called `name` that `process` started (however deep), once it exists: the topmost one that
    runs it (buildah's chroot helper above it, buildah-chroot-exec, carries the command line as its arguments)."""
    import psutil

    def named(candidate) -> bool:
        try:
            command = candidate.cmdline()
            return bool(command) and not command[0].startswith("buildah") and name in " ".join(command)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(process.pid).children(recursive=True):
            if named(child) and not named(child.parent()):
                return child
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no {name!r} under buildah run (exit status {process.poll()})")


def replace_values(command: list[str], **values: str) -> list[str]:
    """`command` with the value after each `--flag` in `values` (flag_name=value) replaced; each must be there."""
    out = list(command)
    for flag, value in values.items():
        option = "--" + flag.replace("_", "-")
        assert option in out, f"the image's command has no {option}: {command}"
        out[out.index(option) + 1] = value
    return out


def test_the_gateway_image_built_on_debian_s_packages_serves_a_call(buildah, base, tmp_path, repository, clip):
    from tests.support import triton_ports
    from toneserve.client.sdk import Client
    from toneserve.kube import facts
    from toneserve.kube.facts import GATEWAY_IMAGE
    from toneserve.triton import EmbeddedTriton, free_port

    started = time.monotonic()
    image = build(buildah, GATEWAY_DOCKERFILE, ROOT, GATEWAY_IMAGE, base, GATEWAY_IGNORE)
    built = time.monotonic()
    config = image["OCIv1"]["config"]
    assert config["User"] == str(facts.GATEWAY_UID), "a numeric user: Kubernetes' runAsNonRoot checks it"
    assert not [e for e in config.get("Env", []) if e.startswith(("PIP_CERT", "PIP_BREAK"))], config["Env"]

    container = buildah("from", "--quiet", GATEWAY_IMAGE)
    # The CA bundle was a mount of the build: at most its empty mount point is left in the image.
    size = buildah("run", "--isolation", "chroot", container, "--", "sh", "-c",
                   f"if [ -e {HOST_CA} ]; then wc -c < {HOST_CA}; else echo 0; fi")
    assert size.strip() == "0", f"{HOST_CA} holds {size} bytes in the image"
    assert buildah("run", "--isolation", "chroot", container, "--", "id", "-u") == str(facts.GATEWAY_UID)

    # The compose secrets, readable by the image's user (uid 10001); the test's own, thrown away with tmp_path.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    cert, key = self_signed(tmp_path)
    shutil.copy(cert, secrets / "tls_cert")
    shutil.copy(key, secrets / "tls_key")
    (secrets / "api_keys").write_text(f"{API_KEY} image-test\n")
    for path in (secrets, *secrets.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)

    port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path / "gateway.log"
    with EmbeddedTriton(repository, triton_ports(), log_path=tmp_path / "triton.log") as triton:
        # The image's own command (what compose runs), with this host's free ports and Triton's address.
        command = replace_values(config["Cmd"], port=str(port), http_port=str(http_port),
                                 metrics_port=str(metrics_port), triton_url=triton.grpc_url)
        with open(log, "wb") as out:
            process = subprocess.Popen(buildah.command("run", "--isolation", "chroot", "--network", "host",
                                                       "--volume", f"{secrets}:/run/secrets:ro", container,
                                                       "--", *command),
                                       stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"127.0.0.1:{port}", process, log, timeout=180, root_certificates=cert.read_bytes())
            gateway = child_named(process, "toneserve gateway")
            assert gateway.uids().real == 10001, "the gateway runs as the image's user"
            with Client(f"localhost:{port}", api_key=API_KEY, ca_cert=cert) as client:
                result = client.analyze(clip.read_bytes())
            assert result.segments and {s.speaker for s in result.speakers} == {"channel_0", "channel_1"}
            # Ctrl-C to the gateway itself (buildah run would SIGKILL it): it stops cleanly.
            gateway.send_signal(signal.SIGINT)
            assert process.wait(60) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    print(f"gateway image: build {built - started:.0f} s, run and call {time.monotonic() - built:.0f} s")


def with_ports(flags: tuple[str, ...], **ports: int) -> list[str]:
    """Triton's flags with `--NAME-port=N` set to this host's free ports (the image runs on the host's network)."""
    out = list(flags)
    for name, port in ports.items():
        index = next(i for i, flag in enumerate(out) if flag.startswith(f"--{name}-port="))
        out[index] = f"--{name}-port={port}"
    return out


def test_the_cpu_triton_image_serves_the_cpu_repository_behind_the_admin_token(buildah, base, tmp_path,
                                                                                repository, clip):
    from tests.support import gateway_process
    from toneserve.client.sdk import Client
    from toneserve.kube import facts
    from toneserve.triton import free_port

    started = time.monotonic()
    image = build(buildah, TRITON_CPU_DOCKERFILE, TRITON_CPU_DOCKERFILE.parent, facts.TRITON_CPU_IMAGE, base, None)
    built = time.monotonic()
    config = image["OCIv1"]["config"]
    assert config["Cmd"] == ["tritonserver", *facts.TRITON_FLAGS], "the image's command is compose's and Kubernetes'"
    assert config["User"] == str(facts.TRITON_UID)
    container = buildah("from", "--quiet", facts.TRITON_CPU_IMAGE)
    assert buildah("run", "--isolation", "chroot", container, "--", "id", "-u") == str(facts.TRITON_UID)

    # The image runs as uid 1000: a copy of the repository it may read (render leaves the top folder 0700).
    models = tmp_path / "models"
    shutil.copytree(repository, models, symlinks=True)
    models.chmod(0o755)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o755)
    (secrets / "triton_admin_token").write_text(ADMIN_TOKEN)
    (secrets / "triton_admin_token").chmod(0o644)
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    flags = with_ports(facts.TRITON_FLAGS, http=http, grpc=grpc_port, metrics=metrics)
    # What docker-compose.yml and the Kubernetes Deployment run: the wrapper reads the token, then tritonserver.
    command = ["/bin/sh", "-c", facts.admin_wrapper("/run/secrets/triton_admin_token"), "tritonserver", "tritonserver", *flags]
    log = tmp_path / "triton.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(buildah.command("run", "--isolation", "chroot", "--network", "host",
                                                   "--volume", f"{models}:/models:ro",
                                                   "--volume", f"{secrets}:/run/secrets:ro", container, "--", *command),
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, f"tritonserver exited with {process.returncode}:\n{log.read_text()}"
            try:
                ready = [urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{model}/ready", timeout=5).status
                         for model in facts.READY_MODELS]
                if ready == [200] * len(facts.READY_MODELS):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"Triton not ready after 240 s:\n{log.read_text()}"
            time.sleep(0.5)
        ready_at = time.monotonic()

        # docker-compose.yml's health check of triton-cpu, run in the image (its own python, no curl there).
        check = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["triton-cpu"]["healthcheck"]
        assert check["test"][0] == "CMD", check["test"]
        probe = [word.replace("127.0.0.1:8000", f"127.0.0.1:{http}") for word in check["test"][1:]]
        buildah("run", "--isolation", "chroot", "--network", "host", container, "--", *probe)

        # The admin APIs answer only with the token's header.
        index = f"http://127.0.0.1:{http}/v2/repository/index"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST"), timeout=10)
        assert refused.value.code in (401, 403), refused.value.code
        allowed = urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST",
                                                                headers={facts.ADMIN_HEADER: ADMIN_TOKEN}), timeout=10)
        assert {model["name"] for model in json.loads(allowed.read())} >= set(facts.READY_MODELS)

        with gateway_process(f"127.0.0.1:{grpc_port}", tmp_path / "gateway.log") as gateway:
            with Client(gateway.address, tls=False) as client:
                result = client.analyze(clip.read_bytes())
        assert result.segments and {s.speaker for s in result.speakers} == {"channel_0", "channel_1"}

        # SIGTERM, as compose and Kubernetes stop it, to tritonserver itself (buildah run would SIGKILL it).
        child_named(process, "tritonserver --model-repository").send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"cpu Triton image: build {built - started:.0f} s, ready {ready_at - built:.0f} s, "
          f"call and stop {time.monotonic() - ready_at:.0f} s")
