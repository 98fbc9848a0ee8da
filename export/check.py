"""`toneserve export --check SOURCE`: what a model folder or hub id is, without exporting it.

One line per fact or problem: the family (from config.yaml's ``model``, checked against the files the
folder holds), the preset its architecture matches (or custom), the files found and missing, and whether
it loads the way the export would load it (FunASR's classes and ``load_pretrained_model``), with the
parameter count. Users run it first when an export fails.

``SOURCE`` is a folder, a hub id (``ms:`` / ``hf:`` accepted), or ``random:<preset>``; ``FAMILY=SOURCE``
says which family it should be (``emotion2vec=./my-model``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toneserve.export import hub
from toneserve.export.errors import MissingModelFiles, SourceError, SourceUnavailable
from toneserve.export.families import FAMILIES, by_hub_id, by_model_class
from toneserve.export.family import ModelFamily
from toneserve.export.loading import file_path_metas, read_config


@dataclass
class Report:
    source: str
    lines: list[str] = field(default_factory=list)
    loads: bool = False

    def add(self, key: str, text: str) -> None:
        self.lines.append(f"{key}: {' '.join(text.split())}")  # one line, whatever the message held

    def __str__(self) -> str:
        return "\n".join([f"{self.source}:"] + [f"  {line}" for line in self.lines])


def _split_hint(spec: str) -> tuple[ModelFamily | None, str]:
    name, sep, rest = spec.partition("=")
    if sep and name in FAMILIES:
        return FAMILIES[name], rest.strip()
    return None, spec.strip()


def _evidence(root: Path) -> list[ModelFamily]:
    """Families whose own files (besides config.yaml and model.pt) the folder holds."""
    out = []
    for fam in FAMILIES.values():
        own = [n for n in fam.required_files if n not in ("config.yaml", "model.pt")]
        if fam.model_class is not None and own and any((root / n).is_file() for n in own):
            out.append(fam)
    return out


def _classes() -> str:
    return ", ".join(f"{f.name}: {f.model_class}" for f in FAMILIES.values() if f.model_class)


def check(spec: str, *, trust_checkpoint: bool = False, revision: str | None = None,
          cache_dir: Path | None = None, probe_timeout: float = 3.0) -> Report:
    hint, text = _split_hint(spec)
    report = Report(spec)
    low = text.lower()
    ignored = f"{revision!r} ignored: it pins a hub id (export refuses it with a folder or random weights)"
    if low == "random" or low.startswith("random:"):
        if revision:
            report.add("revision", ignored)
        preset = text.partition(":")[2].strip()
        for fam in ([hint] if hint else [f for f in FAMILIES.values() if f.model_class]):
            names = ", ".join(fam.presets)
            known = not preset or preset in fam.presets
            report.add(fam.name, f"random weights of preset {preset or fam.default_preset!r}" if known
                       else f"no preset {preset!r} (presets: {names})")
            report.loads = report.loads or known
        return report

    path = Path(text).expanduser()
    if path.is_dir():
        root = path.resolve()
        if revision:
            report.add("revision", ignored)
    elif text.startswith(("/", ".", "~")) or path.exists() or (text.count("/") != 1 and ":" not in text
                                                               and by_hub_id(text) is None):  # bare names
        report.add("folder", f"{path} is a file, not a folder" if path.exists() else
                   f"{path} does not exist (and is not a hub id such as owner/name)")
        return report
    else:
        known = {i: h for f in FAMILIES.values() for i, h in f.hub_ids.items()}
        which, ident = hub.hub_of(text, known)
        fam = hint or by_hub_id(ident)
        ident = fam.hub_aliases.get(ident, ident) if fam else ident
        which = known.get(ident, which) if not low.startswith(("ms:", "hf:")) else which
        report.add("hub", f"{hub.HUB_NAMES[which]} id {ident}" + (f" at revision {revision}" if revision else "")
                   + (f" ({fam.name})" if fam else ""))
        alternatives = "a local folder holding the model's files, or random weights ('random:<preset>')"
        try:
            root = hub.fetch(which, ident, alternatives=alternatives, revision=revision, cache_dir=cache_dir,
                             probe_timeout=probe_timeout)
        except SourceUnavailable as e:
            report.add("fetch", str(e))
            return report
        report.add("fetched", str(root))
    _check_folder(root, hint, report, trust_checkpoint)
    return report


def _check_hf_folder(root: Path, family: ModelFamily, report: Report) -> None:
    """A Hugging Face folder (config.json): the text-sentiment family, loaded through transformers as the
    export loads it."""
    report.add("family", f"{family.title} ({family.name}), a Hugging Face folder")
    try:
        family.locate(root)
    except MissingModelFiles as e:
        report.add("missing", ", ".join(e.missing))
        report.add("loads", "no (files missing)")
        return
    try:
        loaded = family.load(root, hash_weights=False)
    except (SourceError, RuntimeError, ValueError) as e:
        report.add("loads", f"no: {e}")
        return
    report.add("preset", loaded.preset if loaded.preset != "custom" else "custom (no preset has these sizes)")
    params = sum(p.numel() for p in loaded.model.model.parameters())
    report.add("labels", f"{', '.join(loaded.model.labels.names)} (id2label's order)")
    report.add("parameters", f"{params:,} ({params / 1e6:.1f} M)")
    report.add("loads", f"yes: through transformers ({type(loaded.model.model).__name__}, "
                        f"{type(loaded.model.tokenizer).__name__})")
    report.loads = True


def _check_folder(root: Path, hint: ModelFamily | None, report: Report, trust: bool) -> None:
    present = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    report.add("files", ", ".join(present) or "none")
    text = FAMILIES.get("text_sentiment")
    if text is not None and (root / "config.json").is_file() and not (root / "config.yaml").is_file() \
            and hint in (None, text):
        _check_hf_folder(root, text, report)
        return
    try:
        config_name = (file_path_metas(root).get("config") or "config.yaml")
    except SourceError as e:
        report.add("configuration.json", str(e))
        config_name = "config.yaml"
    evidence = _evidence(root)
    config = None
    if not (root / config_name).is_file():
        report.add("missing", f"{config_name} (it names the model class; every FunASR model folder has one)")
    else:
        try:
            config = read_config(root / config_name)
        except SourceError as e:
            report.add("config", str(e))
    family = hint
    if config is not None:
        named = config.get("model")
        by_config = by_model_class(named)
        if by_config is None:
            report.add("config", f"{config_name} names model {named!r}, which no family here exports ({_classes()})")
            return
        if hint is not None and by_config is not hint:
            report.add("config", f"{config_name} names model {named!r}: a {by_config.name} config, not a "
                                 f"{hint.name} one ({hint.name} folders name {hint.model_class!r})")
            return
        others = [f for f in evidence if f is not by_config]
        if others and by_config not in evidence:
            files = ", ".join(n for n in others[0].required_files if (root / n).is_file())
            report.add("config", f"{config_name} names model {named!r} ({by_config.name}) but the folder holds "
                                 f"{others[0].name}'s files ({files}): a config of another family")
            return
        family = by_config
    elif family is None and len(evidence) == 1:
        family = evidence[0]
    if family is None:
        report.add("family", "unknown (no config.yaml naming a model, no family's own files)")
        return
    report.add("family", f"{family.title} ({family.name})")
    if config is not None:
        try:
            arch = family.arch_config(config)
            preset = family.detect_preset(arch)
            report.add("preset", preset if preset != "custom" else "custom (no preset has these sizes)")
        except SourceError as e:
            report.add("config", f"{config_name}: {e}")
    try:
        family.locate(root)
    except MissingModelFiles as e:
        report.add("missing", f"{', '.join(e.missing)} (a {family.name} folder holds "
                              f"{', '.join(family.required_files)})")
        report.add("loads", "no (files missing)")
        return
    try:
        loaded = family.load(root, trust_checkpoint=trust, hash_weights=False)
    except (SourceError, RuntimeError, ValueError) as e:
        report.add("loads", f"no: {e}")
        return
    params = sum(p.numel() for p in loaded.model.parameters())
    stats = loaded.load
    left = f"; left at init (never run at inference): {len(stats['left_at_init'])}" if stats["left_at_init"] else ""
    report.add("parameters", f"{params:,} ({params / 1e6:.1f} M)")
    report.add("loads", f"yes: {stats['tensors_loaded']} tensors through FunASR's load_pretrained_model "
                        f"(scope_map {stats['scope_map'] or 'none'}){left}")
    report.loads = True
