"""Starting one agent run: worktree ready, prompt rendered, environment built, supervisor launched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kanban import git, paths
from kanban.atomic import write_text_atomic
from kanban.config import ROLES, Config
from kanban.errors import KanbanError
from kanban.ids import branch_name
from kanban.targets import covering_tests, stem_globs, wanted_stems

SETUP_TIMEOUT = 900.0
SETUP_OUTPUT = 1 << 20  # bytes of a set-up command's output kept (the last: its error is there)
# The agent's report lives inside its worktree (aider cannot write outside its repository), in a
# directory that ignores itself: git never sees it, and the person's git config is not touched.
REPORT_DIR = ".kanban-run"
REPORT_NAME = "report.md"
REPORT_READ_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Launch:
    """What the engine asks for: one role's run on one task."""

    task_id: str
    role: str
    attempt: int
    title: str
    body: str
    fields: dict[str, str]  # priority, depends, files, track
    notes: str
    port: int


def worktree_path(root: Path, config: Config, task_id: str) -> Path:
    return paths.worktree_path(root, config.worktree_dir, task_id)  # the ID checked: it becomes a path segment


def check_worktree_dir(root: Path, config: Config) -> None:
    """Refuse a worktree directory that leads outside the repository (a symlink, or `..`)."""
    where = paths.worktree_root(root, config.worktree_dir).resolve()
    if not where.is_relative_to(root.resolve()):
        raise KanbanError(f"worktree_dir {config.worktree_dir!r} leads to {where}, outside the repository",
                          file=config.source and Path(config.source).name,
                          hint="make it a real directory inside the repository")


def run_dir(root: Path, task_id: str, role: str, attempt: int) -> Path:
    return paths.run_dir(root, task_id, role, attempt)


def ensure_worktree(root: Path, config: Config, task_id: str) -> Path:
    """The task's worktree on its branch: checked when it exists, else an idle one reused (see
    `release_worktrees`) or a new one from main; prepared (copies, set-up) before its first agent."""
    path = worktree_path(root, config, task_id)
    branch = branch_name(task_id)
    if path.is_symlink():
        raise KanbanError(f"worktree {path} is a symbolic link", hint="remove it; kanban recreates the worktree")
    check_worktree_dir(root, config)  # again per task: the directory may have been swapped since the start
    if git.worktree_branch(path) == branch:  # the common case, read from files: no git process
        if _needs_stamp(config) and not _stamp_file(path, SETUP_STAMP).exists():
            _prepare_or_drop(root, config, path, reused=True)  # a pick killed before its set-up finished
        return path
    known = {w.path.resolve(): w for w in git.worktrees(root)}
    existing = known.get(path.resolve()) if path.exists() else None
    if existing is not None:
        if existing.branch != branch:
            raise KanbanError(f"worktree {path.name} is on branch {existing.branch}, not {branch}",
                              hint=f"remove {path} by hand (git worktree remove) so kanban can recreate it")
        return path
    idle = idle_path(root, config).resolve()
    held = None
    for w in known.values():
        if w.branch == branch:  # the branch is checked out somewhere else
            if _is_slot(w.path, idle) and not w.locked:
                held = w.path  # by an idle worktree whose reuse was killed before its move: finish it
                continue
            raise KanbanError(f"branch {branch} is checked out at {w.path}",
                              hint="remove that worktree (git worktree remove) and run kanban again")
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory holds no work: a `git worktree add` killed before its checkout
    if path.exists() and _repair_moved(root, path):
        return ensure_worktree(root, config, task_id)  # a `git worktree move` killed midway, put right
    if path.exists() and _dead_link(root, path):
        # The same move, its record pruned since (found by the crash soak): kanban's own leftover, the
        # task's commits safe on its branch. Out of the way into the trash (removed once stale).
        idle = idle_path(root, config)
        idle.mkdir(parents=True, exist_ok=True)
        os.rename(path, idle / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}")
        return ensure_worktree(root, config, task_id)
    if path.exists():
        raise KanbanError(f"{path} exists but is not a git worktree", hint="move it away and run kanban again")
    path.parent.mkdir(parents=True, exist_ok=True)
    slots = [held] if held else sorted(w.path for w in known.values() if _is_slot(w.path, idle) and not w.locked)
    reused = bool(slots) and (held is not None or reuse_active(config)) and \
        _take_idle(root, config, slots, path, branch)
    if not reused:
        git.add_worktree(root, path, branch, git.branch_sha(root, config.main_branch))  # see _take_idle
    _prepare_or_drop(root, config, path, reused=reused)
    return path


