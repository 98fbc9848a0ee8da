"""A real Prometheus scrapes a real embedded Triton and a real gateway with the autoscaling rules
(kube/autoscaling.py): the series the rules read exist, and the recorded queue-to-compute ratio is 0 idle and
above 0 under load. The observability pack's queries (kube/observability.py) run against it: every
dashboard panel's and alert's PromQL parses and reads series the gateway, Triton or the rules export, and
prometheus-adapter's queries, as the adapter fills them in, return the pod metrics the HPAs read."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.support import gateway_process, self_signed
from toneserve.contract import EMOTION, WAV, WAV_LENS
from toneserve.kube import autoscaling as a
from toneserve.kube import observability as o

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server is not installed: scripts/setup "
                                "installs Debian's prometheus package, which carries it")
POD = {"namespace": "ts", "pod": "triton-0"}
GATEWAY_POD = {"namespace": "ts", "pod": "gateway-0"}


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    from toneserve.triton import EmbeddedTriton, TritonPorts, free_port

    # A Triton of its own: no other test's calls may show in its counters while the idle ratio is read.
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    with EmbeddedTriton(repository, ports, log_path=tmp_path_factory.mktemp("triton") / "triton.log") as server:
        yield server


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def test_every_series_the_rules_read_is_in_tritons_metrics(triton, models):
    text = _scrape(f"http://{triton.host}:{triton.ports.metrics}/metrics")
    for series in a.TRITON_SERIES:
        for model in a.served_models(models):
            assert f'{series}{{model="{model}",version="1"}}' in text, f"{series} of {model} missing:\n{text}"
        assert series in "\n".join(rule["expr"] for rule in a.rule_groups(models)["groups"][0]["rules"])


@pytest.fixture(scope="module")
def models(models_root):
    from toneserve.model_repository.catalog import describe
    return describe(models_root)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """The gateway's certificate and key (a day's validity, for 127.0.0.1)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def gateway(triton, certificate, tmp_path_factory):
    """A gateway serving TLS, as in a cluster: it exports the certificate's expiry the alerts read."""
    cert, key = certificate
    with gateway_process(triton.grpc_url, tmp_path_factory.mktemp("gateway") / "gateway.log", "--tls-cert", str(cert),
                         "--tls-key", str(key), root_certificates=cert.read_bytes()) as process:
        yield process


