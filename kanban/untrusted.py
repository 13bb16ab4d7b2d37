"""Reading what an agent wrote: never follow a link, never block, never read without bound.

Everything an agent leaves (its report, its log) may be a FIFO, a symlink to
/dev/zero or to a secret, or gigabytes long. `read_capped` opens without
following links and without blocking, reads only regular files, and stops at
its byte cap; `clean` makes the text safe to copy into a board file or a
prompt: no control characters or terminal escapes, bounded lines and size.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

# CSI / OSC / other ESC sequences, then any C0/C1 control but tab and newline.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def clean(text: str, *, max_bytes: int = 4000, max_line: int = 500) -> str:
    """Printable text, each line at most MAX_LINE characters, the whole at most MAX_BYTES."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    lines = [line if len(line) <= max_line else line[: max_line - 1] + "…" for line in text.split("\n")]
    out = "\n".join(lines)
    data = out.encode("utf-8")
    if len(data) > max_bytes:
        out = data[: max_bytes - 4].decode("utf-8", errors="ignore") + "\n…"
    return out
