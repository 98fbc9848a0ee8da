"""Autoscaling on Triton's own signal: the Kubernetes objects, as plain dicts the renderer writes out.

The signal is how long requests wait in Triton's queues against how long they compute, per Triton pod:

    toneserve:triton_queue_compute_ratio{namespace, pod} =
        sum over the served models of rate(nv_inference_queue_duration_us)
      / sum over the served models of rate(nv_inference_compute_infer_duration_us)

Summed before dividing: an idle model adds nothing to either sum, so it cannot halve the ratio, which an
average of per-model ratios would do (two models, one busy at 1.0 and one idle at 0, average 0.5). The
served models are the catalog's non-ensemble models: an ensemble's queue and compute times are those of
its steps again, so counting it would count each step twice. Idle (no compute in the window), the ratio
is 0, not the NaN of 0/0, so the HPA sees a number and scales down.

A ratio of 0.5 means a request waits half as long as it computes: the replica is keeping up but
batching and queueing. `toneserve plan` measures the ratio at the highest load that met the SLO and
writes it as the per-replica target (TARGETS_FILE); the HPA (through prometheus-adapter) or KEDA adds
Triton replicas when the pods' average goes above it.

The gateway scales on CPU and on its own in-flight requests (toneserve_requests_in_flight, a gauge of
gateway/metrics.py), with the in-flight target `toneserve plan` measured too (its closed-loop users
at that load).
"""
from __future__ import annotations

from collections.abc import Iterable

from toneserve.contract import ASR, EMOTION
from toneserve.kube.objects import meta, selector
from toneserve.model_repository.spec import Ensemble

# The Deployments (kube/triton.py, the gateway's), each HPA named after the Deployment it scales.
TRITON, TRITON_COMPONENT = "toneserve-triton", "triton"
GATEWAY, GATEWAY_COMPONENT = "toneserve-gateway", "gateway"
METRICS_PORT = "metrics"  # the name of each component's Prometheus port in its pods
TARGETS_CONFIGMAP = "toneserve-autoscaling-targets"
TARGETS_FILE = "autoscaling-targets.env"
# Keys of TARGETS_FILE: what one replica takes at the highest load that met the SLO.
RATIO_KEY = "TRITON_QUEUE_COMPUTE_RATIO"
IN_FLIGHT_KEY = "GATEWAY_REQUESTS_IN_FLIGHT"
# Until a plan has measured this deployment's own: a request may wait half its compute time; four
# requests in flight per gateway (the plan's default first steps on a small host). Decimals, not
# Kubernetes' "500m": KEDA parses its threshold as a plain number, and an HPA takes "0.5" as well.
DEFAULT_TARGETS = {RATIO_KEY: "0.5", IN_FLIGHT_KEY: "4"}

RATIO = "toneserve:triton_queue_compute_ratio"
QUEUE_RATE = "toneserve:triton_queue_us:rate"
COMPUTE_RATE = "toneserve:triton_compute_infer_us:rate"
# The Kubernetes custom metrics API takes no colons: prometheus-adapter serves RATIO under this name.
RATIO_METRIC = "toneserve_triton_queue_compute_ratio"
IN_FLIGHT_METRIC = "toneserve_requests_in_flight"
# The Triton series the rules read (all exported by Triton 2.51 and later, per model and version).
TRITON_SERIES = ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us")
# Labels the cluster's Prometheus attaches to every series of a pod (a PodMonitor does).
POD_LABELS = ("namespace", "pod")
# The ensembles the gateway calls (toneserve.contract): plan reads Triton's metrics without the catalog.
ENSEMBLES = (EMOTION, ASR)


def served_models(models: Iterable) -> list[str]:
    """The names of the catalog's models (catalog.describe()) that compute: every one but the ensembles."""
    names = sorted({m.name for m in models if not isinstance(m, Ensemble)})
    if not names:
        raise ValueError("no non-ensemble model in the catalog: nothing to scale on")
    return names