def _prepare_or_drop(root: Path, config: Config, path: Path, *, reused: bool) -> None:
    try:
        _prepare(root, config, path, reused=reused)
    except BaseException:
        # A half-prepared worktree must not be used as if set up: it goes (back to the idle ones, with
        # no set-up record, when reuse is on), and the next attempt takes or creates one afresh.
        _release(root, config, [path])
        raise


def _prepare(root: Path, config: Config, path: Path, *, reused: bool = False) -> None:
    """Copy the ignored files a task needs, then run the set-up commands, recorded in the
    worktree's own git folder: a reused worktree runs them again only when their inputs changed."""
    _copy_files(root, config, path, fresh=reused)
    if not _needs_stamp(config):
        return
    # With another executor the runs set up their own worktrees where they run (kanban.executors.ray_job):
    # this one only holds the branch, and is recorded as set up for nothing.
    setup = config.worktree.setup if config.executor.kind == "local" else ()
    key = _setup_key(path, config) if setup else ""
    before = _read_stamp(path, PREVIOUS_STAMP) if reused else None
    if setup and (before is None or before.get("key") != key):
        _stamp_file(path, PREVIOUS_STAMP).unlink(missing_ok=True)  # killed midway: run again next time
        _run_setup(config, path)
    _write_stamp(path, {"key": key, "commit": git.head(path), "at": time.time()})
    _stamp_file(path, PREVIOUS_STAMP).unlink(missing_ok=True)


def _run_setup(config: Config, path: Path) -> None:
    from kanban.runner import run_bounded

    for argv in config.worktree.setup:
        try:
            done = run_bounded(argv, path, timeout=SETUP_TIMEOUT, output_limit=SETUP_OUTPUT, keep_tail=True)
        except OSError as exc:
            raise KanbanError(f"worktree set-up '{' '.join(argv)}' failed: {exc}", code=1) from None
        if done.timed_out:  # its whole group was stopped: no half-run installer left in the worktree
            raise KanbanError(f"worktree set-up '{' '.join(argv)}' failed: Command '{list(argv)}' timed out "
                              f"after {SETUP_TIMEOUT} seconds", code=1)
        if done.returncode != 0:
            tail = (done.output + done.errors).decode(errors="replace").strip().splitlines()[-15:]
            raise KanbanError(f"worktree set-up '{' '.join(argv)}' exited {done.returncode}:\n" + "\n".join(tail),
                              code=1)


def _copy_files(root: Path, config: Config, path: Path, *, fresh: bool) -> None:
    """`[worktree] copy`. In a reused worktree the last task's copy (ignored, so kept) goes first,
    and nothing is written through a link it may have left in its place."""
    for rel in config.worktree.copy:
        source, target = root / rel, path / rel
        if not (source.is_dir() or source.is_file()):
            continue
        if fresh:
            _clear_target(path, rel)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _clear_target(path: Path, rel: str) -> None:
    """Make PATH/REL free to write: real directories on the way (a link or file there is removed),
    nothing at REL itself."""
    here = path
    parts = Path(rel).parts
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            here.unlink()
    target = path / rel
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.is_symlink() or target.exists():
        target.unlink()


