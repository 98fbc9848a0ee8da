"""Each part installs and runs on its own: pyproject.toml's extras against what each part imports, and
fresh virtualenvs holding one extra each, run for real.

- static (fast): every third-party module a part imports comes with that part's extra; the modules
  `toneserve` looks up before a subcommand runs come with the extra it names; a missing extra is one
  line naming it (exit 2), while a missing toneserve module or a bug keeps its traceback;
- `client`: `pip install ".[client]"` into a fresh virtualenv gives `toneserve analyze` / `stream`
  and the SDK without torch, FunASR, ONNX, ONNX Runtime, Locust or pytriton, and analyses a call
  through a running gateway; the other subcommands name the extra they need;
- `gateway`: the files deploy/gateway/Dockerfile COPYs, installed by the Dockerfile's own pip
  commands into a fresh virtualenv: no export side installed, no export/ or loadtest/ code there,
  and its `toneserve gateway` serves a call against a real Triton.

The virtualenvs install from the package index (versions pinned by requirements.txt); pip's cache
makes a second run quick. Without a reachable index those two tests skip and say so.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT, gateway_process, stop_stack, wait_for_health
from toneserve.model_repository.render import RUNNER_HELPERS, RUNNERS

PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "requirements.txt"
GATEWAY_DOCKERFILE = ROOT / "deploy" / "gateway" / "Dockerfile"
# The export side and the load tests: never in a client install.
NOT_IN_CLIENT = ("torch", "funasr", "onnx", "onnxruntime", "locust", "nvidia-pytriton")
NOT_IN_GATEWAY = ("torch", "funasr", "onnx", "onnxruntime", "modelscope")

# Which extra brings the third-party imports of each part of the tree (paths relative to the root).
PART_EXTRAS = {
    "client": "client",
    "gateway": "gateway",
    "gateway/lexicon.py": "lexicon",  # --text-sentiment lexicon only
    "export": "export",
    "model_repository": "export",  # rendering (tritonclient's ModelConfig) and the load bench
    "model_repository/runners": "serve",  # imported inside tritonserver, from the serving environment
    "loadtest": "loadtest",
    "kube": "kube",  # the Kubernetes manifests and the repository tarball
    "toneserve/samples.py": "export",  # synthetic audio: export's parity inputs, the demo, the load tests
    "toneserve/triton.py": "serve",
    "toneserve": None,  # the core: cli, contract, console, paths, the generated gRPC code
}
# Imported, but provided by something other than a package index.
NOT_FROM_AN_INDEX = {
    "triton_python_backend_utils": "tritonserver's Python backend provides it to the runners",
    "tensorrt": "TensorRT plans are built on a GPU host, whose TensorRT comes with its CUDA stack",
}


# --------------------------------------------------------------------------- what the extras hold

def _extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def _core() -> list[str]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]


@cache
def _requires(name: str, extras: frozenset[str]) -> frozenset[str]:
    """Distributions `name[extras]` pulls in, from the installed metadata (this environment holds the
    whole pinned tree)."""
    out = set()
    try:
        texts = metadata.requires(name) or []
    except metadata.PackageNotFoundError:  # not installed here: what it pulls in is unknown, not asserted
        return frozenset()
    for text in texts:
        requirement = Requirement(text)
        environments = [{"extra": extra} for extra in extras | {""}]
        if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
            continue
        out.add(canonicalize_name(requirement.name))
        out |= _requires(requirement.name, frozenset(requirement.extras))
    return frozenset(out)


def closure(*extras: str) -> set[str]:
    """Every distribution that `pip install "toneserve[EXTRAS]"` installs."""
    found: set[str] = set()
    texts = list(_core())
    for extra in extras:
        texts += _extras()[extra]
    for text in texts:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "toneserve":
            found |= closure(*requirement.extras)
            continue
        found.add(canonicalize_name(requirement.name))
        found |= _requires(requirement.name, frozenset(requirement.extras))
    return found


@cache
def providers(module: str) -> set[str]:
    """The installed distributions that provide the top-level module `module`."""
    found = {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}
    spec = None if found else importlib.util.find_spec(module)
    if spec is not None and spec.origin:  # an extension module that top_level.txt does not name
        origin = Path(spec.origin).resolve()
        found = {canonicalize_name(dist.metadata["Name"]) for dist in metadata.distributions()
                 if any(Path(dist.locate_file(f)).resolve() == origin for f in dist.files or [])}
    return found


def third_party_imports(path: Path) -> dict[str, str]:
    """Top-level third-party modules `path` imports (also inside functions) -> where."""
    siblings = {p.stem for p in path.parent.glob("*.py")}  # runners import each other by plain name
    if path.parent.resolve() == RUNNERS.resolve():  # and the helpers the renderer copies beside them (the contract)
        siblings |= {p.stem for p in RUNNER_HELPERS}
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.partition(".")[0]
            if top not in sys.stdlib_module_names and top not in ("toneserve", "__future__") and top not in siblings:
                found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def part_of(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    return max((part for part in PART_EXTRAS if relative == part or relative.startswith(part + "/")), key=len)


def test_every_part_s_extra_brings_what_the_part_imports():
    files = [p for folder in ("client", "gateway", "export", "model_repository", "loadtest", "kube")
             for p in (ROOT / folder).rglob("*.py")]
    files += [p for p in (ROOT / "toneserve").glob("*.py")]
    assert len(files) > 40, "the tree was found"
    missing = []
    for path in files:
        extra = PART_EXTRAS[part_of(path)]
        available = closure(extra) if extra else closure()
        for module, where in third_party_imports(path).items():
            if module in NOT_FROM_AN_INDEX:
                continue
            dists = providers(module)
            assert dists, f"{where}: {module} is not installed here; pyproject.toml and requirements.txt lack it?"
            if not dists & available:
                missing.append(f"{where}: {module} ({', '.join(sorted(dists))}) is not in "
                               + (f"the {extra} extra" if extra else "the core dependencies"))
    assert not missing, "\n".join(missing)


def test_the_client_extra_is_light():
    client = closure("client")
    assert not client & {canonicalize_name(n) for n in NOT_IN_CLIENT + ("tritonclient", "av")}, sorted(client)
    gateway = closure("gateway")
    assert not gateway & {canonicalize_name(n) for n in NOT_IN_GATEWAY}, sorted(gateway)


def test_what_a_subcommand_looks_up_comes_with_the_extra_it_names():
    from toneserve.cli import COMMANDS, PARTS

    assert set(PARTS) == set(COMMANDS)
    for command, part in PARTS.items():
        assert part.extras and set(part.extras) <= set(_extras()), command
        available = closure(*part.extras)
        for module in part.later:
            assert providers(module) & available, f"toneserve {command} looks up {module}, not in {part.extras}"


# --------------------------------------------------------------------------- how the command says it

# Runs `toneserve ARGS` with the modules named in argv[1] made unimportable, as if never installed.
BLOCKED_RUN = textwrap.dedent("""
    import importlib.abc, importlib.util, sys
    BLOCKED = set(sys.argv[1].split(","))
    def blocked(name):
        return any(name == b or name.startswith(b + ".") for b in BLOCKED)
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: None if blocked(name) else find_spec(name, package)
    from toneserve.cli import main
    sys.exit(main(sys.argv[2:]))
    """)


def blocked_run(blocked: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, blocked, *arguments], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("blocked, arguments, extras", [
    ("torch", ["export", "--size", "tiny"], "export"),
    ("tritonclient", ["export"], "export"),
    ("pytriton", ["serve"], "serve"),
    ("av", ["gateway"], "gateway"),
    ("locust", ["plan", "--slo-p95-ms", "100"], "loadtest"),
    ("matplotlib", ["analyze", "x.wav"], "client"),
    ("funasr,pytriton", ["demo"], "export,serve"),
])
def test_a_missing_extra_is_one_line_naming_it(blocked, arguments, extras):
    done = blocked_run(blocked, *arguments)
    names = " and ".join(extras.split(","))
    expected = (f'error: toneserve {arguments[0]} needs the {names} extra{"s" if "," in extras else ""}: '
                f'pip install "toneserve[{extras}]"')
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, done.stderr
    assert blocked.split(",")[0] in done.stderr, "it says which module is missing"


def test_a_missing_toneserve_module_is_not_a_missing_extra():
    done = blocked_run("toneserve.loadtest", "plan", "--slo-p95-ms", "100")
    assert done.returncode == 1 and "Traceback" in done.stderr and "toneserve.loadtest" in done.stderr
    assert "extra" not in done.stderr


def test_only_command_errors_are_usage_errors(monkeypatch, capsys):
    from toneserve import cli
    from toneserve.console import CommandError

    def fails(error):
        def run(args):
            raise error
        return run

    text, options, _ = cli.COMMANDS["demo"]
    monkeypatch.setattr(cli, "load", lambda command: None)
    monkeypatch.setitem(cli.COMMANDS, "demo", (text, options, fails(CommandError("port 1 is taken"))))
    assert cli.main(["demo"]) == 2
    assert capsys.readouterr().err == "error: port 1 is taken\n"
    monkeypatch.setitem(cli.COMMANDS, "demo", (text, options, fails(ValueError("a bug"))))
    with pytest.raises(ValueError, match="a bug"):  # a bug is not a usage error: it keeps its traceback
        cli.main(["demo"])


# --------------------------------------------------------------------------- fresh virtualenvs

def virtualenv(path: Path) -> Path:
    """A fresh virtualenv with pip; returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    return path / "bin"


