"""Finding and fixing what a crash (or a person) can leave behind: a registry of fixes.

Each kind of damage has one small `Fix` in `FIXES`: what it finds, what it does, the
scopes it runs in, a cheap `relevant` test (can its scan find anything here at all?),
its `scan` and its `fix`. `find_problems` runs the scans in registry order; `repair`
fixes what they found, one logged line per fix ("found X; did Y"), in `FIX_ORDER`.
docs/repair.md lists the registry (tests/test_docs.py keeps it so).

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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from kanban import git, paths, procs
from kanban.errors import KanbanError
from kanban.ids import branch_name
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column

CHANGELOG = COLUMN_FILES[Column.DONE]

ORDER = {Column.TODO: 0, Column.IN_PROGRESS: 1, Column.REVIEW: 2, Column.TESTING: 3}
TMP_BOARD = re.compile(r"^\..+\.kanban-tmp$")
TMP_RUN = re.compile(r"^\..+\.(\d+)\.tmp$")
TMP_AGE = 60.0  # seconds: a temp file this old in .kanban has no writer left
ORPHAN_PREFIX = "kanban-orphan/"

SCOPES = ("tick", "merge", "full")
EVERYWHERE = frozenset(SCOPES)
BESIDE_THE_QUEUE = frozenset({"tick", "full"})  # not while a merge queue may be working
BESIDE_THE_POOL = frozenset({"merge", "full"})  # not while a tick may be starting agents
ALONE = frozenset({"full"})  # only while nothing else runs

KIND_DUPLICATE = "duplicate entry"
KIND_MERGED_ON_BOARD = "merged task still on the board"
KIND_NO_WORKTREE = "task with neither worktree nor branch"
KIND_ORPHAN_WORKTREE = "orphan worktree"
KIND_ORPHAN_BRANCH = "orphan branch"
KIND_HALF_WORKTREE = "half-created worktree"
KIND_LOST_RUN = "lost run"
KIND_SUPERVISOR_DIED = "run without supervisor"
KIND_TEMP_FILE = "half-written temp file"
KIND_VERIFY_PROCESS = "leftover verify process"
KIND_VERIFY = "half-created verify worktree"
KIND_PRUNABLE = "prunable worktree record"
KIND_STALE_LOCK = "stale git lock"
KIND_HALF_ADVANCE = "interrupted fast-forward of main's checkout"


@dataclass
class Problem:
    kind: str
    task: str | None
    what: str  # "found ..." text
    data: dict

    def __str__(self) -> str:
        return self.what


class Context:
    """What the scans of one pass share, each part read once and only by a scan that needs it.

    The parts are the scans' view; a fix reads afresh what it acts on (the fixes before it
    may have changed the repository)."""

    def __init__(self, root: Path, config, history=None, runner=None, scope: str = "full") -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown repair scope {scope!r}")
        self.root, self.config, self.history, self.scope = root, config, history, scope
        self._runner = runner

    @cached_property
    def runner(self):
        from kanban.executors import runner_for

        return self._runner or runner_for(self.root, self.config)

    @cached_property
    def board(self):
        from kanban.store import load_board

        return load_board(self.root, check=False)

    @cached_property
    def live_runs(self) -> list:
        return self.history.live_runs() if self.history is not None else []

    @cached_property
    def live(self) -> set[str]:
        """Tasks with a run recorded as live: theirs is the engine's to settle."""
        return {r.task for r in self.live_runs}

    @cached_property
    def run_states(self) -> list:
        """(run, its state) of each live run the runner has no result for yet."""
        found = [(run, self.runner.poll(run.run_path(self.runner))) for run in self.live_runs]
        return [(run, state) for run, state in found if state.result is None]

    @cached_property
    def common(self) -> Path:
        return git.common_dir(self.root)

    @cached_property
    def linked(self) -> bool:
        """Whether git has any linked worktree registered (a task's, a verify one, an idle one)."""
        with contextlib.suppress(OSError):
            return any((self.common / "worktrees").iterdir())
        return False

    @cached_property
    def wts(self) -> list[dict]:
        """The linked worktrees' records (the main checkout's, which no scan looks at, among them)."""
        return _worktree_records(self.root) if self.linked else []

    @cached_property
    def wt_root(self) -> Path:
        return paths.worktree_root(self.root, self.config.worktree_dir).resolve()

    @cached_property
    def kanban_branches(self) -> dict[str, str]:
        return git.branch_shas(self.root, "refs/heads/kanban/")

    @cached_property
    def main(self) -> str:
        return git.branch_sha(self.root, self.config.main_branch)


