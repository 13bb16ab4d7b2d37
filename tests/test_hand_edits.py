"""A person edits TODO.md and REVIEW.md by hand while `kanban run` works: every edit survives.

The editor here behaves like an editor plugin that takes kanban's board lock
(`.kanban/board.lock`) around each read-modify-write, so each edit is one
clean step; kanban itself re-reads before every write and never writes over
a file that changed since it read it.
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import git

from kanban.store import atomic_write, board_lock, load_board

BOARD = ["TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md"]


def _setup(repo: Path, n_tasks: int) -> None:
    (repo / "kanban.toml").write_text('pool_size = 3\n[agent]\npreset = "demo"\ntimeout = "20s"\n')
    body = "".join(f"\n## TASK-{i}: Task {i}\n\ndemo: sleep 0.4\n" for i in range(1, n_tasks + 1))
    (repo / "TODO.md").write_text("# TODO\n\nIntro by the person.\n" + body)
    (repo / "REVIEW.md").write_text("# Review\n\nReview notes by the person.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")


def _edit(repo: Path, name: str, change) -> bool:
    path = repo / name
    with board_lock(repo):
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        new = change(text)
        if new is None or new == text:
            return False
        atomic_write(path, new.encode("utf-8"))
        return True


def _entries(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of `## TASK-N` entries, in order."""
    starts = [m.start() for m in re.finditer(r"(?m)^## (\[\w+\] )?TASK-\d+:", text)]
    return [(s, starts[i + 1] if i + 1 < len(starts) else len(text)) for i, s in enumerate(starts)]


@pytest.mark.heavy
def test_hand_edits_during_run_all_survive(repo):
    _setup(repo, 8)
    rng = random.Random(7)
    proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(repo), "run", "--no-merge"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kept: dict[str, list[str]] = {"TODO.md": [], "REVIEW.md": []}
    deleted: list[str] = []
    body_edits: list[str] = []
    hand_tasks: list[str] = []
    edits = 0
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and edits < 60:
            n = edits
            action = rng.choice(["prose", "prose", "task", "body", "reorder", "delete", "review", "review_body"])
            if action == "prose":
                marker = f"note-{n} by hand"
                if _edit(repo, "TODO.md", lambda t, marker=marker: t.replace("Intro by the person.\n",
                                                                            f"Intro by the person.\n{marker}\n", 1)):
                    kept["TODO.md"].append(marker)
            elif action == "task" and len(hand_tasks) < 6:
                title = f"Hand task {n}"
                if _edit(repo, "TODO.md", lambda t, title=title: t + f"\n## {title}\n\ndemo: sleep 0.2\n"):
                    hand_tasks.append(title)
            elif action == "body":
                marker = f"edited-{n}"

                def add_line(t: str, marker=marker):
                    spans = _entries(t)
                    if not spans:
                        return None
                    start, end = spans[-1]
                    entry = t[start:end].rstrip("\n") + f"\n{marker}\n"
                    return t[:start] + entry + ("\n" if end < len(t) else "") + t[end:].lstrip("\n")

                if _edit(repo, "TODO.md", add_line):
                    body_edits.append(marker)
            elif action == "reorder":
                def swap(t: str):
                    spans = _entries(t)
                    if len(spans) < 2:
                        return None
                    (a0, a1), (b0, b1) = spans[0], spans[1]
                    first, second = t[a0:a1], t[b0:b1]
                    return t[:a0] + second + first + t[b1:]

                _edit(repo, "TODO.md", swap)
            elif action == "delete" and kept["TODO.md"]:
                marker = kept["TODO.md"].pop(0)
                if _edit(repo, "TODO.md", lambda t, m=marker: t.replace(m + "\n", "", 1)):
                    deleted.append(marker)
                else:
                    kept["TODO.md"].append(marker)
            elif action == "review":
                marker = f"review-note-{n}"
                if _edit(repo, "REVIEW.md",
                         lambda t, marker=marker: t.replace("Review notes by the person.\n",
                                                            f"Review notes by the person.\n{marker}\n", 1)):
                    kept["REVIEW.md"].append(marker)
            elif action == "review_body":
                marker = f"reviewed-by-hand-{n}"

                def add_review_line(t: str, marker=marker):
                    spans = _entries(t)
                    if not spans:
                        return None
                    start, end = spans[0]
                    entry = t[start:end].rstrip("\n") + f"\n\n{marker}\n"
                    return t[:start] + entry + ("\n" if end < len(t) else "") + t[end:].lstrip("\n")

                if _edit(repo, "REVIEW.md", add_review_line):
                    body_edits.append(marker)
            edits += 1
            time.sleep(rng.uniform(0.02, 0.15))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert edits >= 20, f"only {edits} edits happened while kanban run worked"
    texts = {name: (repo / name).read_text(encoding="utf-8") for name in BOARD}
    everything = "".join(texts.values())
    for name, markers in kept.items():
        for marker in markers:
            assert marker in texts[name], (marker, name)
    for marker in deleted:
        assert marker not in everything, marker
    for marker in body_edits:
        assert marker in everything, marker
    for title in hand_tasks:
        assert title in everything, title
    board = load_board(repo)  # validates: no ID twice, nothing lost
    ids = [t.id for t in board.tasks()]
    # a hand task added just as the run ended has no ID yet: the next write of TODO.md gives it one
    unnumbered = len(board.new_entries())
    assert len(ids) == len(set(ids)) and len(ids) + unnumbered == 8 + len(hand_tasks), (ids, unnumbered)


