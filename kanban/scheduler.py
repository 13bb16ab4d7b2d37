"""Who runs next: pool slots, finishing first, priority, dependencies, file leases. Pure."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

from kanban.model import COLUMN_ROLE, Column, Role, Task

# Finishing work beats starting it: testers, then reviewers, then task agents.
_FINISHING_FIRST = {Column.TESTING: 0, Column.REVIEW: 1, Column.IN_PROGRESS: 2}


class Start(NamedTuple):
    task_id: str
    role: Role
    pick: bool = False  # a TODO task: move it to IN_PROGRESS first


def plan(
    tasks: Sequence[Task], *, done: set[str], running: Mapping[str, Role], pool_size: int
) -> list[Start]:
    """The agents to start now, best first, never more than the free slots."""
    free = max(0, pool_size - len(running))
    starts = [Start(t.id, COLUMN_ROLE[t.column]) for t in _waiting_for_agent(tasks, running)][:free]
    leases = Leases(_in_flight(tasks))
    for task in _pickable_order(tasks, running):
        if len(starts) >= free:
            break
        if not _unmet_depends(task, done) and not leases.overlapping(task):
            starts.append(Start(task.id, Role.TASK, pick=True))
            leases.add(task)  # its files are leased from now on
    return starts


def blocked_reasons(task: Task, tasks: Sequence[Task], done: set[str]) -> list[str]:
    """Why a TODO task is not picked, for `kanban status`; [] if only a slot is missing."""
    return blocked_reasons_all([task], tasks, done)[task.id]


def blocked_reasons_all(asked: Sequence[Task], tasks: Sequence[Task], done: set[str]) -> dict[str, list[str]]:
    """blocked_reasons for many tasks, with the board-wide sets built once."""
    known = {t.id for t in tasks}
    leases = Leases(_in_flight(tasks))
    found = {}
    for task in asked:
        reasons = ["escalated: waiting for a person"] if task.escalated else []
        for dep in _unmet_depends(task, done):
            reasons.append(f"waiting on {dep}" if dep in known else f"waiting on {dep} (on no board)")
        reasons += [f"files overlap {other.id}" for other in leases.overlapping(task)]
        found[task.id] = reasons
    return found


class Leases:
    """The files of tasks in flight, indexed so a question costs about one lookup per path.

    Literal paths are looked up exactly (a path overlaps itself, its parent
    directories and what lies below it); globs are compared one by one.
    """

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self.exact: dict[str, dict[str, Task]] = {}  # a held literal path -> holders
        self.below: dict[str, dict[str, Task]] = {}  # a directory -> holders of paths under it
        self.globs: list[tuple[str, Task]] = []
        for task in tasks:
            self.add(task)

    def add(self, task: Task) -> None:
        for entry in _as_entries(task.files):
            if _is_glob(entry):
                self.globs.append((entry, task))
                continue
            self.exact.setdefault(entry, {})[task.id] = task
            parts = entry.split("/")
            for i in range(1, len(parts)):
                self.below.setdefault("/".join(parts[:i]), {})[task.id] = task

    def overlapping(self, task: Task) -> list[Task]:
        found: dict[str, Task] = {}
        for entry in _as_entries(task.files):
            if _is_glob(entry):
                for path, holders in self.exact.items():
                    if _entries_overlap(entry, path):
                        found.update(holders)
            else:
                parts = entry.split("/")
                for i in range(1, len(parts) + 1):
                    found.update(self.exact.get("/".join(parts[:i]), {}))
                found.update(self.below.get(entry, {}))
            found.update((t.id, t) for g, t in self.globs if _entries_overlap(entry, g))
        found.pop(task.id, None)
        return list(found.values())


def _waiting_for_agent(tasks: Iterable[Task], running: Mapping[str, Role]) -> list[Task]:
    # Ready tasks wait for the merge queue, not for an agent.
    waiting = [
        t for t in tasks
        if t.column in _FINISHING_FIRST and not t.escalated and not t.ready and t.id not in running
    ]
    return sorted(waiting, key=lambda t: (_FINISHING_FIRST[t.column], t.priority, t.order))


def _pickable_order(tasks: Iterable[Task], running: Mapping[str, Role]) -> list[Task]:
    todo = [t for t in tasks if t.column is Column.TODO and not t.escalated and t.id not in running]
    return sorted(todo, key=lambda t: (t.priority, t.order))


def _in_flight(tasks: Iterable[Task]) -> list[Task]:
    # Leases last from pick until merged or escalated, agent or not.
    return [t for t in tasks if t.column in _FINISHING_FIRST and not t.escalated]


def _unmet_depends(task: Task, done: set[str]) -> list[str]:
    return [dep for dep in task.depends if dep not in done]


# --- file leases -------------------------------------------------------------
#
# An entry is a repository-relative path or glob: `*`, `?` and `[...]` never
# match `/`; `**` matches anything, and a whole `**/` segment may match no
# directory at all. Any path an entry names may be a directory, so an entry
# covers what it matches and everything below. Two entries overlap when some
# path is covered by both; the answer is exact (a product of two automata),
# hence never "no overlap" when a path could match both.


def files_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    a, b = _as_entries(a), _as_entries(b)
    return any(_entries_overlap(x, y) for x in a for y in b)


def _as_entries(files: Sequence[str] | str) -> tuple[str, ...]:
    # A bare string would otherwise be read as a list of one-letter paths.
    files = (files,) if isinstance(files, str) else files
    return tuple(_normalise(f) for f in files if f.strip())


def _normalise(entry: str) -> str:
    """Drop `./`, `//`, leading and trailing `/`. An entry of `.` or `/` is the whole repository."""
    path = "/".join(part for part in entry.strip().split("/") if part not in ("", "."))
    return path or "**"


@lru_cache(maxsize=4096)
def _entries_overlap(x: str, y: str) -> bool:
    if not (_is_glob(x) or _is_glob(y)):
        return x == y or x.startswith(y + "/") or y.startswith(x + "/")
    px, py = _fixed_prefix(x), _fixed_prefix(y)
    if not (px.startswith(py) or py.startswith(px)):
        return False  # every covered path starts with its entry's fixed prefix
    return any(_languages_meet(p, q) for p in _automata(x) for q in _automata(y))


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def _fixed_prefix(entry: str) -> str:
    cut = min((i for i, c in enumerate(entry) if c in "*?["), default=len(entry))
    return entry[:cut]


class _Chars(NamedTuple):
    """A set of characters: code point ranges, maybe negated, maybe without `/`."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False
    slash: bool = True

    def has(self, code: int) -> bool:
        if code == _SLASH and not self.slash:
            return False
        return any(lo <= code <= hi for lo, hi in self.ranges) != self.negated

    def edges(self) -> Iterable[int]:
        # Membership is constant between consecutive edges.
        for lo, hi in self.ranges:
            yield from (lo, hi + 1)
        yield from (_SLASH, _SLASH + 1)


