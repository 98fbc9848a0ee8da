"""`toneserve pack`: a rendered model repository as one immutable artifact, named by its content.

The tarball is deterministic: members in sorted order, mtimes 0, owner root (0/0, no names), modes
0644 / 0755 (executable bits kept), gzip without a name or time. The same repository always gives
the same bytes and so the same sha256, which the Triton pods' init container checks before unpacking.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
CACHE_DIR = "ov_cache"  # model_repository/runners/openvino_runner.py's default cache folder


@dataclass(frozen=True)
class Packed:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def artifact_name(sha256: str) -> str:
    return f"repository-{sha256[:16]}.tar.gz"


def _entries(root: Path) -> list[Path]:
    """Every file and folder under `root` but compiled-model caches, sorted by their relative path; symlinks refused (a
    repository rendered by toneserve has none, and one pointing outside would not travel)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        # OpenVINO's compiled-model caches (left by serving this folder) are for the CPU that wrote them, and
        # would make the same repository pack to other bytes: each pod compiles and caches its own.
        dirnames[:] = [d for d in dirnames if d != CACHE_DIR]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                raise ValueError(f"{path}: a symbolic link; pack a repository of plain files")
            out.append(path)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _info(path: Path, root: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.relative_to(root).as_posix())
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size = path.stat().st_size
        info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
    return info


def pack(repository: Path, out_dir: Path) -> Packed:
    """Write `repository-<sha256[:16]>.tar.gz` and `<that>.sha256` (sha256sum's format) into `out_dir`."""
    repository = Path(repository)
    if not (repository.is_dir() and any(repository.glob("*/config.pbtxt"))):
        raise FileNotFoundError(f"{repository}: not a rendered model repository (no */config.pbtxt)")
    out_dir = Path(out_dir)
    if out_dir.resolve().is_relative_to(repository.resolve()):  # the tarball would pack itself
        raise ValueError(f"{out_dir}: inside the repository {repository}; write the tarball elsewhere")
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".repository.tar.gz.partial"
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for path in _entries(repository):
                        info = _info(path, repository)
                        if info.isdir():
                            tar.addfile(info)
                        else:
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sha = file_sha256(partial)
    final = out_dir / artifact_name(sha)
    os.replace(partial, final)
    Path(f"{final}.sha256").write_text(f"{sha}  {final.name}\n")
    return Packed(final, sha)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def unpack_check(artifact: Path, sha256: str, into: Path) -> None:
    """What the init container does, in Python (for tests and a local check): verify, then extract."""
    actual = file_sha256(artifact)
    if actual != sha256:
        raise ValueError(f"{artifact}: sha256 {actual}, expected {sha256}")
    with tarfile.open(artifact, "r:gz") as tar:
        tar.extractall(into, filter="data")


def kustomize_snippet(packed: Packed, url: str) -> str:
    """A pool overlay's lines that point the Triton pods at this artifact and name the pool by its digest
    (deploy/k8s/overlays/gpu-pool; kube/pools.py)."""
    from toneserve.kube.tracks import track  # no import circle: tracks does not import pack

    return ("configMapGenerator:\n- name: toneserve-repository\n  behavior: replace\n  literals:\n"
            f"  - url={url}\n  - sha256={packed.sha256}\n  - track={track(packed.sha256)}\n")
