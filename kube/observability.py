"""The observability pack: what a cluster's Prometheus Operator, prometheus-adapter, Grafana and KEDA need
from toneserve, rendered as files under deploy/k8s (docs/observability.md says how to install each).

- components/kube-prometheus-stack: a Kustomize Component putting the label a Prometheus Operator selects
  PodMonitors and PrometheusRules by (kube-prometheus-stack's default: `release: <its release name>`) on the
  monitoring objects only;
- components/keda (and overlays/keda, the GPU site with it): KEDA in place of Triton's HPA (autoscaling.py);
- monitoring/: the alerts (a PrometheusRule, and rules.yml, the plain rule file with the recording rules),
  the Grafana dashboard (JSON, and a ConfigMap for Grafana's dashboard sidecar through kustomization.yaml),
  prometheus-adapter's rules (the chart's values, and the ConfigMap for an adapter installed without it).
  monitoring/alerts.test.yml, promtool's unit tests of the alerts, is written by hand.

tests/deploy/test_k8s_observability.py checks the committed files equal a fresh render
(`toneserve k8s`), runs promtool on the rules and builds the kustomizations;
tests/stack/test_prometheus.py runs every dashboard query and the adapter's queries against a real
Prometheus scraping a real gateway and Triton.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from toneserve.contract import Code
from toneserve.kube import autoscaling as a
from toneserve.kube.objects import APP

# kube-prometheus-stack's Prometheus selects PodMonitors and PrometheusRules by `release: <release name>`
# (its podMonitorSelector and ruleSelector when ...SelectorNilUsesHelmValues is true, the default).
RELEASE_LABEL, RELEASE = "release", "kube-prometheus-stack"
OPERATOR_GROUP = "monitoring.coreos.com"
OPERATOR_COMPONENT = "components/kube-prometheus-stack"  # under deploy/k8s
MONITORING = "monitoring"  # the folder under deploy/k8s, and the namespace its kustomization installs into
DASHBOARD_FILE, DASHBOARD_CONFIGMAP = "grafana-dashboard.json", "toneserve-dashboard"
# The label Grafana's dashboard sidecar (kube-prometheus-stack's grafana.sidecar.dashboards) looks for.
DASHBOARD_LABEL = {"grafana_dashboard": "1"}
ALERTS = "toneserve-alerts"

# The HPAs and Deployments the alerts and the dashboard read through kube-state-metrics: the base's names,
# a track's (`-<sha256[:16]>`), and the HPA KEDA makes for its ScaledObject (`keda-hpa-<name>`).
TRACKED = "(-[0-9a-f]{16})?"
TRITON_HPA = f"(keda-hpa-)?{a.TRITON}{TRACKED}"
TRITON_DEPLOYMENT = f"{a.TRITON}{TRACKED}"
HPAS = f"(keda-hpa-)?toneserve-({a.TRITON_COMPONENT}|{a.GATEWAY_COMPONENT}){TRACKED}"
# The kube-state-metrics series the pack reads (kube-prometheus-stack installs kube-state-metrics); every
# other series it reads is exported by the gateway (gateway/metrics.py), Triton, or recorded by its rules.
KUBE_STATE_METRICS = (
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_target_metric",
    "kube_horizontalpodautoscaler_status_condition",
    "kube_deployment_status_replicas_available",
)
# The gateway's certificate gauge: the served certificate's notAfter, in seconds since the epoch.
CERT_EXPIRY = "toneserve_tls_certificate_expiry_timestamp_seconds"
REQUESTS = "toneserve_requests_total"
DOCS = "docs/observability.md"


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str,
           runbook: str) -> dict:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook": runbook,
                            "runbook_url": f"{DOCS}#{name.lower()}"}}


def alert_rules() -> list[dict]:
    """The alerting rules, each with what it means (description) and what to do (runbook)."""
    unavailable, quota = Code.TRITON_UNAVAILABLE.name, Code.QUOTA_EXCEEDED.name
    hpa = f'horizontalpodautoscaler=~"{TRITON_HPA}"'
    return [
        _alert("ToneserveTritonNotReady",
               "min by (namespace, pod) (toneserve_triton_ready) == 0", "2m", "critical",
               "Gateway {{ $labels.pod }} sees no ready Triton",
               "The gateway {{ $labels.namespace }}/{{ $labels.pod }} has reported NOT_SERVING for 2 minutes: no "
               "Triton replica answers ready (its calls fail with TRITON_UNAVAILABLE).",
               "kubectl -n {{ $labels.namespace }} get pods -l app.kubernetes.io/component=triton; describe the "
               "pods (probes, GPU allocation, the fetch-repository init container's log) and read Triton's log."),
        _alert("ToneserveTritonSaturated",
               "avg by (namespace) (toneserve:triton_queue_compute_ratio)\n"
               f"  > on (namespace) max by (namespace) (kube_horizontalpodautoscaler_spec_target_metric{{{hpa}}})\n"
               "and on (namespace)\n"
               f"  max by (namespace) (kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}\n"
               f"    >= kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}})",
               "10m", "warning",
               "Triton is above its queue target at its maximum replica count in {{ $labels.namespace }}",
               "Requests wait longer in Triton's queues (against their compute time) than the per-replica target, "
               "and the Triton HPA is at maxReplicas, so it cannot add capacity: latency grows with the load.",
               "Raise the HPA's maxReplicas if GPUs are free (docs/kubernetes.md: sizes from `toneserve plan`), "
               "or add GPU nodes; check the gateways' --max-triton-calls."),
        _alert("ToneserveTritonUnavailable",
               f'sum by (namespace) (rate({REQUESTS}{{code="{unavailable}"}}[5m]))\n'
               f"  / sum by (namespace) (rate({REQUESTS}[5m])) > 0.01",
               "5m", "critical",
               "More than 1% of requests fail with TRITON_UNAVAILABLE in {{ $labels.namespace }}",
               "{{ $value | humanizePercentage }} of the requests answered in the last 5 minutes failed because no "
               "Triton replica could take the call (replicas restarting, evicted or not ready).",
               "Check ToneserveTritonNotReady, the Triton pods' restarts and events (OOMKilled, evictions, node "
               "drains), and that the Triton HPA keeps at least two replicas."),
        _alert("ToneserveCertificateExpiresSoon",
               f"min by (namespace, pod) ({CERT_EXPIRY}) - time() < 14 * 86400", "1h", "warning",
               "The gateway's TLS certificate expires within 14 days",
               "The certificate {{ $labels.namespace }}/{{ $labels.pod }} serves expires in "
               "{{ $value | humanizeDuration }}; clients will refuse the gateway once it has.",
               "Renew it and update the Secret toneserve-gateway-tls; the gateways reload it (docs/kubernetes.md: "
               "key rotation)."),
        _alert("ToneserveCertificateExpiresVerySoon",
               f"min by (namespace, pod) ({CERT_EXPIRY}) - time() < 3 * 86400", "10m", "critical",
               "The gateway's TLS certificate expires within 3 days",
               "The certificate {{ $labels.namespace }}/{{ $labels.pod }} serves expires in "
               "{{ $value | humanizeDuration }}.",
               "Renew it now and update the Secret toneserve-gateway-tls (docs/kubernetes.md: key rotation)."),
        _alert("ToneserveTritonRatioMissing",
               f'max by (namespace) (kube_deployment_status_replicas_available{{deployment=~"{TRITON_DEPLOYMENT}"}})'
               " > 0\nunless on (namespace) count by (namespace) (toneserve:triton_queue_compute_ratio)",
               "10m", "critical",
               "No queue-to-compute ratio is recorded for the running Triton pods in {{ $labels.namespace }}",
               "Triton pods are available but the ratio the Triton HPA (or KEDA) scales on is absent: Triton is not "
               "scraped (PodMonitor not selected: its release label) or the recording rules are not loaded.",
               f"Check the PodMonitor and PrometheusRule carry your Prometheus's selector label ({DOCS}: install), "
               "and that Prometheus's targets page lists the Triton pods' metrics port."),
        _alert("ToneserveAutoscalerMetricUnavailable",
               "max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_condition"
               f'{{horizontalpodautoscaler=~"{HPAS}",condition="ScalingActive",status="false"}}) == 1',
               "10m", "critical",
               "HPA {{ $labels.horizontalpodautoscaler }} cannot read its metrics",
               "The HPA's ScalingActive condition is false: the metrics API gives it no value (TARGETS shows "
               "<unknown>), so it does not scale.",
               "kubectl -n {{ $labels.namespace }} describe hpa {{ $labels.horizontalpodautoscaler }}; check "
               "prometheus-adapter has toneserve's rules (monitoring/prometheus-adapter-values.yaml) and "
               "`kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1` lists the metric."),
        _alert("ToneserveQuotaRejections",
               f'sum by (namespace, tenant) (rate({REQUESTS}{{code="{quota}"}}[5m])) > 0',
               "15m", "info",
               "Tenant {{ $labels.tenant }} is refused for its quota",
               "Requests of tenant {{ $labels.tenant }} have been refused with QUOTA_EXCEEDED for 15 minutes "
               "({{ $value | printf \"%.2f\" }} per second).",
               "Tell the tenant, or raise its seconds_per_minute / seconds_per_day in the API key file; with several "
               "gateways and no shared quota store, each counts alone (docs/kubernetes.md)."),
    ]


def alert_groups() -> dict:
    return {"groups": [{"name": ALERTS, "rules": alert_rules()}]}


def alerts_rule() -> dict:
    """The PrometheusRule of the alerts (the monitoring kustomization installs it)."""
    return {"apiVersion": f"{OPERATOR_GROUP}/v1", "kind": "PrometheusRule",
            "metadata": {"name": ALERTS, "labels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/part-of": APP}},
            "spec": alert_groups()}


def rule_file(models: Iterable) -> dict:
    """rules.yml: the recording rules and the alerts, for a Prometheus without the Operator."""
    return {"groups": [*a.rule_groups(models)["groups"], *alert_groups()["groups"]]}


# The dashboard: (title, unit, [(PromQL, legend)]); `$namespace` and `$__rate_interval` are Grafana's.
NS = 'namespace="$namespace"'
RATE = "$__rate_interval"


def _quantile(q: float) -> tuple[str, str]:
    return (f"histogram_quantile({q}, sum by (le) (rate(toneserve_request_latency_seconds_bucket{{{NS}}}[{RATE}])))",
            f"p{round(q * 100)}")


PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests by code", "reqps", [(f"sum by (code) (rate({REQUESTS}{{{NS}}}[{RATE}]))", "{{code}}")]),
    ("Errors by code", "reqps", [(f'sum by (code) (rate({REQUESTS}{{{NS},code!="OK"}}[{RATE}]))', "{{code}}")]),
    ("Latency", "s", [_quantile(0.5), _quantile(0.95), _quantile(0.99)]),
    ("Audio analysed (seconds of audio per second)", "short",
     [(f"sum (rate(toneserve_audio_seconds_total{{{NS}}}[{RATE}]))", "audio s/s")]),
    ("Requests in flight", "short", [(f"sum by (pod) (toneserve_requests_in_flight{{{NS}}})", "{{pod}}")]),
    ("Triton calls in flight and waiting", "short", [
        (f"sum (toneserve_triton_calls_in_flight{{{NS}}})", "gateways: in flight"),
        (f"sum (toneserve_triton_calls_waiting{{{NS}}})", "gateways: waiting for a slot"),
        (f"sum by (model) (nv_inference_pending_request_count{{{NS}}})", "Triton queue: {{model}}")]),
    ("Triton queue-to-compute ratio (per pod; the Triton HPA's signal)", "short", [
        (f"{a.RATIO}{{{NS}}}", "{{pod}}"),
        (f'max (kube_horizontalpodautoscaler_spec_target_metric{{{NS},horizontalpodautoscaler=~"{TRITON_HPA}"}})',
         "target")]),
    ("HPA replicas", "short", [
        (f'kube_horizontalpodautoscaler_status_current_replicas{{{NS},horizontalpodautoscaler=~"{HPAS}"}}',
         "{{horizontalpodautoscaler}} current"),
        (f'kube_horizontalpodautoscaler_status_desired_replicas{{{NS},horizontalpodautoscaler=~"{HPAS}"}}',
         "{{horizontalpodautoscaler}} desired"),
        (f'kube_horizontalpodautoscaler_spec_max_replicas{{{NS},horizontalpodautoscaler=~"{HPAS}"}}',
         "{{horizontalpodautoscaler}} max")]),
    ("Quota rejections by tenant", "reqps",
     [(f'sum by (tenant) (rate({REQUESTS}{{{NS},code="{Code.QUOTA_EXCEEDED.name}"}}[{RATE}]))', "{{tenant}}")]),
    ("Audio charged by tenant (seconds per second)", "short",
     [(f"sum by (tenant) (rate(toneserve_tenant_audio_seconds_total{{{NS}}}[{RATE}]))", "{{tenant}}")]),
    ("Triton ready, as each gateway sees it (1 ready, 0 NOT_SERVING)", "short",
     [(f"min by (pod) (toneserve_triton_ready{{{NS}}})", "{{pod}}")]),
]


def dashboard() -> dict:
    """The Grafana dashboard (JSON model), on a Prometheus data source and a namespace chosen in its variables."""
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "datasource": source,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}},
            "targets": [{"datasource": source, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + j)}
                        for j, (expr, legend) in enumerate(queries)]})
    return {
        "uid": "toneserve", "title": "toneserve", "tags": ["toneserve"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
            {"name": "namespace", "label": "namespace", "type": "query", "datasource": source, "refresh": 2,
             "query": {"query": "label_values(toneserve_requests_in_flight, namespace)", "refId": "namespace"},
             "definition": "label_values(toneserve_requests_in_flight, namespace)"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def operator_component() -> dict:
    """components/kube-prometheus-stack: the release label on every Prometheus Operator object, and on no other."""
    return {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "patches": [{"target": {"group": OPERATOR_GROUP},
                         "patch": f"- op: add\n  path: /metadata/labels/{RELEASE_LABEL}\n  value: {RELEASE}\n"}]}


def monitoring_kustomization() -> dict:
    """monitoring/kustomization.yaml: the alerts and the dashboard's ConfigMap, in the monitoring namespace."""
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": MONITORING, "resources": ["alerts.yaml"],
            "configMapGenerator": [{"name": DASHBOARD_CONFIGMAP, "files": [DASHBOARD_FILE],
                                    "options": {"labels": DASHBOARD_LABEL, "disableNameSuffixHash": True}}],
            "components": [f"../{OPERATOR_COMPONENT}"]}


