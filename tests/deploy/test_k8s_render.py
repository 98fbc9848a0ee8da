"""The Kustomize base (deploy/k8s/base) and `toneserve pack`, checked without a cluster.

- the committed base equals a fresh `toneserve k8s` render (from the tiny export: only the catalog's
  model names reach the manifests, the same for every size), and `--check` says when it does not;
- what the manifests share with docker-compose.yml is the same fact: images, Triton's flags, the
  admin-token wrapper (with the restricted APIs), the gateway's command line;
- Triton's connection age, its grace (the longest request) and drain come from the gateway settings;
- the gateway's HTTP/JSON port is its container's, its Services' and its NetworkPolicy's, with TLS and keys;
- the packed repository is byte-identical across packs (order, times, owners), named by its sha256,
  and the init container's own script (curl, sha256sum, tar) fetches, verifies and unpacks it, and
  refuses a tarball whose digest differs, or a pool named for another digest; it sends the optional auth
  header only when its Secret is there, and its curl is bounded and retried;
- Triton's pods are Guaranteed (init container included); both Deployments have progress deadlines that
  cover a pod's whole start, spread over zones and nodes as a preference; the PDBs evict unhealthy pods;
  the gateway's drain fits the 600 s node operations honour, with its connection age and grace.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from toneserve.gateway.settings import Settings
from toneserve.kube import facts, gateway, pack, render, tracks, triton

BASE = ROOT / "deploy" / "k8s" / "base"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _objects(name: str) -> list[dict]:
    return [o for o in yaml.safe_load_all((BASE / name).read_text()) if o]


def _find(kind: str, name: str) -> dict:
    for file in BASE.glob("*.yaml"):
        for obj in _objects(file.name):
            if obj.get("kind") == kind and obj["metadata"]["name"] == name:
                return obj
    raise AssertionError(f"no {kind}/{name} in {BASE}")


@pytest.fixture(scope="module")
def models(models_root):
    from toneserve.model_repository.catalog import describe
    return describe(models_root)


def test_the_committed_base_is_a_fresh_render(models):
    rendered = render.files(models)
    assert sorted(rendered) == sorted(p.name for p in BASE.glob("*.yaml")), "files differ: run `toneserve k8s`"
    for name, text in rendered.items():
        assert (BASE / name).read_text() == text, f"deploy/k8s/base/{name} is stale: run `toneserve k8s`"


def test_the_command_writes_everything_and_check_sees_a_change(tmp_path, models_root, models):
    """`toneserve k8s` renders the base, the Components, the cpu sites' resources and the observability pack;
    --check names any file that differs from a fresh render."""
    root = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", root, ignore=shutil.ignore_patterns("tracks"))
    for path in [*root.joinpath("base").glob("*.yaml"), root / "monitoring" / "alerts.yaml",
                 root / "overlays" / "cpu" / "triton-cpu-resources.yaml",
                 root / "overlays" / "cpu-bf16" / "triton-cpu-resources.yaml"]:
        path.unlink()
    run = [sys.executable, "-m", "toneserve", "k8s", "--out", str(root / "base"), "--root", str(root),
           "--models-dir", str(models_root)]
    subprocess.run(run, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in root.joinpath("base").glob("*.yaml")} == render.files(models)
    for relative in ("monitoring/alerts.yaml", "overlays/cpu/triton-cpu-resources.yaml",
                     "overlays/cpu-bf16/triton-cpu-resources.yaml"):
        assert (root / relative).read_text() == (ROOT / "deploy" / "k8s" / relative).read_text()
    assert subprocess.run([*run, "--check"], capture_output=True).returncode == 0
    (root / "base" / "triton.yaml").write_text((root / "base" / "triton.yaml").read_text().replace("8001", "8011"))
    rules = root / "monitoring" / "rules.yml"
    rules.write_text(rules.read_text().replace("for: ", "for:  ", 1))
    changed = subprocess.run([*run, "--check"], capture_output=True, text=True)
    assert changed.returncode == 1
    assert "triton.yaml differs" in changed.stderr and "rules.yml differs" in changed.stderr


def test_a_secrets_digest_rolls_the_gateway(tmp_path):
    (tmp_path / "api_keys.txt").write_text("sha256:" + "a" * 64 + " acme\n")
    (tmp_path / "tls.crt").write_text("cert")
    first = render.secrets_digest(tmp_path)
    pod = gateway.deployment(Settings(), first)["spec"]["template"]["metadata"]
    assert pod["annotations"] == {gateway.SECRETS_ANNOTATION: first}
    (tmp_path / "api_keys.txt").write_text("sha256:" + "b" * 64 + " acme\n")  # a rotated key
    assert render.secrets_digest(tmp_path) != first
    assert "annotations" not in _find("Deployment", gateway.NAME)["spec"]["template"]["metadata"]


def test_the_images_are_composes():
    services = COMPOSE["services"]
    assert services["triton"]["image"] == facts.TRITON_IMAGE
    assert services["gateway"]["image"] == facts.GATEWAY_IMAGE
    ngc_tag = facts.TRITON_IMAGE.split(":")[1].split("-py3")[0]
    assert f"nvcr.io/nvidia/tritonserver:{ngc_tag}-py3" in (ROOT / "deploy/triton/Dockerfile").read_text()
    images = {c["image"] for c in _containers(_find("Deployment", triton.NAME))}
    assert images == {facts.TRITON_IMAGE, facts.FETCH_IMAGE}
    assert {c["image"] for c in _containers(_find("Deployment", gateway.NAME))} == {facts.GATEWAY_IMAGE}


def _containers(deployment: dict) -> list[dict]:
    spec = deployment["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_triton_runs_composes_flags_and_admin_wrapper():
    command = COMPOSE["services"]["triton"]["command"]  # sh -c SCRIPT $0 tritonserver FLAGS...
    assert command[3:5] == ["tritonserver", "tritonserver"]
    # Compose doubles `$` to escape its own interpolation; the shell sees single ones, as Kubernetes passes them.
    assert command[2].replace("$$", "$") == facts.admin_wrapper("/run/secrets/triton_admin_token")
    container = _find("Deployment", triton.NAME)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c", facts.admin_wrapper(triton.TOKEN_FILE), "tritonserver"]
    compose_flags = [f for f in command[5:] if not f.startswith("--log-verbose")]
    assert container["args"][0] == "tritonserver"
    assert container["args"][1:1 + len(compose_flags)] == compose_flags
    assert "--http-address=127.0.0.1" in container["args"]  # HTTP (and so the admin APIs over it) stays in the pod


def test_triton_connection_age_and_grace_come_from_the_settings():
    settings = Settings(max_request_seconds=3 * 3600.0, triton_timeout_seconds=90.0)
    args = triton.triton_args(settings)
    assert f"--grpc-max-connection-age={triton.MAX_CONNECTION_AGE_S * 1000}" in args
    assert "--grpc-max-connection-age-grace=10800000" in args  # the longest request: three hours
    assert "--exit-timeout-secs=90" in args
    spec = triton.deployment(settings)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > 90  # Triton drains before the kubelet kills it
    default = triton.triton_args(Settings())
    grace = next(int(a.split("=")[1]) for a in default if a.startswith("--grpc-max-connection-age-grace="))
    assert grace >= 3600 * 1000, "an hour-long call must finish on its old connection"


def test_the_gateway_runs_composes_command_against_every_triton_pod():
    compose = COMPOSE["services"]["gateway"]["command"]
    args = _find("Deployment", gateway.NAME)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert compose == facts.gateway_args("triton:8001", "/run/secrets/api_keys", "/run/secrets/tls_cert",
                                         "/run/secrets/tls_key")
    assert args == facts.gateway_args(gateway.triton_url(), f"{gateway.KEYS_DIR}/api_keys.txt",
                                      f"{gateway.TLS_DIR}/tls.crt", f"{gateway.TLS_DIR}/tls.key") + [
        "--health-port", str(gateway.HEALTH_PORT), "--drain-seconds", str(gateway.drain_seconds(Settings())),
        "--max-connection-age", str(gateway.MAX_CONNECTION_AGE_S),
        "--max-connection-age-grace", str(gateway.drain_seconds(Settings()))]
    # A stopping gateway (scale-down, rollout) drains before the kubelet kills it: within what node
    # operations honour (test_the_gateway_drain_fits_what_node_operations_honour).
    spec = _find("Deployment", gateway.NAME)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > gateway.drain_seconds(Settings())
    env = {e["name"]: e.get("value") for e in _find("Deployment", gateway.NAME)["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert gateway.triton_url().startswith(f"dns:///$({gateway.TRITON_ENV}).") and env[gateway.TRITON_ENV] == triton.NAME
    # Readiness: the native gRPC probe on the plaintext health port. Startup and liveness only ask that the
    # process listens: a gateway waiting for Triton (NOT_SERVING) must never be restarted for it.
    container = _find("Deployment", gateway.NAME)["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["grpc"] == {"port": gateway.HEALTH_PORT}
    assert container["startupProbe"]["tcpSocket"] == {"port": gateway.HEALTH_PORT}
    assert "tcpSocket" in container["livenessProbe"]


def test_the_gateway_serves_its_http_api_beside_grpc():
    """--http-port: a container port named http, on every clients' Service (the front of the tracks too),
    admitted by the NetworkPolicy to whoever may reach gRPC, and served with the same TLS and keys."""
    from toneserve.cli import parser

    container = _find("Deployment", gateway.NAME)["spec"]["template"]["spec"]["containers"][0]
    args = parser().parse_args(container["args"][1:])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.http_port == ports["http"] == facts.GATEWAY_HTTP_PORT
    assert (args.port, args.metrics_port, args.health_port) == (ports["grpc"], ports["metrics"], ports["health"])
    assert len(set(ports.values())) == len(ports), ports
    # TLS from the Secret: the HTTP port speaks HTTPS only, so the Services say so (appProtocol https).
    assert (args.tls_cert, args.tls_key) == (f"{gateway.TLS_DIR}/tls.crt", f"{gateway.TLS_DIR}/tls.key")
    assert args.api_keys and not args.allow_unauthenticated and not args.playground
    front = tracks.front_service("a" * 64)
    for service in (_find("Service", gateway.NAME), _find("Service", f"{gateway.NAME}-pods"), front):
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(by_name) == {"grpc", "http"}, service["metadata"]["name"]
        assert by_name["http"] == {"name": "http", "port": facts.GATEWAY_HTTP_PORT, "targetPort": "http",
                                   "protocol": "TCP", "appProtocol": "https"}
    assert {p["name"] for p in _find("Service", f"{gateway.NAME}-metrics")["spec"]["ports"]} == {"metrics"}
    # Clients reach both APIs from the same places (anywhere the cluster routes); metrics stay monitoring's.
    rules = _find("NetworkPolicy", gateway.NAME)["spec"]["ingress"]
    clients = next(r for r in rules if any(p["port"] == facts.GATEWAY_PORT for p in r["ports"]))
    assert "from" not in clients and {p["port"] for p in clients["ports"]} == {facts.GATEWAY_PORT,
                                                                               facts.GATEWAY_HTTP_PORT}
    assert not [r for r in rules if r is not clients and facts.GATEWAY_HTTP_PORT in {p["port"] for p in r["ports"]}]
    # One readiness for the pod, on the plaintext health port: it says SERVING only once the HTTP listener
    # is up (gateway/server.py), so no probe of the HTTPS port is needed (kube/gateway.py says why).
    assert not any("httpGet" in container[probe] for probe in ("startupProbe", "readinessProbe", "livenessProbe"))


def test_triton_pods_are_probed_per_model_and_roll_without_losing_capacity():
    deployment = _find("Deployment", triton.NAME)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    readiness = container["readinessProbe"]["exec"]["command"][-1]
    for model in ("emotion", "asr", "vad"):
        assert f"/v2/models/{model}/ready" in readiness
    assert {"startupProbe", "livenessProbe"} <= set(container)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and mounts["dshm"]["mountPath"] == "/dev/shm"
    assert _find("Service", triton.NAME)["spec"]["clusterIP"] == "None"
    _find("PodDisruptionBudget", triton.NAME)
    _find("PodDisruptionBudget", gateway.NAME)


def _repository(root: Path) -> Path:
    repo = root / "repo"
    for model in ("emotion", "asr", "vad"):
        (repo / model / "1").mkdir(parents=True)
        (repo / model / "config.pbtxt").write_text(f'name: "{model}"\n')
    (repo / "vad" / "1" / "model.py").write_text("print('runner')\n")
    (repo / "vad" / "1" / "model.py").chmod(0o755)
    return repo


def test_pack_is_deterministic_and_named_by_its_digest(tmp_path):
    repo = _repository(tmp_path)
    first = pack.pack(repo, tmp_path / "a")
    os.utime(repo / "asr" / "config.pbtxt", (1, 1))  # times and a fresh copy change nothing
    copy = shutil.copytree(repo, tmp_path / "copy")
    second = pack.pack(copy, tmp_path / "b")
    assert first.sha256 == second.sha256 and first.name == second.name == f"repository-{first.sha256[:16]}.tar.gz"
    assert first.path.read_bytes() == second.path.read_bytes()
    assert (tmp_path / "a" / f"{first.name}.sha256").read_text() == f"{first.sha256}  {first.name}\n"
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert next(m for m in members if m.name == "vad/1/model.py").mode == 0o755
    (copy / "asr" / "config.pbtxt").write_text('name: "asr2"\n')  # content changes the digest
    assert pack.pack(copy, tmp_path / "c").sha256 != first.sha256


def test_pack_leaves_out_compiled_model_caches(tmp_path):
    """A served repository holds OpenVINO's caches of this CPU's compiled models: not part of the artifact."""
    repo = _repository(tmp_path)
    clean = pack.pack(repo, tmp_path / "a")
    (repo / "asr" / "1" / "ov_cache").mkdir()
    (repo / "asr" / "1" / "ov_cache" / "1234.blob").write_bytes(b"compiled")
    served = pack.pack(repo, tmp_path / "b")
    with tarfile.open(served.path) as tar:
        assert not [m.name for m in tar.getmembers() if "ov_cache" in m.name]
    assert served.sha256 == clean.sha256


def test_pack_refuses_what_is_not_a_repository(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a rendered model repository"):
        pack.pack(tmp_path, tmp_path / "out")


def test_pack_leaves_nothing_behind_when_it_fails(tmp_path):
    repo = _repository(tmp_path)
    (repo / "vad" / "1" / "link.py").symlink_to(repo / "vad" / "1" / "model.py")
    with pytest.raises(ValueError, match="symbolic link"):
        pack.pack(repo, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_pack_refuses_to_write_into_the_repository_it_packs(tmp_path):
    # the tarball being written (and earlier ones) would be packed into itself
    repo = _repository(tmp_path)
    for out in (repo, repo / "dist"):
        with pytest.raises(ValueError, match="inside the repository"):
            pack.pack(repo, out)
    assert not list(repo.rglob("*.tar.gz*"))


def _init_script(models: Path) -> str:
    return triton.FETCH.replace("/models", str(models))


@pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "sha256sum", "tar", "sh")),
                    reason="the init container's tools (curl, sha256sum, tar, sh) are not on this machine")
def test_the_init_container_script_verifies_and_unpacks(tmp_path):
    packed = pack.pack(_repository(tmp_path), tmp_path / "store")
    models = tmp_path / "models"
    models.mkdir()
    env = {"PATH": os.environ["PATH"], "REPOSITORY_URL": packed.path.as_uri(), "REPOSITORY_SHA256": packed.sha256}
    done = subprocess.run(["sh", "-c", _init_script(models)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in models.iterdir()) == ["asr", "emotion", "vad"]  # and no tarball left
    assert (models / "vad" / "1" / "model.py").read_text() == "print('runner')\n"

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    env["REPOSITORY_SHA256"] = "0" * 64
    refused = subprocess.run(["sh", "-c", _init_script(wrong)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and not (wrong / "vad").exists()

    env["REPOSITORY_URL"] = ""
    unset = subprocess.run(["sh", "-c", _init_script(wrong)], env=env, capture_output=True, text=True)
    assert unset.returncode == 1 and "toneserve pack" in unset.stderr


# --- operations (issue 23): QoS, the init container's fetch, progress deadlines, spread, PDBs, the drain ---


def _pod(name: str) -> dict:
    return _find("Deployment", name)["spec"]["template"]["spec"]


def test_every_container_of_the_triton_pod_is_guaranteed():
    """requests == limits for cpu and memory (and ephemeral-storage where set) in every container, init
    containers included: otherwise the pod is Burstable, the kubelet's earlier victim under memory pressure."""
    from toneserve.kube import checks

    pod = _pod(triton.NAME)
    for container in pod["initContainers"] + pod["containers"]:
        resources = container["resources"]
        for name in ("cpu", "memory"):
            assert name in resources["limits"], (container["name"], name)
        assert resources["requests"] == resources["limits"], container["name"]
    assert checks.qos_class(pod) == "Guaranteed"
    assert not checks.qos([_find("Deployment", triton.NAME)])