# --- hand edits without the lock, at editor speed -----------------------------------------

AT_FDCWD, RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))


def append_line(path: Path, line: str) -> None:
    """`echo LINE >> FILE`: one O_APPEND write into the file as it is (an in-place edit)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"\n{line}\n".encode())
    finally:
        os.close(fd)


def save_as_editor(path: Path, edit) -> bool:
    """An editor's save of the whole file: a new file swapped in for the old one, checked like an
    editor's "file changed on disk" warning (the old one it takes out must be the one it read;
    otherwise kanban wrote meanwhile: that goes back, and the edit is made again on top of it).
    Never uses kanban's lock. False if EDIT had nothing to do."""
    tmp = path.with_name(f".{path.name}.hand-editor")
    for _ in range(200):
        old = path.read_bytes()
        new = edit(old.decode("utf-8"))
        if new is None:
            return False
        tmp.write_bytes(new.encode("utf-8"))
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # as editors do
        _exchange(tmp, path)
        came = tmp.read_bytes()
        if came == old:
            tmp.unlink()
            return True
        expected = new.encode("utf-8")  # put back what we took out; what comes out must be ours
        for _ in range(50):
            _exchange(tmp, path)
            back = tmp.read_bytes()
            if back == expected:
                break
            expected, came = came, back
        tmp.unlink()
        time.sleep(0.002)
    raise AssertionError("the hand editor never managed to save")