HEADER = ("# Rendered by `toneserve k8s` (toneserve/kube/observability.py); do not edit "
          f"by hand ({DOCS}).\n")


KEDA_POOL = "gpu-pool"  # the pool overlay (under deploy/k8s/overlays) overlays/keda adds KEDA to


def read_pool(root: Path) -> dict:
    """The kustomization of overlays/KEDA_POOL under `root` (deploy/k8s)."""
    import yaml

    return yaml.safe_load((root / "overlays" / KEDA_POOL / "kustomization.yaml").read_text())


def files(models: Iterable, pool: dict) -> dict[str, str]:
    """Every rendered file of the pack: path under deploy/k8s -> text. `models`: the catalog's (the recording
    rules in rules.yml read its computing models); `pool`: read_pool(), the overlay overlays/keda extends."""
    from toneserve.kube.render import dump

    out = {f"{OPERATOR_COMPONENT}/kustomization.yaml": dump([operator_component()], HEADER),
           f"{MONITORING}/kustomization.yaml": dump([monitoring_kustomization()], HEADER),
           f"{MONITORING}/alerts.yaml": dump([alerts_rule()], HEADER),
           f"{MONITORING}/rules.yml": dump([rule_file(models)], HEADER),
           f"{MONITORING}/{DASHBOARD_FILE}": json.dumps(dashboard(), indent=2) + "\n",
           f"{MONITORING}/prometheus-adapter-values.yaml": dump([a.adapter_values()], HEADER),
           f"{MONITORING}/prometheus-adapter-config.yaml": dump([a.adapter_rules()], HEADER)}
    out.update({f"{a.KEDA_COMPONENT}/{name}": text for name, text in a.keda_component_files().items()})
    out.update({f"{a.KEDA_OVERLAY}/{name}": text for name, text in a.keda_overlay_files(pool, KEDA_POOL).items()})
    return out


# Files a person replaces with their own (the plan's targets): written only where missing.
KEPT = {f"{a.KEDA_COMPONENT}/{a.TARGETS_FILE}"}


def stale(root: Path, rendered: dict[str, str]) -> list[str]:
    """The rendered files that differ under `root` (deploy/k8s); a kept file counts only when missing."""
    return [name for name, text in rendered.items()
            if not (root / name).is_file() or (name not in KEPT and (root / name).read_text() != text)]


def write(root: Path, rendered: dict[str, str]) -> list[Path]:
    written = []
    for name, text in rendered.items():
        path = root / name
        if name in KEPT and path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
