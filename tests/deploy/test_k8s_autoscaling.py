"""Autoscaling on Triton's own signal: the recording rules under promtool, with synthetic series, and the
objects that scale on them (kube/autoscaling.py)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from toneserve.contract import ASR, EMOTION
from toneserve.kube import autoscaling as a
from toneserve.kube.observability import KEDA_POOL

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed: scripts/setup installs "
                                    "Debian's prometheus package, which carries it")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(models_root):
    from toneserve.model_repository.catalog import describe
    return describe(models_root)


def test_served_models_are_the_catalogs_without_its_ensembles(models):
    from toneserve.model_repository.spec import Ensemble

    names = a.served_models(models)
    ensembles = {m.name for m in models if isinstance(m, Ensemble)}
    assert {EMOTION, ASR} <= ensembles
    assert set(names) == {m.name for m in models} - ensembles and names
    for rule in a.rule_groups(models)["groups"][0]["rules"][:2]:
        (alternatives,) = re.findall(r'model=~"([^"]*)"', rule["expr"])
        assert alternatives.split("|") == names


def _write_rules(tmp_path: Path, models) -> Path:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(a.rule_groups(models), sort_keys=False))
    return rules


@needs_promtool
def test_promtool_checks_the_rules_and_the_prometheus_rules_spec(tmp_path, models):
    rules = _write_rules(tmp_path, models)
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rules found" in result.stdout
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(a.prometheus_rule(models)["spec"]))
    assert subprocess.run([PROMTOOL, "check", "rules", str(spec)], capture_output=True).returncode == 0


def _series(metric: str, pod: str, model: str, values: str) -> dict:
    return {"series": f'{metric}{{namespace="ts",pod="{pod}",model="{model}",version="1"}}', "values": values}


@needs_promtool
def test_promtool_unit_tests_busy_idle_and_ensembles(tmp_path, models):
    """Pod "busy": one model queues 3 ms for every 6 ms it computes, every other model is idle and the
    ensembles show huge times of their own; the ratio is the busy model's 0.5, neither halved by the idle
    ones nor moved by the ensembles. Pod "idle": nothing runs; the ratio is 0, not NaN or absent."""
    queue, compute = a.TRITON_SERIES
    busy, *idle = a.served_models(models)
    assert idle, "the catalog must have more than one served model for the idle-model case"
    series = [_series(queue, "busy", busy, "0+3000x40"), _series(compute, "busy", busy, "0+6000x40")]
    for model in idle:
        series += [_series(queue, "busy", model, "500x40"), _series(compute, "busy", model, "900x40")]
    for ensemble in (EMOTION, ASR):
        series += [_series(queue, "busy", ensemble, "0+900000x40"), _series(compute, "busy", ensemble, "0+1000x40")]
    for model in a.served_models(models):
        series += [_series(queue, "idle", model, "70x40"), _series(compute, "idle", model, "80x40")]

    def sample(pod: str, value: float) -> dict:
        return {"labels": f'{a.RATIO}{{namespace="ts",pod="{pod}"}}', "value": value}

    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": series,
        "promql_expr_test": [
            {"expr": a.RATIO, "eval_time": "5m", "exp_samples": [sample("busy", 0.5), sample("idle", 0)]},
            # The rates themselves: 3000 us queued and 6000 us computed per 15 s scrape.
            {"expr": a.QUEUE_RATE, "eval_time": "5m",
             "exp_samples": [{"labels": f'{a.QUEUE_RATE}{{namespace="ts",pod="busy"}}', "value": 200},
                             {"labels": f'{a.QUEUE_RATE}{{namespace="ts",pod="idle"}}', "value": 0}]},
        ]}]}
    _write_rules(tmp_path, models)
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    # The same file with the wrong expectation fails: promtool really compares the samples.
    tests["tests"][0]["promql_expr_test"][0]["exp_samples"][0]["value"] = 0.5 / len(a.served_models(models))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    assert subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True).returncode


def test_adapter_serves_the_ratio_and_the_in_flight_gauge_the_hpas_name():
    config = a.adapter_config()
    served = {rule["name"]["as"] for rule in config["rules"]}
    triton, gateway = a.triton_hpa(), a.gateway_hpa()
    pods = {m["pods"]["metric"]["name"] for hpa in (triton, gateway) for m in hpa["spec"]["metrics"] if "pods" in m}
    assert pods == served == {a.RATIO_METRIC, a.IN_FLIGHT_METRIC}
    assert ":" not in a.RATIO_METRIC
    assert yaml.safe_load(a.adapter_rules()["data"]["config.yaml"]) == config
    from toneserve.gateway.metrics import Metrics
    assert a.IN_FLIGHT_METRIC in {m.name for m in Metrics().registry.collect()}


def test_hpas_scale_down_slowly_and_take_the_targets():
    triton = a.triton_hpa("0.421", 1, 5)
    assert triton["spec"]["scaleTargetRef"]["name"] == a.TRITON
    assert triton["spec"]["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "0.421"}
    assert triton["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    gateway = a.gateway_hpa("6", cpu_percent=60)
    kinds = [m["type"] for m in gateway["spec"]["metrics"]]
    assert kinds == ["Resource", "Pods"] and gateway["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    with pytest.raises(ValueError):
        a.triton_hpa(min_replicas=3, max_replicas=2)


def test_targets_file_round_trips_and_replacements_point_at_real_fields():
    text = a.targets_env(0.4213, 3.6)
    assert a.read_targets(text) == {a.RATIO_KEY: "0.421", a.IN_FLIGHT_KEY: "4"}
    assert a.read_targets(a.targets_env(0.0, 0))[a.RATIO_KEY] == "0.001"  # a target must stay positive
    objects = {("HorizontalPodAutoscaler", a.TRITON): a.triton_hpa(), ("HorizontalPodAutoscaler", a.GATEWAY):
               a.gateway_hpa(), ("ScaledObject", a.TRITON): a.keda_scaled_object()}
    for keda in (False, True):
        for replacement in a.target_replacements(keda):
            assert replacement["source"]["fieldPath"].removeprefix("data.") in a.DEFAULT_TARGETS
            for target in replacement["targets"]:
                obj = objects[target["select"]["kind"], target["select"]["name"]]
                for path in target["fieldPaths"]:
                    node = obj
                    for part in path.split("."):
                        node = node[int(part)] if isinstance(node, list) else node[part]
                    assert isinstance(node, str)


def test_queue_compute_ratio_from_a_counter_delta_ignores_ensembles():
    delta = {"emotion2vec": {"queue_us": 300.0, "compute_infer_us": 600.0},
             "vad": {"queue_us": 0.0, "compute_infer_us": 0.0},
             EMOTION: {"queue_us": 1e9, "compute_infer_us": 1.0}}
    assert a.queue_compute_ratio(delta) == pytest.approx(0.5)
    assert a.queue_compute_ratio({"vad": {"queue_us": 0.0, "compute_infer_us": 0.0}}) is None


def test_keda_component_takes_the_plans_targets_and_the_sites_namespace():
    files = a.keda_component_files()
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["kind"] == "Component"
    assert a.read_targets(files[a.TARGETS_FILE]) == a.DEFAULT_TARGETS
    scaled = yaml.safe_load(files["scaledobject.yaml"])
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metricType"] == "Value" and "or vector(0)" in trigger["metadata"]["query"]
    assert trigger["metadata"]["query"] == a.keda_query() and a.RATIO in a.keda_query()
    # The namespace replacement's field: the second part between double quotes is the namespace's value.
    (replacement,) = [r for r in kustomization["replacements"] if r["source"]["fieldPath"] == "metadata.namespace"]
    (option,) = [t["options"] for t in replacement["targets"] if "delimiter" in t.get("options", {})]
    assert a.keda_query().split(option["delimiter"])[option["index"]] == a.NAMESPACE_PLACEHOLDER
    assert a.keda_query("speech") == a.keda_query().replace(a.NAMESPACE_PLACEHOLDER, "speech")


def _build(folder: Path) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def _triton(objects: list[dict]) -> dict:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].startswith(a.TRITON)]
    return deployment


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_keda_component_over_a_site_keeps_its_namespace_repository_and_gpus(tmp_path):
    """overlays/keda as committed (the GPU pool with the KEDA component): KEDA's ScaledObject in the site's
    namespace, its query on that namespace, scaling the pool's Triton Deployment, which fetches the pool's
    repository on GPU nodes as without KEDA; the plan's targets in the ScaledObject and the gateway's HPA; no
    Triton HPA beside KEDA's."""
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", k8s, ignore=shutil.ignore_patterns("tracks"))
    (k8s / a.KEDA_COMPONENT / a.TARGETS_FILE).write_text(a.targets_env(0.37, 6))
    site_folder, keda = k8s / "overlays" / KEDA_POOL, k8s / a.KEDA_OVERLAY
    site, built = _build(site_folder), _build(keda)
    # KEDA owns Triton's HPA here: a second HPA on the same Deployment would fight it.
    assert not [o for o in built if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"].startswith(a.TRITON)]
    (scaled,) = [o for o in built if o["kind"] == "ScaledObject"]
    triton = _triton(built)
    namespace = _triton(site)["metadata"]["namespace"]
    assert namespace and scaled["metadata"]["namespace"] == triton["metadata"]["namespace"] == namespace
    assert scaled["spec"]["scaleTargetRef"]["name"] == triton["metadata"]["name"]
    assert scaled["spec"]["triggers"][0]["metadata"]["query"] == a.keda_query(namespace)
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "0.37"
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built}
    assert objects["HorizontalPodAutoscaler", a.GATEWAY]["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "6"
    assert objects["ConfigMap", a.TARGETS_CONFIGMAP]["data"] == {a.RATIO_KEY: "0.37", a.IN_FLIGHT_KEY: "6"}
    pod = triton["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == _triton(site)["spec"]["template"]["spec"]["nodeSelector"]
    assert pod["nodeSelector"].get("nvidia.com/gpu.present") == "true"

    def repository(objects: list[dict]) -> dict:
        return next(o["data"] for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"].startswith("toneserve-repository"))

    assert repository(built) == repository(site) and repository(built)["url"].startswith("https://")
    assert ("PrometheusRule", "toneserve-triton") in objects

    # Another namespace in the site: the ScaledObject and its query follow it.
    gpu = k8s / "overlays" / "gpu" / "kustomization.yaml"
    data = yaml.safe_load(gpu.read_text())
    data["namespace"] = "speech"
    gpu.write_text(yaml.safe_dump(data))
    (scaled,) = [o for o in _build(keda) if o["kind"] == "ScaledObject"]
    assert scaled["metadata"]["namespace"] == "speech"
    assert scaled["spec"]["triggers"][0]["metadata"]["query"] == a.keda_query("speech")

    # Included by the site itself, the namespace is not set yet when the component runs: kustomize stops
    # (rather than querying a namespace that is not the site's).
    data["components"] = [*data.get("components", []), f"../../{a.KEDA_COMPONENT}"]
    gpu.write_text(yaml.safe_dump(data))
    done = subprocess.run(["kubectl", "kustomize", str(gpu.parent)], capture_output=True, text=True)
    assert done.returncode != 0 and "metadata.namespace" in done.stderr


def test_plan_writes_the_chosen_steps_targets_for_the_overlay(tmp_path):
    from toneserve.loadtest.plan import decide, write_targets

    def step(users: int, p95: float, ratio: float | None) -> dict:
        run = {"consistent": True, "failures": 0, "requests": 10, "p95": p95, "gateway_rtfx": 3.0 * users,
               "rtfx": 3.0 * users}
        return {"users": users, "run": run, "meets_slo": p95 <= 1000, "queue_compute_ratio": ratio}

    # The highest step within the SLO is chosen (4 users), not the one past it whose queue ran away.
    decision = decide([step(1, 300, 0.05), step(4, 900, 0.3127), step(8, 5000, 2.5)], 1000, 100)
    path = tmp_path / "overlay" / a.TARGETS_FILE
    assert write_targets(decision, path)
    assert a.read_targets(path.read_text()) == {a.RATIO_KEY: "0.313", a.IN_FLIGHT_KEY: "4"}
    assert not write_targets(decide([step(1, 5000, 0.1)], 1000, 100), tmp_path / "none.env")
    assert not (tmp_path / "none.env").exists()


def test_pod_monitors_and_hpas_find_the_rendered_deployments_and_their_metrics_ports(models):
    from toneserve.gateway.settings import Settings
    from toneserve.kube import gateway, triton

    deployments = {o["metadata"]["name"]: o for o in [*triton.objects(Settings()), *gateway.objects(None)]
                   if o["kind"] == "Deployment"}
    for hpa in (a.triton_hpa(), a.gateway_hpa()):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    for monitor in a.monitoring(models)[:2]:
        pods = [d["spec"]["template"] for d in deployments.values()
                if monitor["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
