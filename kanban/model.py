"""Plain records shared by the pure modules (machine, scheduler) and the I/O ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Column(str, Enum):
    TODO = "TODO"
    IN_PROGRESS = "IN_PROGRESS"
    REVIEW = "REVIEW"
    TESTING = "TESTING"
    DONE = "DONE"  # merged: the task lives on as a line in CHANGELOG.md


BOARD_COLUMNS = (Column.TODO, Column.IN_PROGRESS, Column.REVIEW, Column.TESTING)

COLUMN_FILES = {
    Column.TODO: "TODO.md",
    Column.IN_PROGRESS: "IN_PROGRESS.md",
    Column.REVIEW: "REVIEW.md",
    Column.TESTING: "TESTING.md",
    Column.DONE: "CHANGELOG.md",
}


class Role(str, Enum):
    TASK = "task"
    REVIEWER = "reviewer"
    TESTER = "tester"


# The role that works a task in each active column.
COLUMN_ROLE = {
    Column.IN_PROGRESS: Role.TASK,
    Column.REVIEW: Role.REVIEWER,
    Column.TESTING: Role.TESTER,
}

RETRY = "RETRY"
ESCALATED = "ESCALATED"
READY_STATUS = "ready to merge"
DEFAULT_PRIORITY = 3


@dataclass(frozen=True)
class Task:
    """A task entry as the pure logic sees it."""

    id: str
    title: str
    column: Column
    priority: int = DEFAULT_PRIORITY
    depends: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    markers: frozenset[str] = field(default_factory=frozenset)
    status: str | None = None  # the tool's `status:` line, e.g. "ready to merge"
    track: str | None = None
    order: int = 0  # position across the board, file order within a column

    @property
    def retry(self) -> bool:
        return RETRY in self.markers

    @property
    def escalated(self) -> bool:
        return ESCALATED in self.markers

    @property
    def ready(self) -> bool:
        return self.column is Column.TESTING and self.status == READY_STATUS