def pip(bin: Path, *arguments: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin / "python"), "-m", "pip", "--disable-pip-version-check", *arguments],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def need_an_index(bin: Path, tmp: Path) -> None:
    """Skip, saying why, where no package index answers."""
    pins = dict(line.split("==", 1) for line in REQUIREMENTS.read_text().split() if "==" in line)
    probe = pip(bin, "download", "--no-deps", "--dest", str(tmp / "probe"), f"tqdm=={pins['tqdm']}", timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable: {probe.stderr.strip().splitlines()[-1:]}")


def installed(bin: Path) -> set[str]:
    listed = pip(bin, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return {canonicalize_name(d["name"]) for d in json.loads(listed.stdout)}


def copy_tree(destination: Path) -> Path:
    """The package's sources (toneserve/ and the folders it links to), so pip builds outside the work tree."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, destination / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx")
    shutil.copytree(ROOT / "toneserve", destination / "toneserve", symlinks=True, ignore=ignore)
    for link in (ROOT / "toneserve").iterdir():
        if link.is_symlink():
            folder = link.resolve().relative_to(ROOT)
            shutil.copytree(ROOT / folder, destination / folder, symlinks=True, ignore=ignore)
    return destination


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    """A real tritonserver on the tiny cpu repository, for gateways from the virtualenvs."""
    from tests.support import triton_ports
    from toneserve.triton import EmbeddedTriton

    log = tmp_path_factory.mktemp("triton") / "triton.log"
    with EmbeddedTriton(repository, triton_ports(), log_path=log) as server:
        yield server


def test_the_client_extra_alone_analyses_calls(tmp_path, triton, clip):
    bin = virtualenv(tmp_path / "venv")
    need_an_index(bin, tmp_path)
    source = copy_tree(tmp_path / "src")
    done = pip(bin, "install", "-c", str(REQUIREMENTS), f"{source}[client]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    packages = installed(bin)
    assert "toneserve" in packages and "grpcio" in packages
    heavy = packages & {canonicalize_name(n) for n in NOT_IN_CLIENT}
    assert not heavy, f"the client extra installed {sorted(heavy)}"
    assert not packages & {"tritonclient", "av"}, sorted(packages)

    env = {**os.environ, "TONESERVE_HOME": str(tmp_path / "home")}

    def toneserve(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin / "toneserve"), *arguments], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env=env)

    for command in ("analyze", "stream"):
        helped = toneserve(command, "--help")
        assert helped.returncode == 0 and "--address" in helped.stdout, helped.stderr
    sdk = subprocess.run([str(bin / "python"), "-c", "from toneserve.client import Client, AsyncClient"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert sdk.returncode == 0, sdk.stderr
    for arguments, extra in ((["export", "--size", "tiny"], "export"), (["gateway"], "gateway"),
                             (["serve"], "serve"), (["plan", "--slo-p95-ms", "100"], "loadtest")):
        refused = toneserve(*arguments)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith(f'error: toneserve {arguments[0]} needs the {extra} extra: '
                                         f'pip install "toneserve[{extra}]"'), refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr

    with gateway_process(triton.grpc_url, tmp_path / "gateway.log") as gateway:
        analysed = toneserve("analyze", str(clip), "--address", gateway.address)
    assert analysed.returncode == 0, analysed.stderr
    result = json.loads(analysed.stdout)
    assert result["segments"] and [s["speaker"] for s in result["speakers"]] == ["channel_0", "channel_1"]


# --------------------------------------------------------------------------- the gateway image's install

def dockerfile_lines(path: Path, instruction: str) -> list[str]:
    """The arguments of every `instruction` line, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip()[len(instruction) + 1:].strip() for line in text.splitlines()
            if line.strip().upper().startswith(instruction + " ")]


def replay_copies(dockerfile: Path, workdir: Path) -> list[str]:
    """Copy what `dockerfile` COPYs from the repository root (its build context) into `workdir`, as
    Docker does (folders by content, links kept); returns the sources."""
    image_workdir = Path(dockerfile_lines(dockerfile, "WORKDIR")[-1])
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx")  # what its dockerignore leaves out
    copied = []
    for line in dockerfile_lines(dockerfile, "COPY"):
        *sources, target = line.split()
        assert not any(s.startswith("--") for s in sources), f"COPY flags are not replayed: {line}"
        base = workdir / (Path(target).relative_to(image_workdir) if Path(target).is_absolute() else Path(target))
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, base, symlinks=True, ignore=ignore, dirs_exist_ok=True)
            else:
                file = base / origin.name if target.endswith("/") or len(sources) > 1 else base
                file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, file)
            copied.append(source)
    return copied


