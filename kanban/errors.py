"""The one domain error type. The CLI maps it to a single line and an exit code."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from kanban import paths

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


# --- the environment: a read-only or full file system, permissions ---------------------

# errno -> (what is wrong, how to fix it, exit code). 2: the setup must change before anything
# can run; 1: a resource ran out while working (the work failed; run it again once fixed).
_OS_ERRORS = {
    "EROFS": ("the file system is read-only",
              ("run kanban where it may write (remount read-write, or bind the repository writable);"
               " status, logs and report work read-only"), BAD_INPUT),
    "EACCES": ("permission denied",
               "check the owner and mode of the file and its directory; run kanban as the repository's owner",
               BAD_INPUT),
    "EPERM": ("operation not permitted",
              "check the owner and mode of the file and its directory; run kanban as the repository's owner",
              BAD_INPUT),
    "ELOOP": ("a symbolic link loop (or a chain of too many links)",
              "replace the link with a regular file or directory", BAD_INPUT),
    "ENOSPC": ("no space left on the device", "free some disk space and run the command again", WORK_FAILED),
    "EDQUOT": ("the disk quota is exceeded", "free some space within your quota and run the command again",
               WORK_FAILED),
    "EFBIG": ("the file is too large for the file system", "free space or raise the file size limit (ulimit -f)",
              WORK_FAILED),
    "EIO": ("an input/output error", "check the disk (dmesg) and run the command again", WORK_FAILED),
    "EMFILE": ("too many open files", "raise the limit (ulimit -n) and run the command again", WORK_FAILED),
    "ENFILE": ("too many open files on the system", "close other programs and run the command again",
               WORK_FAILED),
}
_VERBS = {"EROFS": "cannot write", "ENOSPC": "cannot write", "EDQUOT": "cannot write", "EFBIG": "cannot write",
          "EACCES": "cannot access", "EPERM": "cannot change", "ELOOP": "cannot open", "EIO": "cannot read or write",
          "EMFILE": "cannot open", "ENFILE": "cannot open"}
HISTORY_FILE = paths.HISTORY_FILE


def _shown(path: object, root: Path | None) -> str:
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if root is not None:
        try:
            return str(Path(os.path.abspath(text)).relative_to(root))
        except ValueError:
            pass
    return text


def _read_only(path: Path) -> bool:
    for candidate in (path, *path.parents):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def _nearly_full(path: Path) -> bool:
    try:
        info = os.statvfs(path)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < (1 << 20)


def _from_sqlite(exc: BaseException, root: Path | None) -> KanbanError | None:
    name = getattr(exc, "sqlite_errorname", None) or ""
    history = (root / HISTORY_FILE) if root is not None else Path(HISTORY_FILE)
    if name.startswith("SQLITE_FULL"):
        errname = "ENOSPC"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        errname = "EROFS" if _read_only(history.parent) else "EACCES"
    elif name.startswith("SQLITE_IOERR"):  # a full disk shows as an I/O error where SQLite maps its -shm
        errname = "ENOSPC" if "full" in str(exc) or _nearly_full(history.parent) else "EIO"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return KanbanError(f"the history is locked by another process ({exc})", file=HISTORY_FILE,
                           hint="wait for the other kanban command to finish and run this one again", code=WORK_FAILED)
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return KanbanError(f"the history database is damaged ({exc})", file=HISTORY_FILE,
                           hint="move it aside (kanban starts a new one) and run 'kanban preflight --repair'")
    else:
        return None
    what, hint, code = _OS_ERRORS[errname]
    verb = "open" if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) else "write"
    return KanbanError(f"cannot {verb} the history: {what} ({exc})", file=HISTORY_FILE, hint=hint, code=code)


def os_error_advice(exc: OSError) -> tuple[str, int]:
    """(how to fix it, exit code) for an OSError the environment caused."""
    name = errno.errorcode.get(exc.errno or 0, "")
    _, hint, code = _OS_ERRORS.get(name, ("", "check the disk and the file's directory", BAD_INPUT))
    return hint, code


def from_environment(exc: BaseException, root: Path | None = None) -> KanbanError | None:
    """One clear KanbanError for an OSError (or SQLite error) the environment caused, else None.

    Looks through the exception's explicit causes (`raise ... from exc`) too, not its
    context: an error raised after an OSError was handled is not that OSError.
    """
    import errno
    import sqlite3

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            found = _from_sqlite(current, root)
            if found is not None:
                return found
        if isinstance(current, OSError) and current.errno is not None:
            known = _OS_ERRORS.get(errno.errorcode.get(current.errno, ""))
            if known is not None:
                what, hint, code = known
                name = current.filename if current.filename is not None else current.filename2
                if current.filename2 is not None and code == WORK_FAILED:
                    name = current.filename2  # a copy (shutil) names its source first, the full disk is the target's
                where = _shown(name, root) if name is not None else None
                verb = _VERBS.get(errno.errorcode.get(current.errno, ""), "cannot use it")
                message = f"{verb}: {what}" if where else f"{verb} a file: {what}"
                return KanbanError(message, file=where, hint=hint, code=code)
        current = current.__cause__
    return None
