"""Writing export artifacts safely, and describing them in manifests.

Shared by every exporter: a file is either complete or absent (temp file in the
same folder, fsync, rename), and manifests carry hashes and tool versions.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the serving container may run as another user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def versions(packages: tuple[str, ...] = ("torch", "funasr", "onnx", "onnxruntime")) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def check_graph_io(path: Path, graph: dict, family: str) -> None:
    """RuntimeError unless the ONNX graph at `path` has the inputs and outputs (names, dtypes, ranks) that the
    manifest's `graph` entry declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = {1: "float32", 7: "int64"}
    for declared, actual in ((graph["inputs"], model.graph.input), (graph["outputs"], model.graph.output)):
        got = [(a.name, types.get(a.type.tensor_type.elem_type, str(a.type.tensor_type.elem_type)),
                len(a.type.tensor_type.shape.dim)) for a in actual]
        want = [(d["name"], d["dtype"], len(d["shape"])) for d in declared]
        if got != want:
            raise RuntimeError(f"{family} graph IO {got} differs from the manifest's {want}")