class Fix:
    """One kind of damage: what it finds and does (for people and docs/repair.md), where it runs,
    how to find it and how to fix it."""

    kind: ClassVar[str]
    finds: ClassVar[str]  # one line: the damage
    does: ClassVar[str]  # one line: the fix
    scopes: ClassVar[frozenset[str]] = EVERYWHERE
    stage: ClassVar[int] = 2  # FIX_ORDER: lower stages are fixed first
    note_only: ClassVar[bool] = False  # noted and left for the engine (no change on disk)
    prune_before: ClassVar[bool] = False  # `git worktree prune` before any fix, when it found something
    prune_after: ClassVar[bool] = False  # and after the fixes

    def relevant(self, ctx: Context) -> bool:
        """Whether its scan can find anything here: cheap, so a scan runs only where it may."""
        return True

    def scan(self, ctx: Context) -> list[Problem]:
        raise NotImplementedError

    def fix(self, ctx: Context, p: Problem) -> str:
        """Fix P; the line shown to the person ("found X; did Y")."""
        raise NotImplementedError

    def fix_all(self, ctx: Context, problems: list[Problem]) -> list[tuple[Problem, str, bool]]:
        """(problem, line, failed) for each; one fix that fails must not stop the others, nor the command."""
        done = []
        for p in problems:
            try:
                done.append((p, self.fix(ctx, p), False))
            except KanbanError as exc:
                done.append((p, f"{p.what}; could not fix it: {exc}", True))
        return done

    def problem(self, task: str | None, what: str, **data) -> Problem:
        return Problem(self.kind, task, what, data)


# -- the fixes, in scan order ---------------------------------------------------------


class TempFile(Fix):
    kind = KIND_TEMP_FILE
    finds = "a temp file a killed write left beside a board file, or in .kanban/ once its writer is gone"
    does = "deletes it (a board file's under the board lock, which its writer would hold)"

    def scan(self, ctx: Context) -> list[Problem]:
        found = []
        for column in (*BOARD_COLUMNS, Column.DONE):
            parent = (ctx.root / COLUMN_FILES[column]).parent
            for p in parent.glob(f".{COLUMN_FILES[column]}.*.kanban-tmp"):
                found.append(self.problem(None, f"found half-written temp file {p.name}", path=p, board=True))
        state = paths.state_dir(ctx.root)
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
                    if stale and now - p.stat().st_mtime > (0 if ctx.scope == "full" else TMP_AGE):
                        found.append(self.problem(None, f"found half-written temp file {p.relative_to(ctx.root)}",
                                                  path=p, board=False))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        if p.data["board"]:
            from kanban.store import board_lock

            with board_lock(ctx.root):  # a writer holds the lock while its temp file exists
                p.data["path"].unlink(missing_ok=True)
        else:
            p.data["path"].unlink(missing_ok=True)
        return f"{p.what}; deleted it"


class DuplicateEntry(Fix):
    kind = KIND_DUPLICATE
    finds = "a task entry in two board files (a move killed between its two writes)"
    does = ("keeps the current copy (the history's last move tells which; else the later stage) "
            "and removes the other")
    stage = 0  # first: the fixes after it read the board

    def scan(self, ctx: Context) -> list[Problem]:
        return find_duplicates(ctx.root, ctx.config, ctx.board, ctx.history)

    def fix(self, ctx: Context, p: Problem) -> str:
        return self.fix_all(ctx, [p])[0][1]

    def fix_all(self, ctx: Context, problems: list[Problem]) -> list[tuple[Problem, str, bool]]:
        """All of them in one board write, under the board lock."""
        from kanban.store import board_lock, load_board, save

        done = []
        with board_lock(ctx.root):
            board = load_board(ctx.root, check=False)
            for p in problems:
                for f, entry in list(board.located()):
                    if entry.task_id == p.task and f.column in p.data["stale"]:
                        f.remove(entry)
                        f.mark_dirty()
                kept = COLUMN_FILES[p.data["keep"]]
                gone = ", ".join(COLUMN_FILES[c] for c in p.data["stale"])
                done.append((p, f"{p.what}; kept the copy in {kept}, removed the stale one from {gone}", False))
            save(board)
        return done


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
        for _, _, _kind, source, target, _ in reversed(history.events(task_id)):
            if source is not None and target:
                last = target
                break
    if last is not None and last in {c.value for c in columns}:
        others = [c for c in columns if c.value != last]
        return max(others, key=ORDER.__getitem__)
    return max(columns, key=ORDER.__getitem__)