def _selector(names: list[str]) -> str:
    # Model names are Triton directory names (letters, digits, _ and -): nothing to escape in the regex.
    return f'{{model=~"{"|".join(names)}"}}'


def rule_groups(models: Iterable, window: str = "1m") -> dict:
    """The Prometheus rule file ({"groups": [...]}) recording the ratio per Triton pod.

    `window`: the rate window; at least four of the cluster's scrape intervals."""
    by = ", ".join(POD_LABELS)
    match = _selector(served_models(models))
    queue, compute = TRITON_SERIES
    return {"groups": [{"name": "toneserve-triton", "rules": [
        {"record": QUEUE_RATE, "expr": f"sum by ({by}) (rate({queue}{match}[{window}]))"},
        {"record": COMPUTE_RATE, "expr": f"sum by ({by}) (rate({compute}{match}[{window}]))"},
        # Where compute is 0 the division is dropped (`> 0`) and `or` supplies 0 with the pod's labels.
        {"record": RATIO, "expr": f"{QUEUE_RATE} / ({COMPUTE_RATE} > 0) or {COMPUTE_RATE} * 0"},
    ]}]}


def prometheus_rule(models: Iterable, window: str = "1m") -> dict:
    """The PrometheusRule (Prometheus Operator) carrying rule_groups()."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": meta("toneserve-triton", TRITON_COMPONENT),
            "spec": rule_groups(models, window)}


def adapter_config() -> dict:
    """prometheus-adapter's rules: the ratio and the gateway's in-flight requests as pod metrics."""
    def resources() -> dict:  # one dict each: YAML would dump a shared one as an anchor and an alias
        return {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}

    return {"rules": [
        {"seriesQuery": f'{RATIO}{{namespace!="",pod!=""}}', "resources": resources(),
         "name": {"matches": f"^{RATIO}$", "as": RATIO_METRIC},
         "metricsQuery": "max(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"},
        {"seriesQuery": f'{IN_FLIGHT_METRIC}{{namespace!="",pod!=""}}', "resources": resources(),
         "name": {"matches": f"^{IN_FLIGHT_METRIC}$", "as": IN_FLIGHT_METRIC},
         "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"},
    ]}


# Where the Prometheus Operator's Prometheus answers by default (its `prometheus-operated` Service in the
# namespace kube-prometheus-stack is usually installed in): prometheus-adapter and KEDA ask it.
PROMETHEUS_URL, PROMETHEUS_PORT = "http://prometheus-operated.monitoring.svc", 9090


def adapter_values() -> dict:
    """Values for the prometheus-community/prometheus-adapter chart: its Prometheus and toneserve's rules
    (`rules.custom`; the chart's default rules stay as they are)."""
    return {"prometheus": {"url": PROMETHEUS_URL, "port": PROMETHEUS_PORT},
            "rules": {"custom": adapter_config()["rules"]}}


def adapter_rules(namespace: str = "monitoring", name: str = "prometheus-adapter") -> dict:
    """The ConfigMap prometheus-adapter reads its rules from (its chart's `config.yaml`); it lives in the
    adapter's namespace, so merge these rules into that ConfigMap if the adapter already has others."""
    import yaml

    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"config.yaml": yaml.safe_dump(adapter_config(), sort_keys=False)}}


def _behavior() -> dict:
    # Up at once when the queue grows; down only after five minutes below target, one pod a minute,
    # so a lull between bursts does not drop the replicas (and their loaded models) just before the next.
    return {"scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 300,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}


def _hpa(name: str, component: str, metrics: list[dict], min_replicas: int, max_replicas: int) -> dict:
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas})")
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta(name, component),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": metrics, "behavior": _behavior()}}


# Never fewer than two Triton pods: with one, a single drain (a node upgrade) is a full outage, and the
# PodDisruptionBudget (at most one away) would not stop it.
TRITON_MIN_REPLICAS = 2