def _fetch_flags() -> dict[str, str | None]:
    """curl's options in the init container's script: --name -> its value (None for a switch)."""
    line = next(line for line in triton.FETCH.splitlines() if line.startswith("curl "))
    words, flags = line.split(), {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            following = words[i + 1] if i + 1 < len(words) else ""
            flags[word] = following if following and not following.startswith("-") and not following.startswith(
                '"') else None
    return flags


def test_the_fetch_is_bounded_retried_and_sized():
    flags = _fetch_flags()
    assert {"--connect-timeout", "--max-time", "--retry", "--retry-all-errors", "--retry-max-time"} <= set(flags)
    assert 0 < int(flags["--connect-timeout"]) <= 30 and 0 < int(flags["--retry"]) <= 10
    assert int(flags["--retry-max-time"]) >= int(flags["--max-time"])
    pod = _pod(triton.NAME)
    init = pod["initContainers"][0]
    # Auth: an optional Secret, mounted as a file (no secret in the environment), so a public store needs no
    # Secret and a private one gets a header.
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in init["env"])
    volume = next(v for v in pod["volumes"] if v["name"] == "repository-auth")["secret"]
    assert volume["secretName"] == triton.REPOSITORY_AUTH_SECRET and volume["optional"] is True
    mount = next(m for m in init["volumeMounts"] if m["name"] == "repository-auth")
    assert mount == {"name": "repository-auth", "mountPath": triton.REPOSITORY_AUTH_DIR, "readOnly": True}
    assert triton.REPOSITORY_AUTH_FILE == f"{triton.REPOSITORY_AUTH_DIR}/{triton.REPOSITORY_AUTH_KEY}"
    assert not any(m["name"] == "repository-auth" for m in pod["containers"][0]["volumeMounts"])
    # Ephemeral storage: the emptyDir holds the tarball and what it unpacks at once; requested as limited.
    models = next(v for v in pod["volumes"] if v["name"] == "models")["emptyDir"]
    assert models["sizeLimit"] == init["resources"]["limits"]["ephemeral-storage"]
    assert init["resources"]["requests"]["ephemeral-storage"] == init["resources"]["limits"]["ephemeral-storage"]
    assert _gib(models["sizeLimit"]) >= 2 * triton.REPOSITORY_GIB
    serving = pod["containers"][0]["resources"]
    assert _gib(serving["limits"]["ephemeral-storage"]) >= triton.REPOSITORY_GIB


