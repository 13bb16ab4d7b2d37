"""Starting one agent run: worktree ready, prompt rendered, environment built, supervisor launched."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kanban import git
from kanban.config import Config
from kanban.errors import KanbanError
from kanban.ids import branch_name, check_id
from kanban.prompts import render_role
from kanban.targets import covering_tests

SETUP_TIMEOUT = 900.0
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
    check_id(task_id)  # IDs become path segments: never let anything else through
    return root / config.worktree_dir / task_id


def check_worktree_dir(root: Path, config: Config) -> None:
    """Refuse a worktree directory that leads outside the repository (a symlink, or `..`)."""
    where = (root / config.worktree_dir).resolve()
    if not where.is_relative_to(root.resolve()):
        raise KanbanError(f"worktree_dir {config.worktree_dir!r} leads to {where}, outside the repository",
                          file=config.source and Path(config.source).name,
                          hint="make it a real directory inside the repository")


def run_dir(root: Path, task_id: str, role: str, attempt: int) -> Path:
    return root / ".kanban" / "runs" / check_id(task_id) / f"{role}-{attempt}"


def ensure_worktree(root: Path, config: Config, task_id: str) -> Path:
    """The task's worktree on its branch: created from main when new, checked when reused."""
    path = worktree_path(root, config, task_id)
    branch = branch_name(task_id)
    if path.is_symlink():
        raise KanbanError(f"worktree {path} is a symbolic link", hint="remove it; kanban recreates the worktree")
    check_worktree_dir(root, config)  # again per task: the directory may have been swapped since the start
    if git.worktree_branch(path) == branch:  # the common case, read from files: no git process
        return path
    known = {w.path.resolve(): w for w in git.worktrees(root)}
    existing = known.get(path.resolve()) if path.exists() else None
    if existing is not None:
        if existing.branch != branch:
            raise KanbanError(f"worktree {path.name} is on branch {existing.branch}, not {branch}",
                              hint=f"remove {path} by hand (git worktree remove) so kanban can recreate it")
        return path
    for w in known.values():
        if w.branch == branch:  # the branch is checked out somewhere else
            raise KanbanError(f"branch {branch} is checked out at {w.path}",
                              hint="remove that worktree (git worktree remove) and run kanban again")
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory holds no work: a `git worktree add` killed before its checkout
    if path.exists():
        raise KanbanError(f"{path} exists but is not a git worktree", hint="move it away and run kanban again")
    path.parent.mkdir(parents=True, exist_ok=True)
    git.add_worktree(root, path, branch, config.main_branch)
    try:
        _prepare(root, config, path)
    except BaseException:
        # A half-prepared worktree must not be reused as if set up: the next attempt recreates it.
        git.remove_worktree(root, path)
        raise
    return path


def _prepare(root: Path, config: Config, path: Path) -> None:
    """Copy the ignored files a task needs, then run the set-up commands once."""
    for rel in config.worktree.copy:
        source = root / rel
        if source.is_dir():
            shutil.copytree(source, path / rel, dirs_exist_ok=True, symlinks=True)
        elif source.is_file():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / rel)
    for argv in config.worktree.setup:
        try:
            done = subprocess.run(list(argv), cwd=path, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=SETUP_TIMEOUT, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KanbanError(f"worktree set-up '{' '.join(argv)}' failed: {exc}", code=1) from None
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-15:]
            raise KanbanError(f"worktree set-up '{' '.join(argv)}' exited {done.returncode}:\n" + "\n".join(tail),
                              code=1)


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
    from kanban.supervisor import write_text_atomic

    source = report_file(worktree)
    text = read_capped(source, REPORT_READ_LIMIT)
    if not (run_dir / REPORT_NAME).exists():  # already collected by an earlier, interrupted reap
        write_text_atomic(run_dir / REPORT_NAME, text)
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


def prompt_values(root: Path, config: Config, launch: Launch, worktree: Path, report_file: Path,
                  conflicts: list[str]) -> dict[str, str]:
    changed = git.changed_files(worktree, config.main_branch) if launch.role != "task" else []
    tests = covering_tests(changed, git.tracked_files(worktree)) if launch.role == "tester" else []
    merge_text = ("Merging the latest {m} into this branch left conflicts in these files; resolve them first:\n"
                  .format(m=config.main_branch) + _bullets(conflicts)) if conflicts else \
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
