"""The one domain error type. The CLI maps it to a single line and an exit code."""

from __future__ import annotations

from pathlib import Path

BAD_INPUT = 2
WORK_FAILED = 1


class KanbanError(Exception):
    """Something the user can fix. Printed as `FILE:LINE: message; hint`."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
        code: int = BAD_INPUT,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f"; {self.hint}"
        return text


class ConcurrentEdit(Exception):
    """A board file changed on disk between our read and our write."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed on disk while it was being updated")
        self.path = path