# -- warm worktrees: the idle pool ---------------------------------------------------------
#
# A merged task's worktree is not deleted: it is detached and moved to WORKTREE_DIR/.idle/<n>
# (a name no task ID can have: IDs start with a letter), its ignored files (node_modules/, .venv/)
# kept. The next pick takes one: quits any rebase or cherry-pick left in it, checks out the task's
# branch (new from main) with --force, `git clean -ffdq` (untracked files go, ignored ones stay),
# then moves it to WORKTREE_DIR/<ID>. A crash between those steps leaves either an idle worktree
# (cleaned again at its next use; one holding the task's branch is taken by that task's next pick)
# or a task worktree like any other. Idle worktrees over `keep_idle` are moved aside to
# .idle/.trash-<x> and removed by a `git worktree remove` in the background.

IDLE_DIR = paths.IDLE_DIR
TRASH_PREFIX = ".trash-"
TRASH_STALE = 120.0  # seconds: a trash worktree unchanged this long has no remover left
SETUP_STAMP = "kanban-setup.json"  # in the worktree's own git folder: never in the checkout
PREVIOUS_STAMP = "kanban-setup.previous.json"  # a taken idle worktree's record, until its set-up is settled
_BACKGROUND: list[tuple[str, subprocess.Popen]] = []  # (trash path, its remover)


def idle_path(root: Path, config: Config) -> Path:
    return paths.idle_dir(root, config.worktree_dir)


def reuse_active(config: Config) -> bool:
    """Reuse is on, and no role is sandboxed: a reused worktree carries ignored files (and its git
    index) from one task's agent to the next, which the sandbox exists to prevent."""
    # The pipeline's roles: the planner's checkout is never a task's worktree.
    return config.worktree.reuse and all(config.agent_for(role).sandbox == "none" for role in ROLES)


def idle_limit(config: Config) -> int:
    return config.worktree.idle_limit(config.pool_size) if reuse_active(config) else 0


def idle_worktrees(root: Path, config: Config) -> list[Path]:
    """The idle worktrees ready for reuse (not those on their way out)."""
    idle = idle_path(root, config).resolve()
    return sorted(w.path for w in git.worktrees(root) if _is_slot(w.path, idle))


def _is_slot(path: Path, idle: Path) -> bool:
    """An idle worktree ready for reuse (IDLE resolved): `<idle>/<n>`, not trash on its way out."""
    return path.name.isdigit() and path.parent.resolve() == idle


def release_worktrees(root: Path, config: Config, task_ids: list[str]) -> None:
    """The worktrees of finished tasks, whose branches are deleted next: each is detached and
    parked for reuse, or removed (past `keep_idle`, with reuse off, or where it cannot move)."""
    _release(root, config, [worktree_path(root, config, t) for t in task_ids])


def _release(root: Path, config: Config, paths: list[Path]) -> None:
    _reap_background()
    limit = idle_limit(config)
    idle = idle_path(root, config)
    if limit == 0 and not idle.is_dir():  # reuse off: as before warm worktrees
        git.remove_worktrees(root, [p for p in paths if p.exists() or p.is_symlink()])
        return
    leftover: list[Path] = []
    gone = False  # a worktree deleted by hand: its record must be pruned before its branch can go
    common = _common_dir(root)
    with git._worktree_lock(root):
        listed = git.worktrees(root)
        registered = {w.path.resolve(): w for w in listed}
        slots = sorted(w.path for w in listed if _is_slot(w.path, idle.resolve()))
        _stray_slots(root, idle, registered)  # before the moves below, while `registered` is git's list
        for path in paths:
            if not path.exists() and not path.is_symlink():
                gone = gone or path.resolve() in registered  # else released already: nothing to prune
                continue
            w = registered.get(path.resolve()) if not path.is_symlink() else None
            if limit == 0 or w is None or w.locked or _linked(path, common) is None:
                leftover.append(path)
                continue
            try:
                _detach(path)
                if len(slots) < limit:
                    slots.append(_move(root, path, _free_slot(idle)))
                else:
                    _trash(root, idle, path)
            except (git.GitError, OSError):
                leftover.append(path)
        for extra in slots[limit:]:  # keep_idle lowered (or reuse switched off) since they were parked
            try:
                _trash(root, idle, extra)
            except (git.GitError, OSError):
                leftover.append(extra)
        _retry_stale_trash(root, idle, listed)
        _tidy(idle)
        if gone and not leftover:
            git.run(root, "worktree", "prune")
    if leftover:
        git.remove_worktrees(root, leftover)  # their files, then one prune


