"""scripts/setup's Debian step, run with stand-in id, sudo, apt-get and systemctl on PATH: as root it calls
apt-get itself; as a user through sudo, whose default env_reset drops the caller's environment, so the
noninteractive frontend must reach apt-get some other way than a variable set in front of sudo."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "env", "cat", "sha256sum", "cut", "dirname", "grep", "ldconfig", "pgrep")
# What the images' tests need (tests/deploy/test_images.py), present unless a test says otherwise.
IMAGES = ("buildah", "debootstrap")


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def _run(tmp_path: Path, uid: int, present: tuple[str, ...] = ()) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:  # commands already installed
        _script(bin_dir / name, "exit 0")
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not installed")
        (bin_dir / tool).symlink_to(found)
    log = tmp_path / "calls.log"
    _script(bin_dir / "id", f"echo {uid}")
    # sudo's default env_reset: the command runs with a clean environment (PATH kept here)
    _script(bin_dir / "sudo", 'echo "sudo $*" >> ' + str(log) + '\nexec env -i PATH="$PATH" "$@"')
    _script(bin_dir / "apt-get", 'echo "apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}" >> ' + str(log))
    _script(bin_dir / "systemctl", 'echo "systemctl $*" >> ' + str(log))
    # an environment already current, so the script stops after its Debian step
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _script(venv / "bin" / "python", "exit 0")
    # the stamp the script writes: what it installs from, and the script itself
    want = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in (
        "requirements.txt", "pyproject.toml", "deploy/lint/requirements.txt", "scripts/setup")))
    (venv / ".toneserve-requirements").write_text(want.hexdigest() + "\n")
    env = {"PATH": str(bin_dir), "TONESERVE_VENV": str(venv), "PYTHON": sys.executable, "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is current" in proc.stdout, proc.stdout  # it stopped after its Debian step: nothing else ran
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("uid", [0, 1000], ids=["root", "sudo"])
def test_prometheus_installed_noninteractively(tmp_path, uid):
    calls = _run(tmp_path, uid)
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    assert " prometheus " in installs[0] + " "
    assert installs[0].endswith("DEBIAN_FRONTEND=noninteractive"), installs[0]
    assert any(c.startswith("sudo ") for c in calls) == (uid != 0), calls


def test_nothing_installed_when_present(tmp_path):
    calls = _run(tmp_path, 1000, present=("promtool", "prometheus"))
    assert not [c for c in calls if "prometheus" in c], calls


def test_chromium_installed_for_the_playground_test(tmp_path):
    """Headless Chromium and its driver (tests/stack/test_playground.py), in the same noninteractive install."""
    calls = _run(tmp_path, 0, present=("promtool", "prometheus"))
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    assert " chromium chromium-driver " in installs[0] + " ", installs[0]
    assert installs[0].endswith("DEBIAN_FRONTEND=noninteractive"), installs[0]


def test_chromium_not_installed_when_present(tmp_path):
    calls = _run(tmp_path, 0, present=("promtool", "prometheus", "chromium", "chromedriver", "redis-server", *IMAGES))
    assert not [c for c in calls if c.startswith("apt-get")], calls


def test_redis_server_installed_for_the_quota_store_tests(tmp_path):
    """redis-server (the shared quota store's tests start their own), in the same noninteractive install."""
    calls = _run(tmp_path, 0, present=("promtool", "prometheus", "chromium", "chromedriver", *IMAGES))
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    assert installs[0].split()[-2] == "redis-server", installs[0]
    assert installs[0].endswith("DEBIAN_FRONTEND=noninteractive"), installs[0]


def test_redis_server_not_installed_when_present(tmp_path):
    calls = _run(tmp_path, 0, present=("redis-server",))
    assert not [c for c in calls if "redis" in c], calls


def test_buildah_installed_for_the_images_tests(tmp_path):
    """buildah (tests/deploy/test_images.py builds the Dockerfiles with it), in the same noninteractive install."""
    calls = _run(tmp_path, 0, present=("promtool", "prometheus", "chromium", "chromedriver", "redis-server",
                                       "debootstrap"))
    installs = [c for c in calls if c.startswith("apt-get install")]
    assert len(installs) == 1, calls
    assert installs[0].split()[-2] == "buildah", installs[0]
    assert installs[0].endswith("DEBIAN_FRONTEND=noninteractive"), installs[0]