def _gib(quantity: str) -> float:
    assert quantity.endswith("Gi") or quantity.endswith("Mi"), quantity
    return float(quantity[:-2]) / (1 if quantity.endswith("Gi") else 1024)


def _serve(tmp_path, token: str | None):
    """A file server on loopback that answers only requests carrying `Authorization: Bearer TOKEN`."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self.send_error(401)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "sha256sum", "tar", "sh")),
                    reason="the init container's tools (curl, sha256sum, tar, sh) are not on this machine")
def test_the_init_container_sends_the_optional_auth_header(tmp_path):
    packed = pack.pack(_repository(tmp_path), tmp_path / "store")
    server = _serve(tmp_path / "store", token="s3cret-token")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{packed.name}"
        # Retries are the script's own; here one try is enough to see the answer (a 401 is no transient).
        # The Secret's folder, here a folder of the test's (empty, as an optional Secret volume without it).
        secret = tmp_path / "secret"
        secret.mkdir()
        script = (_init_script(tmp_path / "m").replace(f"--retry {_fetch_flags()['--retry']}", "--retry 0")
                  .replace(triton.REPOSITORY_AUTH_DIR, str(secret)))
        env = {"PATH": os.environ["PATH"], "REPOSITORY_URL": url, "REPOSITORY_SHA256": packed.sha256}
        (tmp_path / "m").mkdir()
        refused = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        (secret / triton.REPOSITORY_AUTH_KEY).write_text("Authorization: Bearer nope")
        assert subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60).returncode != 0
        (secret / triton.REPOSITORY_AUTH_KEY).write_text("Authorization: Bearer s3cret-token\n")
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["asr", "emotion", "vad"]
        assert "s3cret-token" not in done.stderr + done.stdout
    finally:
        server.shutdown()


def test_progress_deadlines_cover_a_pods_whole_start():
    """Triton's: the image pull, the bounded fetch, the startup probe's whole budget, minReadySeconds (the
    default 600 s is less than the startup probe alone allows). The gateway's: Triton's, since a gateway
    becomes ready only once a Triton pool is, plus its own start."""
    deployment = _find("Deployment", triton.NAME)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
    fetch = int(_fetch_flags()["--retry-max-time"]) + int(_fetch_flags()["--max-time"])
    deadline = deployment["spec"]["progressDeadlineSeconds"]
    assert deadline >= startup + fetch + deployment["spec"]["minReadySeconds"] + facts.IMAGE_PULL_S["triton"]
    assert deadline > 600
    gateway_deployment = _find("Deployment", gateway.NAME)
    probe = gateway_deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert gateway_deployment["spec"]["progressDeadlineSeconds"] >= deadline + probe["periodSeconds"] * probe[
        "failureThreshold"]


def test_both_deployments_spread_over_zones_and_nodes_without_refusing_a_small_cluster():
    for name in (triton.NAME, gateway.NAME):
        pod = _pod(name)
        labels = _find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
        assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in spread.values():
            # A preference: a one-node (or one-zone) cluster, or a full node, still schedules the pod.
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
            assert all(labels.get(k) == v for k, v in constraint["labelSelector"]["matchLabels"].items())
            assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_pdbs_let_a_drain_evict_unhealthy_pods():
    for name in (triton.NAME, gateway.NAME):
        assert _find("PodDisruptionBudget", name)["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_the_gateway_drain_fits_what_node_operations_honour():
    """terminationGracePeriodSeconds <= 600: the cluster autoscaler's default --max-graceful-termination-sec
    (spot reclaims give less); the drain is what is left of it, passed as --drain-seconds, and is also the
    grace of --max-connection-age, so clients move to added replicas and a closing connection's calls
    get the drain's time."""
    from toneserve.cli import parser

    spec = _pod(gateway.NAME)
    assert spec["terminationGracePeriodSeconds"] <= gateway.NODE_GRACE_LIMIT_S == 600
    args = parser().parse_args(spec["containers"][0]["args"][1:])
    assert args.drain_seconds == gateway.drain_seconds(Settings()) < spec["terminationGracePeriodSeconds"]
    assert spec["terminationGracePeriodSeconds"] - args.drain_seconds >= 5 + 5  # the preStop pause, then exit
    assert args.max_connection_age == gateway.MAX_CONNECTION_AGE_S == 300
    assert args.max_connection_age_grace == args.drain_seconds
    # A short request limit shortens the drain; it never grows past the cap.
    assert gateway.drain_seconds(Settings(max_request_seconds=60.0)) == 60
    assert gateway.drain_seconds(Settings(max_request_seconds=10 * 3600.0)) == gateway.drain_seconds(Settings())


