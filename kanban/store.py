"""Reading and writing the board on disk: one writer at a time, atomic, never over a hand edit.

Locks. A writer holds an exclusive flock on `.kanban/board.lock` for a whole
read-change-save (`update`), a reader a shared one while it reads the files'
bytes (parsing comes after), so a load never sees a move between two files half
done, and readers, holding the lock for microseconds, never starve a writer. A
load by the thread that already holds the lock reuses it (a second flock of the
same process on another descriptor would wait for itself). Where there is no
`.kanban` directory or its lock cannot be opened (a read-only filesystem, where
nothing can write the board either), a load reads without.

Writes. A board file is written to a temp file in its directory (fsync, the
file's mode), which is then atomically exchanged with the board file
(renameat2 RENAME_EXCHANGE). What came out is the file as it was on disk: once
no process has it open for writing any more, its bytes are compared with the
bytes kanban read. If they differ, a hand edit landed after the read: it is
exchanged back (and a write that landed on kanban's version meanwhile, being
newer, wins), and the save raises ConcurrentEdit, so `update` reads again and
re-applies its change on top of the hand edit. A save of several files (a
move) writes every temp file before the first exchange, exchanges the move's
target first, and undoes the files already exchanged if a later one meets a
hand edit: all or nothing. Where the exchange is not supported (not Linux, a
filesystem that answers EINVAL), the check and a plain rename follow each other
as closely as they can.

Reading cheaply. A running board is loaded many times a second and mostly
unchanged. Every load reads every file's bytes (the only safe change detector:
two quick writes can leave the same size and mtime); what those bytes parse
into is kept per file path with the bytes it came from (_ParseCache), and reused
when the bytes read are the same bytes (compared in full, not by a hash or a
stat). A cached parse is immutable (board.ParsedFile): each load gets its own
BoardFiles and entries, built from it, for `update`'s change to edit; the entries
share the parse's lines and headings until their first edit (copy on write, see
entry.Entry), and a new version of a file keeps the entries of the last parse
whose lines it has unchanged (board.parse_blocks). A board loaded valid remembers
it (Board.mark_valid), so that the validation before an update's save checks only
what the change changed (board.validate). The IDs of
CHANGELOG.md are kept the same way, and so is the fact that a board of exactly
these parses (by identity) passed validation, so a load of an unchanged board
does not validate it again. Errors are never cached: bytes that do not parse or
validate raise, with the same message, on every load.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import random
import signal
import stat
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kanban import locks, paths
from kanban.atomic import fsync_dir, write_bytes_atomic
from kanban.board import (
    MAX_FILE_BYTES,
    Board,
    ParsedFile,
    changelog_ids_frozen,
    decode_text,
    parse_blocks,
    parses_valid_after,
    validate,
)
from kanban.errors import ConcurrentEdit, KanbanError
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column
from kanban.untrusted import read_fd

STATE_DIR = paths.STATE_DIR
LOCK_NAME = paths.BOARD_LOCK
LOCK_TIMEOUT = 30.0
# How long a save waits for a process that still has the file it replaced open for writing
# (an editor writing in place, `echo >>`) to close it before comparing its bytes.
WRITER_GRACE = 0.5
# How long an update keeps re-reading and re-applying its change over hand edits before giving up.
RETRY_FOR = 10.0
T = TypeVar("T")

_MIB = 1024 * 1024
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
# Off in tests that exercise the fallback (check, then rename) on a system that has the exchange.
_exchange_enabled = True
_held = threading.local()  # .locks: {state dir: "ex" | "sh"} held by this thread


# -- paths and reading ---------------------------------------------------------------


def board_path(root: Path, column: Column) -> Path:
    """The path of a board file, refusing links that loop or lead outside the repository."""
    path = root / COLUMN_FILES[column]
    if path.is_symlink():
        try:
            target = path.resolve()
        except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, OSError(ELOOP) after
            raise KanbanError("is a symbolic link loop (or a chain of too many links)", file=path.name,
                              hint="replace the link with a regular file") from None
        if not target.is_relative_to(root.resolve()):
            raise KanbanError(
                f"is a symbolic link to {target}, outside the repository",
                file=path.name,
                hint="replace the link with a regular file",
            )
        return target
    return path


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: Path, mode: int) -> KanbanError:
    if stat.S_ISDIR(mode):
        return KanbanError("is a directory, not a file", file=path.name, hint="remove or rename it")
    return KanbanError(f"is {_kind(mode)}, not a regular file", file=path.name,
                       hint="replace it with a regular file (or delete it)")


def _read_error(path: Path, exc: OSError) -> KanbanError:
    if exc.errno == errno.ELOOP:
        return KanbanError("is a symbolic link loop, or was replaced by a link while kanban read it",
                           file=path.name, hint="replace the link with a regular file")
    return KanbanError(f"cannot be read: {exc.strerror or exc}", file=path.name, hint="check its permissions")


def read_bytes(path: Path) -> bytes | None:
    """A board file's bytes, None if it does not exist; a clear KanbanError for anything else.

    Never blocks and never follows a link (board_path resolves links first): a FIFO,
    a device, a socket or a directory is refused before it is opened (and checked
    again on what was opened), and so is a file over the board-file size limit.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _read_error(path, exc) from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _read_error(path, exc) from None
    try:
        info = os.fstat(fd)  # what was opened, should it have been swapped since the lstat
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        data = read_fd(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _read_error(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise KanbanError(
            f"file is {max(info.st_size, len(data)) // _MIB} MiB, over the {MAX_FILE_BYTES // _MIB} MiB limit"
            " for board files",
            file=path.name,
            hint="move finished or old entries out of it",
        )
    return data


class _DoneIds:
    """The task IDs of one CHANGELOG.md text (equality is identity, as for ParsedFile)."""

    __slots__ = ("ids",)

    def __init__(self, ids: frozenset[str]) -> None:
        self.ids = ids


class _ParseCache:
    """Per board file path, the bytes last read and what they parse into (see the module doc).

    Bounded: the last version of each of the last MAX_PATHS files, and for the last MAX_ROOTS
    repositories the parses that last passed validation together."""

    MAX_PATHS = 40
    MAX_ROOTS = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[str, Column], tuple[bytes, object]] = OrderedDict()
        self._valid: OrderedDict[str, tuple] = OrderedDict()

    def _get(self, key: tuple[str, Column], data: bytes, parse: Callable[[object | None], T]) -> T:
        """What DATA, the bytes of KEY's file, parse into; PARSE gets what the file's last bytes did."""
        with self._lock:
            found = self._files.get(key)
            if found is not None:
                self._files.move_to_end(key)
        if found is not None and found[0] == data:  # the same bytes, compared in full
            return found[1]  # type: ignore[return-value]
        parsed = parse(found[1] if found is not None else None)  # raises for bytes that do not parse: never cached
        with self._lock:
            self._files[key] = (data, parsed)
            self._files.move_to_end(key)
            while len(self._files) > self.MAX_PATHS:
                self._files.popitem(last=False)
        return parsed

    def parsed(self, path: Path, column: Column, data: bytes) -> ParsedFile:
        return self._get((str(path), column), data,
                         lambda earlier: parse_blocks(path, column, data, earlier))  # type: ignore[arg-type]

    def done_ids(self, path: Path, data: bytes) -> _DoneIds:
        return self._get((str(path), Column.DONE), data,
                         lambda _: _DoneIds(changelog_ids_frozen(decode_text(path, data))))

    def validated(self, root: Path, key: tuple) -> bool:
        with self._lock:
            return self._valid.get(str(root)) == key  # tuples of identity-compared parses

    def last_validated(self, root: Path) -> tuple | None:
        with self._lock:
            return self._valid.get(str(root))

    def mark_validated(self, root: Path, key: tuple) -> None:
        with self._lock:
            self._valid[str(root)] = key
            self._valid.move_to_end(str(root))
            while len(self._valid) > self.MAX_ROOTS:
                self._valid.popitem(last=False)

    def cache_clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._valid.clear()


_CACHE = _ParseCache()


# The last board read for reading only, per repository: (what it was built from, the board).
_SHARED: OrderedDict[str, tuple[tuple, Board]] = OrderedDict()
_SHARED_LOCK = threading.Lock()


def read_board(root: Path, *, check: bool = True) -> Board:
    """The board as on disk, for reading only: the same object as the last call's while every
    file holds the same bytes, so a pass over an unchanged 10,000-task board builds nothing.
    Never change it (a change goes through `update`, which loads a board of its own)."""
    return load_board(root, check=check, shared=True)


def load_board(root: Path, *, check: bool = True, shared: bool = False) -> Board:
    """The board as on disk; never a move half done (a shared lock, see the module doc).

    Every call reads every file; parsing and validation are reused for bytes already seen.
    SHARED (see read_board): a board other readers may hold too, not to be changed."""
    raw: dict[Column, tuple[Path, bytes | None]] = {}
    with _read_lock(root):  # the bytes under the lock; parsing them needs none
        for column in (*BOARD_COLUMNS, Column.DONE):
            path = board_path(root, column)
            raw[column] = path, read_bytes(path)
    parsed_files = [_CACHE.parsed(raw[c][0], c, raw[c][1] or b"") for c in BOARD_COLUMNS]
    parses: list[object] = list(parsed_files)
    changelog_path, changelog = raw[Column.DONE]
    done = _CACHE.done_ids(changelog_path, changelog or b"")
    parses.append(done)
    key = (*parses, *(raw[c][1] is not None for c in BOARD_COLUMNS))
    if shared:
        with _SHARED_LOCK:
            found = _SHARED.get(str(root))
        if found is not None and found[0] == key:  # parses compare by identity: the same bytes
            if check and not _CACHE.validated(root, tuple(parses)):
                validate(found[1])
                _CACHE.mark_validated(root, tuple(parses))
            return found[1]
    files = {c: parsed.board_file(raw[c][0], c, exists=raw[c][1] is not None)
             for c, parsed in zip(BOARD_COLUMNS, parsed_files)}
    board = Board(root, files, set(done.ids))
    if check:
        if not _CACHE.validated(root, tuple(parses)):
            last = _CACHE.last_validated(root)  # most often the files just before kanban's write, or an edit
            if last is None or not parses_valid_after(last[:-1], last[-1].ids, parsed_files, done.ids):
                validate(board)
            _CACHE.mark_validated(root, tuple(parses))
        board.mark_valid(parsed_files, done.ids)  # an update's validate then checks what its change changed
    if shared:
        board.freeze()
        with _SHARED_LOCK:
            _SHARED[str(root)] = (key, board)
            _SHARED.move_to_end(str(root))
            while len(_SHARED) > _ParseCache.MAX_ROOTS:
                _SHARED.popitem(last=False)
    return board


# -- locks ---------------------------------------------------------------------------


def _locks() -> dict[str, str]:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


def _state_key(state: Path) -> str:
    return os.path.realpath(state)


def state_dir(root: Path) -> Path:
    """`.kanban`, created if missing; a clear KanbanError if it is not a directory or cannot be made."""
    state = paths.state_dir(root)
    try:
        state.mkdir(exist_ok=True)
    except FileExistsError:
        raise KanbanError("is not a directory: kanban keeps its state (locks, history, runs) in a .kanban directory",
                          file=STATE_DIR,
                          hint="move the file .kanban out of the way and run the command again") from None
    except OSError as exc:
        raise _write_error(STATE_DIR, exc, "cannot be created") from None
    if not state.is_dir():  # a link to a file, or a dangling link
        raise KanbanError("is not a directory: kanban keeps its state (locks, history, runs) in a .kanban directory",
                          file=STATE_DIR, hint="move .kanban out of the way and run the command again")
    return state


def _busy() -> KanbanError:
    return KanbanError("another kanban command is writing the board", file=str(Path(STATE_DIR) / LOCK_NAME),
                       hint="wait for it to finish and try again", code=1)


def _open_for_reader(state: Path) -> int | None:
    """The lock file for a shared lock, or None where there is nothing to lock."""
    try:
        return os.open(state / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if not state.is_dir():  # no .kanban: no writer has run here yet (or .kanban is not a directory)
            return None
        with contextlib.suppress(OSError):  # on a read-only filesystem nothing can write the board either
            return locks.open_lock_file(state / LOCK_NAME)
    except OSError:
        pass
    return None


@contextlib.contextmanager
def _read_lock(root: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """A shared lock for one load (nothing if this thread holds the lock already, or if there is none to take)."""
    state = paths.state_dir(root)
    key = _state_key(state)
    fd = None if key in _locks() else _open_for_reader(state)
    if fd is None:
        yield
        return
    try:
        try:
            if not locks.acquire(fd, shared=True, timeout=timeout):
                raise _busy()
        except OSError:  # flock is not supported on this filesystem: read without it
            pass
        with _holding(key, "sh"):
            yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _holding(key: str, mode: str) -> Iterator[None]:
    """This thread holds the lock on KEY in MODE ("sh" or "ex") while inside."""
    _locks()[key] = mode
    try:
        yield
    finally:
        _locks().pop(key, None)


@contextlib.contextmanager
def board_lock(root: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One writer at a time across processes, and no reader while it writes (an exclusive
    flock on .kanban/board.lock). Re-entrant within a thread."""
    state = state_dir(root)
    key = _state_key(state)
    held = _locks().get(key)
    if held == "ex":
        yield
        return
    if held == "sh":
        raise RuntimeError("board_lock() inside a load of the same board")
    try:
        fd = locks.open_lock_file(paths.board_lock(root))
    except OSError as exc:
        raise _write_error(f"{STATE_DIR}/{LOCK_NAME}", exc, "cannot be opened") from None
    try:
        try:
            if not locks.acquire(fd, timeout=timeout):
                raise _busy()
        except OSError as exc:
            raise KanbanError(f"cannot be locked: {exc.strerror or exc}", file=str(Path(STATE_DIR) / LOCK_NAME),
                              hint="keep the repository on a local filesystem that supports flock") from None
        with _holding(key, "ex"):
            yield
    finally:
        os.close(fd)


# -- writing -------------------------------------------------------------------------


def _write_error(shown: str | Path, exc: OSError, what: str = "cannot be written") -> KanbanError:
    """One line for a write the environment refused; the board is as it was (nothing half-written)."""
    from kanban.errors import os_error_advice  # the one errno table: hint and exit code

    hint, code = os_error_advice(exc)
    return KanbanError(f"{what}: {exc.strerror or exc}; nothing was changed", file=shown, hint=hint, code=code)


@functools.cache
def _renameat2_fn():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without the wrapper (glibc < 2.28)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(2); False where the system or the filesystem does not support FLAGS."""
    fn = _renameat2_fn() if _exchange_enabled else None
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _wait_for_writers(fd: int) -> None:
    """Until no process has the file open for writing (up to WRITER_GRACE): a read lease can only
    be taken on a file that nobody has open for writing. Where leases are not available, at once."""
    setlease, setsig = getattr(fcntl, "F_SETLEASE", None), getattr(fcntl, "F_SETSIG", None)
    if setlease is None or setsig is None:
        return
    deadline = time.monotonic() + WRITER_GRACE
    delay = 0.0005
    while True:
        try:
            # an open for writing while the lease is held signals its holder: SIGURG, which is ignored
            fcntl.fcntl(fd, setsig, signal.SIGURG)
            fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno == errno.EAGAIN and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
                continue
            return  # no leases here (EINVAL; EACCES for another user's file), or a writer that stays
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
        return


def _settled(path: Path) -> bytes | None:
    """The bytes of the file at PATH once nobody is writing it; None if it is not a regular file."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        _wait_for_writers(fd)
        return read_fd(fd, MAX_FILE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes) -> Path:
    """DATA in a new temp file beside PATH, synced to disk, with PATH's mode. Nothing left behind on error."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".kanban-tmp")
    except OSError as exc:
        raise _write_error(path.name, exc) from None
    tmp = Path(name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path.name, exc) from None
        raise
    os.close(fd)
    return tmp


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@dataclass
class _Write:
    """One file of a save: our temp file, then (once exchanged) the file it replaced."""

    path: Path
    data: bytes  # what we write
    raw: bytes  # what we read
    existed: bool
    tmp: Path | None = None
    how: str = ""  # "exchanged" (tmp holds the replaced file), "created", "replaced" (fallback)


def _put_back(w: _Write, expected: bytes | None) -> None:
    """W.tmp holds a file that must be at W.path again (a hand edit our exchange took out, or
    the file we replaced, when undoing); W.path holds EXPECTED. Exchange them and drop what
    comes out once it is EXPECTED. Anything else that comes out was written to W.path
    meanwhile: being newer than what went in, it goes back in its turn, and that one is dropped."""
    assert w.tmp is not None  # an exchanged write: W.tmp holds the file that came out
    candidate = _settled(w.tmp)
    for _ in range(16):
        try:
            if not _renameat2(w.tmp, w.path, _RENAME_EXCHANGE):  # the filesystem stopped exchanging
                break
        except FileNotFoundError:  # the file was deleted meanwhile: put it back all the same
            with contextlib.suppress(OSError):
                _link_new(w.tmp, w.path)
            break
        came = _settled(w.tmp)
        if came == expected:
            break
        expected, candidate = candidate, came
    _unlink(w.tmp)
    w.tmp, w.how = None, ""


def _link_new(tmp: Path, path: Path) -> None:
    """Move TMP to PATH where nothing is; FileExistsError if something is (created meanwhile)."""
    if _renameat2(tmp, path, _RENAME_NOREPLACE):
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    _unlink(tmp)


def _swap(w: _Write) -> None:
    """Put W.data at W.path in one step, unless the file is no longer the one we read (ConcurrentEdit)."""
    assert w.tmp is not None  # _commit staged it first
    if not w.existed:  # a new file: never over one a person created meanwhile
        try:
            _link_new(w.tmp, w.path)
        except FileExistsError:
            raise ConcurrentEdit(w.path) from None
        w.tmp, w.how = None, "created"
        return
    try:
        exchanged = _renameat2(w.tmp, w.path, _RENAME_EXCHANGE)
    except FileNotFoundError:  # deleted by hand since the read
        raise ConcurrentEdit(w.path) from None
    if exchanged:
        w.how = "exchanged"  # from here on, W.tmp holds the file we replaced
        if _settled(w.tmp) != w.raw:
            _put_back(w, w.data)
            raise ConcurrentEdit(w.path)
        return
    current = read_bytes(w.path)  # the fallback: check, then rename, as close together as they get
    if current is None or current != w.raw:
        raise ConcurrentEdit(w.path)
    os.replace(w.tmp, w.path)
    w.tmp, w.how = None, "replaced"


def _undo(w: _Write) -> None:
    """Put back what W replaced (a later file of the same save met a hand edit), keeping any
    newer write that landed on the file since."""
    if w.how == "exchanged":
        _put_back(w, w.data)
    elif w.how == "created":
        aside = w.path.with_name(f".{w.path.name}.undo.kanban-tmp")
        os.rename(w.path, aside)
        if _settled(aside) == w.data:
            _unlink(aside)
        else:  # a hand edit on top of the file we created: it stays
            _link_new(aside, w.path)
    elif w.how == "replaced":
        w.tmp = _stage(w.path, w.raw)
        if read_bytes(w.path) == w.data:
            os.replace(w.tmp, w.path)
            w.tmp = None
    w.how = ""


def _commit(writes: list[_Write]) -> None:
    """Write all of WRITES or none (see the module doc). Raises ConcurrentEdit or KanbanError;
    on any error every file is as it was and no temp file is left."""
    try:
        for w in writes:
            w.tmp = _stage(w.path, w.data)
        for w in writes:
            try:
                _swap(w)
            except OSError as exc:
                raise _write_error(w.path.name, exc) from None
    except BaseException:
        for w in reversed(writes):  # those already in place (W.how says how), last first
            with contextlib.suppress(OSError):
                _undo(w)
        for w in writes:
            _unlink(w.tmp)
        raise
    for w in writes:
        _unlink(w.tmp)  # the files we replaced
        _note_own_write(w.path)
    for parent in dict.fromkeys(w.path.parent for w in writes):
        fsync_dir(parent)


# What the files this process last wrote look like (inode, size, times): a watcher can tell a
# person's edit from kanban's own write by a stat, without reading the file.
_OWN_WRITES: dict[str, tuple[int, int, int, int]] = {}


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _note_own_write(path: Path) -> None:
    found = file_signature(path)
    if found is not None:
        _OWN_WRITES[str(path)] = found


def written_by_us(path: Path, signature: tuple[int, int, int, int] | None) -> bool:
    """True if PATH still looks exactly as this process last wrote it."""
    return signature is not None and _OWN_WRITES.get(str(path)) == signature


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory, fsync, rename; keep the file's mode.

    Unconditional: for a board file that a person may be editing, use `update_file`. A write
    that fails leaves the file as it was and no temp file behind (a KanbanError)."""
    try:
        write_bytes_atomic(path, data, mode=None, durable=True)
    except OSError as exc:
        raise _write_error(path.name, exc) from None


def save(board: Board) -> list[str]:
    """Write the dirty files. Call with the board lock held.

    Every dirty file is first checked against the bytes it had when read, so a
    hand edit made long before raises ConcurrentEdit before anything is written;
    one made since is caught as the file is exchanged (see the module doc).
    Files are exchanged in the order they became dirty, so a move writes its
    target before its source: a crash in between leaves the entry in two files
    (repairable), never in none.
    """
    if board.files[Column.TODO].dirty:
        board.assign_ids()
    dirty = board.dirty_files()
    texts = [f.settle() for f in dirty]  # never write a file that would lose or split an entry on reload
    for f in dirty:
        if (read_bytes(f.path) or b"") != f.raw:
            raise ConcurrentEdit(f.path)
    rendered = [(f, f.render(text)) for f, text in zip(dirty, texts)]
    writes = [_Write(f.path, data, f.raw, f.exists) for f, data in rendered if data != f.raw or not f.exists]
    if writes:
        _commit(writes)
    for f, data in rendered:
        f.raw, f.exists = data, True
        f.mark_clean()
    return [w.path.name for w in writes]


def _attempts(attempts: int | None) -> Iterator[int]:
    """Attempt numbers: ATTEMPTS of them, or by default as many as fit in RETRY_FOR seconds (at
    least 8). An editor saving 20 times a second lands in a save's window often on a large file:
    a fixed handful of attempts would give up where a few more succeed."""
    began = time.monotonic()
    n = 0
    while True:
        yield n
        n += 1
        if (n >= attempts) if attempts is not None else (n >= 8 and time.monotonic() - began > RETRY_FOR):
            return
        time.sleep(random.uniform(0.0, 0.02))  # not in step with an editor that saves periodically


def update(root: Path, change: Callable[[Board], T], *, attempts: int | None = None) -> T:
    """Load, apply `change`, save; on a concurrent hand edit, re-read and apply again."""
    with board_lock(root):
        for _ in _attempts(attempts):
            board = load_board(root)
            result = change(board)
            validate(board)  # never write a board that would not load again
            try:
                save(board)
                return result
            except ConcurrentEdit:
                pass
        raise KanbanError(
            "the board files kept changing while kanban tried to update them",
            hint="pause your editor's autosave and run the command again",
            code=1,
        )


def update_file(root: Path, column: Column, change: Callable[[bytes], bytes], *, attempts: int | None = None) -> bool:
    """Under the board lock: read one board file, write CHANGE(bytes) back unless it is the same,
    never over a hand edit (re-read and re-applied, as in `update`). True if it wrote."""
    path = board_path(root, column)
    with board_lock(root):
        for _ in _attempts(attempts):
            data = read_bytes(path)
            original = data or b""
            new = change(original)
            if new == original:
                return False
            try:
                _commit([_Write(path, new, original, data is not None)])
                return True
            except ConcurrentEdit:
                pass
        raise KanbanError(
            f"{path.name} kept changing while kanban tried to update it",
            hint="pause your editor's autosave and run the command again",
            code=1,
        )
