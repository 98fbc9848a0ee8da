"""The observability pack (kube/observability.py, deploy/k8s/monitoring and deploy/k8s/components): the files
are current, promtool checks and unit-tests the alerts, and the kustomizations build with `kubectl kustomize`
so that the Prometheus Operator's objects carry the label kube-prometheus-stack selects them by."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from toneserve.kube import autoscaling as a
from toneserve.kube import observability as o

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MONITORING = K8S / o.MONITORING


def need(tool: str) -> str:
    """The tool's path; a missing tool skips the test, except in CI (CI=true), where scripts/setup installs it."""
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed (scripts/setup installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI is set, so the test must run", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def models(models_root):
    from toneserve.model_repository.catalog import describe
    return describe(models_root)


def test_the_committed_pack_is_a_fresh_render(models):
    rendered = o.files(models, o.read_pool(K8S))
    assert not o.stale(K8S, rendered), \
        f"stale: {o.stale(K8S, rendered)}: toneserve k8s"
    # The adapter's rules are a file anyone can apply: the chart's values and the ConfigMap carry the same.
    values = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    configmap = yaml.safe_load((MONITORING / "prometheus-adapter-config.yaml").read_text())
    assert values["rules"]["custom"] == yaml.safe_load(configmap["data"]["config.yaml"])["rules"] == \
        a.adapter_config()["rules"]
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    base = list(yaml.safe_load_all((K8S / "base" / "autoscaling.yaml").read_text()))
    read = {m["pods"]["metric"]["name"] for hpa in base if hpa["kind"] == "HorizontalPodAutoscaler"
            for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert read and read <= served
    # A kept file (the plan's targets) is written where missing only.
    target = next(iter(o.KEPT))
    assert o.stale(Path("/nonexistent"), {target: "x"}) == [target]


def test_the_base_keeps_two_triton_replicas_through_a_drain():
    """With minReplicas 1 a single drain (the PDB lets one pod go) is a full outage."""
    objects = [x for f in ("autoscaling.yaml", "triton.yaml") for x in yaml.safe_load_all((K8S / "base" / f).read_text())]
    hpa = next(x for x in objects if x["kind"] == "HorizontalPodAutoscaler" and x["metadata"]["name"] == a.TRITON)
    pdb = next(x for x in objects if x["kind"] == "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 1
    scaled = yaml.safe_load((K8S / a.KEDA_COMPONENT / "scaledobject.yaml").read_text())
    assert scaled["spec"]["minReplicaCount"] == hpa["spec"]["minReplicas"]


def test_promtool_checks_the_rule_files():
    promtool = need("promtool")
    done = subprocess.run([promtool, "check", "rules", str(MONITORING / "rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    spec = yaml.safe_load((MONITORING / "alerts.yaml").read_text().split("\n", 1)[1])["spec"]
    assert spec == o.alert_groups()


def test_promtool_unit_tests_every_alert(tmp_path):
    promtool = need("promtool")
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    tested = {case["alertname"] for group in tests["tests"] for case in group["alert_rule_test"]
              if case.get("exp_alerts")}
    assert tested == {rule["alert"] for rule in o.alert_rules()}, "every alert needs a case where it fires"
    for rule in o.alert_rules():
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), rule["alert"]
    done = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool really evaluates them: the same tests on rules whose saturation alert ignores the HPA's maximum fail.
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ToneserveTritonSaturated":
                rule["expr"] = rule["expr"].split("\nand on")[0]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(MONITORING / "alerts.test.yml", tmp_path)
    broken = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert broken.returncode != 0 and "ToneserveTritonSaturated" in broken.stdout + broken.stderr


def _copy_tree(tmp_path: Path) -> Path:
    """deploy/k8s as committed, in tmp_path/k8s (so a test can add lines to a site overlay)."""
    shutil.copytree(K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("tracks"))
    return tmp_path / "k8s"


def build(folder: Path) -> list[dict]:
    done = subprocess.run([need("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [x for x in yaml.safe_load_all(done.stdout) if x]


def include(overlay: Path, component: str, extra: dict | None = None) -> None:
    kustomization = overlay / "kustomization.yaml"
    data = yaml.safe_load(kustomization.read_text())
    data.setdefault("components", []).append(f"../../{component}")
    data.update(extra or {})
    kustomization.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_operator_component_labels_the_monitoring_objects_only(tmp_path):
    """A site overlay that includes the component with one line: every PodMonitor and PrometheusRule carries
    `release: kube-prometheus-stack` (what the chart's Prometheus selects by), no other object does; a site
    whose release has another name sets it with a patch of its own."""
    k8s = _copy_tree(tmp_path)
    include(k8s / "overlays" / "gpu", o.OPERATOR_COMPONENT)
    objects = build(k8s / "overlays" / "gpu")
    monitoring = [x for x in objects if x["apiVersion"].startswith(o.OPERATOR_GROUP)]
    assert {x["kind"] for x in monitoring} == {"PodMonitor", "PrometheusRule"}
    for x in objects:
        labelled = x["metadata"].get("labels", {}).get(o.RELEASE_LABEL)
        assert labelled == (o.RELEASE if x in monitoring else None), (x["kind"], x["metadata"]["name"])
    patch = {"target": {"group": o.OPERATOR_GROUP},
             "patch": f"- op: replace\n  path: /metadata/labels/{o.RELEASE_LABEL}\n  value: prom\n"}
    site = k8s / "overlays" / "gpu" / "kustomization.yaml"
    data = yaml.safe_load(site.read_text())
    data["patches"] = [*data.get("patches", []), patch]
    site.write_text(yaml.safe_dump(data, sort_keys=False))
    relabelled = [x for x in build(k8s / "overlays" / "gpu") if x["apiVersion"].startswith(o.OPERATOR_GROUP)]
    assert {x["metadata"]["labels"][o.RELEASE_LABEL] for x in relabelled} == {"prom"}


def test_the_monitoring_kustomization_installs_the_alerts_and_the_dashboard():
    objects = build(MONITORING)
    kinds = {(x["kind"], x["metadata"]["name"]): x for x in objects}
    rule = kinds["PrometheusRule", o.ALERTS]
    assert rule["metadata"]["namespace"] == o.MONITORING and rule["metadata"]["labels"][o.RELEASE_LABEL] == o.RELEASE
    assert rule["spec"] == o.alert_groups()
    dashboard = kinds["ConfigMap", o.DASHBOARD_CONFIGMAP]
    assert dashboard["metadata"]["labels"] == o.DASHBOARD_LABEL and o.RELEASE_LABEL not in dashboard["metadata"]["labels"]
    assert json.loads(dashboard["data"][o.DASHBOARD_FILE]) == o.dashboard()


def test_the_dashboard_has_the_panels_operators_need():
    board = json.loads((MONITORING / o.DASHBOARD_FILE).read_text())
    exprs = "\n".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for needed in ("toneserve_requests_total", "histogram_quantile(0.99", "toneserve_audio_seconds_total",
                   "toneserve_requests_in_flight", "toneserve_triton_calls_waiting", a.RATIO,
                   "kube_horizontalpodautoscaler_status_current_replicas", 'code="QUOTA_EXCEEDED"',
                   "toneserve_triton_ready"):
        assert needed in exprs, needed
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(t["refId"] for p in board["panels"] for t in p["targets"])
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace"}
