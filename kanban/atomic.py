"""Whole-file writes: a reader sees the old file or the new one, never half of one.

The data goes to a new temp file beside the target, which is then renamed over it. The temp
name ends in `.<pid>.tmp`, so that kanban.repair can tell one whose writer died. Standard
library only: the supervisor (`python -m kanban.supervisor`) writes its records with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = 0o644, durable: bool = False) -> None:
    """Put DATA at PATH in one step. MODE is set exactly (the umask does not reduce it); None
    keeps the mode PATH has (0o644 for a new file). DURABLE: the data is synced to disk before
    the rename and the directory after it, so the new file survives a power cut.
    On an error PATH is as it was, no temp file is left, and the OSError is raised."""
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = _new_temp(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, mode: int | None = 0o644, durable: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, durable=durable)


def write_json_atomic(path: Path, data: object, *, mode: int | None = 0o644, durable: bool = False) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n", mode=mode, durable=durable)


def fsync_dir(path: Path) -> None:
    """Sync a directory's entries (a rename in it) to disk; where that cannot be done, nothing."""
    with contextlib.suppress(OSError):  # the data is in place; a directory that cannot be synced is no error
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_temp(path: Path) -> tuple[int, Path]:
    """A new file beside PATH, `.<name>.<random>.<pid>.tmp`, only its owner may read it (0o600)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.{os.getpid()}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name beside {path}")
