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
GATEWAY_REQUIREMENTS = ROOT / "deploy" / "gateway" / "requirements.txt"
HEALTHCHECK = ROOT / "deploy" / "gateway" / "healthcheck.py"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# The NGC image of the gpu profile: Triton 2.51.0, the server that nvidia-pytriton 0.7.0 embeds for
# the cpu profile; its onnxruntime backend is ONNX Runtime 1.19.2 (docs/deploy.md has the sources).
TRITON_BASE_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
TRITON_VERSION = "2.51.0"
PYTRITON_PIN = "0.7.0"
NGC_ONNXRUNTIME = "1.19.2"
NGC_ORT_MAX_IR, NGC_ORT_MAX_OPSET = 10, 21  # ONNX Runtime 1.19 = ONNX 1.16: IR 10, opset 21
NGC_PYTHON = (3, 10)
GATEWAY_BASE_IMAGE = "python:3.11.14-slim-bookworm"

# Pins of deploy/triton/requirements.txt allowed to differ from requirements.txt (each line says why).
TRITON_PIN_EXCEPTIONS = {"onnxruntime", "coloredlogs", "humanfriendly"}
# Never in the gateway image: the export side of the project.
HEAVY = {"torch", "torchaudio", "funasr", "modelscope", "onnx", "onnxruntime", "onnxscript", "transformers"}
PORTS = {"triton": {8000, 8001, 8002}, "gateway": {50051, 9464}}


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
    return [line.split()[1] for line in path.read_text().splitlines() if line.strip().upper().startswith("FROM ")]


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


def check_python_backend_sources(files: list[Path], allowed: set[str]) -> None:
    """Each file parses as NGC's Python and imports only stdlib, pb_utils, siblings and `allowed`."""
    siblings = {path.stem for path in files}
    for path in files:
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=NGC_PYTHON)
        foreign = imported_modules(source) - set(sys.stdlib_module_names) - siblings \
            - {"triton_python_backend_utils", "__future__"} - allowed
        assert not foreign, (f"{path}: imports {sorted(foreign)}, which the Triton image does not install; "
                             f"add them to {TRITON_REQUIREMENTS.relative_to(ROOT)}")


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


def compose_config(cli: list[str], env: dict[str, str]) -> dict:
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--format", "json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
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
    assert {int(p["published"]) for p in triton["ports"]} == PORTS["triton"]
    assert {p["host_ip"] for p in triton["ports"]} == {"127.0.0.1"}
    assert {int(p["published"]) for p in gateway["ports"]} == PORTS["gateway"]
    assert triton["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "count": 1}]
    assert int(triton["shm_size"]) == 2 << 30
    assert gateway["depends_on"]["triton"]["condition"] == "service_healthy"

    overridden = compose_config(cli, {
        "TONESERVE_REPOSITORY": str(tmp_path), "TONESERVE_GPU_COUNT": "2", "TRITON_SHM_SIZE": "4g",
        "TRITON_HTTP_PORT": "18000", "TRITON_GRPC_PORT": "18001", "TRITON_METRICS_PORT": "18002",
        "TRITON_HOST_IP": "0.0.0.0", "GATEWAY_PORT": "15051", "TRITON_LOG_VERBOSE": "1"})
    triton, gateway = overridden["services"]["triton"], overridden["services"]["gateway"]
    assert {(int(p["published"]), p["target"]) for p in triton["ports"]} == {
        (18000, 8000), (18001, 8001), (18002, 8002)}
    assert {p["host_ip"] for p in triton["ports"]} == {"0.0.0.0"}
    assert [(int(p["published"]), p["target"]) for p in gateway["ports"]] == [(15051, 50051)]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2
    assert int(triton["shm_size"]) == 4 << 30
    assert "--log-verbose=1" in triton["command"]

    defaulted = compose_config(cli, {"TONESERVE_HOME": "/srv/toneserve"})
    assert defaulted["services"]["triton"]["volumes"][0]["source"] == "/srv/toneserve/repository/base-gpu"


def test_interpolation_helper_matches_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}/$${SET}", env) == "x/d//d/${SET}"
    assert interpolate("${UNSET:-${ALSO:-${SET}}/y}", env) == "x/y"


def test_two_services_and_no_latest_anywhere():
    doc = compose()
    assert set(doc["services"]) == {"triton", "gateway"}
    assert "version" not in doc, "the top-level version key is obsolete in the Compose Specification"
    for path in (COMPOSE_FILE, TRITON_DOCKERFILE, GATEWAY_DOCKERFILE):
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} uses a latest tag"


