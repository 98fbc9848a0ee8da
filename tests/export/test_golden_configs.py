"""The rendered config.pbtxt of every model, compared byte for byte with the committed golden files.

A change to scheduling (catalog.Tuning), to a model description (catalog.py) or to the renderer
(render.py) then shows up in review as a config diff under tests/data/golden/. When the change is
intended, regenerate the files with REGENERATE and commit them with it (tests/data/golden/README.md).
"""
from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from toneserve import paths
from toneserve.model_repository.catalog import DEFAULT_TUNING, describe
from toneserve.model_repository.render import render_repository

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
UPDATE_VARIABLE = "TONESERVE_UPDATE_GOLDEN"
REGENERATE = f"{UPDATE_VARIABLE}=1 .venv/bin/python -m pytest tests/export/test_golden_configs.py"
CONFIG = "config.pbtxt"

# What `toneserve export --size tiny` renders with its defaults: the cpu repository serves fp32,
# the gpu one fp16 (the default --variants build it). The int8 cpu repository differs from the
# fp32 one only in its precision parameter, so it is left out.
RENDERINGS = {"tiny-cpu": ("cpu", "fp32"), "tiny-gpu": ("gpu", "fp16")}


def _configs(repository: Path) -> dict[str, bytes]:
    """model name -> its config.pbtxt bytes."""
    return {path.parent.name: path.read_bytes() for path in sorted(repository.glob(f"*/{CONFIG}"))}


def _diff(name: str, model: str, golden: bytes, rendered: bytes) -> str:
    relative = f"tests/data/golden/{name}/{model}/{CONFIG}"
    lines = difflib.unified_diff(golden.decode().splitlines(keepends=True), rendered.decode().splitlines(keepends=True),
                                 fromfile=f"{relative} (golden)", tofile=f"{relative} (rendered)")
    return "".join(lines)


def _differences(name: str, golden: dict[str, bytes], rendered: dict[str, bytes]) -> list[str]:
    found = []
    if missing := sorted(rendered.keys() - golden.keys()):
        found.append(f"{name}: rendered models without a golden config: {missing}")
    if stale := sorted(golden.keys() - rendered.keys()):
        found.append(f"{name}: golden configs of models no longer rendered: {stale}")
    for model in sorted(golden.keys() & rendered.keys()):
        if golden[model] != rendered[model]:
            found.append(_diff(name, model, golden[model], rendered[model]))
    return found


def _rewrite(folder: Path, rendered: dict[str, bytes]) -> None:
    """Make `folder` hold exactly the rendered configs (and nothing else of a model's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_dir() and old.name not in rendered:
            shutil.rmtree(old)
    for model, text in rendered.items():
        (folder / model).mkdir(exist_ok=True)
        (folder / model / CONFIG).write_bytes(text)


def test_rendering_names_match_the_repositories_export_writes():
    for name, (profile, precision) in RENDERINGS.items():
        assert name == f"tiny-{paths.repository_name(profile, precision)}"


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_rendered_configs_equal_the_golden_files(models_root, tmp_path, name):
    profile, precision = RENDERINGS[name]
    repository = render_repository(describe(models_root, precision, DEFAULT_TUNING), profile, tmp_path / name)
    rendered = _configs(repository)
    assert rendered, f"nothing rendered into {repository}"
    golden = _configs(GOLDEN / name)
    differences = _differences(name, golden, rendered)
    if not differences:
        return
    if os.environ.get(UPDATE_VARIABLE) == "1":
        _rewrite(GOLDEN / name, rendered)
        # Fails even so: a run that changed the golden files is never a green run, in CI least of all.
        pytest.fail(f"{name}: rewrote the golden configs under tests/data/golden/{name}; review `git diff tests/data/golden`, "
                    f"commit it and rerun without {UPDATE_VARIABLE}.\n\n" + "\n".join(differences))
    pytest.fail(f"{name}: the rendered configs differ from the golden files. If the change is intended, "
                f"regenerate them with\n\n    {REGENERATE}\n\nand commit the diff.\n\n" + "\n".join(differences))
