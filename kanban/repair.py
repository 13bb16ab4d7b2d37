"""Finding and fixing what a crash (or a person) can leave behind.

`find_problems` looks; `repair` fixes, one logged line per fix ("found X; did Y").
Nothing here destroys work that is not in main: an orphan branch with commits
of its own is kept (renamed to `kanban-orphan/<ID>`), an orphan worktree with
uncommitted changes is reported, not removed.

Scopes, by what may run meanwhile:

- "tick":  called by Engine.tick inside the tick lock. Agents may be running
  and a merge queue may be draining, so only fixes that cannot race either:
  duplicate entries and temp files (under the board lock), orphan worktrees and
  branches of tasks on no board file, git locks of task branches and worktrees
  left by a killed git, worktree prune. Runs are left to the engine's own reaping.
- "merge": called by MergeQueue.drain inside the merge lock: the same, plus the
  verify worktree (and git locks on main and in it) and a verify process left
  by a killed queue.
- "full":  `kanban preflight --repair`, with both locks held when it can get
  them: everything, including runs whose supervisor or agent is gone and
  half-created worktrees.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from kanban import git, paths, procs
from kanban.agents import IDLE_DIR
from kanban.errors import KanbanError
from kanban.ids import branch_name
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column

CHANGELOG = COLUMN_FILES[Column.DONE]

ORDER = {Column.TODO: 0, Column.IN_PROGRESS: 1, Column.REVIEW: 2, Column.TESTING: 3}
TMP_BOARD = re.compile(r"^\..+\.kanban-tmp$")
TMP_RUN = re.compile(r"^\..+\.(\d+)\.tmp$")
TMP_AGE = 60.0  # seconds: a temp file this old in .kanban has no writer left
ORPHAN_PREFIX = "kanban-orphan/"

KIND_DUPLICATE = "duplicate entry"
KIND_MERGED_ON_BOARD = "merged task still on the board"
KIND_NO_WORKTREE = "task with neither worktree nor branch"
KIND_ORPHAN_WORKTREE = "orphan worktree"
KIND_ORPHAN_BRANCH = "orphan branch"
KIND_HALF_WORKTREE = "half-created worktree"
KIND_LOST_RUN = "lost run"
KIND_SUPERVISOR_DIED = "run without supervisor"
KIND_TEMP_FILE = "half-written temp file"
KIND_VERIFY = "stale verify"
KIND_PRUNABLE = "prunable worktree record"
KIND_STALE_LOCK = "stale git lock"
KIND_HALF_ADVANCE = "interrupted fast-forward of main's checkout"

# problems that repair notes but leaves for the engine (no change on disk)
NOTE_ONLY = {KIND_NO_WORKTREE}


@dataclass
class Problem:
    kind: str
    task: str | None
    what: str  # "found ..." text
    data: dict

    def __str__(self) -> str:
        return self.what


# -- detection ------------------------------------------------------------------------


def find_problems(root: Path, config, history=None, runner=None, *, scope: str = "full") -> list[Problem]:
    from kanban.store import load_board

    problems: list[Problem] = []
    problems += _temp_files(root, scope)
    board = load_board(root, check=False)
    problems += find_duplicates(root, config, board, history)
    live = {r.task for r in history.live_runs()} if history is not None else set()
    if scope != "tick":  # beside a running merge queue, finished tasks are its job (_cleanup_finished)
        problems += _merged_on_board(root, config, board, live)
    wts = _worktree_records(root)
    wt_root = paths.worktree_root(root, config.worktree_dir).resolve()
    if scope in ("full", "tick"):  # worktrees are created only inside the tick lock
        problems += _half_worktrees(root, wts, wt_root)
    problems += _orphans(root, config, board, wts, wt_root, live, skip_done=scope == "tick")
    problems += _missing_worktrees(root, config, board, wts, wt_root, live)
    if scope == "full" and history is not None:
        problems += _runs(history, runner)
    if scope in ("full", "merge"):
        problems += _verify(root, wts)
        problems += _half_advance(root)
    problems += _stale_locks(root, config, wts, wt_root, live, scope)
    if any(r.get("prunable") is not None for r in wts):
        problems.append(Problem(KIND_PRUNABLE, None, "found worktree records whose directory is gone", {}))
    return problems


def _temp_files(root: Path, scope: str) -> list[Problem]:
    found = []
    for column in (*BOARD_COLUMNS, Column.DONE):
        parent = (root / COLUMN_FILES[column]).parent
        for p in parent.glob(f".{COLUMN_FILES[column]}.*.kanban-tmp"):
            found.append(Problem(KIND_TEMP_FILE, None, f"found half-written temp file {p.name}",
                                 {"path": p, "board": True}))
    state = paths.state_dir(root)
    if state.is_dir():
        now = time.time()
        for p in state.rglob(".*tmp"):
            m = TMP_RUN.match(p.name)
            if TMP_BOARD.match(p.name):
                stale = True
            elif m:
                stale = not Path(f"/proc/{m.group(1)}").exists()
            else:
                continue
            with contextlib.suppress(OSError):
                if stale and now - p.stat().st_mtime > (0 if scope == "full" else TMP_AGE):
                    found.append(Problem(KIND_TEMP_FILE, None,
                                         f"found half-written temp file {p.relative_to(root)}",
                                         {"path": p, "board": False}))
    return found


def find_duplicates(root: Path, config, board, history) -> list[Problem]:
    places: dict[str, list] = {}
    for f, entry in board.located():
        if entry.task_id:
            places.setdefault(entry.task_id, []).append(f.column)
    found = []
    for task_id, columns in places.items():
        if len(columns) < 2 or len(set(columns)) < len(columns):
            continue  # one file twice is a person's edit: validation names it
        keep = _winner(task_id, columns, history)
        stale = [c for c in columns if c is not keep]
        found.append(Problem(KIND_DUPLICATE, task_id,
                             f"found {task_id} in both " + " and ".join(COLUMN_FILES[c] for c in columns),
                             {"keep": keep, "stale": stale}))
    return found


def _winner(task_id: str, columns: list[Column], history) -> Column:
    """Which copy is current.

    A transition's event is logged after its board write, so a move that
    crashed between its two file writes has no event yet: the last logged
    transition names the file the entry was moving *from*, and the other copy
    (the target, written first) is current. That holds for send-backs too.
    Without such an event (a new task's pick), the later stage wins.
    """
    last = None
    if history is not None:
        for _, _, kind, source, target, _ in reversed(history.events(task_id)):
            if source is not None and target:
                last = target
                break
    if last is not None and last in {c.value for c in columns}:
        others = [c for c in columns if c.value != last]
        return max(others, key=ORDER.__getitem__)
    return max(columns, key=ORDER.__getitem__)


def _merged_on_board(root: Path, config, board, live: set[str]) -> list[Problem]:
    found: list[Problem] = []
    if not board.done_ids:
        return found
    shas = git.branch_shas(root, "refs/heads/kanban/")
    main = git.rev_parse(root, config.main_branch)
    for entry in board.files[Column.TESTING].entries():
        tid = entry.task_id
        if not tid or tid not in board.done_ids or tid in live:
            continue
        sha = shas.get(branch_name(tid))
        if sha and git.is_ancestor(root, sha, main):
            found.append(Problem(KIND_MERGED_ON_BOARD, tid,
                                 f"found {tid} in CHANGELOG.md and TESTING.md with its branch merged into "
                                 f"{config.main_branch}", {"sha": sha}))
    return found


def _worktree_records(root: Path) -> list[dict]:
    out = git.run(root, "worktree", "list", "--porcelain", "-z")
    return [{**rec, "path": Path(rec.get("worktree", ""))} for rec in git._records(out)]


def _half_worktrees(root: Path, wts: list[dict], wt_root: Path) -> list[Problem]:
    """`git worktree add` killed midway leaves a registration locked as "initializing", or,
    killed earlier, an empty directory git does not list at all."""
    found = []
    listed = {rec["path"] for rec in wts}
    if wt_root.is_dir():
        for child in wt_root.iterdir():
            if child.name == IDLE_DIR:  # the warm worktrees' waiting room (kanban.agents), emptied as it likes
                continue
            if child.is_dir() and not child.is_symlink() and child not in listed and not any(child.iterdir()):
                found.append(Problem(KIND_HALF_WORKTREE, child.name,
                                     f"found {child.name} in the worktree directory left empty by a killed "
                                     "'git worktree add'", {"path": child}))
    for rec in wts:
        if rec["path"].parent == wt_root and (rec.get("locked", None) == "initializing" or _no_head(rec)):
            found.append(Problem(KIND_HALF_WORKTREE, rec["path"].name,
                                 f"found worktree {rec['path'].name} left half-created by a killed 'git worktree add'",
                                 {"path": rec["path"]}))
    return found


def _no_head(rec: dict) -> bool:
    """A registration whose HEAD was never written (killed before git wrote it)."""
    return rec.get("HEAD", "").strip("0") == "" and "bare" not in rec


def _orphans(root: Path, config, board, wts: list[dict], wt_root: Path, live: set[str], *,
             skip_done: bool = False) -> list[Problem]:
    on_board = {e.task_id for _, e in board.located() if e.task_id}
    if skip_done:
        on_board |= board.done_ids
    found = []
    registered = set()
    for rec in wts:
        path = rec["path"]
        if path.parent != wt_root:
            continue
        registered.add(path.name)
        tid = path.name
        if tid in on_board or tid in live or rec.get("locked") == "initializing" or _no_head(rec):
            continue
        if rec.get("prunable") is not None or not path.exists():
            continue  # prune handles it
        dirty = git.dirty_paths(path) if path.exists() else []
        where = "in CHANGELOG.md" if tid in board.done_ids else "on no board file"
        found.append(Problem(KIND_ORPHAN_WORKTREE, tid, f"found worktree {config.worktree_dir}/{tid} of a task {where}",
                             {"path": path, "dirty": dirty}))
    main = git.rev_parse(root, config.main_branch)
    for branch, sha in git.branch_shas(root, "refs/heads/kanban/").items():
        tid = branch.removeprefix("kanban/")
        if tid in on_board or tid in live:
            continue
        merged = git.is_ancestor(root, sha, main)
        where = "in CHANGELOG.md" if tid in board.done_ids else "on no board file"
        found.append(Problem(KIND_ORPHAN_BRANCH, tid, f"found branch {branch} of a task {where}"
                             + ("" if merged else f" with commits not in {config.main_branch}"),
                             {"branch": branch, "sha": sha, "merged": merged}))
    return found


def _missing_worktrees(root: Path, config, board, wts, wt_root: Path, live: set[str]) -> list[Problem]:
    shas = git.branch_shas(root, "refs/heads/kanban/")
    have = {rec["path"].name for rec in wts if rec["path"].parent == wt_root and rec["path"].exists()}
    found = []
    for f, entry in board.located():
        tid = entry.task_id
        if not tid or f.column is Column.TODO or tid in have or tid in live:
            continue
        if branch_name(tid) not in shas:
            found.append(Problem(KIND_NO_WORKTREE, tid, f"found {tid} in {f.name} with neither worktree nor branch",
                                 {"column": f.column}))
    return found


def _runs(history, runner) -> list[Problem]:
    found = []
    for run in history.live_runs():
        rdir = Path(run.run_dir)
        state = runner.poll(rdir)
        if state.result is not None:
            continue  # finished: the next tick reaps it
        desc = f"{run.task} {run.role} attempt {run.attempt}"
        if state.running and not state.supervisor_alive:
            found.append(Problem(KIND_SUPERVISOR_DIED, run.task,
                                 f"found {desc} running with its supervisor dead", {"run_dir": rdir}))
        elif not state.running and not state.supervisor_alive:
            found.append(Problem(KIND_LOST_RUN, run.task,
                                 f"found {desc} recorded as running with neither supervisor nor agent left",
                                 {"run_dir": rdir}))
    return found


def _verify(root: Path, wts: list[dict]) -> list[Problem]:
    found = []
    record = paths.verify_pid_record(root)
    if record.exists():
        try:
            pid, start = (int(x) for x in record.read_text().split())
        except (OSError, ValueError):
            pid, start = 0, 0
        if pid and procs.owned_group(pid, start):
            found.append(Problem(KIND_VERIFY, None, "found a verify process left by a killed merge queue",
                                 {"record": record}))
    path = paths.verify_slot(root, 0)
    registered = any(rec["path"] == path.resolve() or rec["path"] == path for rec in wts)
    if path.exists() and (not (path / ".git").exists() or not registered):
        found.append(Problem(KIND_VERIFY, None, "found .kanban/verify half-created", {"path": path}))
    return found


def _half_advance(root: Path) -> list[Problem]:
    from kanban.merge_queue import advance_record
    from kanban.supervisor import read_json

    record = advance_record(root)
    if not record.exists():
        return []
    return [Problem(KIND_HALF_ADVANCE, None,
                    "found an interrupted fast-forward of the checkout of main (a merge queue killed during "
                    "'git merge --ff-only')", {"record": record, "intent": read_json(record) or {}})]


def _stale_locks(root: Path, config, wts: list[dict], wt_root: Path, live: set[str], scope: str) -> list[Problem]:
    """Git lock files (`*.lock`) in kanban's reach that no git process can be holding.

    Git removes its lock when it exits, so a lock with no git process working
    anywhere in the repository was left by a killed git (a tick killed during
    `git worktree add`, a queue killed during a checkout or a ref update); it
    would fail every later git command that needs it. Once no git process runs,
    a new one cannot take a lock that is already there (it is created with
    O_EXCL), so deleting it races nobody. Each scope clears only what its own
    commands use: task branches and worktrees (tick), main and the verify
    worktree (merge), and with "full" also the main checkout's index.
    """
    common = git.common_dir(root)
    found: list[tuple[Path, str | None]] = []
    verify = paths.verify_slot(root, 0).resolve()
    if scope in ("full", "tick"):
        for lock in (common / "refs" / "heads" / "kanban").glob("*.lock"):
            if lock.name.removesuffix(".lock") not in live:
                found.append((lock, lock.name.removesuffix(".lock")))
    for rec in wts:
        path = rec["path"]
        task_wt = path.parent == wt_root and scope in ("full", "tick") and path.name not in live
        verify_wt = path == verify and scope in ("full", "merge")
        gitdir = git.worktree_gitdir(path) if (task_wt or verify_wt) and path.is_dir() else None
        if gitdir is not None:
            found += [(gitdir / name, path.name if task_wt else None) for name in ("index.lock", "HEAD.lock")]
    if scope in ("full", "merge"):
        found += [(common / "refs" / "heads" / f"{config.main_branch}.lock", None), (common / "packed-refs.lock", None)]
    if scope == "full":
        found += [(common / "index.lock", None), (common / "HEAD.lock", None)]
    found = [(lock, task) for lock, task in found if lock.is_file()]
    if not found or procs.working_in(root, command="git"):
        return []
    return [Problem(KIND_STALE_LOCK, task, f"found a stale git lock {_shown(root, lock)} (no git process holds it)",
                    {"lock": lock}) for lock, task in found]


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


# -- fixing ---------------------------------------------------------------------------


def repair(root: Path, config, history=None, runner=None, *, scope: str = "full") -> list[str]:
    """Fix every problem found; one line per fix. Each line also goes into the history's event log."""
    from kanban.runner import LocalRunner

    runner = runner or LocalRunner()
    lines: list[str] = []
    tasks: list[str | None] = []  # the task of each line, for the event log
    seen: set[str] = set()
    for _ in range(3):  # one fix can reveal the next (a merged entry removed: its worktree and branch go)
        problems = [p for p in find_problems(root, config, history, runner, scope=scope) if p.what not in seen]
        if not problems:
            break
        seen.update(p.what for p in problems)
        # locks first: a stale packed-refs.lock or ref lock would fail the branch fixes after it
        problems.sort(key=lambda p: p.kind != KIND_STALE_LOCK)
        if any(p.kind == KIND_PRUNABLE for p in problems):
            # first: a record whose directory is gone still "has its branch checked out" for git
            with git._worktree_lock(root):
                git.run(root, "worktree", "prune")
        dup_fixes = [p for p in problems if p.kind == KIND_DUPLICATE]
        if dup_fixes:
            lines += _fix_duplicates(root, dup_fixes)
            tasks += [p.task for p in dup_fixes]
        for p in problems:
            if p.kind == KIND_DUPLICATE:
                continue
            try:
                line = _fix(root, config, history, runner, p)
            except KanbanError as exc:  # one fix that fails must not stop the others, nor the command
                line = f"{p.what}; could not fix it: {exc}"
                seen.discard(p.what)  # try once more after the other fixes
            if line:
                lines.append(line)
                tasks.append(p.task)
        if any(p.kind in (KIND_PRUNABLE, KIND_ORPHAN_WORKTREE, KIND_HALF_WORKTREE) for p in problems):
            with git._worktree_lock(root):
                git.run(root, "worktree", "prune")
        if all(p.kind in NOTE_ONLY for p in problems):
            break
    if history is not None:
        for task, line in zip(tasks, lines):
            history.event(task or "-", "repair", detail=line)
    return lines


def _fix_duplicates(root: Path, problems: list[Problem]) -> list[str]:
    from kanban.store import board_lock, load_board, save

    lines = []
    with board_lock(root):
        board = load_board(root, check=False)
        for p in problems:
            for f, entry in list(board.located()):
                if entry.task_id == p.task and f.column in p.data["stale"]:
                    f.remove(entry)
                    f.mark_dirty()
            kept = COLUMN_FILES[p.data["keep"]]
            gone = ", ".join(COLUMN_FILES[c] for c in p.data["stale"])
            lines.append(f"{p.what}; kept the copy in {kept}, removed the stale one from {gone}")
        save(board)
    return lines


def _fix(root: Path, config, history, runner, p: Problem) -> str | None:
    k = p.kind
    if k == KIND_TEMP_FILE:
        if p.data["board"]:
            from kanban.store import board_lock

            with board_lock(root):  # a writer holds the lock while its temp file exists
                p.data["path"].unlink(missing_ok=True)
        else:
            p.data["path"].unlink(missing_ok=True)
        return f"{p.what}; deleted it"
    if k == KIND_MERGED_ON_BOARD:
        from kanban.store import board_lock, load_board, save

        with board_lock(root):
            board = load_board(root, check=False)
            found = board.find(p.task) if p.task else None
            if found and found[0].column is Column.TESTING:
                found[0].remove(found[1])
                found[0].mark_dirty()
                save(board)
        if history is not None:
            history.event(p.task, "merged", Column.TESTING.value, Column.DONE.value, p.data["sha"])
        return f"{p.what}; removed it from TESTING.md"
    if k == KIND_NO_WORKTREE:
        return f"{p.what}; left it: the next agent starts from {config.main_branch} on a fresh branch"
    if k == KIND_HALF_WORKTREE:
        path = p.data["path"]
        with git._worktree_lock(root):
            git.run(root, "worktree", "unlock", str(path), check=False)
            git.run(root, "worktree", "remove", "--force", "--force", str(path), check=False)
            # with no HEAD, git cannot remove it; nothing but its .git file was written: delete that, then prune
            if path.is_dir() and not path.is_symlink() and {c.name for c in path.iterdir()} <= {".git"}:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            git.run(root, "worktree", "prune")
        return f"{p.what}; removed it (its branch stays; the next agent recreates the worktree)"
    if k == KIND_ORPHAN_WORKTREE:
        if p.data["dirty"]:
            return (f"{p.what}; kept it: it has uncommitted changes in "
                    + ", ".join(p.data["dirty"][:5]) + "; remove it by hand once they are saved")
        git.remove_worktree(root, p.data["path"])
        return f"{p.what}; removed the worktree"
    if k == KIND_ORPHAN_BRANCH:
        branch = p.data["branch"]
        if any(rec.get("branch") == f"refs/heads/{branch}" and rec.get("prunable") is None and rec["path"].exists()
               for rec in _worktree_records(root)):  # a record whose directory is gone is pruned, not a holder
            return f"{p.what}; kept it: a worktree still has it checked out"
        if p.data["merged"]:
            git.delete_branches(root, [branch])
            return f"{p.what}; deleted it (fully merged into {config.main_branch})"
        task = p.task or branch.removeprefix("kanban/")
        new = ORPHAN_PREFIX + task
        taken = set(git.branches(root, f"refs/heads/{ORPHAN_PREFIX}"))
        n = 1
        while new in taken:
            n += 1
            new = f"{ORPHAN_PREFIX}{task}.{n}"
        git.run(root, "branch", "-m", branch, new)
        return f"{p.what}; kept its work as branch {new}"
    if k == KIND_LOST_RUN:
        runner.reclaim(p.data["run_dir"], "repair")
        return f"{p.what}; recorded it as failed (lost), the next tick applies the failure"
    if k == KIND_SUPERVISOR_DIED:
        runner.reclaim(p.data["run_dir"], "repair")
        return f"{p.what}; stopped the agent's process group and recorded the run as failed"
    if k == KIND_VERIFY:
        if "record" in p.data:
            from kanban.merge_queue import _kill_leftover_verify

            _kill_leftover_verify(root)
            p.data["record"].unlink(missing_ok=True)
            return f"{p.what}; stopped it and removed the record"
        git.remove_worktree(root, p.data["path"])
        if p.data["path"].exists():
            import shutil

            shutil.rmtree(p.data["path"], ignore_errors=True)
        return f"{p.what}; removed it (the next verification recreates it)"
    if k == KIND_HALF_ADVANCE:
        return f"{p.what}; " + _undo_half_advance(root, config, p.data["record"], p.data["intent"])
    if k == KIND_STALE_LOCK:
        p.data["lock"].unlink(missing_ok=True)
        return f"{p.what}; deleted it"
    if k == KIND_PRUNABLE:
        return f"{p.what}; pruned them (git worktree prune)"
    return None


def _undo_half_advance(root: Path, config, record: Path, intent: dict) -> str:
    """Put the files a killed fast-forward touched back as they are at main.

    Git writes the files and the index first and moves the ref last, so with main
    still at `old` the checkout may hold some incoming files. Before the
    fast-forward the queue checked that none of them had local changes; each is
    put back only if it is still exactly as the old or the new commit has it, so
    an edit made since is never lost (it is named instead).
    """
    checkout, old, new = Path(intent.get("checkout", "")), intent.get("old"), intent.get("new")
    main = git.rev_parse(root, config.main_branch)
    carried = _carried_changelog(intent)
    if not (old and new and checkout.is_dir()) or main != old:
        done = "it had finished" if main == new else f"{config.main_branch} has moved since"
        if carried is not None and old:
            done += _restore_carried(root, carried, old, main, intent.get("entries") or [])
        record.unlink(missing_ok=True)
        return f"{done}; removed the record"
    gitdir = git.checkout_gitdir(checkout)
    lock = gitdir / "index.lock" if gitdir else None
    if lock is not None and lock.exists() and not procs.working_in(root, command="git"):
        lock.unlink(missing_ok=True)  # the killed git's
    paths = git.diff_names(root, old, new)
    at_old, at_new = git.blobs_in_commit(root, old, paths), git.blobs_in_commit(root, new, paths)
    staged, present = git.blobs_in_index(checkout, paths), git.blobs_in_worktree(checkout, paths)
    # Git replaces a file by unlinking it and writing the new one: a file missing from the checkout
    # that both commits have is one the killed fast-forward was writing, not a person's deletion.
    changed = [p for p in paths
               if staged.get(p) not in (at_old.get(p), at_new.get(p))
               or present.get(p) not in (at_old.get(p), at_new.get(p))
               and not (p not in present and p in at_old and p in at_new)]
    if carried is not None and CHANGELOG in changed and present.get(CHANGELOG) == _blob_id(root, carried):
        changed.remove(CHANGELOG)  # killed before it set the person's edits aside: they come back below
    if changed:
        return ("kept it: " + ", ".join(changed[:8]) + " changed since; make each as you want it, then delete "
                f"{record.relative_to(root)} and run 'kanban merge-queue' again")
    back = [p for p in paths if p in at_old]
    gone = [p for p in paths if p not in at_old]
    if back:
        git.run(checkout, "checkout", old, "--", *back)
    if gone:
        git.run(checkout, "rm", "-q", "--cached", "--ignore-unmatch", "--", *gone)
        for p in gone:
            (checkout / p).unlink(missing_ok=True)
    restored = _restore_carried(root, carried, old, old, []) if carried is not None else ""
    record.unlink(missing_ok=True)
    return f"put {len(paths)} file(s) back as they are at {config.main_branch}{restored}; the queue merges again"


def _carried_changelog(intent: dict) -> bytes | None:
    import base64
    import binascii

    try:
        return base64.b64decode(intent["changelog"], validate=True) if intent.get("changelog") else None
    except (binascii.Error, TypeError, ValueError):
        return None


def _restore_carried(root: Path, carried: bytes, old: str, head: str, entries: list) -> str:
    from kanban.merge_queue import restore_changelog

    entries = [e for e in entries if isinstance(e, list) and len(e) == 3 and all(isinstance(x, str) for x in e)]
    how = restore_changelog(root, carried, old, head, entries)
    if how == "restored":
        return f", and your uncommitted edits of {CHANGELOG} are back"
    if how == "saved":
        return f"; your uncommitted edits of {CHANGELOG} are saved in .kanban/found/"
    return ""


def _blob_id(root: Path, data: bytes) -> str:
    return git.write_blob(root, data, write=False)
