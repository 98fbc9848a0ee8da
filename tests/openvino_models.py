"""The tiny export with an OpenVINO entry in its manifests, for tests that serve it through OpenVINO whether
or not the export built the openvino variant: the fp32 and bf16 gates marked passed (fp32/bf16 serve the fp32
ONNX graph, so no IR is needed)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def with_openvino(models_root: Path, out: Path) -> Path:
    """`models_root` linked into `out`, each manifest given an openvino entry unless it has one."""
    import openvino as ov

    if out.is_dir():
        return out
    shutil.copytree(models_root, out, copy_function=os.link)
    for manifest_path in out.glob("*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        variants = manifest.setdefault("variants", {})
        if "openvino" not in variants:
            variants["openvino"] = {"from": "test", "files": {}, "runtime": "openvino",
                                    "openvino_version": ov.__version__,
                                    "precisions": {"fp32": {"passed": True}, "bf16": {"passed": True},
                                                   "int8": {"passed": False}}}
        manifest_path.unlink()  # a hard link to the export's file: never write through it
        manifest_path.write_text(json.dumps(manifest, indent=2))
    return out
