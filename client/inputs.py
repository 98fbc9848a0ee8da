"""Which files `toneserve analyze PATH...` analyses, and the name each one's outputs get."""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

# What a folder is searched for (case-insensitive). A file named on the command line, or matched
# by a glob, is analysed whatever its extension: the user asked for it.
AUDIO_EXTENSIONS = frozenset({"wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm", "mp4"})


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # arguments that named no file


def _visible(path: Path, root: Path) -> bool:
    """Hidden files and folders (.git, macOS's ._call.wav) are not recordings."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _audio_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, folder)
                  and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS)


def expand(arguments: list[str]) -> Inputs:
    """Files, folders (searched recursively for AUDIO_EXTENSIONS) and globs (`**` included), in the
    order given, each file once."""
    found = Inputs()
    seen: set[Path] = set()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            candidates = _audio_under(path)
        elif path.exists():
            candidates = [path]
        elif any(c in argument for c in "*?["):
            candidates = []
            for match in map(Path, sorted(glob.glob(argument, recursive=True))):
                candidates.extend(_audio_under(match) if match.is_dir() else [match])
        else:
            candidates = []
        if not candidates:
            found.unmatched.append(argument)
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.files.append(candidate)
    return found


def output_names(files: list[Path]) -> dict[Path, str]:
    """The stem of each file (`calls/monday.wav` -> `monday`), made unique with -2, -3... in input order,
    for `<name>.json`, `<name>.html` and `<name>.png`."""
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for file in files:
        name, n = file.stem, 1
        while name in taken:
            n += 1
            name = f"{file.stem}-{n}"
        taken.add(name)
        names[file] = name
    return names