def _take_idle(root: Path, config: Config, slots: list[Path], path: Path, branch: str) -> bool:
    """Make an idle worktree the task's: its branch checked out and cleaned, moved to PATH."""
    common = _common_dir(root)
    with git._worktree_lock(root):
        for slot in slots:
            if not slot.exists() and not slot.is_symlink():
                continue  # taken or removed since it was listed
            if _linked(slot, common) is None:  # not what git recorded (a link, a rewritten `.git`)
                _drop_broken(root, slot)
                continue
            try:
                # A commit id, not main's name: `checkout -b B main` reads main twice (the files, then
                # the new branch), and a merge landing in between leaves the files one commit behind.
                _switch(root, slot, branch, git.branch_sha(root, config.main_branch))
                if path.exists() or path.is_symlink():  # git would move the worktree into it
                    raise git.GitError(f"{path} appeared while a worktree was being prepared for it")
                _move(root, slot, path)
            except (git.GitError, OSError):
                try:
                    _detach(slot)  # so the branch is free for `git worktree add`
                    _trash(root, slot.parent, slot)
                except (git.GitError, OSError):
                    _drop_broken(root, slot)
                continue
            _tidy(slot.parent)
            return True
    return False


def _repair_moved(root: Path, path: Path) -> bool:
    """PATH was renamed by a `git worktree move` killed before it updated git's record (which
    still names the old place, now gone): `git worktree repair` points the record at PATH."""
    from kanban.untrusted import read_capped

    if path.is_symlink() or not path.is_dir():
        return False
    admin = git.worktree_gitdir(path)
    common = _common_dir(root)
    if admin is None or not admin.is_dir() or admin.resolve().parent != (common / "worktrees").resolve():
        return False
    old = read_capped(admin / "gitdir", 4096).strip()
    if not old or Path(old).exists() or not Path(old).parent.parent.resolve().is_relative_to(
            (root / ".").resolve()):
        return False
    git.run(root, "worktree", "repair", str(path), check=False)
    return _linked(path, common) is not None


def _dead_link(root: Path, path: Path) -> bool:
    """PATH is a folder whose `.git` names a record under the repository's worktrees that git no
    longer has (pruned): a checkout of kanban's nobody can use, not a person's folder."""
    if path.is_symlink() or not path.is_dir() or (path / ".git").is_symlink() or not (path / ".git").is_file():
        return False
    admin = git.worktree_gitdir(path)
    return admin is not None and not admin.exists() and \
        admin.parent.resolve() == (_common_dir(root) / "worktrees").resolve()


def _stray_slots(root: Path, idle: Path, recorded: dict) -> None:
    """Folders in the idle directory git has no record of (RECORDED: git's list, by resolved path):
    a move into it killed midway, put right with `git worktree repair`, or removed when its record
    has been pruned since."""
    if not idle.is_dir():
        return
    for child in idle.iterdir():
        if not child.name.isdigit() or child.resolve() in recorded:
            continue
        if child.is_symlink():
            child.unlink()
        elif not _repair_moved(root, child) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _drop_broken(root: Path, slot: Path) -> None:
    """An idle worktree kanban cannot use: removed now (rare: a crash, or a person's doing)."""
    if slot.is_symlink():
        slot.unlink()
    else:
        git.run(root, "worktree", "remove", "--force", "--force", str(slot), check=False)
        if slot.is_dir():
            shutil.rmtree(slot, ignore_errors=True)
    git.run(root, "worktree", "prune")


