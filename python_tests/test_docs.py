"""The documentation holds together: every page of docs/ is linked from README.md, every relative link in the
README, ARCHITECTURE.md and docs/ points at a file that exists, and the README stays a front page."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def pages():
    return [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {pathlib.Path(m).as_posix() for m in LINK.findall(readme)}
    missing = [p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")]
    missing = [p for p in missing if p not in linked]
    assert missing == [], f"link these from README.md: {missing}"


def test_relative_links_resolve():
    broken = []
    for page in pages():
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_readme_is_a_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "bash scripts/setup.sh && .venv/bin/mda-fast demo --out demo_out" in text
    test_cmd = "bash scripts/setup.sh --test && .venv/bin/pytest -n 2 -q"
    assert test_cmd in text and test_cmd in (ROOT / ".ci" / "run").read_text()
