"""docker-compose.yml (gpu profile) and deploy/: static checks that need no Docker engine and no GPU.

What runs here:
- the compose file validates against the official Compose Specification JSON schema, vendored in
  tests/data/compose-spec.json (Apache-2.0, tests/data/compose-spec.LICENSE): from
  https://github.com/compose-spec/compose-spec/blob/master/schema/compose-spec.json as shipped in
  the PyPI wheel check-jsonschema 0.39.0 (check_jsonschema/builtin_schemas/vendor/compose-spec.json,
  sha256 below), draft 2020-12;
- `docker compose config` (the Compose v2 CLI: the docker plugin or a `docker-compose` v2 binary)
  resolves it, with defaults and with overrides, where one is installed (a GPU host has it);
  skipped with the reason on build machines without it;
- pinned images, read-only repository, GPU reservation, ports, health checks, start order;
- secure by default: keys and TLS as secrets, only the gateway published (its metrics on loopback),
  Triton's admin APIs behind a secret header, an NGC image at or past the release that fixed the
  2025 unauthenticated Triton flaws (deploy/triton/ngc-versions.txt maps tags to Triton versions);
- the images' Python requirements: equal pins with requirements.txt (no drift), no torch in the
  gateway image, and the gateway importing with nothing but its own requirements;
- the Python-backend runners use only what the Triton image installs and parse as Python 3.10
  (the NGC image's interpreter); the rendered gpu repository's ONNX graphs load in the ONNX
  Runtime of the NGC image's onnxruntime backend (IR <= 10, opset <= 21).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
TRITON_DOCKERFILE = ROOT / "deploy" / "triton" / "Dockerfile"
GATEWAY_DOCKERFILE = ROOT / "deploy" / "gateway" / "Dockerfile"
TRITON_REQUIREMENTS = ROOT / "deploy" / "triton" / "requirements.txt"
TRITON_CPU_DOCKERFILE = ROOT / "deploy" / "triton-cpu" / "Dockerfile"
TRITON_CPU_REQUIREMENTS = ROOT / "deploy" / "triton-cpu" / "requirements.txt"
GATEWAY_REQUIREMENTS = ROOT / "deploy" / "gateway" / "requirements.txt"
HEALTHCHECK = ROOT / "deploy" / "gateway" / "healthcheck.py"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SECURITY_DOC = ROOT / "docs" / "security.md"
NGC_VERSIONS = ROOT / "deploy" / "triton" / "ngc-versions.txt"

# The NGC image of the gpu profile: Triton 2.59.1, ONNX Runtime 1.22.0, Python 3.12 (the table
# deploy/triton/ngc-versions.txt, with its sources; docs/deploy.md repeats them).
TRITON_BASE_IMAGE = "nvcr.io/nvidia/tritonserver:25.07-py3"
TRITON_VERSION = "2.59.1"
# Release 25.07 fixed CVE-2025-23310, -23311 (HTTP front end), -23319, -23320, -23334 (Python backend).
FIRST_FIXED = ("25.07", (2, 59, 1))
# The embedded cpu profile's server (the nvidia-pytriton wheel): older, hence loopback only (docs/security.md).
PYTRITON_PIN, PYTRITON_TRITON = "0.7.0", "2.51.0"
NGC_ONNXRUNTIME = "1.22.0"
# What ONNX Runtime 1.19 (ONNX 1.16) loads, IR 10 and opset 21, was verified with its wheel; 1.22 loads
# at least as much, so this bound is conservative for the image's 1.22.0.
NGC_ORT_MAX_IR, NGC_ORT_MAX_OPSET = 10, 21
NGC_PYTHON = (3, 12)
GATEWAY_BASE_IMAGE = "python:3.11.14-slim-bookworm"
GATEWAY_BASE_PYTHON = GATEWAY_BASE_IMAGE.split(":")[1].split("-")[0]

# Pins of deploy/triton/requirements.txt allowed to differ from requirements.txt (each line says why).
TRITON_PIN_EXCEPTIONS: set[str] = set()
# Never in the gateway image: the export side of the project.
HEAVY = {"torch", "torchaudio", "funasr", "modelscope", "onnx", "onnxruntime", "onnxscript", "transformers"}
# The gateway's gRPC API, its HTTP/JSON API (--http-port) and its metrics; Triton is reached over the compose
# network only.
PORTS = {"triton": set(), "gateway": {50051, 8080, 9464}, "triton-cpu": set(), "gateway-cpu": {50051, 8080, 9464}}
# The services of each profile (one profile at a time: the same published ports, the same `triton` name).
PROFILES = {"gpu": {"triton", "gateway"}, "cpu": {"triton-cpu", "gateway-cpu"}}
# Triton's APIs that answer only with the admin header; the gateway calls none of them.
RESTRICTED = {"shared-memory", "model-repository", "logging", "trace"}
SECRETS = {"api_keys": "api_keys.txt", "tls_cert": "tls.crt", "tls_key": "tls.key", "tls_ca": "tls.crt",
           "triton_admin_token": "triton_admin_token.txt"}


# --------------------------------------------------------------------------- helpers

def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default} (defaults may nest) and $$ over a tree."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if j >= len(value):
                    raise ValueError(f"unterminated ${{ in {value!r}")
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= value[j] == "}"
                j += 1
            body = value[i + 2:j - 1]
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", body, re.S)
            if not match:
                raise ValueError(f"unsupported interpolation ${{{body}}} in {value!r}")
            name, op, default = match.groups()
            current = env.get(name)
            if op is None:
                out.append(current or "")
            elif (op == ":-" and not current) or (op == "-" and current is None):
                out.append(interpolate(default, env))
            else:
                out.append(current)
            i = j
        elif value[i] == "$" and re.match(r"\$[A-Za-z_]", value[i:]):
            raise ValueError(f"use ${{...}} for variables in {value!r}")
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def resolved(env: dict[str, str] | None = None) -> dict:
    return interpolate(compose(), {"HOME": "/home/operator", **(env or {})})


def published_ports(service: dict) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port), from the short syntax HOST_IP:HOST_PORT:CONTAINER_PORT."""
    ports = {}
    for entry in service.get("ports", []):
        host_ip, host_port, container = str(entry).rsplit(":", 2) if str(entry).count(":") >= 2 \
            else ("0.0.0.0", *str(entry).split(":"))
        ports[int(container)] = (host_ip, int(host_port))
    return ports


