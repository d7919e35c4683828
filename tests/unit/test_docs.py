"""The README stays a front door: small, its links resolve, its Layout names the tree as it is."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(doc.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_readme_is_at_most_12_kb() -> None:
    assert len(README.read_bytes()) <= 12_000, "README.md is the front door: move detail to docs/"


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    docs = [README, ROOT / "deploy" / "DEPLOY.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc in docs
        for target in _relative_links(doc)
        if not (doc.parent / target.split("#", 1)[0]).exists()
    ]
    assert not broken, broken


def test_the_layout_names_every_top_level_directory_and_only_those() -> None:
    text = README.read_text()
    layout = text[text.index("## Layout") :]
    block = layout[layout.index("```") + 3 : layout.index("```", layout.index("```") + 3)]
    named = {m.group(1) for m in re.finditer(r"^([a-z_]+)/\s", block, re.M)}
    named |= {m.group(1) for m in re.finditer(r"\b([a-z_]+)/: ", block)}  # "examples/: ..." inside a line
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    tracked = {f.split("/", 1)[0] for f in files if "/" in f and not f.startswith(".")}
    assert named <= tracked, f"the Layout names what is not there: {sorted(named - tracked)}"
    assert tracked <= named, f"the Layout leaves out: {sorted(tracked - named)}"
