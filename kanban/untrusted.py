"""Reading what an agent wrote: never follow a link, never block, never read without bound.

Everything an agent leaves (its report, its log) may be a FIFO, a symlink to
/dev/zero or to a secret, or gigabytes long. `read_capped` opens without
following links and without blocking, reads only regular files, and stops at
its byte cap; `clean` makes the text safe to copy into a board file or a
prompt: no control characters or terminal escapes, bounded lines and size.
`read_regular` is for the files a person keeps (kanban.toml, prompt templates):
the whole file or a clear refusal, never a hang on a FIFO or a device.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

# Terminal escape sequences (ECMA-48), whole: what a terminal would swallow, the cleaner swallows,
# so no `[31m` or `(B` is left behind where the ESC was taken out.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI, 7- or 8-bit, also one cut short (no final byte)
    # OSC, DCS, SOS, PM, APC: a string up to BEL or ST; unterminated, up to the end of its line
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"  # the rest: ESC ( B, ESC # 8, ESC 7, ESC c, ESC =, ... or a lone ESC
)
# Then any C0/C1 control but tab and newline, and the Unicode controls that reorder or hide
# text (bidi embeddings, overrides and isolates; a byte order mark).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")


def read_fd(fd: int, limit: int) -> bytes:
    """At most LIMIT bytes from FD's position: the cap holds while reading, whatever the file claims."""
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_capped(path: Path, limit: int, *, tail: bool = False) -> str:
    """The first (or, with TAIL, the last) LIMIT bytes of a regular file; '' for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return ""
        if tail and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        return read_fd(fd, limit).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


class UnsafeFile(Exception):
    """A file that `read_regular` will not read: its reason reads after the file's name."""

    def __init__(self, reason: str, hint: str = "replace it with a regular file") -> None:
        super().__init__(reason)
        self.hint = hint


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path, limit: int, *, root: Path | None = None) -> bytes:
    """All of a regular file of at most LIMIT bytes, for files a person keeps (config, prompts).

    Links are followed only to a regular file (inside ROOT when given); a FIFO, a
    device, a socket, a directory, a link loop or a file over LIMIT raises
    UnsafeFile, without opening it or without blocking; a missing file raises
    FileNotFoundError; other OSErrors pass through.
    """
    try:
        info = os.stat(path)  # follows links; says what is there before anything is opened
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("is a symbolic link loop (or a chain of too many links)") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise UnsafeFile(f"is a symbolic link to {os.readlink(path)!r}, which does not exist") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"is {_kind(info.st_mode)}, not a regular file")
    if root is not None and os.path.islink(path):
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(Path(os.path.realpath(root))):
            raise UnsafeFile(f"is a symbolic link to {target}, outside the repository",
                             "replace the link with a regular file, or link to one inside the repository")
    if info.st_size > limit:
        raise UnsafeFile(f"is {_size(info.st_size)}, over the {_size(limit)} limit", "make it shorter")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)  # what was opened, should it have been swapped since the stat
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"is {_kind(info.st_mode)}, not a regular file")
        data = read_fd(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnsafeFile(f"is over the {_size(limit)} limit", "make it shorter")
    return data


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def clean(text: str, *, max_bytes: int = 4000, max_line: int = 500) -> str:
    """Printable text, each line at most MAX_LINE characters, the whole at most MAX_BYTES."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    lines = [line if len(line) <= max_line else line[: max_line - 1] + "…" for line in text.split("\n")]
    out = "\n".join(lines)
    data = out.encode("utf-8")
    if len(data) > max_bytes:
        out = data[: max_bytes - 4].decode("utf-8", errors="ignore") + "\n…"
    return out