def triton_hpa(target: str = DEFAULT_TARGETS[RATIO_KEY], min_replicas: int = TRITON_MIN_REPLICAS,
               max_replicas: int = 8) -> dict:
    """The HPA of the Triton Deployment on the pods' average queue-to-compute ratio (a quantity: "0.5")."""
    return _hpa(TRITON, TRITON_COMPONENT, [{"type": "Pods", "pods": {"metric": {"name": RATIO_METRIC},
                                                   "target": {"type": "AverageValue", "averageValue": target}}}],
                min_replicas, max_replicas)


def gateway_hpa(in_flight: str = DEFAULT_TARGETS[IN_FLIGHT_KEY], cpu_percent: int = 70, min_replicas: int = 2,
                max_replicas: int = 16) -> dict:
    """The HPA of the gateway on CPU and in-flight requests per pod (the larger of the two wins)."""
    return _hpa(GATEWAY, GATEWAY_COMPONENT, [
        {"type": "Resource", "resource": {"name": "cpu",
                                          "target": {"type": "Utilization", "averageUtilization": cpu_percent}}},
        {"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC},
                                  "target": {"type": "AverageValue", "averageValue": in_flight}}},
    ], min_replicas, max_replicas)


# The KEDA component's query names the namespace of the site it is built over (a replacement copies the
# Triton Deployment's namespace in place of this word, the second field between double quotes).
NAMESPACE_PLACEHOLDER = "NAMESPACE"


def keda_query(namespace: str = NAMESPACE_PLACEHOLDER) -> str:
    """The pods' average ratio in `namespace`, 0 when no pod reports one (KEDA then scales to the minimum)."""
    return f'avg({RATIO}{{namespace="{namespace}"}}) or vector(0)'


def keda_scaled_object(target: str = DEFAULT_TARGETS[RATIO_KEY], min_replicas: int = TRITON_MIN_REPLICAS,
                       max_replicas: int = 8, prometheus: str = f"{PROMETHEUS_URL}:{PROMETHEUS_PORT}") -> dict:
    """KEDA's alternative to triton_hpa(): reads the recorded ratio from Prometheus itself (no adapter).

    The query is the pods' average and the metric type "Value": the ratio is per pod already, so KEDA
    must not divide it by the replica count as it does for "AverageValue"."""
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": meta(TRITON, TRITON_COMPONENT),
            "spec": {"scaleTargetRef": {"name": TRITON}, "minReplicaCount": min_replicas,
                     "maxReplicaCount": max_replicas, "pollingInterval": 15,
                     "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
                     "triggers": [{"type": "prometheus", "metricType": "Value", "metadata": {
                         "serverAddress": prometheus, "query": keda_query(), "threshold": target}}]}}


def keda_namespace_replacement() -> dict:
    """Kustomize: the Triton Deployment's namespace (the site's) into the ScaledObject and its query. It
    runs where the component is included, so the site must be built (namespace set) by then: include the
    component from an overlay over the site, not from the site itself (kustomize then stops with
    "fieldPath `metadata.namespace` is missing for replacement source")."""
    def select() -> dict:  # one dict each: YAML would dump a shared one as an anchor and an alias
        return {"kind": "ScaledObject", "name": TRITON}

    return {"source": {"kind": "Deployment", "name": TRITON, "fieldPath": "metadata.namespace"},
            "targets": [{"select": select(), "fieldPaths": ["metadata.namespace"], "options": {"create": True}},
                        {"select": select(), "fieldPaths": ["spec.triggers.0.metadata.query"],
                         "options": {"delimiter": '"', "index": 1}}]}


def quantity(value: float) -> str:
    """A target in thousandths (0.4213 -> "0.421"), never 0: an HPA target must be positive."""
    return f"{max(round(value, 3), 0.001):.3f}".rstrip("0").rstrip(".")