def test_every_image_is_pinned():
    for name, service in compose()["services"].items():
        assert is_pinned(service["image"]), f"{name}: image {service['image']!r} has no explicit tag"
        assert "build" in service, f"{name}: built here, from a pinned base"
    for dockerfile in (TRITON_DOCKERFILE, GATEWAY_DOCKERFILE):
        froms = dockerfile_froms(dockerfile)
        assert froms and all(is_pinned(image) for image in froms), f"{dockerfile}: {froms}"
    assert dockerfile_froms(TRITON_DOCKERFILE) == [TRITON_BASE_IMAGE]
    assert dockerfile_froms(GATEWAY_DOCKERFILE) == [GATEWAY_BASE_IMAGE]
    services = compose()["services"]
    assert TRITON_BASE_IMAGE.rsplit(":", 1)[1] in services["triton"]["image"]
    pyproject_version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert services["gateway"]["image"].endswith(f":{pyproject_version}")


def test_triton_version_matches_the_embedded_cpu_server():
    """The NGC tag was chosen for nvidia-pytriton 0.7.0's Triton 2.51.0: re-check it when that pin moves."""
    assert host_pins()["nvidia-pytriton"] == PYTRITON_PIN, (
        "nvidia-pytriton moved: check which Triton it embeds and move TRITON_BASE_IMAGE, "
        "deploy/triton/Dockerfile and docs/deploy.md with it")
    doc = DEPLOY_DOC.read_text()
    for fact in (TRITON_BASE_IMAGE, TRITON_VERSION, NGC_ONNXRUNTIME, GATEWAY_BASE_IMAGE):
        assert fact in doc, f"docs/deploy.md does not state {fact}"


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
    services = resolved()["services"]
    for name, expected in PORTS.items():
        ports = published_ports(services[name])
        assert set(ports) == expected, name
        assert {host for _, host in ports.values()} == expected, f"{name}: default host ports"
    assert {ip for ip, _ in published_ports(services["triton"]).values()} == {"127.0.0.1"}
    moved = published_ports(resolved({"TRITON_GRPC_PORT": "9001", "GATEWAY_PORT": "6000"})["services"]["triton"])
    assert moved[8001] == ("127.0.0.1", 9001)
    flags = {flag.split("=")[0]: int(flag.split("=")[1]) for flag in compose()["services"]["triton"]["command"]
             if re.match(r"--(http|grpc|metrics)-port=", flag)}
    assert flags == {"--http-port": 8000, "--grpc-port": 8001, "--metrics-port": 8002}


def test_triton_command():
    command = compose()["services"]["triton"]["command"]
    assert command[0] == "tritonserver"
    for flag in ("--model-repository=/models", "--strict-readiness=true", "--exit-on-error=true",
                 "--allow-metrics=true", "--model-control-mode=none"):
        assert flag in command, flag


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
    assert gateway_check["test"][3] == "127.0.0.1:50051"
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
    assert f"CMD {json.dumps(command)}" in GATEWAY_DOCKERFILE.read_text(), "the image's CMD is the same command"


def _health_server(status):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_gateway_healthcheck_script():
    run = lambda address: subprocess.run([sys.executable, str(HEALTHCHECK), address],  # noqa: E731
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


# --------------------------------------------------------------------------- the images' Python packages

def test_image_pins_equal_the_project_pins():
    host = host_pins()
    for path, exceptions in ((GATEWAY_REQUIREMENTS, set()), (TRITON_REQUIREMENTS, TRITON_PIN_EXCEPTIONS)):
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
    """Every dependency of a pinned package is pinned too (what `pip check` verifies in the image)."""
    pins = read_pins(GATEWAY_REQUIREMENTS)
    extras = {"tritonclient": {"grpc"}}
    marker_env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
                  "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython"}
    from packaging.requirements import Requirement

    for name in pins:
        dist = metadata.distribution(name)
        assert dist.version == pins[name][0]
        for text in dist.requires or []:
            requirement = Requirement(text)
            wanted = [{**marker_env, "extra": extra} for extra in extras.get(name, set()) | {""}]
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
                if name.split(".")[0] not in ALLOWED or any(name == a or name.startswith(a + ".") for a in ABSENT):
                    raise ImportError(f"blocked: {{name}} is not in the gateway image")
        sys.meta_path.insert(0, Block())
        import toneserve.cli, toneserve.gateway.server, toneserve.gateway.service
        from toneserve.gateway.server import Gateway
        args = toneserve.cli.parser().parse_args({command[1:]!r})
        Gateway(args.triton_url, host=args.host, port=args.port)
        # The text and prosody models load lazily: exercise them too.
        from toneserve.gateway import prosody, sentiment
        import numpy as np
        assert sentiment.text_sentiment("great service, thank you", "en", 1 / 3).scored
        assert sentiment.text_sentiment("非常好", "zh", 1 / 3).scored
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

    runners = sorted(render.RUNNERS.glob("*.py"))
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
    """Render the gpu profile as `toneserve export` does (fp16) and check it against NGC 24.10."""
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
