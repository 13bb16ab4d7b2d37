"""Prompt templates: the repository's prompts/ wins over the packaged copy.

Templates use `{{ name }}` placeholders (double braces, so code samples with
single braces stay as they are). An unknown placeholder is an error, never a
silent blank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from kanban.errors import KanbanError

ROLE_TEMPLATES = {"task": "task.md", "reviewer": "reviewer.md", "tester": "tester.md", "planner": "planner.md"}
PLACEHOLDERS = (
    "task_id", "title", "body", "priority", "depends", "files", "track", "role", "attempt",
    "branch", "main_branch", "worktree", "report_file", "feedback", "notes",
    "changed_files", "tests", "conflicts", "test_command", "verdict",
    "feature", "board",  # the planner's: what to plan, and the board as it stands
)
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def packaged_prompts_dir() -> Path:
    """The default templates: shipped inside the wheel, or the source tree's prompts/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    return here / "prompts"


PROMPT_MAX_BYTES = 256 * 1024  # a template; a real one is a few KiB


def template_path(root: Path, role: str) -> Path:
    """The repository's template when anything is there (read_template then refuses
    what is not a regular file), else the packaged one."""
    name = ROLE_TEMPLATES[role]
    own = root / "prompts" / name
    try:
        own.lstat()
    except FileNotFoundError:
        return packaged_prompts_dir() / name
    except OSError:
        pass
    return own


def read_template(path: Path, root: Path, source: str) -> str:
    """A template's text: a regular file (a link only to one inside the repository), never
    a FIFO or a device, at most PROMPT_MAX_BYTES, UTF-8; else one clear KanbanError."""
    from kanban.untrusted import UnsafeFile, read_regular

    hint = "restore it with 'kanban init' (delete it first), or make it a regular UTF-8 file"
    inside = path.is_relative_to(root)
    try:
        data = read_regular(path, PROMPT_MAX_BYTES, root=root if inside else None)
    except UnsafeFile as exc:
        raise KanbanError(f"prompt template {exc}", file=source, hint=exc.hint) from None
    except OSError as exc:
        raise KanbanError(f"cannot read prompt template: {exc.strerror or exc}", file=source, hint=hint) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KanbanError(f"prompt template is not valid UTF-8 (byte {exc.start + 1})", file=source,
                          line=data.count(b"\n", 0, exc.start) + 1, hint="save the file as UTF-8") from None


def check_templates(root: Path) -> None:
    """Before a pass starts agents: each role's template of the repository can be read (a
    regular file, not a FIFO, a device or a link outside), else one KanbanError, exit 2.
    Placeholders are checked per start, where the task's note names them."""
    for role in ROLE_TEMPLATES:
        path = template_path(root, role)
        if path.is_relative_to(root):
            read_template(path, root, str(path.relative_to(root)))


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
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return render(read_template(path, root, source), values, source=source)