def targets_env(ratio: float, in_flight: float,
                origin: str = "measured by `toneserve plan` at the highest load that met the SLO") -> str:
    """TARGETS_FILE's text: the per-replica targets, and where they come from."""
    return (f"# Per-replica autoscaling targets, {origin}.\n"
            f"{RATIO_KEY}={quantity(ratio)}\n{IN_FLIGHT_KEY}={max(1, round(in_flight))}\n")


def read_targets(text: str) -> dict[str, str]:
    """TARGETS_FILE's keys and values (the env-file syntax of Kustomize's configMapGenerator)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"not KEY=VALUE: {line!r}")
            out[key.strip()] = value.strip()
    return out


def targets_configmap(text: str | None = None) -> dict:
    """The ConfigMap holding the targets (the renderer's base; overlays replace it with a generator)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TARGETS_CONFIGMAP},
            "data": read_targets(text) if text is not None else dict(DEFAULT_TARGETS)}


def target_replacements(keda: bool = False) -> list[dict]:
    """Kustomize `replacements` copying the targets from the ConfigMap into the HPAs (or the ScaledObject)."""
    triton = ({"select": {"kind": "ScaledObject", "name": TRITON},
               "fieldPaths": ["spec.triggers.0.metadata.threshold"]} if keda else
              {"select": {"kind": "HorizontalPodAutoscaler", "name": TRITON},
               "fieldPaths": ["spec.metrics.0.pods.target.averageValue"]})
    return [
        {"source": {"kind": "ConfigMap", "name": TARGETS_CONFIGMAP, "fieldPath": f"data.{RATIO_KEY}"},
         "targets": [triton]},
        {"source": {"kind": "ConfigMap", "name": TARGETS_CONFIGMAP, "fieldPath": f"data.{IN_FLIGHT_KEY}"},
         "targets": [{"select": {"kind": "HorizontalPodAutoscaler", "name": GATEWAY},
                      "fieldPaths": ["spec.metrics.1.pods.target.averageValue"]}]},
    ]


def queue_compute_ratio(delta: dict[str, dict[str, float]], ensembles: Iterable[str] = ENSEMBLES) -> float | None:
    """The ratio the rules record, from a before/after delta of Triton's counters
    (loadtest.triton_metrics.delta: {model: {"queue_us": ..., "compute_infer_us": ...}}); None without compute."""
    skip = set(ensembles)
    queue = sum(c.get("queue_us", 0.0) for m, c in delta.items() if m not in skip)
    compute = sum(c.get("compute_infer_us", 0.0) for m, c in delta.items() if m not in skip)
    return queue / compute if compute > 0 else None


def pod_monitor(component: str) -> dict:
    """A PodMonitor (Prometheus Operator) scraping a component's `metrics` port; it labels every series
    with the pod's namespace and name, the labels the rules group by and the adapter maps to pods."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": meta(f"toneserve-{component}", component),
            "spec": {"selector": {"matchLabels": selector(component)},
                     "podMetricsEndpoints": [{"port": METRICS_PORT, "path": "/metrics", "interval": "15s"}]}}


def base_kustomization() -> dict:
    """The base kustomization's fields for autoscaling: the targets ConfigMap's values into the HPAs."""
    return {"replacements": target_replacements(keda=False)}


def monitoring(models: Iterable) -> list[dict]:
    """The Prometheus Operator objects the HPAs and KEDA read through: the PodMonitors of Triton and the
    gateway and the PrometheusRule recording the ratio over the catalog's models (catalog.describe())."""
    return [pod_monitor(TRITON_COMPONENT), pod_monitor(GATEWAY_COMPONENT), prometheus_rule(models)]


def base_resources(models: Iterable) -> dict[str, list[dict]]:
    """What the base carries for autoscaling, by file name. The prometheus-adapter ConfigMap is not among
    them: it belongs to the adapter's namespace (adapter_rules(), written apart)."""
    return {"autoscaling.yaml": [targets_configmap(), triton_hpa(), gateway_hpa()],
            "monitoring.yaml": monitoring(models)}