def size_bytes(text) -> int:
    match = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(text).strip().lower())
    assert match, f"not a size: {text!r}"
    return int(match[1]) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2]]


def dockerfile_froms(path: Path) -> list[str]:
    """The images of the FROM lines as a build without --build-arg sees them: `${NAME}` is the default of
    the ARG before it (an ARG that names no default fails: the image would depend on the caller)."""
    defaults: dict[str, str] = {}
    froms = []
    for line in path.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "ARG":
            name, has_default, value = words[1].partition("=")
            defaults[name] = value.strip("\"'") if has_default else ""
        elif words and words[0].upper() == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1]) or f"<{m[1]} has no default>", words[1])
            froms.append(image)
    return froms


def dockerfile_runs(path: Path) -> list[str]:
    """RUN instructions with their continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().upper().startswith("RUN ")]


def is_pinned(image: str) -> bool:
    """An explicit tag other than latest, or a digest."""
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    return ":" in name and name.split(":", 1)[1] not in ("", "latest") and "$" not in image


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, inline comment) for `name==version` lines; anything else fails."""
    pins = {}
    for raw in path.read_text().splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]+\])?==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{path.name}: {raw!r} is not an exact pin (name==version)"
        assert canonical(match[1]) not in pins, f"{path.name}: {match[1]} pinned twice"
        pins[canonical(match[1])] = (match[3], comment.strip())
    return pins


def host_pins() -> dict[str, str]:
    return {name: version for name, (version, _) in read_pins(ROOT / "requirements.txt").items()}


