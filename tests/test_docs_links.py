"""Every relative link in the README and the docs resolves: the file exists, and a ``#section`` names a heading.

Anchors follow GitHub's rule: the heading text lower-cased, punctuation other than ``-`` and ``_`` dropped, spaces
turned into ``-``; a repeated heading gets ``-1``, ``-2``, ...
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "BENCHMARKS.md", *(REPO / "docs").rglob("*.md")]
)
# [text](target) outside code spans; images too. Targets with a scheme (http:, mailto:) are not checked.
LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


# Pages being written in parallel with these docs: a link to one is checked once the page exists (then drop it here).
def _text_without_code(page: Path) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (markdown emphasis and code marks removed first)."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_text_without_code(page)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_pages_have_links() -> None:
    assert len(PAGES) > 10 and sum(len(links(p)) for p in PAGES) > 50


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_rules_on_known_cases(tmp_path: Path) -> None:
    assert (
        slug("Measured figures (Tiktok, MMSSL authors' split)")
        == "measured-figures-tiktok-mmssl-authors-split"
    )
    assert slug("`modalrec data split`") == "modalrec-data-split"
    assert slug("Defaults (paper first; `MMSSL.Config`)") == "defaults-paper-first-mmsslconfig"
    page = tmp_path / "p.md"
    page.write_text(
        "# A\n## A\n```\n[x](nowhere.md)\n```\nsee [b](b.md#a-1) and `[c](c.md)` and [w](https://x.org)\n"
    )
    assert anchors(page) == {"a", "a-1"}
    assert links(page) == ["b.md#a-1"]


def test_every_config_path_named_in_the_docs_exists() -> None:
    """``configs/<dataset>/<file>.yaml`` quoted anywhere in the README, docs or configs names a shipped file."""
    texts = [*PAGES, *(REPO / "configs").rglob("*.yaml")]
    named = {m for p in texts for m in re.findall(r"configs/[\w./-]+?\.yaml", p.read_text(encoding="utf-8"))}
    assert len(named) > 20
    missing = sorted(n for n in named if not (REPO / n).is_file())
    assert not missing, missing


def test_the_readme_model_table_lists_every_registered_model() -> None:
    from modalrec.models import MODELS

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Models\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w-]+)` \|", section, re.M))
    assert listed == set(MODELS), (
        f"missing {sorted(set(MODELS) - listed)}, unknown {sorted(listed - set(MODELS))}"
    )
