"""Prompt templates: the repository's prompts/ wins over the packaged copy.

Templates use `{{ name }}` placeholders (double braces, so code samples with
single braces stay as they are). An unknown placeholder is an error, never a
silent blank.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from kanban.errors import KanbanError

ROLE_TEMPLATES = {"task": "task.md", "reviewer": "reviewer.md", "tester": "tester.md"}
PLACEHOLDERS = (
    "task_id", "title", "body", "priority", "depends", "files", "track", "role", "attempt",
    "branch", "main_branch", "worktree", "report_file", "feedback", "notes",
    "changed_files", "tests", "conflicts", "test_command", "verdict",
)
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def packaged_prompts_dir() -> Path:
    """The default templates: shipped inside the wheel, or the source tree's prompts/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    return here / "prompts"


def template_path(root: Path, role: str) -> Path:
    name = ROLE_TEMPLATES[role]
    own = root / "prompts" / name
    return own if own.is_file() else packaged_prompts_dir() / name


def render(template: str, values: Mapping[str, str], *, source: str) -> str:
    """Fill `{{ name }}` placeholders; an unknown name raises a KanbanError with its line."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PLACEHOLDERS:
            line = template.count("\n", 0, match.start()) + 1
            raise KanbanError(
                f"unknown placeholder {{{{ {name} }}}}",
                file=source,
                line=line,
                hint="known placeholders: " + ", ".join(PLACEHOLDERS),
            )
        return str(values.get(name, ""))

    return _PLACEHOLDER_RE.sub(fill, template)


def render_role(root: Path, role: str, values: Mapping[str, str]) -> str:
    path = template_path(root, role)
    try:
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KanbanError(f"cannot read prompt template: {exc}", file=str(path), hint="restore it with 'kanban init'")
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return render(template, values, source=source)
