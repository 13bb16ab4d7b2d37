"""Verdicts an agent writes in its report. Pure.

Real agent CLIs exit 0 after any finished turn, so what decides is a line in
the report file (KANBAN_REPORT_FILE):

    verdict: approve        reviewer: approve | reject
    verdict: pass           tester:   pass | fail
    verdict: fail           task agent (optional): done | fail

One line, anywhere in the report; the last such line counts. Case, markdown
emphasis and backticks around the word are ignored (`**Verdict:** Approve`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

WORDS: dict[str, dict[str, bool]] = {
    "task": {"done": True, "fail": False},
    "reviewer": {"approve": True, "reject": False},
    "tester": {"pass": True, "fail": False},
}

_LINE = re.compile(r"^[\s>*_`#-]*verdict[\s*_`]*:[\s*_`]*([A-Za-z-]*)", re.IGNORECASE | re.MULTILINE)


class Verdict(NamedTuple):
    word: str  # as written, lower-cased
    ok: bool | None  # None: a verdict line whose word is not one of the role's


def read_verdict(report: str, role: str) -> Verdict | None:
    """The report's verdict for ROLE, or None when it has no verdict line."""
    found = _LINE.findall(report)
    if not found:
        return None
    word = found[-1].lower()
    return Verdict(word, WORDS.get(role, {}).get(word))


def example(role: str) -> str:
    """How the prompts show the format: 'verdict: approve' or 'verdict: reject'."""
    return " or ".join(f"`verdict: {word}`" for word in WORDS[role])