class MergedOnBoard(Fix):
    kind = KIND_MERGED_ON_BOARD
    finds = ("a task in TESTING.md that CHANGELOG.md lists and whose branch main holds "
             "(a merge killed before its board write)")
    does = "takes it off the board by the state machine's `merged` move, recorded in the history"
    scopes = BESIDE_THE_POOL  # beside a running merge queue, finished tasks are its job (_cleanup_finished)

    def relevant(self, ctx: Context) -> bool:
        done = ctx.board.done_ids
        return bool(done) and any(e.task_id in done for e in ctx.board.files[Column.TESTING].entries())

    def scan(self, ctx: Context) -> list[Problem]:
        found = []
        for entry in ctx.board.files[Column.TESTING].entries():
            tid = entry.task_id
            if not tid or tid not in ctx.board.done_ids or tid in ctx.live:
                continue
            sha = ctx.kanban_branches.get(branch_name(tid))
            if sha and git.is_ancestor(ctx.root, sha, ctx.main):
                found.append(self.problem(tid, f"found {tid} in CHANGELOG.md and TESTING.md with its branch merged "
                                               f"into {ctx.config.main_branch}", sha=sha))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        from kanban.engine import Engine

        assert p.task is not None  # scan() gives each of these problems its task's ID
        with _history(ctx) as history:  # the table decides, as for the merge queue's own finished tasks
            Engine(ctx.root, ctx.config, history, ctx.runner).remove_merged({p.task: p.data["sha"]})
        return f"{p.what}; removed it from TESTING.md"


@contextlib.contextmanager
def _history(ctx: Context) -> Iterator:
    """The pass's history, or one opened for this fix (a move is recorded, whoever asked for repair)."""
    if ctx.history is not None:
        yield ctx.history
        return
    from kanban.history import History

    with History(ctx.root) as history:
        yield history


class HalfWorktree(Fix):
    kind = KIND_HALF_WORKTREE
    finds = ("a task worktree a killed `git worktree add` left: registered but unfinished, "
             "or an empty directory git does not list")
    does = "removes it; its branch stays, and the next agent recreates the worktree"
    scopes = BESIDE_THE_QUEUE  # worktrees are created only inside the tick lock
    prune_after = True

    def relevant(self, ctx: Context) -> bool:
        return ctx.linked or ctx.wt_root.is_dir()

    def scan(self, ctx: Context) -> list[Problem]:
        found = []
        listed = {rec["path"] for rec in ctx.wts}
        if ctx.wt_root.is_dir():
            for child in ctx.wt_root.iterdir():
                if child.name == paths.IDLE_DIR:  # the warm worktrees' waiting room (kanban.agents)
                    continue
                if child.is_dir() and not child.is_symlink() and child not in listed and not any(child.iterdir()):
                    found.append(self.problem(child.name, f"found {child.name} in the worktree directory left empty "
                                                          "by a killed 'git worktree add'", path=child))
        for rec in ctx.wts:
            if rec["path"].parent == ctx.wt_root and (rec.get("locked", None) == "initializing" or _no_head(rec)):
                name = rec["path"].name
                found.append(self.problem(name, f"found worktree {name} left half-created by a killed "
                                                "'git worktree add'", path=rec["path"]))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        path = p.data["path"]
        with git._worktree_lock(ctx.root):
            git.run(ctx.root, "worktree", "unlock", str(path), check=False)
            git.run(ctx.root, "worktree", "remove", "--force", "--force", str(path), check=False)
            # with no HEAD, git cannot remove it; nothing but its .git file was written: delete that, then prune
            if path.is_dir() and not path.is_symlink() and {c.name for c in path.iterdir()} <= {".git"}:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            git.run(ctx.root, "worktree", "prune")
        return f"{p.what}; removed it (its branch stays; the next agent recreates the worktree)"


