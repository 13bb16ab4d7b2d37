"""Every path kanban keeps in a repository: its state folder `.kanban/` and the worktree folder.

Pure path arithmetic (nothing here touches the disk) and the standard library only, so that
the supervisor and git.py can use it without GitPython. Task IDs become path segments: they
are checked (kanban.ids.check_id) before they are joined.
"""

from __future__ import annotations

from pathlib import Path

STATE_DIR = ".kanban"  # relative to the repository's root
HISTORY_DB = "history.sqlite"
HISTORY_FILE = f"{STATE_DIR}/{HISTORY_DB}"  # as shown to people, relative to the root
RUNS = "runs"
SANDBOX = "sandbox"
VERIFY_RUNS = "verify-runs"
VERIFY_LOGS = "verify-logs"
VERIFY_SLOT = "verify"  # the first verify worktree; the others are verify-2, verify-3...
ADVANCE_RECORD = "advance.json"
VERIFY_PID = "verify.pid"
FOUND = "found"
GITGUARD = "gitguard"
BOARD_LOCK = "board.lock"
TICK_LOCK = "tick.lock"
MERGE_LOCK = "merge.lock"
RUN_LOCK = "run.lock"
PLAN_LOCK = "plan.lock"
PLAN_TASK = "plan"  # the history's task of planner runs: never a task ID (no "-N"), so never a task's
PLAN_CHECKOUT = "plan"  # the planner's checkout of main, .kanban/plan
WORKTREE_LOCK = "kanban-worktree.lock"  # in the common git directory, not in .kanban
IDLE_DIR = ".idle"  # the warm worktrees' waiting room, in the worktree folder


def state_dir(root: Path) -> Path:
    """`.kanban` (kanban.store.state_dir also creates it)."""
    return root / STATE_DIR


def history_db(root: Path) -> Path:
    return state_dir(root) / HISTORY_DB


def runs_dir(root: Path) -> Path:
    return state_dir(root) / RUNS


def run_dir(root: Path, task_id: str, role: str, attempt: int) -> Path:
    """.kanban/runs/<ID>/<role>-<attempt>: one agent run's spec, log and result."""
    from kanban.ids import check_id  # not at the top: kanban.errors imports this module

    return runs_dir(root) / check_id(task_id) / f"{role}-{attempt}"


def plan_run_dir(root: Path, attempt: int) -> Path:
    """.kanban/runs/plan/planner-<n>: one `kanban plan` planner run's spec, prompt, log and report."""
    return runs_dir(root) / PLAN_TASK / f"planner-{attempt}"


def plan_checkout(root: Path) -> Path:
    """.kanban/plan: the planner's detached checkout of main, there only while it runs."""
    return state_dir(root) / PLAN_CHECKOUT


def plan_lock(root: Path) -> Path:
    """Held by a `kanban plan` from before its planner starts until its run is recorded."""
    return state_dir(root) / PLAN_LOCK


def sandbox_private(root: Path, run_dir: Path) -> Path:
    """.kanban/sandbox/<ID>/<role>-<attempt>: a sandboxed run's private git folders, beside the
    runs (never in them: whatever walks .kanban/runs must not meet them being removed)."""
    return state_dir(root) / SANDBOX / run_dir.parent.name / run_dir.name


def verify_runs_dir(root: Path) -> Path:
    return state_dir(root) / VERIFY_RUNS


def verify_logs_dir(root: Path) -> Path:
    return state_dir(root) / VERIFY_LOGS


def verify_slot(root: Path, n: int) -> Path:
    """The merge queue's Nth verify worktree, counted from 0: .kanban/verify, .kanban/verify-2..."""
    return state_dir(root) / (VERIFY_SLOT if n == 0 else f"{VERIFY_SLOT}-{n + 1}")


def advance_record(root: Path) -> Path:
    """The merge queue's intent while it fast-forwards the checkout of main."""
    return state_dir(root) / ADVANCE_RECORD


def verify_pid_record(root: Path) -> Path:
    return state_dir(root) / VERIFY_PID


def found_dir(root: Path) -> Path:
    """Where a person's edits that kanban could not keep in place are saved."""
    return state_dir(root) / FOUND


def gitguard_dir(root: Path) -> Path:
    return state_dir(root) / GITGUARD


def board_lock(root: Path) -> Path:
    return state_dir(root) / BOARD_LOCK


def tick_lock(root: Path) -> Path:
    return state_dir(root) / TICK_LOCK


def merge_lock(root: Path) -> Path:
    return state_dir(root) / MERGE_LOCK


def run_lock(root: Path) -> Path:
    return state_dir(root) / RUN_LOCK


def worktree_lock(common_git_dir: Path) -> Path:
    return common_git_dir / WORKTREE_LOCK


def worktree_root(root: Path, worktree_dir: str) -> Path:
    """The folder of the tasks' worktrees (config `worktree_dir`, relative to the root)."""
    return root / worktree_dir


def worktree_path(root: Path, worktree_dir: str, task_id: str) -> Path:
    from kanban.ids import check_id

    return worktree_root(root, worktree_dir) / check_id(task_id)


def idle_dir(root: Path, worktree_dir: str) -> Path:
    return worktree_root(root, worktree_dir) / IDLE_DIR