def top_level_modules(distributions) -> set[str]:
    """Import names of installed distributions (as this venv has them), e.g. protobuf -> google."""
    by_dist: dict[str, set[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(canonical(dist), set()).add(top.split("/")[0])
    names = set()
    for dist in distributions:
        names |= by_dist.get(canonical(dist), {canonical(dist).replace("-", "_")})
        # packages_distributions() misses a top-level extension module (praat-parselmouth ships
        # parselmouth.cpython-*.so): read those from the distribution's file list.
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:  # pinned for an image, not installed here
            continue
        names |= {f.name.split(".")[0] for f in files if len(f.parts) == 1 and f.suffix == ".so"}
    return names


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def check_python_backend_sources(files: list[Path], allowed: set[str], python: tuple[int, int] = NGC_PYTHON,
                                 requirements: Path = TRITON_REQUIREMENTS) -> None:
    """Each file parses as the image's Python and imports only stdlib, pb_utils, siblings and `allowed`."""
    siblings = {path.stem for path in files}
    for path in files:
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=python)
        foreign = imported_modules(source) - set(sys.stdlib_module_names) - siblings \
            - {"triton_python_backend_utils", "__future__"} - allowed
        assert not foreign, (f"{path}: imports {sorted(foreign)}, which the Triton image does not install; "
                             f"add them to {requirements.relative_to(ROOT)}")


def compose_cli() -> list[str] | None:
    """`docker compose` (plugin) or a Compose v2 `docker-compose` binary; None when there is none."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    candidates = []
    if shutil.which("docker-compose"):
        candidates.append(Path(shutil.which("docker-compose")))
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            try:
                out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if re.search(r"version v?2\.", out):
                return [str(binary)]
    return None


def compose_config(cli: list[str], env: dict[str, str], profile: str = "gpu") -> dict:
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "--profile", profile, "config", "--format", "json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ.get("PATH", ""), "HOME": "/home/operator", **env})
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- the compose file

def test_vendored_schema_is_the_recorded_one():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256


@pytest.mark.parametrize("variant", ["as written", "interpolated with defaults"])
def test_compose_file_validates_against_the_compose_specification(variant):
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    document = compose() if variant == "as written" else resolved()
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes():
    """The validation above is not vacuous: typical slips fail it."""
    validator = Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for broken in ({"services": {"x": {"image": "a:1", "deploy": {"resources": {"reservations": {
                        "devices": [{"driver": "nvidia", "count": 1}]}}}}}},       # capabilities missing
                   {"services": {"x": {"image": "a:1", "helthcheck": {}}}},          # typo
                   {"services": {"x": {"image": "a:1", "depends_on": {"y": {"condition": "healthy"}}}}}):
        assert list(validator.iter_errors(broken)), broken


def test_docker_compose_config_resolves_it(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here (neither `docker compose` nor a v2 `docker-compose`); "
                    "the schema checks above still ran")
    config = compose_config(cli, {"TONESERVE_REPOSITORY": str(tmp_path)})
    triton, gateway = config["services"]["triton"], config["services"]["gateway"]
    (volume,) = triton["volumes"]
    assert (volume["source"], volume["target"], volume["read_only"]) == (str(tmp_path), "/models", True)
    assert not triton.get("ports")
    assert {int(p["published"]) for p in gateway["ports"]} == PORTS["gateway"]
    assert {p["host_ip"] for p in gateway["ports"] if p["target"] == 9464} == {"127.0.0.1"}
    assert triton["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "count": 1}]
    assert int(triton["shm_size"]) == 2 << 30
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"

    overridden = compose_config(cli, {
        "TONESERVE_REPOSITORY": str(tmp_path), "TONESERVE_GPU_COUNT": "2", "TRITON_SHM_SIZE": "4g",
        "GATEWAY_PORT": "15051", "GATEWAY_HTTP_PORT": "18080", "GATEWAY_METRICS_PORT": "19464",
        "TRITON_LOG_VERBOSE": "1"})
    triton, gateway = overridden["services"]["triton"], overridden["services"]["gateway"]
    assert {(int(p["published"]), p["target"]) for p in gateway["ports"]} == {
        (15051, 50051), (18080, 8080), (19464, 9464)}
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2
    assert int(triton["shm_size"]) == 4 << 30
    assert "--log-verbose=1" in triton["command"]

    defaulted = compose_config(cli, {"TONESERVE_HOME": "/srv/toneserve"})
    assert defaulted["services"]["triton"]["volumes"][0]["source"] == "/srv/toneserve/repository/base-gpu"
    assert set(defaulted["services"]) == PROFILES["gpu"]

    cpu = compose_config(cli, {"TONESERVE_HOME": "/srv/toneserve"}, profile="cpu")
    assert set(cpu["services"]) == PROFILES["cpu"]
    triton, gateway = cpu["services"]["triton-cpu"], cpu["services"]["gateway-cpu"]
    assert triton["volumes"][0]["source"] == "/srv/toneserve/repository/base-cpu"
    assert "triton" in triton["networks"]["default"]["aliases"] and not triton.get("ports")
    assert gateway["depends_on"]["triton-cpu"]["condition"] == "service_healthy"
    assert {int(p["published"]) for p in gateway["ports"]} == PORTS["gateway-cpu"]


def test_interpolation_helper_matches_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}/$${SET}", env) == "x/d//d/${SET}"
    assert interpolate("${UNSET:-${ALSO:-${SET}}/y}", env) == "x/y"


def test_two_profiles_of_two_services_and_no_latest_anywhere():
    doc = compose()
    assert set(doc["services"]) == set().union(*PROFILES.values())
    for profile, names in PROFILES.items():
        for name in names:
            assert doc["services"][name]["profiles"] == [profile], name
    assert "version" not in doc, "the top-level version key is obsolete in the Compose Specification"
    for path in (COMPOSE_FILE, TRITON_DOCKERFILE, GATEWAY_DOCKERFILE, TRITON_CPU_DOCKERFILE):
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} uses a latest tag"


def test_every_image_is_pinned():
    for name, service in compose()["services"].items():
        assert is_pinned(service["image"]), f"{name}: image {service['image']!r} has no explicit tag"
        assert "build" in service, f"{name}: built here, from a pinned base"
    for dockerfile in (TRITON_DOCKERFILE, GATEWAY_DOCKERFILE, TRITON_CPU_DOCKERFILE):
        froms = dockerfile_froms(dockerfile)
        assert froms and all(is_pinned(image) for image in froms), f"{dockerfile}: {froms}"
    assert dockerfile_froms(TRITON_DOCKERFILE) == [TRITON_BASE_IMAGE]
    assert dockerfile_froms(GATEWAY_DOCKERFILE) == [GATEWAY_BASE_IMAGE]
    # The cpu Triton's Python is the gateway's: 3.11, for which the wheel ships a Python-backend stub.
    assert dockerfile_froms(TRITON_CPU_DOCKERFILE) == [GATEWAY_BASE_IMAGE]
    services = compose()["services"]
    assert TRITON_BASE_IMAGE.rsplit(":", 1)[1] in services["triton"]["image"]
    pyproject_version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert services["gateway"]["image"].endswith(f":{pyproject_version}")


def test_docs_state_the_versions_and_the_embedded_servers_limits():
    """docs/deploy.md states the image's versions; docs/security.md says the embedded cpu profile's Triton
    (from the nvidia-pytriton wheel) predates the fixes, which is why it binds 127.0.0.1 only."""
    doc = DEPLOY_DOC.read_text()
    for fact in (TRITON_BASE_IMAGE, TRITON_VERSION, NGC_ONNXRUNTIME, GATEWAY_BASE_IMAGE):
        assert fact in doc, f"docs/deploy.md does not state {fact}"
    assert host_pins()["nvidia-pytriton"] == PYTRITON_PIN, (
        "nvidia-pytriton moved: check which Triton it embeds and update PYTRITON_TRITON and docs/security.md")
    security = SECURITY_DOC.read_text()
    for fact in (f"nvidia-pytriton {PYTRITON_PIN}", PYTRITON_TRITON, "127.0.0.1", *(
            f"CVE-2025-{n}" for n in (23310, 23311, 23319, 23320, 23334))):
        assert fact in security, f"docs/security.md does not state {fact}"
    from toneserve import triton

    assert triton.HOST == "127.0.0.1"


def test_repository_is_mounted_read_only_and_nothing_is_writable():
    services = compose()["services"]
    (volume,) = services["triton"]["volumes"]
    assert volume["type"] == "bind" and volume["target"] == "/models" and volume["read_only"] is True
    assert volume["bind"]["create_host_path"] is False
    assert "${TONESERVE_REPOSITORY" in volume["source"]
    assert resolved()["services"]["triton"]["volumes"][0]["source"] == \
        "/home/operator/.cache/toneserve/repository/base-gpu"
    assert resolved({"TONESERVE_REPOSITORY": "/data/repo"})["services"]["triton"]["volumes"][0]["source"] == \
        "/data/repo"
    for name, service in services.items():
        for mount in service.get("volumes", []):
            assert isinstance(mount, dict) and mount.get("read_only") is True, f"{name}: writable mount {mount}"
    assert "--model-repository=/models" in services["triton"]["command"]
    (cpu,) = services["triton-cpu"]["volumes"]
    assert {k: v for k, v in cpu.items() if k != "source"} == {k: v for k, v in volume.items() if k != "source"}
    assert resolved()["services"]["triton-cpu"]["volumes"][0]["source"] == \
        "/home/operator/.cache/toneserve/repository/base-cpu"
    assert resolved({"TONESERVE_REPOSITORY": "/data/repo"})["services"]["triton-cpu"]["volumes"][0]["source"] == \
        "/data/repo"


def test_gpu_reservation():
    triton = compose()["services"]["triton"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "TONESERVE_GPU_COUNT" in str(device["count"])
    assert resolved()["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "1"
    assert "deploy" not in compose()["services"]["gateway"], "the gateway needs no GPU"


def test_shared_memory_and_ulimits_for_the_python_backend():
    triton = resolved()["services"]["triton"]
    # One batch of 8 thirty-second windows of CTC logits passes /dev/shm in one piece.
    logits = 8 * (30_000 // 60 + 4) * 25055 * 4
    assert size_bytes(triton["shm_size"]) >= 4 * logits
    assert triton["ulimits"] == {"memlock": -1, "stack": 67108864}


def test_ports_published_with_defaults():
    """Only the gateway is published; its metrics (tenant names and volumes) on loopback by default."""
    services = resolved()["services"]
    for name, expected in PORTS.items():
        ports = published_ports(services[name])
        assert set(ports) == expected, name
        assert {host for _, host in ports.values()} == expected, f"{name}: default host ports"
    for name in ("triton", "triton-cpu"):
        assert "ports" not in compose()["services"][name], "Triton has no authentication: never published"
    gateway = published_ports(services["gateway"])
    assert gateway[50051][0] == gateway[8080][0] == "0.0.0.0" and gateway[9464][0] == "127.0.0.1"
    moved = published_ports(resolved({"GATEWAY_PORT": "6000", "GATEWAY_HTTP_PORT": "6080",
                                      "GATEWAY_METRICS_HOST_IP": "10.0.0.2"})["services"]["gateway"])
    assert moved[50051] == ("0.0.0.0", 6000) and moved[8080] == ("0.0.0.0", 6080) and moved[9464] == ("10.0.0.2", 9464)
    # Both APIs (keys and TLS on each) follow GATEWAY_HOST_IP; the metrics have their own, loopback by default.
    inside = published_ports(resolved({"GATEWAY_HOST_IP": "10.0.0.7"})["services"]["gateway"])
    assert inside[50051] == ("10.0.0.7", 50051) and inside[8080] == ("10.0.0.7", 8080)
    assert inside[9464] == ("127.0.0.1", 9464)
    flags = {flag.split("=")[0]: int(flag.split("=")[1]) for flag in triton_flags()
             if re.match(r"--(http|grpc|metrics)-port=", flag)}
    assert flags == {"--http-port": 8000, "--grpc-port": 8001, "--metrics-port": 8002}
    assert "--http-address=127.0.0.1" in triton_flags(), "HTTP for the in-container health check only"


def triton_script() -> str:
    """The shell line that starts Triton (it reads the admin token secret, then execs the flags)."""
    command = compose()["services"]["triton"]["command"]
    assert command[:2] == ["/bin/sh", "-c"], command[:2]
    return command[2]


def triton_flags() -> list[str]:
    """tritonserver's own flags, after the script and its $0 ("tritonserver")."""
    command = compose()["services"]["triton"]["command"]
    assert command[3:5] == ["tritonserver", "tritonserver"], command[3:5]
    return command[5:]


def test_triton_command():
    command = triton_flags()
    for flag in ("--model-repository=/models", "--strict-readiness=true", "--exit-on-error=true",
                 "--allow-metrics=true", "--model-control-mode=none"):
        assert flag in command, flag
    assert not any("restricted" in flag for flag in command), "the restricted flags carry the secret: script only"


def test_triton_admin_apis_are_behind_a_secret_header():
    """--grpc-restricted-protocol and --http-restricted-api name the admin APIs and take their header value
    from the triton_admin_token secret at start, never from the compose file or the environment."""
    script = interpolate(triton_script(), {})
    assert script.startswith("token=$(cat /run/secrets/triton_admin_token) && [ ${#token} -ge 32 ] "
                             "&& case $token in *[!A-Za-z0-9_-]*) false;; esac || {"), script
    assert 'exec "$@" ' in script
    found = dict(re.findall(r"--(grpc-restricted-protocol|http-restricted-api)=(\S+)", script))
    assert set(found) == {"grpc-restricted-protocol", "http-restricted-api"}, found
    for flag, value in found.items():
        apis, _, header = value.partition(":")
        assert set(apis.split(",")) == RESTRICTED, flag
        assert header == "toneserve-admin=$token", flag
    # What the gateway calls stays open to it: health, metadata, model config and inference.
    assert not RESTRICTED & {"health", "metadata", "model-config", "inference"}
    inference = (ROOT / "gateway" / "inference.py").read_text()
    for call in re.findall(r"self\.client\.(\w+)\(", inference):
        assert call in {"infer", "get_model_config", "get_model_metadata", "is_server_ready", "is_server_live",
                        "is_model_ready", "close"}, f"the gateway calls {call}: is it behind the admin header?"
    assert compose()["services"]["triton"]["secrets"] == ["triton_admin_token"]
    assert "triton_admin_token" not in compose()["services"]["gateway"].get("secrets", [])


def test_triton_start_script_reads_the_token_and_refuses_a_weak_one(tmp_path):
    """Run the compose file's shell line with sh, the token file moved to tmp_path and `echo` for tritonserver."""
    command = interpolate(compose()["services"]["triton"]["command"], {})
    token_file = tmp_path / "token"

    def start(token: str | None) -> subprocess.CompletedProcess:
        if token is not None:
            token_file.write_text(token + "\n")
        script = command[2].replace("/run/secrets/triton_admin_token", str(token_file))
        return subprocess.run(["/bin/sh", "-c", script, "tritonserver", "echo", *command[5:]],
                              capture_output=True, text=True, timeout=30)

    good = "Zt7q-8mXo2Lw1bV9cR4yPn6Ks3Ud0Hj5xWc1Rq8TmY0"
    result = start(good)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[:len(command) - 5] == command[5:], "the flags pass through unchanged"
    assert f"--grpc-restricted-protocol=shared-memory,model-repository,logging,trace:toneserve-admin={good}" in words
    assert f"--http-restricted-api=shared-memory,model-repository,logging,trace:toneserve-admin={good}" in words
    for weak in ("short", "a:b=c" + "x" * 40, "spaces in " + "x" * 40):
        result = start(weak)
        assert result.returncode == 1 and "triton_admin_token" in result.stderr and not result.stdout, weak
    token_file.unlink()
    assert start(None).returncode == 1, "no token file, no Triton"


def test_secrets_are_files_from_the_secrets_folder():
    doc = compose()
    assert set(doc["secrets"]) == set(SECRETS)
    for name, file in SECRETS.items():
        assert set(doc["secrets"][name]) == {"file"}, name
        assert interpolate(doc["secrets"][name]["file"], {}) == f"./secrets/{file}", name
        assert interpolate(doc["secrets"][name]["file"], {"TONESERVE_SECRETS": "/etc/toneserve"}) == \
            f"/etc/toneserve/{file}", name
    assert interpolate(doc["secrets"]["tls_ca"]["file"], {"TONESERVE_TLS_CA": "/etc/ca.pem"}) == "/etc/ca.pem"
    assert set(doc["services"]["gateway"]["secrets"]) == {"api_keys", "tls_cert", "tls_key", "tls_ca"}
    ignored = (ROOT / ".gitignore").read_text().split() if (ROOT / ".gitignore").exists() else []
    assert "secrets/" in ignored or "/secrets/" in ignored, "secret files must never be committed"


def test_triton_image_is_at_or_past_the_fixed_release():
    """The pinned NGC tag maps, through deploy/triton/ngc-versions.txt, to Triton 2.59.1 or later."""
    table = ngc_versions()
    tag = TRITON_BASE_IMAGE.rsplit(":", 1)[1].removesuffix("-py3")
    assert tag in table, f"{tag} is not in {NGC_VERSIONS.relative_to(ROOT)}: add it with its source"
    triton, onnxruntime, python = table[tag]
    assert version(triton) >= FIRST_FIXED[1] and version(tag) >= version(FIRST_FIXED[0]), (tag, triton)
    assert (triton, onnxruntime, python) == (TRITON_VERSION, NGC_ONNXRUNTIME, ".".join(map(str, NGC_PYTHON)))
    # The table itself is ordered and monotonic: a later tag never holds an older Triton.
    tags = list(table)
    assert tags == sorted(tags, key=version)
    assert [version(table[t][0]) for t in tags] == sorted(version(table[t][0]) for t in tags)
    assert version(table[FIRST_FIXED[0]][0]) == FIRST_FIXED[1]
    assert all(version(table[t][0]) < FIRST_FIXED[1] for t in tags if version(t) < version(FIRST_FIXED[0]))
    # Every place that names the base image names this one.
    assert f"FROM {TRITON_BASE_IMAGE}" in TRITON_DOCKERFILE.read_text()
    for doc in (DEPLOY_DOC, SECURITY_DOC):
        assert TRITON_BASE_IMAGE in doc.read_text() and TRITON_VERSION in doc.read_text(), doc.name


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def ngc_versions() -> dict[str, tuple[str, str, str]]:
    """tag -> (Triton, ONNX Runtime, Python) from deploy/triton/ngc-versions.txt."""
    table = {}
    for raw in NGC_VERSIONS.read_text().splitlines():
        line = raw.split("#", 1)[0].split()
        if line:
            assert len(line) == 4 and re.fullmatch(r"\d\d\.\d\d", line[0]), raw
            table[line[0]] = (line[1], line[2], line[3])
    return table


def test_health_checks_and_start_order():
    from toneserve import contract

    services = compose()["services"]
    triton_check = services["triton"]["healthcheck"]
    test = " ".join(triton_check["test"])
    assert triton_check["test"][0] == "CMD-SHELL" and "curl -fsS" in test
    assert "http://127.0.0.1:8000/v2/health/ready" in test
    for ensemble in (contract.EMOTION, contract.ASR):  # what the gateway loads at start
        assert f"http://127.0.0.1:8000/v2/models/{ensemble}/ready" in test

    gateway_check = services["gateway"]["healthcheck"]
    assert gateway_check["test"][:3] == ["CMD", "python", "/opt/toneserve/healthcheck.py"]
    assert gateway_check["test"][3:] == ["127.0.0.1:50051", "--ca", "/run/secrets/tls_ca",
                                         "--name", "${TONESERVE_TLS_NAME:-localhost}"]
    assert re.search(r"^COPY deploy/gateway/healthcheck.py /opt/toneserve/healthcheck.py$",
                     GATEWAY_DOCKERFILE.read_text(), re.M)
    for check in (triton_check, gateway_check):
        assert {"interval", "timeout", "retries", "start_period"} <= set(check)

    assert services["gateway"]["depends_on"] == {"triton": {"condition": "service_healthy", "restart": True}}
    for name, service in services.items():
        assert service["restart"] in ("unless-stopped", "always"), name


def test_gateway_command_is_what_the_cli_accepts():
    from toneserve.cli import parser

    command = compose()["services"]["gateway"]["command"]
    assert command[:2] == ["toneserve", "gateway"]
    args = parser().parse_args(command[1:])
    assert (args.host, args.port, args.triton_url) == ("0.0.0.0", 50051, "triton:8001")
    # Inside the container 0.0.0.0 is what Docker publishes; the host side of /metrics is loopback (above).
    assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", 9464)
    assert (args.api_keys, args.tls_cert, args.tls_key) == (
        "/run/secrets/api_keys", "/run/secrets/tls_cert", "/run/secrets/tls_key")
    assert not args.allow_unauthenticated
    assert f"CMD {json.dumps(command)}" in GATEWAY_DOCKERFILE.read_text(), "the image's CMD is the same command"


def test_gateway_http_port_is_served_published_and_exposed():
    """The HTTP/JSON API listens where the compose file publishes it, under the same keys and TLS as gRPC
    (the gateway serves HTTPS only when it has a certificate), and the image declares the port."""
    from toneserve.cli import parser

    args = parser().parse_args(compose()["services"]["gateway"]["command"][1:])
    assert args.http_port == 8080 and args.http_port in published_ports(resolved()["services"]["gateway"])
    assert args.tls_cert and args.tls_key and args.api_keys, "HTTP without TLS or keys would be open"
    assert not args.playground, "the playground page is opt-in"
    exposed = {int(port) for line in GATEWAY_DOCKERFILE.read_text().splitlines() if line.startswith("EXPOSE ")
               for port in line.split()[1:]}
    assert exposed == {args.port, args.http_port, args.metrics_port}, exposed
    assert "`GATEWAY_HTTP_PORT`" in DEPLOY_DOC.read_text()


def _health_server(status):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_gateway_healthcheck_script():
    run = lambda address, *flags: subprocess.run([sys.executable, str(HEALTHCHECK), address, *flags],  # noqa: E731
                                                 capture_output=True, text=True, timeout=30)
    server, address = _health_server(health_pb2.HealthCheckResponse.SERVING)
    try:
        assert run(address).returncode == 0
    finally:
        server.stop(0)
    assert run(address).returncode == 1, "nothing listening any more"
    server, address = _health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        result = run(address)
        assert result.returncode == 1 and "NOT_SERVING" in result.stderr
    finally:
        server.stop(0)


def test_gateway_healthcheck_over_tls(tmp_path):
    """The compose gateway serves TLS only: the check trusts the given certificate and expects its name."""
    from tests.support import self_signed

    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    run = lambda *flags: subprocess.run([sys.executable, str(HEALTHCHECK), address, *flags],  # noqa: E731
                                        capture_output=True, text=True, timeout=30)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        assert run("--ca", str(cert)).returncode == 0
        assert run("--ca", str(cert), "--name", "localhost").returncode == 0
        assert run("--ca", str(cert), "--name", "gateway.example").returncode == 1, "a name the cert lacks"
        assert run("--ca", str(other)).returncode == 1, "a certificate it does not trust"
        assert run().returncode == 1, "plaintext against TLS"
        assert run("--ca", str(tmp_path / "missing.pem")).returncode == 1
    finally:
        server.stop(0)


# --------------------------------------------------------------------------- the images' Python packages

def test_image_pins_equal_the_project_pins():
    host = host_pins()
    for path, exceptions in ((GATEWAY_REQUIREMENTS, set()), (TRITON_REQUIREMENTS, TRITON_PIN_EXCEPTIONS),
                             (TRITON_CPU_REQUIREMENTS, set())):
        pins = read_pins(path)
        marked = {name for name, (_, comment) in pins.items() if comment.startswith("pin-exception:")}
        where = path.relative_to(ROOT)
        assert marked == exceptions, f"{where}: pin exceptions {sorted(marked)}, expected {sorted(exceptions)}"
        for name, (version, comment) in pins.items():
            if name in marked:
                assert len(comment) > len("pin-exception:") + 10, f"{where}: {name} needs a reason"
                assert host.get(name) != version, f"{where}: {name} equals the host pin; drop the marker"
            else:
                assert host.get(name) == version, (
                    f"{where}: {name}=={version} but requirements.txt has {host.get(name)}")


# pip options of the gateway Dockerfile that take a value (the rest of a command's words are its targets).
PIP_VALUE_OPTIONS = {"-r", "-c", "-w", "--wheel-dir", "-f", "--find-links"}


def pip_commands(dockerfile: Path) -> list[tuple[list[str], list[str]]]:
    """(options, targets) of every `pip install` / `pip wheel` in the RUN lines."""
    found = []
    for run in dockerfile_runs(dockerfile):
        for command in re.split(r"&&|;", run):
            words = command.split()
            verb = next((i for i, w in enumerate(words[:-1]) if w == "pip" and words[i + 1] in ("install", "wheel")),
                        None)
            if verb is None:
                continue
            options, targets, rest = [], [], iter(words[verb + 2:])
            for word in rest:
                if word in PIP_VALUE_OPTIONS:
                    options += [word, next(rest)]
                elif word.startswith("-"):
                    options.append(word)
                else:
                    targets.append(word.strip("\"'"))
            found.append((options, targets))
    return found


def test_gateway_image_never_installs_torch():
    """The image installs the pinned closure, then toneserve with the gateway extra and no other, and
    nothing can come from an index beyond the pins: dependencies are off, or no index is read."""
    pins = read_pins(GATEWAY_REQUIREMENTS)
    assert not set(pins) & HEAVY, sorted(set(pins) & HEAVY)
    commands = pip_commands(GATEWAY_DOCKERFILE)
    requirements = "deploy/gateway/requirements.txt"
    first_options, first_targets = commands[0]
    assert not first_targets and f"-r {requirements}" in " ".join(first_options), commands[0]
    toneserve = [targets for _, targets in commands if any(t.startswith("toneserve") for t in targets)]
    assert toneserve == [["toneserve[gateway]"]], toneserve
    for options, targets in commands:
        command = " ".join(options + targets)
        assert "--no-deps" in options or "--no-index" in options, f"unpinned dependencies could come in: {command}"
        if "--no-index" in options:
            assert f"-c {requirements}" in command, f"the extra is held to the pins: {command}"
        assert set(targets) <= {".", "toneserve[gateway]"}, command
        assert not re.search(r"\b(torch|funasr|onnx)", command), command


def test_gateway_requirements_are_a_closed_set():
    """Every dependency of a pinned package is pinned too (what `pip check` verifies in the image), on every
    Python 3.11 the image is built on: the default base's and Debian bookworm's python3 (3.11.2, where redis
    needs async-timeout: its marker is python_full_version < '3.11.3')."""
    pins = read_pins(GATEWAY_REQUIREMENTS)
    extras = {"tritonclient": {"grpc"}}
    marker_env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
                  "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython"}
    pythons = {"3.11.2", GATEWAY_BASE_PYTHON}
    assert GATEWAY_BASE_PYTHON.startswith("3.11."), GATEWAY_BASE_PYTHON
    from packaging.requirements import Requirement

    for name in pins:
        dist = metadata.distribution(name)
        assert dist.version == pins[name][0]
        for text in dist.requires or []:
            requirement = Requirement(text)
            wanted = [{**marker_env, "python_full_version": full, "extra": extra}
                      for extra in extras.get(name, set()) | {""} for full in pythons]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in wanted):
                continue
            dep = canonical(requirement.name)
            assert dep in pins, f"{name} needs {requirement}, which deploy/gateway/requirements.txt lacks"
            assert requirement.specifier.contains(pins[dep][0], prereleases=True), (name, text, pins[dep])


