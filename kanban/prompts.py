"""Where prompt templates come from: the repository's prompts/ wins over the packaged copy."""

from __future__ import annotations

from pathlib import Path

ROLES = ("task", "reviewer", "tester")


def packaged_prompts_dir() -> Path:
    """The default templates: shipped inside the wheel, or the source tree's prompts/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "prompts", here.parent / "prompts"):
        if candidate.is_dir():
            return candidate
    return here / "prompts"
