"""The documentation's relative links lead somewhere: README.md and docs/*.md."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and [text](<target>); an image's ![alt](target) is matched by the same rule.
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def outside_fences(text: str) -> list[str]:
    """The document's lines outside fenced code blocks."""
    lines, fence = [], None
    for line in text.splitlines():
        opening = _FENCE.match(line.strip())
        if opening:
            marker = opening.group(1)[0]
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None:
            lines.append(line)
    return lines


def relative_links(document: Path) -> list[str]:
    prose = [re.sub(r"`[^`]*`", "", line) for line in outside_fences(document.read_text("utf-8"))]
    targets = [t for line in prose for t in _LINK.findall(line)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but - and _
    dropped, each space a hyphen."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(document.read_text(encoding="utf-8")):
        heading = _HEADING.match(line)
        if not heading:
            continue
        slug = github_anchor(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `document` that names no file under `root`, or no heading."""
    broken = []
    for target in relative_links(document):
        path_part, _, anchor = target.partition("#")
        path = (document.parent / unquote(path_part)).resolve() if path_part else document
        if not path.is_relative_to(root.resolve()):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(root.resolve())}")
    return broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_in_the_readme_and_docs_resolves(document: Path) -> None:
    assert relative_links(document) or document.name != "README.md"  # the README links to docs/
    assert broken_links(document) == []


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A title, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-title-with-code) [second](other.md#twice-1) [self](#top)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [web](https://example.com/x)\n"
        "[out](../elsewhere.md)\n"
        "`[in code](ignored.md)`\n```\n[fenced](ignored.md)\n```\n# Top\n"
    )

    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
        "../elsewhere.md: outside the repository",
    ]