def test_gateway_imports_with_only_its_own_requirements():
    """Import and parse the gateway with every module outside stdlib + its requirements blocked."""
    allowed = top_level_modules(read_pins(GATEWAY_REQUIREMENTS)) | {"toneserve"}
    # The parts of the package whose folder the image does not copy (toneserve/<part> links to <part>/).
    absent = sorted(f"toneserve.{link.name}" for link in (ROOT / "toneserve").iterdir()
                    if link.is_symlink() and link.name not in gateway_copies())
    assert "toneserve.export" in absent and "toneserve.loadtest" in absent, absent
    command = compose()["services"]["gateway"]["command"]
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        ALLOWED = set({sorted(allowed)!r}) | set(sys.stdlib_module_names)
        ABSENT = {absent!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                # _sysconfigdata_*: the interpreter's own build settings (sysconfig; zoneinfo reads them).
                if (name.split(".")[0] not in ALLOWED and not name.startswith("_sysconfigdata")) \
                        or any(name == a or name.startswith(a + ".") for a in ABSENT):
                    raise ImportError(f"blocked: {{name}} is not in the gateway image")
        sys.meta_path.insert(0, Block())
        import toneserve.cli, toneserve.gateway.server, toneserve.gateway.service
        from toneserve.gateway.server import Gateway
        args = toneserve.cli.parser().parse_args({command[1:]!r})
        from toneserve.gateway.auth import ApiKeys, parse_keys
        keys = ApiKeys(parse_keys("k-Zt7q8mXo2Lw1bV9cR4yPn6Ks3Ud0Hj5 tenant"))  # the image reads /run/secrets
        Gateway(args.triton_url, host=args.host, port=args.port, keys=keys, metrics_host=args.metrics_host)
        # What loads lazily: exercise it too (prosody; the judge's openai client).
        from toneserve.gateway import prosody, sentiment
        from toneserve.gateway.verdict import Judge, JudgeSettings
        import numpy as np
        assert len(sentiment.sentences("great service. thank you", "en")) == 2
        Judge(JudgeSettings(url="http://127.0.0.1:9/v1", model="judge"))
        prosody.prosody(np.zeros(16000, np.float32), 16000, "hello", "en")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(HEAVY)!r})
        assert not heavy, heavy
        print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=ROOT / "tests")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def gateway_copies() -> set[str]:
    """The sources of the gateway Dockerfile's COPY lines, relative to the build context."""
    lines = re.sub(r"\\\n", " ", GATEWAY_DOCKERFILE.read_text()).splitlines()
    return {source.rstrip("/") for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]}