def _switch(root: Path, slot: Path, branch: str, base: str) -> None:
    """The task's branch checked out in SLOT, tracked files as committed, untracked ones gone,
    ignored ones kept. Every step may be repeated: a slot half-switched is simply switched again."""
    admin = git.worktree_gitdir(slot)
    assert admin is not None
    stamp = admin / SETUP_STAMP
    if stamp.exists():  # what the worktree was set up for; settled once the new checkout is prepared
        os.replace(stamp, admin / PREVIOUS_STAMP)
    _quit_operations(slot, admin)
    status, _, err = git.run_status(slot, "checkout", "--force", "-q", "--no-track", "-b", branch, base, "--")
    if status != 0:  # the branch exists (a crash, or its worktree removed): its own commits, not main
        if not git.branch_exists(root, branch):
            raise git.GitError(f"git checkout -b {branch} failed: {err.strip()[:200]}", stderr=err)
        git.run(slot, "checkout", "--force", "-q", branch, "--")
    git.run(slot, "clean", "-ffdq")


def _detach(path: Path) -> None:
    """HEAD detached at its commit, index and files untouched (whatever state they are in), and no
    rebase or bisect left holding its branch (git would refuse to delete it)."""
    admin = git.worktree_gitdir(path)
    if admin is not None:
        _quit_operations(path, admin)
    git.run(path, "update-ref", "--no-deref", "-m", "kanban: worktree released", "HEAD", git.head(path))


def _quit_operations(path: Path, admin: Path) -> None:
    """Forget a rebase, cherry-pick, revert or bisect under way, leaving HEAD and files as they are
    (a merge's state goes with the checkout that follows)."""
    if (admin / "rebase-merge").exists() or (admin / "rebase-apply").exists():
        git.run(path, "rebase", "--quit", check=False)
    if (admin / "sequencer").exists():
        git.run(path, "cherry-pick", "--quit", check=False)
    if (admin / "BISECT_START").exists():
        git.run(path, "bisect", "reset", "HEAD", check=False)


def _move(root: Path, source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    git.run(root, "worktree", "move", str(source), str(target))
    return target


def _free_slot(idle: Path) -> Path:
    taken = {p.name for p in idle.iterdir()} if idle.is_dir() else set()
    n = 0
    while str(n) in taken:
        n += 1
    return idle / str(n)


def _trash(root: Path, idle: Path, path: Path) -> None:
    """Out of the way at once (a rename), removed by git in the background."""
    import uuid

    target = _move(root, path, idle / f"{TRASH_PREFIX}{uuid.uuid4().hex[:12]}")
    _remove_in_background(root, target)


def _remove_in_background(root: Path, path: Path) -> None:
    proc = git.remove_worktree_in_background(root, path)
    if proc is not None:  # else left as trash: a later release removes it
        _BACKGROUND.append((str(path), proc))


def _retry_stale_trash(root: Path, idle: Path, listed: list) -> None:
    """Trash whose remover was killed (its directory unchanged for a while): removed now."""
    now = time.time()
    mine = {where for where, _ in _BACKGROUND}
    registered = {w.path.resolve() for w in listed}
    if not idle.is_dir():
        return
    for child in idle.iterdir():
        if not child.name.startswith(TRASH_PREFIX) or str(child) in mine or child.is_symlink():
            continue
        try:
            info = child.lstat()  # ctime: a move into the trash sets it, a remover's deletions too
            if now - max(info.st_mtime, info.st_ctime) < TRASH_STALE:
                continue
        except OSError:
            continue
        if child.resolve() in registered:
            git.run(root, "worktree", "remove", "--force", "--force", str(child), check=False)
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)  # past what git would remove (its `.git` gone)


def _reap_background() -> None:
    _BACKGROUND[:] = [(where, p) for where, p in _BACKGROUND if p.poll() is None]


def wait_background(timeout: float = 60.0) -> None:
    """Wait for the background removals this process started (tests, benchmarks)."""
    deadline = time.monotonic() + timeout
    for _, proc in list(_BACKGROUND):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    _reap_background()


