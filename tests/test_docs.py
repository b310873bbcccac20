"""Every document the repository's sources name exists in the repository, and every cited section exists in it.

A *reference* is a file name ending in ``.md`` with an optional path (``docs/paper.md``, ``README.md``; a page in
docs/ names its siblings by bare name) or a path under ``docs/``, written in a source or documentation file
(``.py``, ``.md``, ``.sh``, ``Makefile``, ``pyproject.toml``). It resolves when the file exists inside the
repository, relative to the referring file's folder or to the repository root. ``report.md`` and ``index.md`` are
outputs the runner writes into a run directory, not documents (:data:`GENERATED`). A reference followed by
sections (``docs/paper.md §E1``, ``docs/reference-code.md §1.2 and §9``, ``§2–§5``) must name headings of that file:
a heading's id is its first word without a trailing dot (``### E1. Motivating …`` → ``E1``, ``## 5. Claims`` → ``5``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("crobust", "experiments", "benchmarks", "tests", "docs")
ROOT_FILES = ("README.md", "Makefile", "pyproject.toml", ".ci/run")
SUFFIXES = (".py", ".md", ".sh")
GENERATED = frozenset({"report.md", "index.md"})

_ID = r"[A-Z]?\d+(?:\.\d+)*"
_MD = re.compile(r"(?<![\w.\-/])(/?(?:[\w.\-]+/)*[\w\-]+\.md)\b"
                 r"((?:\s+§" + _ID + r")(?:\s*(?:,|and|–|-)\s*§" + _ID + r")*)?")
_DOCS_PATH = re.compile(r"(?<![\w.\-/])docs/([\w.\-]+(?:/[\w.\-]+)*)")
_URL = re.compile(r"\w+://\S+")
_SECTION = re.compile(r"§(" + _ID + r")")


def source_files(root: Path = ROOT) -> list[Path]:
    """The repository's source and documentation files (virtual environments and run outputs excluded)."""
    files = [root / name for name in ROOT_FILES if (root / name).is_file()]
    for d in SOURCE_DIRS:
        files += sorted(p for p in (root / d).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                        and "__pycache__" not in p.parts)
    return files


def heading_ids(path: Path) -> set[str]:
    """Ids of a markdown file's headings: the first word of each ``#`` line, a trailing dot or colon removed."""
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(\S+)", line)
        if m:
            ids.add(m.group(1).rstrip(".:"))
    return ids


def _resolve(name: str, referrer: Path, root: Path) -> Path | None:
    """The file or folder ``name`` names inside the repository, or None (an absolute path or one that leaves the
    repository names nothing a user who clones it has)."""
    if name.startswith("/"):
        return None
    for base in (referrer.parent, root):
        candidate = (base / name).resolve()
        if candidate.is_relative_to(root.resolve()) and (candidate.is_file() or candidate.is_dir()):
            return candidate
    return None


def problems(text: str, referrer: Path, root: Path = ROOT) -> list[str]:
    """Each reference in ``text`` (written in ``referrer``) that names a missing document or a missing section."""
    text = _URL.sub(" ", text)
    found = []
    for m in _MD.finditer(text):
        name, tail = m.group(1), m.group(2) or ""
        if name.rsplit("/", 1)[-1] in GENERATED:
            continue
        target = _resolve(name, referrer, root)
        if target is None:
            found.append(f"{name}: no such document")
            continue
        if tail:
            ids = heading_ids(target)
            found += [f"{name} §{s}: no such heading" for s in _SECTION.findall(tail) if s not in ids]
    for m in _DOCS_PATH.finditer(text):
        rel = m.group(1).rstrip(".")
        if rel.endswith(".md"):
            continue                                    # a document: checked above, with its sections
        if rel and _resolve("docs/" + rel, root / "README.md", root) is None:
            found.append(f"docs/{rel}: no such file")
    return found


# --- the checker itself: a wrong implementation (one that misses references or sections) fails these -------------
# (This file is left out of the repository scan: it names missing documents on purpose.)

EXAMPLE = ROOT / "crobust" / "example.py"


def test_checker_finds_a_missing_document_and_a_missing_section():
    assert problems("see FINDINGS.md §2", EXAMPLE) == ["FINDINGS.md: no such document"]
    assert problems("(/work/shared/spec/PAPER.md §E1)", EXAMPLE) == ["/work/shared/spec/PAPER.md: no such document"]
    assert problems("docs/paper.md §E99 and docs/nothing.md", EXAMPLE) == [
        "docs/paper.md §E99: no such heading", "docs/nothing.md: no such document"]
    assert problems("docs/reference-code.md §1.2 and §99", EXAMPLE) == [
        "docs/reference-code.md §99: no such heading"]
    assert problems("docs/missing_folder/x", EXAMPLE) == ["docs/missing_folder/x: no such file"]


def test_checker_accepts_existing_documents_sections_and_generated_outputs():
    text = ("docs/paper.md §E1, docs/paper.md §3.3, docs/findings.md §1, docs/reference-code.md §2–§5, "
            "writes <out>/<preset>/index.md and report.md; README.md; see docs/. https://x.org/a/NOTES.md")
    assert problems(text, EXAMPLE) == []
    # a name relative to the referring file's folder: docs/ cites its siblings by bare name
    assert problems("[findings.md §2](findings.md)", ROOT / "docs/paper.md") == []
    assert problems("[findings.md §2]", EXAMPLE) == ["findings.md: no such document"]


def test_heading_ids_are_the_first_word_of_each_heading():
    ids = heading_ids(ROOT / "docs/paper.md")
    assert {"3.2", "3.3", "3.4", "3.5", "5"} <= ids
    assert {f"E{i}" for i in range(1, 13)} <= ids


# --- the repository ----------------------------------------------------------------------------------------------

def test_the_source_list_covers_code_docs_and_build_files():
    names = {p.relative_to(ROOT).as_posix() for p in source_files()}
    assert {"README.md", "Makefile", "pyproject.toml", "crobust/study/runner.py", "docs/paper.md",
            "experiments/spectral_fixed_scale.py", "tests/test_docs.py"} <= names


def test_every_named_document_and_section_exists():
    found = {p.relative_to(ROOT).as_posix(): problems(p.read_text(encoding="utf-8"), p) for p in source_files()
             if p != Path(__file__).resolve()}
    assert {path: errors for path, errors in found.items() if errors} == {}