def test_the_gateway_image_s_install_runs_a_gateway(tmp_path, triton, clip):
    """What deploy/gateway/Dockerfile copies and runs, in a fresh virtualenv instead of the image."""
    from toneserve.client.sdk import Client
    from toneserve.triton import free_port

    bin = virtualenv(tmp_path / "venv")
    need_an_index(bin, tmp_path)
    workdir = tmp_path / "opt-toneserve"
    copied = replay_copies(GATEWAY_DOCKERFILE, workdir)
    assert {"toneserve", "gateway"} <= set(copied)
    assert not {"export", "loadtest", "model_repository", "client"} & set(copied), copied

    installs = [run for run in dockerfile_lines(GATEWAY_DOCKERFILE, "RUN") if "pip " in run]
    assert len(installs) == 2, installs
    env = {**os.environ, "PATH": f"{bin}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(bin.parent)}
    env.pop("PYTHONPATH", None)
    for run in installs:  # `python` is the virtualenv's; the Dockerfile's own checks run too
        done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=1200, cwd=workdir, env=env)
        assert done.returncode == 0, f"{run}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    packages = installed(bin)
    assert "toneserve" in packages
    assert not packages & {canonicalize_name(n) for n in NOT_IN_GATEWAY}, sorted(packages)
    pinned = {canonicalize_name(line.split("==")[0]) for line in
              (ROOT / "deploy" / "gateway" / "requirements.txt").read_text().split() if "==" in line}
    assert packages - {"pip", "setuptools", "wheel", "toneserve"} == pinned, "exactly the pinned closure"
    absent = subprocess.run([str(bin / "python"), "-I", "-c",
                             "import importlib.util as u; print([p for p in ('export', 'loadtest', 'model_repository',"
                             " 'client') if u.find_spec('toneserve.' + p)])"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert absent.returncode == 0 and absent.stdout.strip() == "[]", absent.stdout + absent.stderr

    port = free_port()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(bin / "toneserve"), "gateway", "--triton-url", triton.grpc_url,
                                    "--port", str(port), "--metrics-port", "0"],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        wait_for_health(f"127.0.0.1:{port}", process, log, timeout=120)
        with Client(f"127.0.0.1:{port}", tls=False) as client:
            result = client.analyze(clip.read_bytes())
        assert result.segments and {s.speaker for s in result.speakers} == {"channel_0", "channel_1"}
    finally:
        code = stop_stack(process)
    assert code == 0, log.read_text()
