"""Render model descriptions (spec.py) into a Triton model repository.

Each config is built as a `ModelConfig` protobuf (the schema Triton itself
parses) and written with protobuf's text format, so a rendered config is valid
by construction and there is no template text to patch. One description gives
both profiles:

- ``cpu``: the embedded tritonserver from the nvidia-pytriton wheel, which has
  only the Python backend. Graphs run in ONNX Runtime (runners/onnx_runner.py) or
  OpenVINO (runners/openvino_runner.py, a model whose runtime is "openvino") inside a
  generic Python-backend runner that pads ragged batches (runners/batch_io.py).
- ``gpu``: the NGC tritonserver container; ONNX graphs run on its
  ``onnxruntime`` backend on the GPU. That backend cannot pad, so variable
  length inputs batch only when their shapes are equal (the gateway buckets).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toneserve import contract
from toneserve.contract import CORES, INFERENCE_PRECISION
from toneserve.model_repository.spec import Ensemble, Model, OnnxModel, PythonModel, Tensor

PROFILES = ("cpu", "gpu")
RUNNERS = Path(__file__).parent / "runners"
ONNX_RUNNER = RUNNERS / "onnx_runner.py"
OPENVINO_RUNNER = RUNNERS / "openvino_runner.py"
RUNTIMES = ("onnxruntime", "openvino")
# Runner helpers every Python-backend model.py imports by plain name: copied beside each one. The
# contract is among them (it imports only the standard library), so the runners serve the very
# tensor names the gateway calls; batch_io (numpy) is the graph runners' shared batching.
RUNNER_HELPERS = (RUNNERS / "runner_errors.py", RUNNERS / "batch_io.py", RUNNERS / "openvino_compile.py",
                  Path(contract.__file__))
VERSION = "1"

WARMUP_DIR = "warmup"

_DTYPES = {
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
    "int64": mc.TYPE_INT64,
    "int32": mc.TYPE_INT32,
    "bool": mc.TYPE_BOOL,
    "bytes": mc.TYPE_STRING,
}


def labels_file(tensor: Tensor) -> str:
    return f"{tensor.name}.labels.txt"


def _io(message_type, tensor: Tensor, ragged_ok: bool):
    io = message_type(name=tensor.name, data_type=_DTYPES[tensor.dtype], dims=list(tensor.dims))
    if tensor.labels and message_type is mc.ModelOutput:
        io.label_filename = labels_file(tensor)
    if tensor.is_length:
        io.reshape.shape[:] = []  # [B, 1] on the wire, [B] in the graph
        io.reshape.SetInParent()
    if ragged_ok and tensor.ragged and message_type is mc.ModelInput:
        io.allow_ragged_batch = True
    return io


def _parameters(config: mc.ModelConfig, parameters: dict[str, str]) -> None:
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = value


def model_config(model: Model, profile: str) -> mc.ModelConfig:
    """The Triton configuration of one model for one profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    config = mc.ModelConfig(name=model.name)
    if isinstance(model, Ensemble):
        config.platform = "ensemble"
        config.max_batch_size = model.max_batch_size
        config.input.extend(_io(mc.ModelInput, t, False) for t in model.inputs)
        config.output.extend(_io(mc.ModelOutput, t, False) for t in model.outputs)
        for step in model.steps:
            config.ensemble_scheduling.step.add(
                model_name=step.model, model_version=-1,
                input_map=step.input_map, output_map=step.output_map)
        parameters = dict(model.parameters)
        if profile == "gpu" and contract.RUNTIME in parameters:
            # The gpu profile serves every graph on Triton's onnxruntime backend, whatever the cpu chose.
            parameters[contract.RUNTIME] = "onnxruntime"
        _parameters(config, parameters)
        return config

    python_backend = isinstance(model, PythonModel) or profile == "cpu"
    config.backend = "python" if python_backend else "onnxruntime"
    config.max_batch_size = model.batching.max_batch_size
    config.input.extend(_io(mc.ModelInput, t, python_backend) for t in model.inputs)
    config.output.extend(_io(mc.ModelOutput, t, python_backend) for t in model.outputs)
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(model.batching.preferred_batch_sizes)
    batching.max_queue_delay_microseconds = model.batching.max_queue_delay_us
    if model.warmup:
        by_name = {t.name: t for t in model.inputs}
        sample = config.model_warmup.add(name="one_request", batch_size=1)
        for name, array in model.warmup.items():
            if array.dtype != np.dtype(by_name[name].dtype):
                raise ValueError(f"{model.name}: warmup {name} is {array.dtype}, the input is {by_name[name].dtype}")
            sample.inputs[name].data_type = _DTYPES[by_name[name].dtype]
            sample.inputs[name].dims.extend(array.shape)
            sample.inputs[name].input_data_file = name
    on_gpu = profile == "gpu" and isinstance(model, OnnxModel)
    streams = getattr(model, "streams", 1)
    group = config.instance_group.add(count=model.instances * (streams if on_gpu else 1),
                                      kind=mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU)
    if profile == "cpu" and getattr(model, "cores", 0):
        resource = group.rate_limiter.resources.add(name=CORES, count=model.cores)
        setattr(resource, "global", True)  # one pool of cores for the machine ("global" is a Python keyword)
    parameters = dict(model.parameters)
    if isinstance(model, OnnxModel):
        if model.runtime not in RUNTIMES:
            raise ValueError(f"{model.name}: unknown runtime {model.runtime!r}; expected one of {RUNTIMES}")
        if profile == "gpu" and _is_ir(model):
            raise ValueError(f"{model.name}: the gpu profile serves ONNX graphs, not the OpenVINO IR {model.onnx_file}")
        if python_backend and streams > 1:
            parameters[contract.STREAMS] = str(streams)
        if python_backend and _openvino(model, profile):
            parameters["graph_file"] = _graph_name(model)
            parameters.setdefault("inference_precision", INFERENCE_PRECISION[model.precision])
            parameters["trim"] = json.dumps({k: list(v) for k, v in model.trim.items()}, sort_keys=True)
        elif python_backend:
            parameters["onnx_file"] = "model.onnx"
            parameters["trim"] = json.dumps({k: list(v) for k, v in model.trim.items()}, sort_keys=True)
        else:
            config.default_model_filename = "model.onnx"
    _parameters(config, parameters)
    return config