def _no_head(rec: dict) -> bool:
    """A registration whose HEAD was never written (killed before git wrote it)."""
    return rec.get("HEAD", "").strip("0") == "" and "bare" not in rec


def _on_board(ctx: Context) -> set[str]:
    """Tasks whose worktree and branch are theirs to keep; in a tick, finished ones too (the queue's)."""
    on_board = {e.task_id for _, e in ctx.board.located() if e.task_id}
    return on_board | ctx.board.done_ids if ctx.scope == "tick" else on_board


def _where(ctx: Context, tid: str) -> str:
    return "in CHANGELOG.md" if tid in ctx.board.done_ids else "on no board file"


class OrphanWorktree(Fix):
    kind = KIND_ORPHAN_WORKTREE
    finds = "a task worktree of a task on no board file, or only in CHANGELOG.md"
    does = "removes it, unless it has uncommitted changes: then names them and leaves it"
    prune_after = True

    def relevant(self, ctx: Context) -> bool:
        return ctx.linked

    def scan(self, ctx: Context) -> list[Problem]:
        on_board, found = _on_board(ctx), []
        for rec in ctx.wts:
            path, tid = rec["path"], rec["path"].name
            if path.parent != ctx.wt_root:
                continue
            if tid in on_board or tid in ctx.live or rec.get("locked") == "initializing" or _no_head(rec):
                continue
            if rec.get("prunable") is not None or not path.exists():
                continue  # prune handles it
            found.append(self.problem(tid, f"found worktree {ctx.config.worktree_dir}/{tid} of a task "
                                           f"{_where(ctx, tid)}", path=path, dirty=git.dirty_paths(path)))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        if p.data["dirty"]:
            return (f"{p.what}; kept it: it has uncommitted changes in "
                    + ", ".join(p.data["dirty"][:5]) + "; remove it by hand once they are saved")
        git.remove_worktree(ctx.root, p.data["path"])
        return f"{p.what}; removed the worktree"


class OrphanBranch(Fix):
    kind = KIND_ORPHAN_BRANCH
    finds = "a `kanban/<ID>` branch of a task on no board file, or only in CHANGELOG.md"
    does = ("deletes it when main holds its commits, else keeps them as branch `kanban-orphan/<ID>`; "
            "leaves it while a worktree has it checked out")

    def relevant(self, ctx: Context) -> bool:
        return bool(ctx.kanban_branches)

    def scan(self, ctx: Context) -> list[Problem]:
        on_board, found = _on_board(ctx), []
        for branch, sha in ctx.kanban_branches.items():
            tid = branch.removeprefix("kanban/")
            if tid in on_board or tid in ctx.live:
                continue
            merged = git.is_ancestor(ctx.root, sha, ctx.main)
            found.append(self.problem(tid, f"found branch {branch} of a task {_where(ctx, tid)}"
                                           + ("" if merged else f" with commits not in {ctx.config.main_branch}"),
                                      branch=branch, sha=sha, merged=merged))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        branch, root = p.data["branch"], ctx.root
        if any(rec.get("branch") == f"refs/heads/{branch}" and rec.get("prunable") is None and rec["path"].exists()
               for rec in _worktree_records(root)):  # a record whose directory is gone is pruned, not a holder
            return f"{p.what}; kept it: a worktree still has it checked out"
        if p.data["merged"]:
            git.delete_branches(root, [branch])
            return f"{p.what}; deleted it (fully merged into {ctx.config.main_branch})"
        task = p.task or branch.removeprefix("kanban/")
        new = ORPHAN_PREFIX + task
        taken = set(git.branches(root, f"refs/heads/{ORPHAN_PREFIX}"))
        n = 1
        while new in taken:
            n += 1
            new = f"{ORPHAN_PREFIX}{task}.{n}"
        git.run(root, "branch", "-m", branch, new)
        return f"{p.what}; kept its work as branch {new}"


