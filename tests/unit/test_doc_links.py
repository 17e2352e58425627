"""Every relative link of the README and docs/ points to a file that exists, and its
``#anchor`` to a heading there, slugged as GitHub slugs headings. The Markdown files they
link to are checked the same way. No network: web links are left alone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation other than
    hyphens and underscores dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor (a repeated slug gets -1, -2, ... as on GitHub), and every
    HTML anchor (``<a id="...">``)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text):
        found.update(HTML_ANCHOR.findall(INLINE_CODE.sub("", line)))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(text: str) -> list[str]:
    """Link targets that are neither web addresses nor mail, outside code."""
    targets = []
    for line in prose(text):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):
                targets.append(target)
    return targets


def broken_links(start: list[Path]) -> list[str]:
    """Each broken link of ``start`` and of every Markdown file they link to, as
    ``file: target (why)``."""
    broken, queue, done = [], list(start), set()
    while queue:
        page = queue.pop()
        if page in done:
            continue
        done.add(page)
        text = page.read_text(encoding="utf-8")
        for target in relative_links(text):
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
                continue
            if dest.suffix != ".md":
                continue
            queue.append(dest)
            if anchor and anchor not in anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = broken_links(pages)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slugs_follow_github_s_rules():
    text = ("# Measurements behind the code's settings\n## `make chaos-net`: the tier\n"
            "### 0.1.0: results of 2026-11-27\n## Scaling\n## Scaling\n"
            "```sh\n# not a heading\n```\n## net_latency and [a link](x.md)\n")
    assert anchors(text) == {"measurements-behind-the-codes-settings",
                             "make-chaos-net-the-tier", "010-results-of-2026-11-27",
                             "scaling", "scaling-1", "net_latency-and-a-link"}


def test_a_missing_file_or_anchor_is_reported_and_web_links_are_not(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Present\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#present) [web](https://example.com/x.md) "
                    "`[code](gone.md)` [gone](gone.md) [anchor](other.md#absent) "
                    "[here](#nowhere)\n", encoding="utf-8")
    assert broken_links([page]) == ["page.md: gone.md (no such file)",
                                    "page.md: other.md#absent (no heading with that anchor)",
                                    "page.md: #nowhere (no heading with that anchor)"]


def test_docs_stay_short_enough_to_finish():
    """Issue 28's budget: at most 9 files and 2,000 lines in docs/ (dated runs go to
    bench/results/HISTORY.md)."""
    pages = sorted((ROOT / "docs").glob("*.md"))
    lines = sum(len(page.read_text(encoding="utf-8").splitlines()) for page in pages)
    assert len(pages) <= 9, [page.name for page in pages]
    assert lines <= 2000, f"docs/ has {lines} lines"