@pytest.mark.skipif(not all(shutil.which(t) for t in ("curl", "sha256sum", "tar", "sh")),
                    reason="the init container's tools (curl, sha256sum, tar, sh) are not on this machine")
def test_the_init_container_refuses_a_pool_named_for_another_repository(tmp_path):
    """A pool's objects are named by the ConfigMap's `track` (kube/pools.py): it must be the digest's start."""
    packed = pack.pack(_repository(tmp_path), tmp_path / "store")
    env = {"PATH": os.environ["PATH"], "REPOSITORY_URL": packed.path.as_uri(), "REPOSITORY_SHA256": packed.sha256}
    for track, ok in ((tracks.track(packed.sha256), True), ("0" * 16 if packed.sha256[0] != "0" else "1" * 16, False)):
        models = tmp_path / f"models-{track}"
        models.mkdir()
        done = subprocess.run(["sh", "-c", _init_script(models)], env={**env, "REPOSITORY_TRACK": track},
                              capture_output=True, text=True, timeout=60)
        assert (done.returncode == 0) is ok, done.stderr
        assert (models / "vad").exists() is ok
        if not ok:
            assert "is not the start of sha256" in done.stderr
    env_names = {e["name"] for e in _pod(triton.NAME)["initContainers"][0]["env"]}
    assert f"REPOSITORY_{triton.REPOSITORY_TRACK_KEY.upper()}" in env_names