class HandEditor:
    """About HZ edits a second to TODO.md, without kanban's lock, while `kanban run` works:
    marker lines appended in place (`echo >>`), marker lines added to the person's intro by
    whole-file saves (a new file swapped in), the oldest of those deleted again by a save once
    there are more than KEEP (so the file stays the size of a real one), and new
    `## Hand task N` headings whenever TODO runs low, so the run always has work. Remembers
    everything it wrote and deleted."""

    KEEP = 60

    def __init__(self, repo: Path, hz: float, seed: int = 7) -> None:
        self.path = repo / "TODO.md"
        self.period = 1.0 / hz
        self.rng = random.Random(seed)
        self.appended: list[str] = []
        self.prose: list[str] = []
        self.deleted: list[str] = []
        self.tasks: list[str] = []
        self.n = 0

    @property
    def edits(self) -> int:
        return len(self.appended) + len(self.prose) + len(self.tasks) + len(self.deleted) // 20

    def step(self) -> None:
        self.n += 1
        text = self.path.read_text(encoding="utf-8")
        waiting = len(re.findall(r"(?m)^## ", text))
        if waiting < 3:
            title = f"Hand task {self.n}"
            append_line(self.path, f"## {title}\n\ndemo: sleep 0.3")
            self.tasks.append(title)
        elif len(self.prose) > self.KEEP:
            doomed = set(self.prose[:20])

            def delete(t: str) -> str:
                return "".join(line for line in t.splitlines(keepends=True) if line.strip() not in doomed)

            save_as_editor(self.path, delete)
            self.deleted += self.prose[:20]
            del self.prose[:20]
        elif self.rng.random() < 0.5:
            marker = f"hand-append-{self.n}"
            append_line(self.path, marker)
            self.appended.append(marker)
        else:
            marker = f"hand-prose-{self.n}"
            if save_as_editor(self.path, lambda t: t.replace(INTRO, f"{INTRO}{marker}\n", 1) if INTRO in t else None):
                self.prose.append(marker)

    def run_for(self, seconds: float, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline and proc.poll() is None:
            self.step()
            next_at += self.period * self.rng.uniform(0.5, 1.5)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def lost(self, repo: Path) -> list[str]:
        """Marker lines missing from the board, and deleted ones that came back (exact lines)."""
        lines = {line.strip() for name in BOARD for line in (repo / name).read_text(encoding="utf-8").splitlines()}
        titles = {line[3:].split(": ", 1)[-1] for line in lines if line.startswith("## ")}
        missing = [m for m in self.appended + self.prose if m not in lines]
        missing += [t for t in self.tasks if t not in titles]
        return missing + [f"{m} (deleted, came back)" for m in self.deleted if m in lines]


INTRO = "Intro by the person.\n"


def run_with_hand_edits(repo: Path, seconds: float, hz: float = 20.0) -> HandEditor:
    (repo / "kanban.toml").write_text('pool_size = 4\n[agent]\npreset = "demo"\ntimeout = "30s"\n')
    body = "".join(f"\n## TASK-{i}: Task {i}\n\ndemo: sleep 0.3\n" for i in range(1, 6))
    (repo / "TODO.md").write_text("# TODO\n\n" + INTRO + body)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(repo), "run", "--no-merge"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    editor = HandEditor(repo, hz)
    try:
        editor.run_for(seconds, proc)
        still_running = proc.poll() is None
        out, _ = proc.communicate(timeout=120 + seconds / 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert editor.lost(repo) == [], editor.lost(repo)
    assert still_running, "kanban run ended before the hand edits did:\n" + out
    assert proc.returncode == 0, out
    assert "used twice" not in out and "kept changing" not in out, out
    assert editor.edits >= 50, f"only {editor.edits} edits: too few to say anything"  # 20 Hz nominal
    board = load_board(repo)  # validates: no ID twice
    titles = [t.title for t in board.tasks()] + [e.title for e in board.new_entries()]
    assert all(title in titles for title in editor.tasks)
    assert not list(repo.glob(".*.kanban-tmp")) and not list(repo.glob(".*.hand-editor"))
    return editor


@pytest.mark.heavy
def test_hand_edits_at_20_hz_without_the_lock_all_survive(repo):
    run_with_hand_edits(repo, seconds=6)


SOAK_SECONDS = float(os.environ.get("KANBAN_HAND_EDIT_SECONDS", "300"))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_hand_edits_at_20_hz_soak(repo):
    """The same for 5 minutes (KANBAN_HAND_EDIT_SECONDS to change it)."""
    run_with_hand_edits(repo, seconds=SOAK_SECONDS)


# --- a writer that has the file open across kanban's save ---------------------------------

SLOW_WRITER = r"""
import os, sys
path, how = sys.argv[1], sys.argv[2]
flags = os.O_WRONLY | (os.O_TRUNC if how == "truncate" else os.O_APPEND)
fd = os.open(path, flags)  # opened now (an editor writing in place), written when told
print("open", flush=True)
sys.stdin.readline()
os.write(fd, sys.argv[3].encode())
os.close(fd)
print("written", flush=True)
"""


def _straddled_update(root: Path, how: str, data: str, change, wait_for) -> None:
    """Run update(CHANGE) while a real process holds TODO.md open for writing; it writes DATA
    (appended, or after truncating the file when it opened it) once WAIT_FOR() is true, i.e.
    once kanban has put its own version in place, or once the update is over."""
    import threading

    from kanban.store import update

    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(root / "TODO.md"), how, data],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "open\n"
        errors: list[BaseException] = []

        def work() -> None:
            try:
                update(root, change)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and not wait_for() and time.monotonic() < deadline:
            time.sleep(0.001)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "written\n"
        thread.join(30)
        assert not thread.is_alive() and not errors, errors
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize("how", ["append", "truncate"])
def test_in_place_write_across_a_save_is_never_lost(tmp_path, monkeypatch, how):
    """An editor that opened TODO.md for writing before kanban's save and writes after kanban
    swapped its version in: kanban waits for it to close the file, sees the edit, puts it back
    and re-applies its change on top."""
    import kanban.store

    monkeypatch.setattr(kanban.store, "WRITER_GRACE", 20.0, raising=False)  # a slow, loaded machine
    root = tmp_path
    (root / ".kanban").mkdir()
    original = "# TODO\n\n## TASK-1: a\n"
    (root / "TODO.md").write_text(original)
    data = "\nwritten in place\n" if how == "append" else original + "\nrewritten in place\n"

    def swapped_in() -> bool:
        return "from kanban" in (root / "TODO.md").read_text()

    _straddled_update(root, how, data, lambda b: b.add("from kanban", {}), swapped_in)
    text = (root / "TODO.md").read_text()
    assert ("written in place" if how == "append" else "rewritten in place") in text, text
    assert "## TASK-1: a" in text and "## TASK-2: from kanban" in text, text
    assert not list(root.glob(".*.kanban-tmp"))


def test_move_is_all_or_nothing_when_its_source_changes_in_place(tmp_path, monkeypatch):
    """A move exchanges IN_PROGRESS.md (its target) first; a hand edit to TODO.md (its source)
    that lands just then sends the target back too, and the move is made again on top of the edit."""
    import kanban.store
    from kanban.model import Column

    monkeypatch.setattr(kanban.store, "WRITER_GRACE", 20.0, raising=False)
    root = tmp_path
    (root / ".kanban").mkdir()
    (root / "TODO.md").write_text("# TODO\n\n## TASK-1: a\n\n## TASK-2: b\n")
    (root / "IN_PROGRESS.md").write_text("# In progress\n")

    def target_written() -> bool:
        return "TASK-2" in (root / "IN_PROGRESS.md").read_text()

    _straddled_update(root, "append", "\nadded by hand\n", lambda b: b.move("TASK-2", Column.IN_PROGRESS),
                      target_written)
    todo, doing = (root / "TODO.md").read_text(), (root / "IN_PROGRESS.md").read_text()
    assert "## TASK-1: a" in todo and "TASK-2" not in todo, todo
    assert "## TASK-2: b" in doing and "added by hand" in doing, doing  # the line was in TASK-2's body
    assert load_board(root).find("TASK-2")[0].column is Column.IN_PROGRESS


# --- a hand edit between kanban's last check and its write -----------------------------------


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "fallback"])
@pytest.mark.parametrize("how", ["append", "editor-save"])
def test_hand_edit_just_before_the_swap_is_kept(tmp_path, monkeypatch, exchange, how):
    """The hand edit lands after save()'s first check, while kanban writes its temp files (a move:
    IN_PROGRESS.md first, then TODO.md): the check made with the swap itself catches it, with the
    exchange or, where a filesystem has none, with the check-then-rename fallback."""
    import kanban.store
    from kanban.model import Column

    monkeypatch.setattr(kanban.store, "_exchange_enabled", exchange)
    (tmp_path / ".kanban").mkdir()
    todo = tmp_path / "TODO.md"
    todo.write_text("# TODO\n\n" + INTRO + "\n## TASK-1: a\n\n## TASK-2: b\n")
    os.chmod(todo, 0o640)
    stage, edits = kanban.store._stage, []

    def stage_then_edit(path, data):
        tmp = stage(path, data)
        if path.name == "TODO.md" and not edits:  # once: the retry must go through
            edits.append(how)
            if how == "append":
                append_line(todo, "hand-appended")
            else:
                save_as_editor(todo, lambda t: t.replace(INTRO, INTRO + "hand-saved\n"))
        return tmp

    monkeypatch.setattr(kanban.store, "_stage", stage_then_edit)
    kanban.store.update(tmp_path, lambda b: b.move("TASK-1", Column.IN_PROGRESS))
    text, doing = todo.read_text(), (tmp_path / "IN_PROGRESS.md").read_text()
    assert edits == [how]
    assert ("hand-appended" if how == "append" else "hand-saved") in text, text
    assert "TASK-1" not in text and "## TASK-2: b" in text and "## TASK-1: a" in doing
    assert os.stat(todo).st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*.kanban-tmp")) and not list(tmp_path.glob(".*.hand-editor"))