class NoWorktree(Fix):
    kind = KIND_NO_WORKTREE
    finds = "a task in IN_PROGRESS.md, REVIEW.md or TESTING.md with neither worktree nor branch"
    does = "notes it and leaves it: the next agent starts from main on a fresh branch"
    note_only = True

    def relevant(self, ctx: Context) -> bool:
        return any(f.column is not Column.TODO for f, _ in ctx.board.located())

    def scan(self, ctx: Context) -> list[Problem]:
        have = {rec["path"].name for rec in ctx.wts if rec["path"].parent == ctx.wt_root and rec["path"].exists()}
        found = []
        for f, entry in ctx.board.located():
            tid = entry.task_id
            if not tid or f.column is Column.TODO or tid in have or tid in ctx.live:
                continue
            if branch_name(tid) not in ctx.kanban_branches:
                found.append(self.problem(tid, f"found {tid} in {f.name} with neither worktree nor branch",
                                          column=f.column))
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        return f"{p.what}; left it: the next agent starts from {ctx.config.main_branch} on a fresh branch"


class _RunFix(Fix):
    """A run the history holds as live whose supervisor is gone: settled by the runner's reclaim."""

    scopes = ALONE  # beside a tick, runs are its own reaping's
    running: ClassVar[bool]  # the agent still runs (else nothing of the run is left)

    def relevant(self, ctx: Context) -> bool:
        return bool(ctx.live_runs)

    def scan(self, ctx: Context) -> list[Problem]:
        found = []
        for run, state in ctx.run_states:
            if bool(state.running) == self.running and not state.supervisor_alive:
                found.append(self.problem(run.task, self.found(f"{run.task} {run.role} attempt {run.attempt}"),
                                          run_dir=run.run_path(ctx.runner)))
        return found

    done: ClassVar[str]  # what the line says was done

    def found(self, desc: str) -> str:
        raise NotImplementedError

    def fix(self, ctx: Context, p: Problem) -> str:
        ctx.runner.reclaim(p.data["run_dir"], "repair")
        return f"{p.what}; {self.done}"


class SupervisorDied(_RunFix):
    kind = KIND_SUPERVISOR_DIED
    finds = "a live run whose agent runs on with its supervisor dead (nothing enforces its timeout)"
    does = "stops the agent's process group and records the run as failed; the next tick retries the task"
    running = True
    done = "stopped the agent's process group and recorded the run as failed"

    def found(self, desc: str) -> str:
        return f"found {desc} running with its supervisor dead"



class LostRun(_RunFix):
    kind = KIND_LOST_RUN
    finds = "a run recorded as live with neither supervisor nor agent left, and no result"
    does = "records it as failed (lost); the next tick applies the failure"
    running = False
    done = "recorded it as failed (lost), the next tick applies the failure"

    def found(self, desc: str) -> str:
        return f"found {desc} recorded as running with neither supervisor nor agent left"



class VerifyProcess(Fix):
    kind = KIND_VERIFY_PROCESS
    finds = "a verify process a killed merge queue left running"
    does = "stops its process group and removes its record"
    scopes = BESIDE_THE_POOL

    def relevant(self, ctx: Context) -> bool:
        return paths.verify_pid_record(ctx.root).exists()

    def scan(self, ctx: Context) -> list[Problem]:
        record = paths.verify_pid_record(ctx.root)
        try:
            pid, start = (int(x) for x in record.read_text().split())
        except (OSError, ValueError):
            return []
        if not procs.owned_group(pid, start):
            return []
        return [self.problem(None, "found a verify process left by a killed merge queue", record=record)]

    def fix(self, ctx: Context, p: Problem) -> str:
        from kanban.merge_queue import _kill_leftover_verify

        _kill_leftover_verify(ctx.root)
        p.data["record"].unlink(missing_ok=True)
        return f"{p.what}; stopped it and removed the record"


