"""Adding a merged task to CHANGELOG.md under its Unreleased section, as a pure insertion.

Every byte of the file stays as it was; only the new lines are added. The
section and its category headings are found by block structure (code fences
and HTML comments are skipped), in whatever style the file already uses:
Keep a Changelog (`## [Unreleased]` / `### Fixed`), or its cousins
(`# unreleased` / `## Bugfixes`, setext release headings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kanban.entry import line_ending, strip_ending
from kanban.mdblocks import split_lines, top_headings

BOM = "\ufeff"
CATEGORIES = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
# Names other changelogs use for the same categories.
SYNONYMS = {
    "added": "Added", "features": "Added", "new features": "Added", "new": "Added",
    "changed": "Changed", "changes": "Changed", "other": "Changed", "improvements": "Changed",
    "deprecated": "Deprecated", "deprecations": "Deprecated",
    "removed": "Removed", "removals": "Removed",
    "fixed": "Fixed", "fixes": "Fixed", "bugfixes": "Fixed", "bug fixes": "Fixed",
    "security": "Security",
}
_VERBS = {
    "Added": ("add", "create", "implement", "introduce", "support", "new"),
    "Fixed": ("fix", "repair", "resolve", "correct", "handle"),
    "Removed": ("remove", "delete", "drop"),
    "Deprecated": ("deprecate",),
    "Security": ("security", "harden", "sanitize", "escape"),
}
_UNRELEASED = re.compile(r"^\[?\s*unreleased\s*\]?", re.I)
_VERSION = re.compile(r"v?\d+\.\d+")
_ITEM = re.compile(r"^ {0,3}([-*+])[ \t]")


@dataclass
class _Heading:
    line: int
    level: int
    text: str
    body_start: int  # first line after the heading (setext headings span two lines)


def category_for(title: str, override: str | None = None) -> str:
    """Keep a Changelog category: an explicit `changelog:` value, else the title's first verb."""
    if override:
        return SYNONYMS.get(override.strip().lower(), override.strip().title())
    first = title.strip().split(" ", 1)[0].lower().rstrip(":,")
    for category, verbs in _VERBS.items():
        if first in verbs or any(first.startswith(v) for v in verbs if len(v) > 3):
            return category
    return "Changed"


def insert_entry(data: bytes, item: str, category: str) -> bytes:
    """The changelog with `- item` added under Unreleased > category; nothing else changes."""
    text = data.decode("utf-8")
    bom = text.startswith(BOM)
    body = text[1:] if bom else text
    lines = split_lines(body)
    nl = _newline(lines)
    at, new_lines = _plan(lines, item, category, nl)
    before = "".join(lines[:at])
    insertion = "".join(new_lines)
    if before and not line_ending(lines[at - 1]) and at == len(lines):
        # the file ends without a newline: end its last line, keep the final-newline state
        insertion = nl + insertion[: -len(nl)] if insertion.endswith(nl) else nl + insertion
    result = before + insertion + "".join(lines[at:])
    return ((BOM if bom else "") + result).encode("utf-8")


def _plan(lines: list[str], item: str, category: str, nl: str) -> tuple[int, list[str]]:
    """Where to insert (a line index) and which lines."""
    heads = _headings(lines)
    unreleased = next((h for h in heads if _UNRELEASED.match(h.text)), None)
    if unreleased is None:
        return _new_section(lines, heads, item, category, nl)
    end = next((h.line for h in heads if h.line > unreleased.line and h.level <= unreleased.level), len(lines))
    subs = [h for h in heads if unreleased.line < h.line < end and h.level == unreleased.level + 1]
    bullet = _bullet(lines, unreleased.body_start, end)
    for i, sub in enumerate(subs):
        if SYNONYMS.get(sub.text.strip().lower(), sub.text.strip()) == category:
            sub_end = subs[i + 1].line if i + 1 < len(subs) else end
            sub_end = next((h.line for h in heads if sub.line < h.line < sub_end), sub_end)
            return _after_content(lines, sub.body_start, sub_end, [f"{bullet} {item}{nl}"], nl)
    if not subs and any(_ITEM.match(lines[j]) for j in range(unreleased.body_start, end)):
        return _after_content(lines, unreleased.body_start, end, [f"{bullet} {item}{nl}"], nl)
    block = [f"{'#' * (unreleased.level + 1)} {category}{nl}", nl, f"{bullet} {item}{nl}"]
    return _after_content(lines, unreleased.body_start, end, block, nl, separate=True)


def _new_section(lines, heads, item, category, nl) -> tuple[int, list[str]]:
    release = next((h for h in heads if _VERSION.search(h.text)), None)
    level = release.level if release else 2
    block = [f"{'#' * level} [Unreleased]{nl}", nl, f"{'#' * (level + 1)} {category}{nl}", nl, f"- {item}{nl}"]
    if release is not None:
        return release.line, block + [nl]
    at = len(lines)
    lead = [nl] if lines and strip_ending(lines[-1]).strip() else []
    return at, lead + block


def _after_content(lines, start, end, block, nl, separate=False) -> tuple[int, list[str]]:
    """Insert after the last non-blank line in [start, end), with blank lines around a new block."""
    at = end
    while at > start and not lines[at - 1].strip():
        at -= 1
    separate = separate or at == start
    lead = [nl] if separate and at > 0 and lines[at - 1].strip() else []
    tail = [nl] if separate and at < len(lines) and lines[at].strip() else []
    return at, lead + block + tail


def _headings(lines: list[str]) -> list[_Heading]:
    text = "".join(lines)
    found = []
    for h in top_headings(text, max_level=6):
        raw = strip_ending(lines[h.line])
        if h.atx:
            title = re.sub(r"^ {0,3}#+[ \t]*", "", raw)
            title = re.sub(r"[ \t]+#+[ \t]*$", "", title).strip()
            body_start = h.line + 1
        else:
            title = raw.strip()
            body_start = h.line + 1
            while body_start < len(lines) and not re.match(r"^ {0,3}(=+|-+)[ \t]*$", strip_ending(lines[body_start])):
                body_start += 1
            body_start += 1
        found.append(_Heading(h.line, h.level, title, min(body_start, len(lines))))
    return found


def _bullet(lines: list[str], start: int, end: int) -> str:
    for j in range(start, end):
        if m := _ITEM.match(lines[j]):
            return m.group(1)
    return "-"


def _newline(lines: list[str]) -> str:
    counts: dict[str, int] = {}
    for line in lines:
        if ending := line_ending(line):
            counts[ending] = counts.get(ending, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else "\n"