def test_two_hand_saves_around_kanbans_exchange_the_newer_wins(tmp_path, monkeypatch):
    """A save lands before kanban's exchange (caught: it must go back) and another one right after
    it, over kanban's version: putting the first back takes out the second, which is newer, so
    that one goes back instead, and kanban's change is made again on top of it."""
    import kanban.store

    (tmp_path / ".kanban").mkdir()
    todo = tmp_path / "TODO.md"
    todo.write_text("# TODO\n\n" + INTRO + "\n## TASK-1: a\n")
    stage, settled, events = kanban.store._stage, kanban.store._settled, []

    def stage_then_save(path, data):
        tmp = stage(path, data)
        if not events:
            events.append("first")
            save_as_editor(todo, lambda t: t.replace(INTRO, INTRO + "first save\n"))
        return tmp

    def settled_then_save(path):
        data = settled(path)
        if events == ["first"]:  # kanban has just exchanged and looks at what came out
            events.append("second")
            newer = tmp_path / "newer.md"
            newer.write_text("# TODO\n\n" + INTRO + "second save\n\n## TASK-1: a\n")
            os.replace(newer, todo)  # an editor that renames over the file (kanban's version)
        return data

    monkeypatch.setattr(kanban.store, "_stage", stage_then_save)
    monkeypatch.setattr(kanban.store, "_settled", settled_then_save)
    kanban.store.update(tmp_path, lambda b: b.add("from kanban", {}))
    text = todo.read_text()
    assert events == ["first", "second"]
    assert "second save" in text and "## TASK-2: from kanban" in text, text
    assert "first save" not in text  # replaced by the newer save, as it would have been without kanban
    assert not list(tmp_path.glob(".*.kanban-tmp"))