def _is_ir(model: OnnxModel) -> bool:
    return model.onnx_file.suffix == ".xml"


def _openvino(model: OnnxModel, profile: str) -> bool:
    """Whether `model` runs in OpenVINO: its runtime says so, and only in the cpu profile."""
    return profile == "cpu" and model.runtime == "openvino"


def _graph_name(model: OnnxModel) -> str:
    """The graph's file name in the version folder."""
    return "model.xml" if _is_ir(model) else "model.onnx"


def validate(models: list[Model]) -> None:
    """Checks that need the whole set: names unique, ensemble steps exist and batch consistently."""
    by_name: dict[str, Model] = {}
    for model in models:
        if model.name in by_name:
            raise ValueError(f"model {model.name!r} described twice")
        by_name[model.name] = model
    for model in models:
        if not isinstance(model, Ensemble):
            continue
        for step in model.steps:
            target = by_name.get(step.model)
            if target is None:
                raise ValueError(f"ensemble {model.name!r} uses unknown model {step.model!r}")
            names_in = {t.name for t in target.inputs}
            names_out = {t.name for t in target.outputs}
            if not set(step.input_map) <= names_in or not set(step.output_map) <= names_out:
                raise ValueError(f"ensemble {model.name!r}: step {step.model!r} maps tensors the model lacks")
            limit = target.max_batch_size if isinstance(target, Ensemble) else target.batching.max_batch_size
            if limit < model.max_batch_size:
                raise ValueError(
                    f"ensemble {model.name!r} max_batch_size {model.max_batch_size} exceeds "
                    f"{step.model!r}'s {limit}")


def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (big ONNX files), copy otherwise; never a symlink."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def render_repository(models: list[Model], profile: str, out_dir: Path) -> Path:
    """Write the whole repository for `profile` to `out_dir`, replacing it atomically."""
    validate(models)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: a Triton running as another user (an image) could not read it
    try:
        for model in models:
            model_dir = staging / model.name
            version_dir = model_dir / VERSION
            version_dir.mkdir(parents=True)
            config = model_config(model, profile)
            (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
            for tensor in model.outputs:
                if tensor.labels:
                    (model_dir / labels_file(tensor)).write_text("\n".join(tensor.labels) + "\n")
            warmup = getattr(model, "warmup", {})
            if warmup:
                (model_dir / WARMUP_DIR).mkdir()
                for name, array in warmup.items():  # raw row-major bytes, as Triton reads them
                    (model_dir / WARMUP_DIR / name).write_bytes(np.ascontiguousarray(array).tobytes())
            runner = None
            if isinstance(model, OnnxModel):
                _place(model.onnx_file, version_dir / _graph_name(model))
                if _is_ir(model):  # an IR's weights: model.bin beside model.xml, as read_model expects
                    _place(model.onnx_file.with_suffix(".bin"), version_dir / "model.bin")
                if profile == "cpu":
                    runner = OPENVINO_RUNNER if _openvino(model, profile) else ONNX_RUNNER
            elif isinstance(model, PythonModel):
                runner = model.source
                for extra in model.files:
                    _place(extra, version_dir / extra.name)
            if runner is not None:
                shutil.copy2(runner, version_dir / "model.py")
                for helper in RUNNER_HELPERS:
                    shutil.copy2(helper, version_dir / helper.name)
            # An ensemble keeps its empty version folder: Triton requires one.
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
