"""Reading and writing the board on disk: one writer at a time, atomic, never over a hand edit."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from kanban.board import MAX_FILE_BYTES, Board, BoardFile, changelog_ids, decode_text, parse_file, validate
from kanban.errors import ConcurrentEdit, KanbanError
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column

STATE_DIR = ".kanban"
LOCK_NAME = "board.lock"
T = TypeVar("T")


def board_path(root: Path, column: Column) -> Path:
    """The path of a board file, refusing links that lead outside the repository."""
    path = root / COLUMN_FILES[column]
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            raise KanbanError(
                f"is a symbolic link to {target}, outside the repository",
                file=path.name,
                hint="replace the link with a regular file",
            )
        return target
    return path


def read_bytes(path: Path) -> bytes | None:
    """A file's bytes, None if it does not exist; a clear error if it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise KanbanError("is a directory, not a file", file=path.name, hint="remove or rename it") from None
    except OSError as exc:
        raise KanbanError(f"cannot be read: {exc.strerror}", file=path.name, hint="check its permissions") from None


def load_board(root: Path, *, check: bool = True) -> Board:
    files = {}
    for column in BOARD_COLUMNS:
        path = board_path(root, column)
        data = read_bytes(path)
        bf = parse_file(path, column, data or b"")
        bf.exists = data is not None
        files[column] = bf
    changelog_path = board_path(root, Column.DONE)
    changelog = read_bytes(changelog_path) or b""
    if len(changelog) > MAX_FILE_BYTES:
        parse_file(changelog_path, Column.DONE, changelog)  # raises the size-limit error
    done = changelog_ids(decode_text(changelog_path, changelog))
    board = Board(root, files, done)
    if check:
        validate(board)
    return board


@contextlib.contextmanager
def board_lock(root: Path, timeout: float = 30.0) -> Iterator[None]:
    """One writer at a time across processes (an flock on .kanban/board.lock)."""
    state = root / STATE_DIR
    state.mkdir(exist_ok=True)
    fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise KanbanError(
                        "another kanban command is writing the board",
                        file=str(Path(STATE_DIR) / LOCK_NAME),
                        hint="wait for it to finish and try again",
                        code=1,
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename; keep the file's mode."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".kanban-tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(board: Board) -> list[str]:
    """Write the dirty files. Call with the board lock held.

    Every dirty file is first checked against the bytes it had when read, so a
    hand edit made meanwhile raises ConcurrentEdit before anything is written.
    Files are written in the order they became dirty, so a move writes its
    target before its source: a crash in between leaves
    the entry in two files (repairable), never in none.
    """
    if board.files[Column.TODO].dirty:
        board.assign_ids()
    dirty = board.dirty_files()
    for f in dirty:
        f.settle()  # never write a file that would lose or split an entry on reload
    for f in dirty:
        if (read_bytes(f.path) or b"") != f.raw:
            raise ConcurrentEdit(f.path)
    written = []
    for f in dirty:
        data = f.render()
        if data != f.raw or not f.exists:
            atomic_write(f.path, data)
            written.append(f.name)
        f.raw, f.exists = data, True
        f.mark_clean()
    return written


def update(root: Path, change: Callable[[Board], T], *, attempts: int = 8) -> T:
    """Load, apply `change`, save; on a concurrent hand edit, re-read and apply again."""
    with board_lock(root):
        for _ in range(attempts):
            board = load_board(root)
            result = change(board)
            validate(board)  # never write a board that would not load again
            try:
                save(board)
                return result
            except ConcurrentEdit:
                time.sleep(0.05)
        raise KanbanError(
            "the board files kept changing while kanban tried to update them",
            hint="pause your editor's autosave and run the command again",
            code=1,
        )