class VerifyWorktree(Fix):
    kind = KIND_VERIFY
    finds = "the merge queue's verify worktree half-created: no .git in it, or not registered with git"
    does = "removes it; the next verification recreates it"
    scopes = BESIDE_THE_POOL

    def relevant(self, ctx: Context) -> bool:
        return paths.verify_slot(ctx.root, 0).exists()

    def scan(self, ctx: Context) -> list[Problem]:
        path = paths.verify_slot(ctx.root, 0)
        registered = any(rec["path"] == path.resolve() or rec["path"] == path for rec in ctx.wts)
        if path.exists() and (not (path / ".git").exists() or not registered):
            return [self.problem(None, f"found {_shown(ctx.root, path)} half-created", path=path)]
        return []

    def fix(self, ctx: Context, p: Problem) -> str:
        git.remove_worktree(ctx.root, p.data["path"])
        if p.data["path"].exists():
            import shutil

            shutil.rmtree(p.data["path"], ignore_errors=True)
        return f"{p.what}; removed it (the next verification recreates it)"


class HalfAdvance(Fix):
    kind = KIND_HALF_ADVANCE
    finds = "an interrupted fast-forward of main's checkout (a merge queue killed during `git merge --ff-only`)"
    does = ("puts the files it touched back as they are at main (naming any changed since, and leaving "
            "those), brings back uncommitted CHANGELOG.md edits, and removes its record")
    scopes = BESIDE_THE_POOL

    def relevant(self, ctx: Context) -> bool:
        return paths.advance_record(ctx.root).exists()

    def scan(self, ctx: Context) -> list[Problem]:
        from kanban.supervisor import read_json

        record = paths.advance_record(ctx.root)
        if not record.exists():
            return []
        return [self.problem(None, "found an interrupted fast-forward of the checkout of main (a merge queue "
                                   "killed during 'git merge --ff-only')", record=record,
                             intent=read_json(record) or {})]

    def fix(self, ctx: Context, p: Problem) -> str:
        return f"{p.what}; " + _undo_half_advance(ctx.root, ctx.config, p.data["record"], p.data["intent"])


class StaleLock(Fix):
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

    kind = KIND_STALE_LOCK
    finds = "a git lock file a killed git left, while no git process runs in the repository"
    does = ("deletes it: task branches' and worktrees' locks in a tick, main's and the verify worktree's "
            "in the merge queue, the main checkout's too in a full repair")
    stage = 1  # before the other git fixes: a stale packed-refs.lock or ref lock would fail them

    def scan(self, ctx: Context) -> list[Problem]:
        found = [(lock, task) for lock, task in self._candidates(ctx) if lock.is_file()]
        if not found or procs.working_in(ctx.root, command="git"):
            return []
        return [self.problem(task, f"found a stale git lock {_shown(ctx.root, lock)} (no git process holds it)",
                             lock=lock) for lock, task in found]

    def _candidates(self, ctx: Context) -> list[tuple[Path, str | None]]:
        common, scope, live = ctx.common, ctx.scope, ctx.live
        found: list[tuple[Path, str | None]] = []
        verify = paths.verify_slot(ctx.root, 0).resolve()
        if scope in BESIDE_THE_QUEUE:
            for lock in (common / "refs" / "heads" / "kanban").glob("*.lock"):
                if lock.name.removesuffix(".lock") not in live:
                    found.append((lock, lock.name.removesuffix(".lock")))
        for rec in ctx.wts:
            path = rec["path"]
            task_wt = path.parent == ctx.wt_root and scope in BESIDE_THE_QUEUE and path.name not in live
            verify_wt = path == verify and scope in BESIDE_THE_POOL
            gitdir = git.worktree_gitdir(path) if (task_wt or verify_wt) and path.is_dir() else None
            if gitdir is not None:
                found += [(gitdir / name, path.name if task_wt else None) for name in ("index.lock", "HEAD.lock")]
        if scope in BESIDE_THE_POOL:
            found += [(common / "refs" / "heads" / f"{ctx.config.main_branch}.lock", None),
                      (common / "packed-refs.lock", None)]
        if scope in ALONE:
            found += [(common / "index.lock", None), (common / "HEAD.lock", None)]
        return found

    def fix(self, ctx: Context, p: Problem) -> str:
        p.data["lock"].unlink(missing_ok=True)
        return f"{p.what}; deleted it"