def _tidy(idle: Path) -> None:
    """No empty idle folder left behind (repair would take it for a half-created worktree)."""
    try:
        idle.rmdir()
    except OSError:
        pass  # not empty, or not there


_COMMON: dict[str, Path] = {}


def _common_dir(root: Path) -> Path:
    """The repository's shared git folder, asked once per process (one git less per pick)."""
    key = str(root.resolve())
    if key not in _COMMON:
        _COMMON[key] = git.common_dir(root)
    return _COMMON[key]


def _linked(path: Path, common: Path) -> Path | None:
    """PATH's own git folder, if PATH is a linked worktree of this repository whose `.git` leads to
    kanban's record of it and back (an agent may have rewritten it)."""
    from kanban.untrusted import read_capped

    if path.is_symlink() or not path.is_dir():
        return None
    admin = git.worktree_gitdir(path)
    if admin is None or admin.resolve().parent != (common / "worktrees").resolve():
        return None
    back = read_capped(admin / "gitdir", 4096).strip()
    try:
        return admin if back and Path(back).resolve() == (path / ".git").resolve() else None
    except (OSError, ValueError):
        return None


# -- set-up records ------------------------------------------------------------------------


def _needs_stamp(config: Config) -> bool:
    return bool(config.worktree.setup or config.worktree.copy)


def _stamp_file(path: Path, name: str) -> Path:
    admin = git.worktree_gitdir(path)
    return (admin if admin is not None else path / ".git") / name


