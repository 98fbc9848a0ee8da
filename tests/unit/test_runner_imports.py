"""The runners are copied flat into the rendered repository and run inside tritonserver's Python backend:
they may import the standard library, the backend's runtime modules, one another and the helpers copied beside
them (toneserve.contract as `contract`) by plain name, nothing else (never toneserve, never torch)."""
from __future__ import annotations

import ast
import sys

from toneserve.model_repository.render import RUNNER_HELPERS, RUNNERS

RUNTIME_MODULES = {"numpy", "onnxruntime", "openvino", "sentencepiece", "tokenizers", "triton_python_backend_utils"}


def imports(path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in the file, in functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_runners_import_only_the_runtime_and_their_siblings():
    files = sorted(p for p in RUNNERS.glob("*.py") if p.name != "__init__.py")
    assert {"onnx_runner.py", "openvino_runner.py", "batch_io.py", "vad_model.py", "sensevoice_decoder.py",
            "runner_errors.py"} <= {p.name for p in files}
    # Siblings, and the helpers the renderer copies beside every runner (the contract among them).
    allowed = set(sys.stdlib_module_names) | RUNTIME_MODULES | {p.stem for p in files} | {p.stem for p in RUNNER_HELPERS}
    for path in files:
        for module, level in imports(path):
            assert level == 0, f"{path.name}: relative import of {module!r} (runners are copied flat)"
            assert module.split(".")[0] in allowed, f"{path.name} imports {module!r}"


def test_the_copied_helpers_import_only_the_standard_library():
    """They run inside tritonserver beside the runners: nothing of toneserve, no third-party module but numpy
    (which the Python backend itself needs), and one another by plain name."""
    helpers = {p.stem for p in RUNNER_HELPERS}
    for path in RUNNER_HELPERS:
        for module, level in imports(path):
            top = module.split(".")[0]
            assert level == 0 and (top in sys.stdlib_module_names | helpers
                                   or top in ("numpy", "triton_python_backend_utils")), \
                f"{path.name} imports {module!r}"