class PrunableRecords(Fix):
    kind = KIND_PRUNABLE
    finds = "worktree records whose directory is gone"
    does = "prunes them (`git worktree prune`), before the other fixes: git counts their branches as checked out"
    prune_before = True  # a record whose directory is gone still "has its branch checked out" for git
    prune_after = True

    def relevant(self, ctx: Context) -> bool:
        return ctx.linked

    def scan(self, ctx: Context) -> list[Problem]:
        if any(r.get("prunable") is not None for r in ctx.wts):
            return [self.problem(None, "found worktree records whose directory is gone")]
        return []

    def fix(self, ctx: Context, p: Problem) -> str:
        return f"{p.what}; pruned them (git worktree prune)"


# -- the registry ---------------------------------------------------------------------

FIXES: tuple[Fix, ...] = (
    TempFile(), DuplicateEntry(), MergedOnBoard(), HalfWorktree(), OrphanWorktree(), OrphanBranch(),
    NoWorktree(), SupervisorDied(), LostRun(), VerifyProcess(), VerifyWorktree(), HalfAdvance(), StaleLock(),
    PrunableRecords(),
)
BY_KIND: dict[str, Fix] = {f.kind: f for f in FIXES}
FIX_ORDER: tuple[Fix, ...] = tuple(sorted(FIXES, key=lambda f: f.stage))  # stable: scan order within a stage
# problems that repair notes but leaves for the engine (no change on disk)
NOTE_ONLY = frozenset(f.kind for f in FIXES if f.note_only)


def fixes_for(scope: str) -> list[Fix]:
    """The fixes that run in SCOPE, in scan order."""
    return [f for f in FIXES if scope in f.scopes]


# -- finding and fixing ---------------------------------------------------------------


def find_problems(root: Path, config, history=None, runner=None, *, scope: str = "full") -> list[Problem]:
    return _find(Context(root, config, history, runner, scope))


def _find(ctx: Context) -> list[Problem]:
    found: list[Problem] = []
    for f in fixes_for(ctx.scope):
        if f.relevant(ctx):
            found += f.scan(ctx)
    return found


def repair(root: Path, config, history=None, runner=None, *, scope: str = "full") -> list[str]:
    """Fix every problem found; one line per fix. Each line also goes into the history's event log."""
    lines: list[str] = []
    tasks: list[str | None] = []  # the task of each line, for the event log
    seen: set[str] = set()
    for _ in range(3):  # one fix can reveal the next (a merged entry removed: its worktree and branch go)
        ctx = Context(root, config, history, runner, scope)
        runner = ctx.runner  # one runner for every pass
        problems = [p for p in _find(ctx) if p.what not in seen]
        if not problems:
            break
        seen.update(p.what for p in problems)
        kinds = {p.kind for p in problems}
        if any(BY_KIND[k].prune_before for k in kinds):
            _prune(root)
        for f in FIX_ORDER:
            mine = [p for p in problems if p.kind == f.kind]
            for p, line, failed in f.fix_all(ctx, mine) if mine else ():
                lines.append(line)
                tasks.append(p.task)
                if failed:
                    seen.discard(p.what)  # try once more after the other fixes
        if any(BY_KIND[k].prune_after for k in kinds):
            _prune(root)
        if kinds <= NOTE_ONLY:
            break
    if history is not None:
        for task, line in zip(tasks, lines):
            history.event(task or "-", "repair", detail=line)
    return lines


def _prune(root: Path) -> None:
    with git._worktree_lock(root):
        git.run(root, "worktree", "prune")


def _worktree_records(root: Path) -> list[dict]:
    out = git.run(root, "worktree", "list", "--porcelain", "-z")
    return [{**rec, "path": Path(rec.get("worktree", ""))} for rec in git._records(out)]


def _shown(root: Path, path: Path) -> str:
    for base, inner in ((root, path), (root.resolve(), path.resolve())):
        with contextlib.suppress(ValueError):
            return str(inner.relative_to(base))
    return str(path)


# -- an interrupted fast-forward of main's checkout -------------------------------------


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