def _read_stamp(path: Path, name: str) -> dict | None:
    from kanban.untrusted import read_capped

    try:
        data = json.loads(read_capped(_stamp_file(path, name), 4096) or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(path: Path, data: dict) -> None:
    """Whole or not at all (a rename), not synced: a record lost to a power cut runs set-up again."""
    target = _stamp_file(path, SETUP_STAMP)
    if not target.parent.is_dir():
        return
    write_text_atomic(target, json.dumps(data))


def _setup_key(path: Path, config: Config) -> str:
    """What the set-up depends on, at the commit checked out: its commands, and the blobs of the
    tracked files matching `setup_inputs` (without any, the whole tree)."""
    inputs = config.worktree.setup_inputs
    if inputs:
        blobs = git.blobs_in_index(path, [f":(glob){g}" for g in inputs])  # after a checkout: the commit's
        listing = "\n".join(f"{blob} {name}" for name, blob in sorted(blobs.items()))
    else:
        listing = git.tree_of(path, "HEAD")
    text = json.dumps({"setup": [list(a) for a in config.worktree.setup], "inputs": list(inputs)}) + "\n" + listing
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def report_file(worktree: Path) -> Path:
    return worktree / REPORT_DIR / REPORT_NAME


def prepare_report(worktree: Path) -> Path:
    """An empty report file for the next agent, in a directory git ignores."""
    folder = worktree / REPORT_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()  # the last agent's doing: never write through it
    folder.mkdir(exist_ok=True)
    for name, text in ((".gitignore", "*\n"), (REPORT_NAME, "")):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
    return folder / REPORT_NAME


def collect_report(worktree: Path, run_dir: Path) -> str:
    """Move what the agent wrote to its run directory (for logs and the history); return it.

    Read without following links, without blocking, and capped: the agent may have put a
    FIFO, a link to /dev/zero or to a secret in its place.
    """
    from kanban.untrusted import read_capped

    source = report_file(worktree)
    text = read_capped(source, REPORT_READ_LIMIT)
    if not (run_dir / REPORT_NAME).exists():  # already collected by an earlier, interrupted reap
        # Synced when there is something to lose: an empty one lost to a power cut reads "" again.
        write_text_atomic(run_dir / REPORT_NAME, text, durable=bool(text))
    else:
        text = read_capped(run_dir / REPORT_NAME, REPORT_READ_LIMIT) or text
    try:
        if source.is_symlink() or source.is_file():
            source.unlink()
    except OSError:
        pass
    return text


def test_env(config: Config, task_id: str, worktree: Path, port: int) -> dict[str, str]:
    """The test command's environment: filtered by the checks' lists, never kanban's whole environment."""
    env = config.env.for_checks().filter(os.environ)
    env.update({"KANBAN_TASK_ID": task_id, "KANBAN_ROLE": "test", "KANBAN_WORKTREE": str(worktree),
                "KANBAN_PORT": str(port), "KANBAN_MAIN_BRANCH": config.main_branch, "GIT_TERMINAL_PROMPT": "0"})
    return env


def agent_env(config: Config, launch: Launch, worktree: Path, prompt_file: Path, report_file: Path,
              extra: dict[str, str]) -> dict[str, str]:
    env = config.env.filter(os.environ)
    for name, value in extra.items():  # the preset's defaults; what the person set wins
        env.setdefault(name, value)
    env.update({
        "KANBAN_TASK_ID": launch.task_id,
        "KANBAN_ROLE": launch.role,
        "KANBAN_ATTEMPT": str(launch.attempt),
        "KANBAN_WORKTREE": str(worktree),
        "KANBAN_PROMPT_FILE": str(prompt_file),
        "KANBAN_REPORT_FILE": str(report_file),
        "KANBAN_PORT": str(launch.port),
        "KANBAN_MAIN_BRANCH": config.main_branch,
        "GIT_TERMINAL_PROMPT": "0",
    })
    return env


def tracked_candidates(worktree: Path, changed: list[str]) -> list[str]:
    """The tracked files `covering_tests(changed, ...)` needs to see: those named like a test of
    the changed code, asked of git by name (not the whole tree's listing); none without such code."""
    stems = wanted_stems(changed)
    if not stems:
        return []
    globs = stem_globs(stems)
    return git.tracked_files(worktree) if globs is None or len(globs) > 500 else git.tracked_matching(worktree, globs)


def prompt_values(root: Path, config: Config, launch: Launch, worktree: Path, report_file: Path,
                  conflicts: list[str]) -> dict[str, str]:
    changed = git.changed_files(worktree, config.main_branch) if launch.role != "task" else []
    tests = covering_tests(changed, tracked_candidates(worktree, changed)) if launch.role == "tester" else []
    merge_text = (f"Merging the latest {config.main_branch} into this branch left conflicts in these files; "
                  "resolve them first:\n" + _bullets(conflicts)) if conflicts else \
        f"The latest {config.main_branch} is merged into this branch; there were no conflicts."
    return {
        "task_id": launch.task_id,
        "title": launch.title,
        "body": launch.body.strip() or "(no description)",
        "priority": launch.fields.get("priority", ""),
        "depends": launch.fields.get("depends", "") or "none",
        "files": launch.fields.get("files", "") or "not declared",
        "track": launch.fields.get("track", ""),
        "role": launch.role,
        "attempt": str(launch.attempt),
        "branch": branch_name(launch.task_id),
        "main_branch": config.main_branch,
        "worktree": str(worktree),
        "report_file": str(report_file),
        "feedback": launch.notes.strip() or "Nothing yet: this is the first attempt.",
        "notes": launch.notes.strip(),
        "changed_files": _bullets(changed) or "(none)",
        "tests": _bullets(tests) or "No test files matched the changed files by name; find and run the relevant "
                                     "tests yourself.",
        "conflicts": merge_text,
        "test_command": test_command_text(config),
        "verdict": verdict_example(launch.role),
    }


def test_command_text(config: Config) -> str:
    if config.test.command:
        return (f"The project's test command is `{config.test.shown()}` ({{tests}} stands for the test files "
                "covering the changed files). kanban runs it itself in this worktree after review; its exit "
                "status decides whether the change can be merged.")
    return "No test command is configured: find the project's tests and run the ones that cover your change."


def verdict_example(role: str) -> str:
    from kanban.verdict import example

    return example(role)


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)