@pytest.fixture(scope="module")
def prometheus(triton, gateway, models, tmp_path_factory):
    from toneserve.triton import free_port

    folder = tmp_path_factory.mktemp("prometheus")
    # A 5 s rate window over 1 s scrapes: the same rules as the cluster's, on a test's time scale.
    (folder / "rules.yml").write_text(yaml.safe_dump(a.rule_groups(models, window="5s"), sort_keys=False))
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["rules.yml"],
        # The labels a PodMonitor would attach in a cluster, which the rules group by.
        "scrape_configs": [{"job_name": "triton", "static_configs": [
            {"targets": [f"{triton.host}:{triton.ports.metrics}"], "labels": POD}]},
            {"job_name": "gateway", "static_configs": [
                {"targets": [urllib.parse.urlsplit(gateway.metrics).netloc], "labels": GATEWAY_POD}]}]}))
    port = free_port()
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"prometheus exited with {process.returncode}:\n{log.read_text()}"
            try:
                if "Ready" in _scrape(f"{url}/-/ready"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready after 30 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ratio(prometheus: str) -> float | None:
    query = urllib.parse.urlencode({"query": a.RATIO})
    result = json.loads(_scrape(f"{prometheus}/api/v1/query?{query}"))["data"]["result"]
    if not result:
        return None
    (sample,) = result
    assert sample["metric"] == {"__name__": a.RATIO, **POD}
    return float(sample["value"][1])


def _wait_for(prometheus: str, accept, seconds: float) -> list[float | None]:
    """The ratio read each 0.5 s until `accept` takes one (or `seconds` pass): every value read."""
    seen: list[float | None] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(_ratio(prometheus))
        if accept(seen[-1]):
            break
        time.sleep(0.5)
    return seen


def _load(triton, stop: threading.Event, errors: list) -> None:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from toneserve.samples import speechlike

    wav = speechlike(2.0)[None, :].astype(np.float32)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        while not stop.is_set():
            inputs = [grpcclient.InferInput(WAV, list(wav.shape), "FP32"),
                      grpcclient.InferInput(WAV_LENS, [1, 1], "INT64")]
            inputs[0].set_data_from_numpy(wav)
            inputs[1].set_data_from_numpy(np.array([[wav.shape[1]]], np.int64))
            client.infer(EMOTION, inputs, client_timeout=30)
    except Exception as error:  # reported by the test, not lost in a thread
        errors.append(error)
    finally:
        client.close()


def test_the_recorded_ratio_is_zero_idle_and_above_zero_under_load(triton, prometheus):
    idle = _wait_for(prometheus, lambda value: value is not None, 20)
    assert idle[-1] == 0.0, f"idle Triton: the ratio must be 0 (not NaN, not absent); read {idle}"

    stop, errors = threading.Event(), []
    # More concurrent calls than the models have instances: requests queue, and the batcher waits for them.
    threads = [threading.Thread(target=_load, args=(triton, stop, errors)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        busy = _wait_for(prometheus, lambda value: bool(value) or bool(errors), 25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert busy[-1] is not None and busy[-1] > 0, f"under load the ratio must rise above 0; read {busy}"

    # Once the calls stop and leave the rate window, it is 0 again, not NaN.
    after = _wait_for(prometheus, lambda value: value == 0.0, 20)
    assert after[-1] == 0.0, f"after the load the ratio must return to 0; read {after}"


def _query(prometheus: str, query: str) -> list[dict]:
    """The query's result; a query Prometheus cannot parse fails the test with Prometheus's own error."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        reply = json.loads(_scrape(url))
    except urllib.error.HTTPError as error:
        pytest.fail(f"{query!r}: {error.read().decode()}")
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def _names(expr: str) -> set[str]:
    """The series an expression reads: the names of the gateway's, Triton's, the rules' and kube-state-metrics'."""
    return set(re.findall(r"\b((?:toneserve|nv|kube)_[a-z_]+|toneserve:[a-z_:]+)\b", expr))


def test_the_packs_queries_parse_and_read_series_that_exist(prometheus, gateway, certificate):
    """Every dashboard panel's and alert's PromQL, as Grafana and Prometheus run it (the namespace variable and
    the rate interval filled in): Prometheus parses it, and each series it reads is exported by the real gateway
    or Triton or recorded by the rules, except kube-state-metrics' (named in observability.KUBE_STATE_METRICS).
    The certificate gauge is the served certificate's notAfter: in the future, within the test certificate's day."""
    from toneserve.client.sdk import Client
    from toneserve.samples import call, wav_bytes

    with Client(gateway.address, ca_cert=certificate[0]) as client:  # the request counters and latency get series
        recording = call(4.0, seed=3)
        client.analyze(wav_bytes(recording.samples, recording.rate))
    panels = [t["expr"] for p in o.dashboard()["panels"] for t in p["targets"]]
    alerts = [r["expr"] for r in o.alert_rules()]
    exempt = set(o.KUBE_STATE_METRICS)
    deadline = time.monotonic() + 20
    for expr in panels + alerts:
        _query(prometheus, expr.replace("$namespace", POD["namespace"]).replace("$__rate_interval", "5s"))
        for name in _names(expr) - exempt:
            while not _query(prometheus, f'count({{__name__="{name}"}})'):
                assert time.monotonic() < deadline, f"{name} (read by {expr!r}) is in no scraped series"
                time.sleep(0.5)
    assert {n for e in panels + alerts for n in _names(e)} & set(o.KUBE_STATE_METRICS) == set(o.KUBE_STATE_METRICS)
    (expiry,) = _query(prometheus, f"{o.CERT_EXPIRY} - time()")
    assert 0 < float(expiry["value"][1]) <= 86400 + 60, expiry


def _adapter_query(template: str, series: str, namespace: str, pods: list[str]) -> str:
    """A metricsQuery as prometheus-adapter fills it in for a pods metric of one namespace (its Go template
    fields: the series, the label matchers of the namespace and the pods, the labels to group by)."""
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    return (template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


def test_the_adapters_rules_serve_the_hpas_metrics(prometheus, gateway):
    """The committed values file's rules against the real Prometheus: each seriesQuery finds the series, and
    its metricsQuery, filled in as the adapter does for the HPA's pods, returns one number per pod."""
    from tests.support import ROOT

    values = yaml.safe_load((ROOT / "deploy" / "k8s" / o.MONITORING / "prometheus-adapter-values.yaml").read_text())
    pods = {a.RATIO: POD, a.IN_FLIGHT_METRIC: GATEWAY_POD}
    served = set()
    for rule in values["rules"]["custom"]:
        url = f"{prometheus}/api/v1/series?{urllib.parse.urlencode({'match[]': rule['seriesQuery']})}"
        deadline = time.monotonic() + 20
        while not (found := json.loads(_scrape(url))["data"]):
            assert time.monotonic() < deadline, f"no series for {rule['seriesQuery']}"
            time.sleep(0.5)
        (name,) = {s["__name__"] for s in found}
        assert re.fullmatch(rule["name"]["matches"], name)
        labels = pods[name]
        assert {(s["namespace"], s["pod"]) for s in found} == {(labels["namespace"], labels["pod"])}
        result = _query(prometheus, _adapter_query(rule["metricsQuery"], name, labels["namespace"], [labels["pod"]]))
        assert [r["metric"] for r in result] == [{"pod": labels["pod"]}], result
        float(result[0]["value"][1])
        served.add(re.sub(rule["name"]["matches"], rule["name"]["as"], name))
    assert served == {a.RATIO_METRIC, a.IN_FLIGHT_METRIC}
