"""A real Prometheus scrapes a real embedded Triton with the autoscaling rules (kube/autoscaling.py): the
series the rules read exist, and the recorded queue-to-compute ratio is 0 idle and above 0 under load."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from toneserve.contract import EMOTION, WAV, WAV_LENS
from toneserve.kube import autoscaling as a

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server is not installed: scripts/setup "
                                "installs Debian's prometheus package, which carries it")
POD = {"namespace": "ts", "pod": "triton-0"}


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
def prometheus(triton, models, tmp_path_factory):
    from toneserve.triton import free_port

    folder = tmp_path_factory.mktemp("prometheus")
    # A 5 s rate window over 1 s scrapes: the same rules as the cluster's, on a test's time scale.
    (folder / "rules.yml").write_text(yaml.safe_dump(a.rule_groups(models, window="5s"), sort_keys=False))
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["rules.yml"],
        # The labels a PodMonitor would attach in a cluster, which the rules group by.
        "scrape_configs": [{"job_name": "triton", "static_configs": [
            {"targets": [f"{triton.host}:{triton.ports.metrics}"], "labels": POD}]}]}))
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
