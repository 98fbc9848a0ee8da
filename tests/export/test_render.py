"""Rendered configs: valid ModelConfig protobufs for both profiles, consistent ensembles."""
from __future__ import annotations

import ast
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toneserve import contract
from toneserve.model_repository.catalog import describe
from toneserve.model_repository.render import PROFILES, model_config, render_repository


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_config_parses_as_a_model_config(models_root, tmp_path, profile):
    repo = render_repository(describe(models_root), profile, tmp_path / profile)
    # Readable by a Triton running as another user (the images' uid 1000 on a bind-mounted repository).
    assert repo.stat().st_mode & 0o777 == 0o755
    configs = sorted(repo.glob("*/config.pbtxt"))
    assert {c.parent.name for c in configs} == {"emotion", "emotion2vec", "asr", "vad",
                                                "sensevoice_frontend", "sensevoice_encoder", "sensevoice_decoder",
                                                "speaker", "speaker_encoder", "text_sentiment",
                                                "text_sentiment_tokenizer", "text_sentiment_classifier"}
    for path in configs:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        assert config.name == path.parent.name
        if config.platform != "ensemble":
            assert config.dynamic_batching.max_queue_delay_microseconds > 0
            assert (path.parent / "1" / "model.py").is_file() or (path.parent / "1" / "model.onnx").is_file()
        assert not any(p.is_symlink() for p in path.parent.rglob("*"))


# What the Triton Python backend environment provides besides the standard library.
RUNTIME_MODULES = {"numpy", "onnxruntime", "openvino", "sentencepiece", "tokenizers", "triton_python_backend_utils"}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_model_py_finds_the_runner_files_it_imports_beside_it(models_root, tmp_path, profile):
    """Runners are copied flat: whatever a model.py (or a file it imports) imports by plain name must have
    been copied into the same version folder, runner_errors.py included."""
    repo = render_repository(describe(models_root), profile, tmp_path / profile)
    runners = sorted(repo.glob("*/1/model.py"))
    python_backend = {"sensevoice_decoder", "vad", "text_sentiment_tokenizer"}
    if profile == "cpu":  # graphs run in the onnx_runner or openvino_runner there
        python_backend |= {"emotion2vec", "sensevoice_frontend", "sensevoice_encoder", "speaker_encoder",
                           "text_sentiment_classifier"}
    assert {p.parent.parent.name for p in runners} == python_backend
    for model_py in runners:
        folder = model_py.parent
        assert (folder / "runner_errors.py").is_file(), folder
        pending, seen = [model_py], set()
        while pending:
            path = pending.pop()
            seen.add(path)
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for name in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - RUNTIME_MODULES:
                    sibling = folder / f"{name}.py"
                    assert sibling.is_file(), f"{path} imports {name}, which is not copied beside it"
                    if sibling not in seen:
                        pending.append(sibling)


def test_profiles_differ_where_they_should(models_root):
    models = {m.name: m for m in describe(models_root)}
    cpu, gpu = model_config(models["emotion2vec"], "cpu"), model_config(models["emotion2vec"], "gpu")
    assert cpu.backend == "python" and cpu.input[0].allow_ragged_batch
    assert gpu.backend == "onnxruntime" and not gpu.input[0].allow_ragged_batch
    assert gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert model_config(models["sensevoice_decoder"], "gpu").backend == "python"
    # The ensembles differ only in what their metadata says ran the heavy model: the gpu profile's
    # onnxruntime backend, whatever the cpu profile chose.
    asr_gpu, asr_cpu = model_config(models["asr"], "gpu"), model_config(models["asr"], "cpu")
    assert asr_gpu.parameters[contract.RUNTIME].string_value == "onnxruntime"
    assert asr_cpu.parameters[contract.RUNTIME].string_value == models["sensevoice_encoder"].runtime
    del asr_gpu.parameters[contract.RUNTIME], asr_cpu.parameters[contract.RUNTIME]
    assert asr_gpu == asr_cpu


def test_warmup_samples_and_label_files_are_complete(models_root, tmp_path):
    repo = render_repository(describe(models_root), "cpu", tmp_path / "cpu")
    sizes = {mc.TYPE_FP32: 4, mc.TYPE_INT64: 8}
    warmed = set()
    for path in repo.glob("*/config.pbtxt"):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        for sample in config.model_warmup:
            for name, tensor in sample.inputs.items():
                data = path.parent / "warmup" / tensor.input_data_file
                assert data.stat().st_size == sizes[tensor.data_type] * int(np.prod(tensor.dims)), (config.name, name)
            assert set(sample.inputs) == {i.name for i in config.input}
            warmed.add(config.name)
        for output in config.output:
            if output.label_filename:
                labels = (path.parent / output.label_filename).read_text().split()
                assert len(labels) == output.dims[0], (config.name, output.name)
    # The tokenizer takes text: Triton's warm-up files for strings are left out (it loads no graph lazily).
    assert warmed == {"emotion2vec", "sensevoice_frontend", "sensevoice_encoder", "sensevoice_decoder",
                      "vad", "speaker_encoder", "text_sentiment_classifier"}


def test_shared_cores_render_a_rate_limiter_and_the_launcher_provides_the_pool(models_root, tmp_path):
    """With share_cores, each heavy cpu execution takes its threads' worth (threads per stream times streams)
    of the `cpu_cores` resource, and EmbeddedTriton turns the rate limiter on with a pool of this machine's
    cores; without it (and on the gpu profile) nothing is rate limited."""
    import os

    from toneserve.contract import CORES
    from toneserve.model_repository.catalog import DEFAULT_TUNING
    from toneserve.triton import EmbeddedTriton

    shared = DEFAULT_TUNING.changed(share_cores=True, threads=1, streams=2)
    limited = {}
    for profile, tuning in (("cpu", shared), ("cpu", DEFAULT_TUNING), ("gpu", shared)):
        repo = render_repository(describe(models_root, tuning=tuning), profile, tmp_path / f"{profile}{len(limited)}")
        for path in repo.glob("*/config.pbtxt"):
            for group in text_format.Parse(path.read_text(), mc.ModelConfig()).instance_group:
                for resource in group.rate_limiter.resources:
                    assert (resource.name, resource.count, getattr(resource, "global")) == (CORES, 2, True)
                    limited.setdefault(repo, set()).add(path.parent.name)
        flags = EmbeddedTriton(repo)._rate_limit()
        if repo in limited:
            pool = max(2, len(os.sched_getaffinity(0)))
            assert flags == ["--rate-limit=execution_count", f"--rate-limit-resource={CORES}:{pool}"]
        else:
            assert flags == [], profile
    # The cpu profile with sharing only; the heavy models.
    assert list(limited.values()) == [{"emotion2vec", "sensevoice_encoder", "text_sentiment_classifier"}]


def test_scheduling_flags_below_one_are_refused_before_any_work(capsys):
    """--instances, --streams, --threads and --max-batch-size of 0 would render a repository Triton cannot run
    (no instance) or a runner without a stream: refused at once, in one line (export tier: the command loads
    the exporter)."""
    from toneserve.cli import main

    for flag in ("--instances", "--streams", "--threads", "--max-batch-size"):
        assert main(["export", "--size", "tiny", flag, "0"]) == 2
        assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err