class _Token(NamedTuple):
    chars: _Chars
    repeat: bool  # zero or more of `chars`, else exactly one


_SLASH = ord("/")
_NOT_SLASH = _Chars((), negated=True, slash=False)
_ANYTHING = _Chars((), negated=True)
_STAR = _Token(_NOT_SLASH, repeat=True)
_GLOBSTAR = _Token(_ANYTHING, repeat=True)
_ONE = _Token(_NOT_SLASH, repeat=False)
# Appended to every entry: it also covers `entry/anything`.
_BELOW = (_Token(_Chars(((_SLASH, _SLASH),)), repeat=False), _GLOBSTAR)


@lru_cache(maxsize=4096)
def _automata(entry: str) -> tuple[tuple[_Token, ...], ...]:
    return tuple(_tokens(variant) + _BELOW for variant in _globstar_variants(entry))


def _globstar_variants(entry: str) -> list[str]:
    """`a/**/b` also matches `a/b`: one variant with and one without each such `**/`."""
    parts = entry.split("/")
    optional = [i for i, part in enumerate(parts[:-1]) if part == "**"]
    variants = []
    for dropped in itertools.product((False, True), repeat=len(optional)):
        gone = {i for i, drop in zip(optional, dropped) if drop}
        variants.append("/".join(p for i, p in enumerate(parts) if i not in gone))
    return variants


def _tokens(pattern: str) -> tuple[_Token, ...]:
    tokens, i = [], 0
    while i < len(pattern):
        token, i = _next_token(pattern, i)
        tokens.append(token)
    return tuple(tokens)


def _next_token(pattern: str, i: int) -> tuple[_Token, int]:
    c = pattern[i]
    if pattern.startswith("**", i):
        while i < len(pattern) and pattern[i] == "*":
            i += 1
        return _GLOBSTAR, i
    if c == "*":
        return _STAR, i + 1
    if c == "?":
        return _ONE, i + 1
    if c == "[":
        parsed = _bracket(pattern, i)
        if parsed is not None:
            return parsed
    return _Token(_Chars(((ord(c), ord(c)),)), repeat=False), i + 1


def _bracket(pattern: str, i: int) -> tuple[_Token, int] | None:
    """`[abc]`, `[a-z]`, `[!x]` or `[^x]`; a `]` first is literal. None if never closed."""
    j = i + 1
    negated = j < len(pattern) and pattern[j] in "!^"
    if negated:
        j += 1
    ranges, first = [], True
    while j < len(pattern) and (pattern[j] != "]" or first):
        first = False
        if j + 2 < len(pattern) and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            ranges.append((ord(pattern[j]), ord(pattern[j + 2])))
            j += 3
        else:
            ranges.append((ord(pattern[j]), ord(pattern[j])))
            j += 1
    if j >= len(pattern):
        return None  # an unclosed `[` is a literal character
    return _Token(_Chars(tuple(ranges), negated, slash=False), repeat=False), j + 1


def _languages_meet(a: tuple[_Token, ...], b: tuple[_Token, ...]) -> bool:
    """Is some string accepted by both token sequences? Depth-first over position pairs."""
    ends_a, ends_b = {len(a) - len(_BELOW), len(a)}, {len(b) - len(_BELOW), len(b)}
    seen, todo = {(0, 0)}, [(0, 0)]
    while todo:
        i, j = todo.pop()
        if i in ends_a and j in ends_b:
            return True
        for pair in _steps(a, b, i, j):
            if pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return False


def _steps(a: tuple[_Token, ...], b: tuple[_Token, ...], i: int, j: int) -> Iterable[tuple[int, int]]:
    ta = a[i] if i < len(a) else None
    tb = b[j] if j < len(b) else None
    if ta and ta.repeat:
        yield i + 1, j  # a repeat may match nothing
    if tb and tb.repeat:
        yield i, j + 1
    if ta and tb and _chars_meet(ta.chars, tb.chars):
        yield (i if ta.repeat else i + 1), (j if tb.repeat else j + 1)


def _chars_meet(x: _Chars, y: _Chars) -> bool:
    candidates = {0, *x.edges(), *y.edges()}
    return any(x.has(c) and y.has(c) for c in candidates if c <= 0x10FFFF)
