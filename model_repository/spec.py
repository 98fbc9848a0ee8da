"""The description of a served model: written once, rendered per profile.

A description says what a model computes and how it is batched; it knows
nothing about Triton's config syntax. `render.py` turns it into a
`ModelConfig` protobuf for the `cpu` or the `gpu` profile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy dtype name ("float32", "int64") or "bytes"
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable
    # Variable-length input the dynamic batcher may merge across requests
    # (the cpu runners pad it; see runners/batch_io.py).
    ragged: bool = False
    # Lengths travel as [B, 1] on the wire but the ONNX graph takes [B].
    is_length: bool = False
    # Class names of a classification output, in index order: Triton's classification
    # extension (class_count on a request) then answers "score:index:label".
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batching:
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0


@dataclass(frozen=True)
class OnnxModel:
    """One graph, served by ONNX Runtime or (cpu profile) OpenVINO."""

    name: str
    # The ONNX graph, or (runtime "openvino") an OpenVINO IR: the .xml, its .bin beside it.
    onnx_file: Path
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batching: Batching
    instances: int = 1
    # cpu profile: runs of a batch that compute at once inside one instance (OpenVINO streams, or ONNX Runtime
    # runs on threads of one session), sharing its one copy of the weights; the gpu profile's onnxruntime
    # backend runs that many more instances instead.
    streams: int = 1
    # output name -> (lengths output name, axis): a variable-length output is
    # cut back to each item's own length before it is returned, so batching
    # never changes what a request sees.
    trim: dict[str, tuple[str, int]] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    # One request's worth of inputs (no batch dimension) that Triton runs at load time,
    # so the first real request does not pay for lazy initialisation.
    warmup: dict[str, np.ndarray] = field(default_factory=dict)
    # cpu profile: CPU cores one execution holds (its threads, times its streams) from Triton's rate
    # limiter resource contract.CORES, of which the server has as many as the machine (toneserve/triton.py);
    # 0: not rate limited.
    cores: int = 0
    # What runs the graph in the cpu profile: "onnxruntime" or "openvino" (runners/openvino_runner.py).
    # The gpu profile always serves the ONNX graph on Triton's onnxruntime backend.
    runtime: str = "onnxruntime"
    # What the runtime computes in: "fp32", "bf16" (OpenVINO's bf16 inference precision on the fp32
    # graph), "int8" (a quantized graph), "int8w" / "int8w-bf16" (an IR with int8 weights, f32 / bf16
    # activations) or "fp16" (the gpu profile's graph).
    precision: str = "fp32"


@dataclass(frozen=True)
class PythonModel:
    """A model whose logic is Python code (numpy) run by Triton's Python backend."""

    name: str
    source: Path  # becomes <version>/model.py
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batching: Batching
    instances: int = 1
    files: tuple[Path, ...] = ()  # copied next to model.py
    parameters: dict[str, str] = field(default_factory=dict)
    warmup: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    model: str
    input_map: dict[str, str]  # step model input -> ensemble tensor
    output_map: dict[str, str]  # step model output -> ensemble tensor


@dataclass(frozen=True)
class Ensemble:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[Step, ...]
    max_batch_size: int
    parameters: dict[str, str] = field(default_factory=dict)


Model = OnnxModel | PythonModel | Ensemble