KEDA_COMPONENT = "components/keda"  # under deploy/k8s
KEDA_OVERLAY = "overlays/keda"  # the example: the GPU pool with the component
KEDA_README = """# KEDA instead of an HPA for Triton: a Kustomize Component

KEDA (2.x, installed in the cluster) asks Prometheus for the recorded queue-to-compute ratio itself, so
Triton needs no prometheus-adapter rule; the gateway keeps its HPA (CPU and in-flight requests, through the
adapter). KEDA makes and owns Triton's HPA: the base's is deleted here, as two HPAs on one Deployment fight.

List it in your pool overlay (over the site, which sets the namespace), before the repository-pool component,
which then names the ScaledObject and its target by the repository's digest; the pool keeps the site's
namespace, images and GPU scheduling and its own repository (`deploy/k8s/overlays/keda` is
`overlays/gpu-pool` so):

    resources:
    - ../gpu                      # your site overlay
    components:
    - ../../components/keda
    - ../../components/repository-pool

Not from the site overlay itself: the ScaledObject and its query take the namespace of the site's Triton
Deployment, which the site sets after its components run (kustomize stops and says
"fieldPath `metadata.namespace` is missing for replacement source").

The per-replica targets come from `autoscaling-targets.env`: copy there the file of the same name that
`toneserve plan` writes. Set the Prometheus address in `scaledobject.yaml` (serverAddress) if yours is not
the Prometheus Operator's default `prometheus-operated` Service in the `monitoring` namespace.

Rendered by `toneserve k8s` (which keeps an existing targets file);
tests/deploy/test_k8s_autoscaling.py checks the files are current.
"""
GENERATED = "# Generated by kube/autoscaling.py; do not edit by hand (the README says how to render it).\n"


def keda_component_files() -> dict[str, str]:
    """deploy/k8s/components/keda: KEDA's ScaledObject in place of Triton's HPA, the plan's targets, and the
    site's namespace in the ScaledObject and its query."""
    import yaml

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
        "resources": ["scaledobject.yaml"],
        "patches": [{"path": "delete-triton-hpa.yaml"}],
        "configMapGenerator": [{"name": TARGETS_CONFIGMAP, "behavior": "replace", "envs": [TARGETS_FILE],
                                "options": {"disableNameSuffixHash": True}}],
        "replacements": [*target_replacements(keda=True), keda_namespace_replacement()],
    }
    return {"kustomization.yaml": GENERATED + yaml.safe_dump(kustomization, sort_keys=False),
            "scaledobject.yaml": GENERATED + yaml.safe_dump(keda_scaled_object(), sort_keys=False),
            "delete-triton-hpa.yaml": GENERATED + yaml.safe_dump({
                "$patch": "delete", "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": TRITON}}, sort_keys=False),
            TARGETS_FILE: targets_env(float(DEFAULT_TARGETS[RATIO_KEY]), float(DEFAULT_TARGETS[IN_FLIGHT_KEY]),
                                      "the defaults until `toneserve plan` has measured yours (copy its file here)"),
            "README.md": KEDA_README}


def keda_overlay_files(pool: dict, pool_folder: str = "gpu-pool") -> dict[str, str]:
    """deploy/k8s/overlays/keda: the pool overlay `pool` (overlays/`pool_folder`'s kustomization, read) with the
    KEDA component listed first: before the pool's own component, which names Triton's objects (the
    ScaledObject among them) by the repository's digest, and after the site's namespace is set."""
    import yaml

    kustomization = {**pool, "components": [f"../../{KEDA_COMPONENT}", *pool.get("components", [])]}
    header = GENERATED + (f"# overlays/{pool_folder} with KEDA scaling Triton ({KEDA_COMPONENT}/README.md): its "
                          "repository lines are that overlay's.\n")
    return {"kustomization.yaml": header + yaml.safe_dump(kustomization, sort_keys=False)}