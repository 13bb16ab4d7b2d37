"""The parts of the shared git directory that run code, watched across agent runs.

Without the sandbox an agent can write hooks, `core.hooksPath`, `core.fsmonitor`,
aliases, filters or includes into the `.git` its worktree shares with the
person's checkout; they would run in the person's next git command. kanban's
own git ignores hooks and fsmonitor (git.SAFE_CONFIG); this module keeps a
copy of those parts (the baseline, in .kanban/gitguard/) and, after each run,
puts back whatever changed. What it found is moved aside, never deleted, so a
change the person made meanwhile is not lost either.

The baseline is taken again whenever no run is in flight: a change the person
makes between runs is theirs to make.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from kanban import paths
from kanban.atomic import write_bytes_atomic, write_text_atomic

# Relative to the common git directory: what git reads as configuration or runs as code.
WATCHED_FILES = ("config", "config.worktree", "info/attributes")
WATCHED_DIRS = ("hooks",)
MAX_ENTRIES = 500  # a hooks folder bigger than this is moved aside whole
MAX_FILE = 4 << 20  # bytes of one watched file kept in the baseline

GUARD_DIR = paths.GITGUARD


@dataclass
class Finding:
    path: str  # relative to the git directory
    what: str  # "changed", "added", "removed"

    def __str__(self) -> str:
        return f".git/{self.path} {self.what}"


def _entry(path: Path) -> dict | None:
    """What is at PATH, without following links: kind, and a digest of the content."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "link", "target": os.readlink(path)}
    if stat.S_ISREG(st.st_mode):
        if st.st_size > MAX_FILE:
            return {"kind": "file", "sha": f"size:{st.st_size}:{st.st_mtime_ns}", "mode": st.st_mode & 0o7777}
        return {"kind": "file", "sha": _digest_of(path, st), "mode": st.st_mode & 0o7777}
    if stat.S_ISDIR(st.st_mode):
        return {"kind": "dir"}
    return {"kind": "other"}


def _digest(path: Path) -> str:
    return hashlib.sha256(_content(path)).hexdigest()


# Digests by what lstat says of the file: any write changes its ctime, which no one can set back,
# and a replacement is another inode. A check after every run reads only what changed. A file
# changed within the last RACY_NS is read every time: a second write in the same clock tick
# would leave its times as they were (git's "racy" entries, the same cure).
_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LIMIT = 4096
RACY_NS = 2_000_000_000


def _digest_of(path: Path, st: os.stat_result) -> str:
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    found = _DIGESTS.get(key)
    if found is None:
        found = _digest(path)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            if len(_DIGESTS) >= _DIGESTS_LIMIT:
                _DIGESTS.clear()
            _DIGESTS[key] = found
    return found


def _content(path: Path) -> bytes:
    """Up to MAX_FILE + 1 bytes of the file at PATH, never through a link (OSError if it is one)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_FILE + 1)


def snapshot(gitdir: Path) -> dict[str, dict | None]:
    """{relative path: entry} for the watched files and every entry of the watched folders."""
    found: dict[str, dict | None] = {rel: _entry(gitdir / rel) for rel in WATCHED_FILES}
    for rel in WATCHED_DIRS:
        top = _entry(gitdir / rel)
        found[rel] = top
        if top is None or top["kind"] != "dir":
            continue
        try:
            names = sorted(os.listdir(gitdir / rel))
        except OSError:
            names = []
        if len(names) > MAX_ENTRIES:
            found[rel] = {"kind": "dir", "too_many": len(names)}
            continue
        for name in names:
            found[f"{rel}/{name}"] = _entry(gitdir / rel / name)
    return found


def _differences(before: dict[str, dict | None], after: dict[str, dict | None]) -> list[Finding]:
    found = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel), after.get(rel)
        if old == new:
            continue
        what = "added" if old is None else "removed" if new is None else "changed"
        found.append(Finding(rel, what))
    return found


class GitGuard:
    def __init__(self, root: Path, gitdir: Path) -> None:
        self.gitdir = gitdir
        self.home = paths.gitguard_dir(root)
        self.baseline_file = self.home / "baseline.json"
        self.blobs = self.home / "blobs"
        self._baseline: tuple[tuple, dict] | None = None  # (the file's stat, its entries) last read

    def take_baseline(self) -> None:
        """Record the watched parts as they are now, with a copy of each file."""
        snap = snapshot(self.gitdir)
        self.blobs.mkdir(parents=True, exist_ok=True)
        for rel, entry in snap.items():
            if entry and entry["kind"] == "file" and not entry["sha"].startswith("size:"):
                blob = self.blobs / entry["sha"]
                if not blob.exists():
                    write_bytes_atomic(blob, _content(self.gitdir / rel))
        _write_json(self.baseline_file, {"taken": time.time(), "entries": snap})

    def baseline(self) -> dict[str, dict | None] | None:
        try:
            st = os.stat(self.baseline_file)
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._baseline is not None and self._baseline[0] == key:
                return self._baseline[1]  # read again only once rewritten (a new file each time)
            found = json.loads(self.baseline_file.read_text(encoding="utf-8"))["entries"]
        except (FileNotFoundError, ValueError, KeyError):
            return None
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            self._baseline = (key, found)
        return found

    def check_and_restore(self) -> tuple[list[Finding], Path | None]:
        """What changed since the baseline, put back; (findings, folder holding what was found)."""
        before = self.baseline()
        if before is None:
            self.take_baseline()
            return [], None
        findings = _differences(before, snapshot(self.gitdir))
        if not findings:
            return [], None
        aside = self.home / "found" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        n = 0
        while aside.exists():
            n += 1
            aside = aside.with_name(aside.name.split(".")[0] + f".{n}")
        # Shallow first: a watched folder swapped for a link or stuffed with entries is
        # replaced whole, and nothing is ever written through a link the agent made.
        done: set[str] = set()
        for f in sorted(findings, key=lambda f: f.path.count("/")):
            if f.path.split("/")[0] in done:
                continue
            if f.path in WATCHED_DIRS:
                self._restore(f.path, None, aside)
                for rel, entry in sorted(before.items(), key=lambda item: item[0].count("/")):
                    if rel == f.path or rel.startswith(f.path + "/"):
                        self._restore(rel, entry, aside)
                done.add(f.path)
            else:
                self._restore(f.path, before.get(f.path), aside)
        return findings, aside

    def _restore(self, rel: str, entry: dict | None, aside: Path) -> None:
        path = self.gitdir / rel
        if os.path.lexists(path):
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.move(os.fspath(path), os.fspath(aside / rel))
            if os.path.lexists(path):  # could not move it (another device?): remove it
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        if entry is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry["kind"] == "dir":
            path.mkdir(exist_ok=True)
        elif entry["kind"] == "link":
            os.symlink(entry["target"], path)
        elif entry["kind"] == "file":
            blob = self.blobs / entry["sha"]
            if blob.exists():
                write_bytes_atomic(path, blob.read_bytes(), mode=entry.get("mode", 0o644))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