def test_gateway_image_copies_only_what_the_gateway_runs():
    """The core (toneserve/) and gateway/; not export/, loadtest/, model_repository/ or client/ (the
    gateway imports none of them: the test above blocks them). The ignore file sends exactly that."""
    copies = gateway_copies()
    assert {"pyproject.toml", "README.md", "toneserve", "gateway"} <= copies, copies
    assert not copies & {"export", "loadtest", "model_repository", "client"}, copies
    ignore = [line.strip() for line in (GATEWAY_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "everything is left out unless admitted"
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in copies:
        assert any(source == a or source.startswith(a + "/") for a in admitted), f"COPY {source} is not sent"
    for folder in admitted:
        assert any(s == folder or s.startswith(folder + "/") for s in copies), f"!{folder} is sent, never copied"


# --------------------------------------------------------------------------- Triton image vs the repository

def _triton_image_modules() -> set[str]:
    return top_level_modules(read_pins(TRITON_REQUIREMENTS))


def test_python_backend_runners_need_only_what_the_triton_image_installs():
    import toneserve.model_repository.runners.sensevoice_decode as decode
    from toneserve.model_repository import render

    # The OpenVINO runner is the cpu profile's only: the gpu profile runs its graphs on Triton's onnxruntime
    # backend and never renders it (the rendered gpu repository is checked against the image below).
    runners = sorted(r for r in render.RUNNERS.glob("*.py") if r != render.OPENVINO_RUNNER)
    assert runners
    # The helpers the renderer copies beside every runner (the contract among them) run there too.
    check_python_backend_sources(runners + [Path(decode.__file__), *render.RUNNER_HELPERS], _triton_image_modules())


def test_triton_dockerfile_installs_the_pinned_file_only():
    text = TRITON_DOCKERFILE.read_text()
    assert re.search(r"^COPY requirements.txt /opt/toneserve/triton-requirements.txt$", text, re.M)
    installs = [c for run in dockerfile_runs(TRITON_DOCKERFILE) for c in re.split(r"&&", run) if "pip install" in c]
    assert len(installs) == 1 and "--no-deps" in installs[0] and \
        installs[0].split()[-2:] == ["-r", "/opt/toneserve/triton-requirements.txt"], installs
    assert compose()["services"]["triton"]["build"]["context"] == "deploy/triton"


def test_rendered_gpu_repository_fits_the_ngc_image(models_root, tmp_path):
    """Render the gpu profile as `toneserve export` does (fp16) and check it against the NGC image."""
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from toneserve.model_repository.catalog import describe
    from toneserve.model_repository.render import render_repository

    repository = render_repository(describe(models_root, "fp16"), "gpu", tmp_path / "base-gpu")
    backends = {}
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        backends[config.name] = config.platform or config.backend
        folder = config_path.parent / "1"
        if config.backend == "python":
            check_python_backend_sources(sorted(folder.glob("*.py")), _triton_image_modules())
    assert set(backends.values()) <= {"onnxruntime", "python", "ensemble"}, backends
    assert "onnxruntime" in backends.values(), "the gpu profile serves ONNX graphs on the onnxruntime backend"
    graphs = sorted(repository.glob("*/1/*.onnx"))
    assert graphs
    for graph in graphs:
        model = onnx.load(str(graph), load_external_data=False)
        opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert model.ir_version <= NGC_ORT_MAX_IR and opset <= NGC_ORT_MAX_OPSET, (
            f"{graph.relative_to(repository)}: IR {model.ir_version}, opset {opset}; ONNX Runtime "
            f"{NGC_ONNXRUNTIME} in {TRITON_BASE_IMAGE} loads IR <= {NGC_ORT_MAX_IR}, opset <= {NGC_ORT_MAX_OPSET}")


# --------------------------------------------------------------------------- the cpu profile

def test_the_cpu_profile_runs_the_gpu_profile_s_command_on_the_cpu_image():
    """triton-cpu: the image kube/facts.py names, the gpu Triton's command (wrapper and flags, those of
    kube/facts.py), its secret and no port, answering as `triton`; gateway-cpu: the gateway, after triton-cpu."""
    from toneserve import contract
    from toneserve.kube import facts

    services = compose()["services"]
    triton, cpu = services["triton"], services["triton-cpu"]
    assert cpu["image"] == facts.TRITON_CPU_IMAGE
    assert cpu["build"] == {"context": "deploy/triton-cpu", "dockerfile": "Dockerfile"}
    assert cpu["command"] == triton["command"] and cpu["secrets"] == triton["secrets"] == ["triton_admin_token"]
    assert [f for f in cpu["command"][5:] if not f.startswith("--log-verbose")] == list(facts.TRITON_FLAGS)
    assert cpu["command"][2].replace("$$", "$") == facts.admin_wrapper("/run/secrets/triton_admin_token")
    assert "deploy" not in cpu and "ports" not in cpu, "no GPU, never published"
    assert cpu["networks"] == {"default": {"aliases": ["triton"]}}, "the gateway's triton:8001"
    assert size_bytes(resolved()["services"]["triton-cpu"]["shm_size"]) == size_bytes(
        resolved()["services"]["triton"]["shm_size"])
    check = cpu["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    urls = re.findall(r'"(/[^"]+)"', check["test"][3])
    assert "http://127.0.0.1:8000/v2" in check["test"][3] and urls == [
        "/health/ready", f"/models/{contract.EMOTION}/ready", f"/models/{contract.ASR}/ready"]
    # The image's own command is the same tritonserver and flags (for a runtime that gives none).
    assert f"CMD {json.dumps(['tritonserver', *facts.TRITON_FLAGS])}" in TRITON_CPU_DOCKERFILE.read_text()

    gateway, gateway_cpu = services["gateway"], services["gateway-cpu"]
    assert {k: v for k, v in gateway_cpu.items() if k not in ("profiles", "depends_on")} == \
        {k: v for k, v in gateway.items() if k not in ("profiles", "depends_on")}
    assert gateway_cpu["depends_on"] == {"triton-cpu": {"condition": "service_healthy", "restart": True}}


def test_python_backend_runners_need_only_what_the_cpu_triton_image_installs():
    """Every runner (OpenVINO's too) and helper parses as the cpu image's Python 3.11 and imports only what
    deploy/triton-cpu/requirements.txt installs."""
    import toneserve.model_repository.runners.sensevoice_decode as decode
    from toneserve.model_repository import render

    runners = sorted(render.RUNNERS.glob("*.py"))
    assert render.OPENVINO_RUNNER in runners
    pins = read_pins(TRITON_CPU_REQUIREMENTS)
    check_python_backend_sources(runners + [Path(decode.__file__), *render.RUNNER_HELPERS], top_level_modules(pins),
                                 python=(3, 11), requirements=TRITON_CPU_REQUIREMENTS)
    assert "nvidia-pytriton" in pins, "the image's tritonserver comes from this wheel"
