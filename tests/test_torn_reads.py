"""Reading the board while kanban writes it, and from whatever a person leaves on disk.

A move writes two files; a load (`kanban status`, a second `kanban run`, kanban's own
view) never sees it half done: it holds a shared lock on `.kanban/board.lock` that
writers hold exclusively for a whole update. Board files that are FIFOs, devices,
link loops or a `.kanban` that is a file give one clear line (exit 2) and change
nothing; so does a read-only filesystem (exit 2) or a full disk (exit 1, as the work
itself failed), with no temp file left; `kanban status` still works read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import git, run_cli, snapshot

from kanban.errors import KanbanError
from kanban.store import load_board

BOARD = ["TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md"]
BWRAP = shutil.which("bwrap")


def _project(repo: Path, n: int, sleep: float = 0.2) -> list[str]:
    (repo / "kanban.toml").write_text('pool_size = 4\n[agent]\npreset = "demo"\ntimeout = "30s"\n')
    ids = [f"TASK-{i}" for i in range(1, n + 1)]
    body = "".join(f"\n## {t}: Task {t}\n\ndemo: sleep {sleep}\n" for t in ids)
    (repo / "TODO.md").write_text("# TODO\n\nThe person's notes.\n" + body)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    return ids


def _run(repo: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(repo), "run", "--no-merge"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


# --- torn reads ------------------------------------------------------------------------------


def _status_loop(repo: Path, ids: list[str], stop: threading.Event, seen: Counter, bad: list[str]) -> None:
    while not stop.is_set():
        proc = subprocess.run([sys.executable, "-m", "kanban", "-C", str(repo), "status", "--json", "--all"],
                              capture_output=True, text=True, timeout=60, check=False)
        seen["status"] += 1
        if proc.returncode != 0:
            bad.append(f"status exit {proc.returncode}: {proc.stderr.strip()}")
            continue
        found = Counter(t["id"] for t in _json_tasks(json.loads(proc.stdout)))
        if wrong := {t: found[t] for t in ids if found[t] != 1}:
            bad.append(f"status saw {wrong}")


def _json_tasks(summary: dict) -> list[dict]:
    return [t for column in summary["columns"].values() for t in column["tasks"]]


def _holds_open(pid: int, name: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_status_never_shows_a_move_half_done(tmp_path):
    """The test is the writer: with the board lock held, a move's target is written and its source
    not yet. `kanban status` started then waits for the lock, and shows the move done."""
    from kanban.store import atomic_write, board_lock

    root = tmp_path
    (root / ".kanban").mkdir()
    (root / "TODO.md").write_text("# TODO\n\n## TASK-1: a\n\n## TASK-2: b\n")
    with board_lock(root):
        atomic_write(root / "IN_PROGRESS.md", b"## TASK-1: a\n")  # the target first
        proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(root), "status", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proc.poll() is None and not _holds_open(proc.pid, "/.kanban/board.lock"):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.1)
        atomic_write(root / "TODO.md", b"# TODO\n\n## TASK-2: b\n")  # then the source
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    tasks = {t["id"]: column for column, c in json.loads(out)["columns"].items() for t in c["tasks"]}
    assert tasks == {"TASK-1": "IN_PROGRESS", "TASK-2": "TODO"}


@pytest.mark.heavy
def test_loads_during_a_run_never_see_a_move_half_done(repo):
    ids = _project(repo, 3, sleep=0.1)
    proc = _run(repo)
    stop = threading.Event()
    seen: Counter = Counter()
    bad: list[str] = []
    status = threading.Thread(target=_status_loop, args=(repo, ids, stop, seen, bad))
    status.start()
    try:
        while proc.poll() is None:
            try:
                board = load_board(repo)  # validates: a task in two files is "used twice"
            except KanbanError as exc:
                bad.append(f"load: {exc}")
                continue
            seen["load"] += 1
            found = Counter(t.id for t in board.tasks())
            if wrong := {t: found[t] for t in ids if found[t] != 1}:
                bad.append(f"load saw {wrong}")
            time.sleep(0.001)
    finally:
        stop.set()
        status.join(60)
        out = _finish(proc)
    assert proc.returncode == 0, out
    assert seen["load"] > 100 and seen["status"] >= 1, seen
    assert bad == [], (len(bad), bad[:5], seen)
    assert [t.column.value for t in load_board(repo).tasks()] == ["TESTING"] * len(ids)  # three moves each


PARKED = "# Review\n\n## [ESCALATED] TASK-99: parked, waiting for a person\n"


def _bounce(repo: Path, stop: threading.Event, moves: list[int]) -> None:
    """A writer moving a parked task between REVIEW.md and TESTING.md (two files each time), as
    a first `kanban run` moves its tasks, but all the time."""
    from kanban.model import Column
    from kanban.store import update

    to = [Column.TESTING, Column.REVIEW]
    while not stop.is_set():
        update(repo, lambda b: b.move("TASK-99", to[moves[0] % 2]))
        moves[0] += 1
        time.sleep(0.002)


@pytest.mark.heavy
def test_second_run_started_during_a_run_ends_cleanly(repo):
    """Two `kanban run`s race while moves go on: neither dies of a torn read ("used twice")."""
    ids = _project(repo, 3, sleep=0.2)
    (repo / "REVIEW.md").write_text(PARKED)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "parked")
    stop, moves = threading.Event(), [0]
    mover = threading.Thread(target=_bounce, args=(repo, stop, moves))
    mover.start()
    try:
        first = _run(repo)
        time.sleep(0.5)
        second = _run(repo)
        outs = [_finish(second), _finish(first)]
    finally:
        stop.set()
        mover.join(30)
    assert moves[0] > 50, moves
    for out in outs:
        assert "used twice" not in out, out
    # one run drives a repository: the second says which one holds it, and leaves
    assert second.returncode == 2 and "another 'kanban run' (pid " in outs[0], outs[0]
    # exit 1 only for the parked task: every other one is ready to merge
    assert first.returncode == 1 and "escalated, waiting for a person: TASK-99" in outs[1], outs[1]
    assert "not done" not in outs[1], outs[1]
    columns = {t.id: t.column.value for t in load_board(repo).tasks()}
    assert [columns[t] for t in ids] == ["TESTING"] * len(ids)


def test_load_inside_an_update_reuses_the_writers_lock(tmp_path):
    """update() holds the lock exclusively and loads inside it; so may its change function."""
    from kanban.store import board_lock, update

    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    began = time.monotonic()
    update(tmp_path, lambda b: load_board(tmp_path) and b.add("b", {}))
    with board_lock(tmp_path, timeout=1):
        assert [t.id for t in load_board(tmp_path).tasks()] == ["TASK-1", "TASK-2"]
        with board_lock(tmp_path, timeout=1):  # re-entrant
            pass
    assert time.monotonic() - began < 20  # no self-deadlock (the lock's own timeout is 30 s)


def _hold_lock(root: str, ready, release) -> None:
    from kanban.store import board_lock

    with board_lock(Path(root)):
        ready.set()
        release.wait(10)


def test_a_load_waits_for_the_writer(tmp_path):
    import multiprocessing

    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        loaded = threading.Event()
        reader = threading.Thread(target=lambda: (load_board(tmp_path), loaded.set()))
        reader.start()
        assert not loaded.wait(0.3)  # blocked while a writer holds the lock
        release.set()
        assert loaded.wait(10)
        reader.join(10)
    finally:
        release.set()
        holder.join(10)


# --- what a person may leave on disk ---------------------------------------------------------


def _one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return lines[0]


def _unchanged(before: dict, root: Path) -> None:
    after = snapshot(root)
    for name in (".kanban/board.lock",):
        after.pop(name, None)
        before.pop(name, None)
    assert after == before


@pytest.mark.parametrize("name,command", [("TODO.md", ("status",)), ("CHANGELOG.md", ("add", "New task"))])
def test_fifo_as_a_board_file_is_refused_without_blocking(tmp_path, name, command):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    (tmp_path / name).unlink(missing_ok=True)
    os.mkfifo(tmp_path / name)
    before = snapshot(tmp_path)
    line = _one_line_exit_2(run_cli(tmp_path, *command))  # run_cli's timeout: a hang fails the test
    assert f"{name}: is a FIFO (named pipe), not a regular file" in line
    _unchanged(before, tmp_path)


@pytest.mark.parametrize("links,command", [({"TODO.md": "TODO.md"}, ("status",)),
                                           ({"CHANGELOG.md": "a.md", "a.md": "CHANGELOG.md"}, ("add", "New task"))])
def test_symlink_loop_as_a_board_file_is_one_clear_line(tmp_path, links, command):
    for link, target in links.items():
        os.symlink(target, tmp_path / link)
    proc = run_cli(tmp_path, *command)
    line = _one_line_exit_2(proc)
    assert f"{next(iter(links))}: is a symbolic link loop" in line
    assert all((tmp_path / link).is_symlink() for link in links)


def test_board_file_replaced_by_a_link_while_read_is_refused(tmp_path):
    """board_path resolved TODO.md; what is opened is never followed again (no O_NOFOLLOW race)."""
    from kanban.store import read_bytes

    (tmp_path / "real.md").write_text("## TASK-1: a\n")
    os.symlink(tmp_path / "real.md", tmp_path / "TODO.md")
    with pytest.raises(KanbanError, match="symbolic link"):
        read_bytes(tmp_path / "TODO.md")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(KanbanError, match="FIFO"):
        read_bytes(tmp_path / "pipe")


def test_state_dir_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    (tmp_path / ".kanban").write_text("not a directory\n")
    before = snapshot(tmp_path)
    line = _one_line_exit_2(run_cli(tmp_path, "add", "New task"))
    assert line.startswith("error: .kanban: is not a directory")
    _unchanged(before, tmp_path)
    run_cli(tmp_path, "status", check_code=0)  # nothing can write the board there: reading needs no lock


# --- read-only and full filesystems (bubblewrap: a private mount namespace, no root needed) ---


needs_bwrap = pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) not installed (apt-get install bubblewrap)")


def _bwrap(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([BWRAP, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
                          check=False)


def _kanban_argv(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kanban", "-C", str(root), *args]


@needs_bwrap
@pytest.mark.parametrize("lock_file", [True, False])
def test_status_on_a_read_only_filesystem(tmp_path, lock_file):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "TODO.md").write_text("## TASK-1: a\n")
    (root / ".kanban").mkdir()
    if lock_file:
        (root / ".kanban" / "board.lock").write_bytes(b"")
    before = snapshot(root)
    ro = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--"]
    probe = _bwrap(*ro, "sh", "-c", f"touch {root}/probe")
    if probe.returncode == 0 or "Read-only" not in probe.stderr:
        pytest.skip(f"bwrap could not make a read-only view here: {probe.stderr.strip()}")
    status = _bwrap(*ro, *_kanban_argv(root, "status", "--json"))
    assert status.returncode == 0, status.stderr
    assert [t["id"] for t in _json_tasks(json.loads(status.stdout))] == ["TASK-1"]
    add = _bwrap(*ro, *_kanban_argv(root, "add", "New task"))
    line = _one_line_exit_2(add)
    assert "Read-only file system" in line and "nothing was changed" in line
    assert snapshot(root) == before


SANDBOXED = r"""
import json, os, subprocess, sys
from pathlib import Path

root, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
for name, text in spec["files"].items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
fill = root / "filler"
with open(fill, "wb", buffering=0) as f:  # fill the disk, then give back spec["free"] bytes
    try:
        while True:
            f.write(b"x" * 4096)
    except OSError:
        pass
os.truncate(fill, max(0, fill.stat().st_size - spec["free"]))
out = {}
if spec.get("move"):
    from kanban.errors import KanbanError
    from kanban.model import Column
    from kanban.store import update

    try:
        update(root, lambda b: b.move(spec["move"], Column.IN_PROGRESS))
        out["error"] = None
    except KanbanError as exc:
        out["error"], out["code"] = str(exc), exc.code
    except Exception as exc:  # reported, not a crash of the sandboxed script
        out["error"], out["code"] = f"{type(exc).__name__}: {exc}", None
if spec.get("argv"):
    p = subprocess.run(spec["argv"], capture_output=True, text=True)
    out.update(rc=p.returncode, stderr=p.stderr)
fill.unlink()
out["files"] = {p.name: p.read_text() for p in root.iterdir() if p.is_file()}
out["listing"] = sorted(os.listdir(root))
print(json.dumps(out))
"""


def _on_a_small_disk(tmp_path: Path, size: int, spec: dict) -> dict:
    mnt = tmp_path / "small"
    mnt.mkdir()
    probe = _bwrap("--bind", "/", "/", "--dev", "/dev", "--size", str(size), "--tmpfs", str(mnt), "--", "true")
    if probe.returncode != 0:
        pytest.skip(f"bwrap cannot mount a sized tmpfs here: {probe.stderr.strip()}")
    script = tmp_path / "sandboxed.py"
    script.write_text(SANDBOXED)
    spec = {**spec, "argv": [a.replace("{root}", str(mnt)) for a in spec.get("argv", [])]}
    proc = _bwrap("--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--size", str(size),
                  "--tmpfs", str(mnt), "--", sys.executable, str(script), str(mnt), json.dumps(spec), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_bwrap
def test_full_disk_during_a_move_writes_nothing(tmp_path):
    """The target's temp file fits on the disk, the source's does not: neither file changes, no temp is left."""
    prose = "".join(f"line {i} of the person's long notes\n" for i in range(1500))  # ~50 KiB
    files = {"TODO.md": f"# TODO\n\n{prose}\n## TASK-1: a\n\nbody\n", "IN_PROGRESS.md": "# In progress\n",
             ".kanban/board.lock": ""}
    out = _on_a_small_disk(tmp_path, 256 * 1024, {"files": files, "free": 16 * 1024, "move": "TASK-1"})
    assert out["error"] and "TODO.md: cannot be written: No space left on device" in out["error"], out["error"]
    assert out["code"] == 1  # the work failed for want of room: run it again once there is (as for the history)
    assert out["files"] == {"TODO.md": files["TODO.md"], "IN_PROGRESS.md": files["IN_PROGRESS.md"]}
    assert out["listing"] == [".kanban", "IN_PROGRESS.md", "TODO.md"]  # no temp file


@needs_bwrap
def test_full_disk_during_add_is_one_line_exit_1_and_leaves_no_temp(tmp_path):
    files = {"TODO.md": "## TASK-1: a\n", ".kanban/board.lock": ""}
    argv = _kanban_argv(Path("{root}"), "add", "A task with a long title " + "x" * 200)
    out = _on_a_small_disk(tmp_path, 64 * 1024, {"files": files, "free": 0, "argv": argv})
    assert out["rc"] == 1, out
    errors = out["stderr"].strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: TODO.md: cannot be written: No space left"), errors
    assert out["files"] == {"TODO.md": "## TASK-1: a\n"}
    assert out["listing"] == [".kanban", "TODO.md"]  # no temp file


def test_loads_while_the_queue_fast_forwards_main_never_see_changelog_md_half_written(kit, tmp_path):
    """`git merge --ff-only` in the board's checkout rewrites CHANGELOG.md in place (unlinked,
    then written): a load between the two saw no done IDs, and a `depends` on a merged task
    failed the pass (found by CI: `kanban run` with the queue on its thread). The merge queue
    now moves the checkout under the board's lock."""
    from agents_kit import task_md
    from conftest import git as git_

    from kanban.config import load_config
    from kanban.engine import Engine
    from kanban.errors import KanbanError
    from kanban.history import History
    from kanban.merge_queue import MergeQueue
    from kanban.store import load_board

    p = kit(task_md("TASK-3", depends="TASK-1"))
    root = p.root
    filler = "".join(f"- OLD-{i}: an older change, kept for size\n" for i in range(40000))
    text = "# Changelog\n\n## [Unreleased]\n\n### Added\n\n- TASK-1: Done before\n" + filler
    (root / "CHANGELOG.md").write_text(text)
    git_(root, "add", "CHANGELOG.md")
    git_(root, "commit", "-q", "-m", "changelog with TASK-1")
    side = tmp_path / "side"
    git_(root, "worktree", "add", "-q", "-b", "side", str(side), "main")
    engine = Engine(root, load_config(root), History(root))
    queue = MergeQueue(engine)
    stop, torn = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            try:
                load_board(root)
            except KanbanError as exc:
                torn.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(25):
            text += f"- LINE-{i}: one more\n"
            (side / "CHANGELOG.md").write_text(text)
            git_(side, "commit", "-q", "-am", f"line {i}")
            old, new = git_(root, "rev-parse", "main").strip(), git_(side, "rev-parse", "HEAD").strip()
            queue._advance(old, new, push=False)
    finally:
        stop.set()
        reader.join()
        engine.close()
    assert torn == []
