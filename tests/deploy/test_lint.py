"""The Dockerfiles pass hadolint and the rendered Kubernetes manifests pass checkov, with every exception justified.

Both linters live in a virtualenv of their own (.venv/lint, made by scripts/setup from deploy/lint/requirements.txt)
so that checkov's dependencies never move the project's pins. hadolint reads deploy/lint/hadolint.yaml (every
finding fails, down to "info"; an exception is an inline `# hadolint ignore=` with its reason); checkov reads
deploy/lint/checkov.yaml, whose skips each carry a reason and must each still be needed. Without the tools (or
kubectl, for rendering the overlays) these tests skip; under CI (CI=true) they fail instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / "deploy" / "lint"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
DOCKERFILES = sorted((ROOT / "deploy").glob("*/Dockerfile"))
# checkov asks a Prisma Cloud API for its guideline links unless told not to: nothing here needs it.
CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_COLOR": "TRUE"}


def _missing(reason: str):
    """A missing tool fails the run in CI, where scripts/setup installs it, and skips elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the linters must run there)", pytrace=False)
    pytest.skip(reason)


def tool(name: str) -> str:
    for candidate in (ROOT / ".venv" / "lint" / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    _missing(f"{name} is not installed (scripts/setup puts it in .venv/lint)")
    raise AssertionError("unreachable")


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), "--config", str(LINT / "hadolint.yaml"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=120)


def test_the_images_are_the_dockerfiles_linted():
    names = {path.parent.name for path in DOCKERFILES}
    assert {"gateway", "triton", "triton-cpu"} <= names, names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    done = hadolint(dockerfile)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
    # Every inline exception says why, on its own comment line above.
    for number, line in enumerate(dockerfile.read_text().splitlines(), 1):
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=DL\d{4}(,DL\d{4})*\s+\S.{10,}", line), (
                f"{dockerfile.name}:{number}: `# hadolint ignore=DLxxxx <reason>`")


def test_hadolint_catches_what_the_gateway_image_once_had(tmp_path):
    """Not vacuous: a user given by name (what deploy/gateway/Dockerfile had) and a RUN line piping without
    pipefail are findings at this threshold."""
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11.14-slim-bookworm\n"
                      "RUN ldd /usr/local/bin/python3 | grep libc\n"
                      "USER toneserve\n")
    done = hadolint(broken)
    assert done.returncode != 0
    assert "DL3066" in done.stdout and "DL4006" in done.stdout, done.stdout


def checkov_skips() -> dict[str, str]:
    """check id -> reason, from deploy/lint/checkov.yaml's `- ID  # reason` lines (and the same ids as YAML sees them)."""
    text = (LINT / "checkov.yaml").read_text()
    skips = dict(re.findall(r"^\s*-\s*(CKV\w+)\s*#\s*(.+)$", text, re.M))
    assert sorted(skips) == sorted(yaml.safe_load(text)["skip-check"]), "one skip a line, each with `# reason`"
    return skips


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Every overlay, rendered by kubectl kustomize into a file of its own."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        _missing("kubectl is not installed (it renders the overlays: `kubectl kustomize`)")
    out = tmp_path_factory.mktemp("manifests")
    overlays = sorted(path.parent for path in OVERLAYS.glob("*/kustomization.yaml"))
    assert overlays
    for overlay in overlays:
        done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{overlay.name}: {done.stderr}"
        (out / f"{overlay.name}.yaml").write_text(done.stdout)
    return out


def checkov(folder: Path, *arguments: str) -> dict:
    done = subprocess.run([tool("checkov"), "--directory", str(folder), "--framework", "kubernetes", "--output", "json",
                           "--quiet", *arguments],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **CHECKOV_ENV})
    assert done.returncode in (0, 1), done.stderr[-3000:]
    reports = json.loads(done.stdout)
    (report,) = [r for r in (reports if isinstance(reports, list) else [reports]) if r["check_type"] == "kubernetes"]
    return report


def test_the_rendered_manifests_pass_checkov(rendered):
    report = checkov(rendered, "--config-file", str(LINT / "checkov.yaml"))
    failed = [f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
              for f in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0 and report["summary"]["passed"] > 100, report["summary"]


def test_every_checkov_skip_is_justified_and_still_needed(rendered):
    """Without the skips, each skipped check fails somewhere: a skip that no longer finds anything goes."""
    skips = checkov_skips()
    for check, reason in skips.items():
        assert len(reason) > 40, f"{check}: say why ({reason!r})"
    report = checkov(rendered)
    found = {f["check_id"] for f in report["results"]["failed_checks"]}
    assert set(skips) <= found, f"skips no longer needed: {sorted(set(skips) - found)}"
    assert found <= set(skips), f"findings without a skip: {sorted(found - set(skips))}"
