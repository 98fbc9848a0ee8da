"""Fixtures more than one tier uses (tiny models exported once, rendered into a repository, real speech) and
the hooks that mark each test with its tier and keep the unit tier free of heavy dependencies."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

from tests.support import CLIPS, GARBAGE, SHARED_SPEECH

TESTS = Path(__file__).resolve().parent
# Each test's tier is the folder it sits in; the marker of the same name selects it (`-m unit`). In this order
# a run runs them.
TIERS = ("unit", "export", "stack", "deploy")
# The unit tier runs without these: importing any of them (or starting tritonserver) fails the run.
HEAVY_MODULES = ("torch", "funasr", "onnx")


@functools.lru_cache(maxsize=None)
def tier_of(path: Path | str) -> str | None:
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config, items):
    outside = [item.nodeid for item in items if tier_of(item.path) is None]
    if outside:
        raise pytest.UsageError(f"tests outside a tier folder ({', '.join(TIERS)}): {outside}")
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item.path)))
    # Cheapest first, so that a broken unit test is reported before the stack starts; each module stays whole.
    items.sort(key=lambda item: TIERS.index(tier_of(item.path)))


class UnitTierGuard:
    """Records what unit-tier code does that the unit tier must never do, through an audit hook (which
    sees every import that loads a module and every process started), and fails the run if it happened.

    Work is attributed to the unit tier while a unit test module is collected and while a unit test
    runs (its fixtures included). A module already loaded by another tier raises no import event, so
    when only unit tests were collected the modules loaded at the end are checked as well."""

    def __init__(self):
        self.context: str | None = None  # the unit-tier module or test running now
        self.tiers: set[str | None] = set()  # of every collected test, before any deselection
        self.violations: list[str] = []
        self.imported: dict[str, set[str]] = {}  # heavy top-level modules each context was seen importing
        sys.addaudithook(self.audit)

    def audit(self, event: str, args: tuple) -> None:
        if self.context is None or event not in ("import", "subprocess.Popen", "os.exec", "os.posix_spawn"):
            return
        try:  # an exception here would break the import or the process start itself
            if event == "import":
                top = args[0].partition(".")[0]
                if top in HEAVY_MODULES and top not in self.imported.setdefault(self.context, set()):
                    self.imported[self.context].add(top)
                    self.violations.append(f"{self.context} imports {args[0]}")
                return
            program, argv = args[0], args[1]
            if isinstance(argv, (list, tuple)) and argv:
                program = program or argv[0]
            elif isinstance(argv, (str, bytes)) and not program:
                program = argv.split()[0] if argv.split() else argv
            if Path(os.fsdecode(program)).name == "tritonserver":
                self.violations.append(f"{self.context} starts tritonserver ({os.fsdecode(program)})")
        except Exception as error:  # never raise from an audit hook
            self.violations.append(f"{self.context}: the unit-tier guard could not read {event} {args!r}: {error}")

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        unit = isinstance(collector, pytest.Module) and tier_of(collector.path) == "unit"
        self.context = collector.nodeid if unit else None
        try:
            return (yield)
        finally:
            self.context = None

    def pytest_itemcollected(self, item):
        self.tiers.add(tier_of(item.path))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item):
        self.context = item.nodeid if tier_of(item.path) == "unit" else None
        try:
            return (yield)
        finally:
            self.context = None

    def pytest_sessionfinish(self, session):
        self.context = None
        if self.tiers == {"unit"}:
            loaded = sorted(name for name in sys.modules if name.partition(".")[0] in HEAVY_MODULES)
            if loaded and not self.violations:
                self.violations.append(f"loaded outside any unit test (a conftest or plugin?): {loaded[:5]}")
        if self.violations:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.violations:
            terminalreporter.section("unit tier guard", red=True)
            terminalreporter.line(f"the unit tier must not import {', '.join(HEAVY_MODULES)} or start tritonserver:",
                                  red=True)
            for violation in dict.fromkeys(self.violations):
                terminalreporter.line(f"  {violation}", red=True)


def pytest_configure(config):
    config.pluginmanager.register(UnitTierGuard(), "unit-tier-guard")


@pytest.fixture(scope="session")
def toneserve_home(tmp_path_factory) -> Path:
    """Everything the suite builds lives here, never in the user's cache."""
    home = tmp_path_factory.mktemp("toneserve-home")
    os.environ["TONESERVE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def models_root(toneserve_home) -> Path:
    from toneserve.export.build import export_models
    return export_models(toneserve_home / "models" / "tiny", size="tiny")


@pytest.fixture(scope="session")
def repository(models_root, toneserve_home) -> Path:
    from toneserve.model_repository.catalog import describe
    from toneserve.model_repository.render import render_repository
    return render_repository(describe(models_root), "cpu", toneserve_home / "repository" / "tiny-cpu")


@pytest.fixture(scope="session")
def shared_speech() -> Path:
    if not (SHARED_SPEECH / "MANIFEST.tsv").is_file():
        pytest.skip("../shared/data/speech is not present (fresh clone)")
    return SHARED_SPEECH


# --- fixtures of test files whose tests sit in more than one tier ---


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    """A folder of mixed recordings for `toneserve analyze` (tests.support.CLIPS), one broken file among them."""
    from toneserve.samples import call, encode

    root = tmp_path_factory.mktemp("batch")
    for name, (seconds, rate, channels, fmt, seed) in CLIPS.items():
        conversation = call(seconds, rate=rate, seed=seed)
        samples = conversation.samples if channels == 2 else conversation.mono()
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(samples, rate, fmt))
    (root / GARBAGE).write_bytes(os.urandom(4000))
    (root / "calls/notes.txt").write_text("not a recording; folders are searched for audio extensions only")
    (root / "calls/.partial.wav").write_bytes(b"hidden: skipped")
    return root


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 10 s two-channel call as a WAV file."""
    from toneserve.samples import call, wav_bytes

    path = tmp_path_factory.mktemp("clip") / "call.wav"
    path.write_bytes(wav_bytes(call(10.0, rate=16000, seed=3).samples, 16000))
    return path


@pytest.fixture(scope="session")
def calls(tmp_path_factory) -> Path:
    """A loadtest corpus of four short calls: every format, both rates, two speakers on two channels."""
    from toneserve.loadtest import corpus

    out = tmp_path_factory.mktemp("corpus")
    corpus.generate(out, 4, durations=(8.0, 12.0), rates=(8000, 16000), formats=("wav", "flac", "mp3", "ogg"),
                    progress=False)
    return out
