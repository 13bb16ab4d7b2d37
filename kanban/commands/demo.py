"""`kanban demo`: a throwaway repository with a sample board, run offline by the demo agent."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from kanban.errors import KanbanError
from kanban.output import say, warn

DEMO_CONFIG = """\
# kanban demo: the built-in scripted agent, short timeouts so a hang is visible.
main_branch = "main"
pool_size = 6

[agent]
preset = "demo"
timeout = "{timeout}"
stall = "{stall}"
kill_grace = "1s"

[merge]
mode = "{mode}"
verify = ["python3", "-m", "unittest", "-q"]
"""

DEMO_TASKS = """\
# TODO

A sample board. Each `## ` entry is a task for an agent; the `demo:` lines
tell the scripted demo agent how to behave.

## TASK-1: Parse the config file
priority: 1
files: src/config.py

Read settings from a TOML file.
demo: sleep 1.0

## TASK-2: Validate config values
priority: 2
depends: TASK-1
files: src/config.py

Reject unknown keys with a helpful message (a dependency chain: after TASK-1).
demo: sleep 0.6

## TASK-3: Document the config keys
depends: TASK-2
files: docs/config.md

The last link of the chain.
demo: sleep 0.4

## TASK-4: Add a --verbose flag
priority: 2
files: src/cli.py

The first attempt fails; the retry succeeds.
demo: fail-first

## TASK-5: Speed up the cache
files: src/cache.py

The first attempt hangs and is killed at its timeout; the retry succeeds.
demo: hang-first

## TASK-6: Handle empty input
files: src/cli.py

Declares the same file as TASK-4, so the two never run at the same time.
The reviewer rejects the first attempt.
demo: reject-first

## TASK-7: Fix off-by-one in pagination
priority: 1
files: src/pages.py

The tester fails once; the second test run passes.
demo: test-fail-first

## TASK-8: Write the README
files: README.md
demo: sleep 0.8
"""


# What the eight sample tasks show, said before the run starts (DEMO_TASKS has the `demo:` lines).
INTRO = """\
kanban demo: eight sample tasks go from TODO.md to CHANGELOG.md, worked on by
task agents, reviewers and testers: a scripted agent, offline (no model; real
git and processes). Watch for:
  TASK-1 > TASK-2 > TASK-3  a dependency chain: each waits for the one before
  TASK-4  fails its first attempt; kanban retries it
  TASK-5  hangs on its first attempt, is killed at its {timeout} timeout, and retried
  TASK-6  shares a file with TASK-4, so never runs beside it; the reviewer
          rejects its first attempt, and it goes back to its task agent
  TASK-7  the tester fails it once; the next test run passes
  TASK-8  goes straight through
Up to six agents at once; tested branches merge into main in verified batches.
"""


def build_demo_repo(path: Path, *, timeout: str = "3s", stall: str = "10s") -> Path:
    """A git repository with a tiny project, the board files and a demo config, committed."""
    from kanban.commands.init import init

    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.name", "kanban demo")
    _git(path, "config", "user.email", "demo@kanban.invalid")
    (path / "src").mkdir(exist_ok=True)
    (path / "src" / "__init__.py").write_text("")
    (path / "test_smoke.py").write_text("import unittest\n\n\nclass Smoke(unittest.TestCase):\n"
                                        "    def test_truth(self):\n        self.assertTrue(True)\n")
    (path / "kanban.toml").write_text(DEMO_CONFIG.format(timeout=timeout, stall=stall, mode="batch"))
    (path / "TODO.md").write_text(DEMO_TASKS)
    init(path, quiet=True)
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "A sample project with a kanban board")
    return path


def demo(directory: Path | None, *, live: bool | None, keep: bool = False) -> int:
    """Build the demo repository, run it, print the report. A temporary one is removed at the
    end unless `keep` (or the run did not finish cleanly); one in --dir is the person's."""
    from kanban.commands.run import run

    if directory is not None:
        _claim_empty_dir(directory)  # before anything is written: never into someone's repository
        path, root = directory, directory
    else:
        path = Path(tempfile.mkdtemp(prefix="kanban-demo-"))
        root = path / "repo"
    timeout = "3s"
    say(INTRO.format(timeout=timeout))
    say(f"building the demo repository in {root}")
    code: int | None = None  # stays None if building or running raised (or was interrupted)
    try:
        build_demo_repo(root, timeout=timeout)
        code = run(root, no_merge=False, live=live)
        _report(root)
    finally:
        # A run that did not end cleanly may leave agents working in it: then it stays, and says where.
        remove = directory is None and not keep and code == 0
        if remove and _remove(path):
            say("\nthe demo repository was removed; 'kanban demo --keep' keeps it to look around in")
        else:
            why = "" if keep or directory is not None else (
                " (the demo did not finish cleanly)" if code != 0 else " (it could not be removed)")
            say(f"\nthe demo repository stays in {root}{why}: try 'kanban -C {root} status' "
                f"or 'kanban -C {root} logs TASK-5'")
            if directory is None:
                say(f"remove it with: rm -rf {path}")
    return code


def _remove(path: Path) -> bool:
    """rm -rf, retried briefly: an agent's supervisor may still be writing its last bytes."""
    for _ in range(10):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return True
        time.sleep(0.2)
    warn(f"could not remove {path}")
    return False


def _claim_empty_dir(path: Path) -> None:
    """Make PATH a new directory, or accept it if it is an empty one; refuse anything else.

    The demo commits onto main and writes kanban.toml and the board files: pointed at
    a repository (or any directory with files in it) it would overwrite them.
    """
    hint = "give --dir a new or empty directory, or leave --dir out for a temporary one"
    try:
        path.mkdir(parents=True)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise KanbanError(f"cannot create the demo directory: {exc.strerror or exc}", file=str(path),
                          hint=hint) from None
    if not path.is_dir():
        raise KanbanError("exists and is not a directory", file=str(path), hint=hint)
    try:
        entries = os.listdir(path)
    except OSError as exc:
        raise KanbanError(f"cannot list the demo directory: {exc.strerror or exc}", file=str(path),
                          hint=hint) from None
    if entries:
        count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        what = "a git repository" if ".git" in entries else f"a directory that is not empty ({count})"
        raise KanbanError(f"is {what}; the demo builds only in a new or empty directory, and nothing was changed",
                          file=str(path), hint=hint)


def _report(root: Path) -> None:
    """The run's report rendered for the terminal (headings, tables), not raw markdown."""
    from rich.markdown import Markdown

    from kanban.output import show
    from kanban.report import build_report

    say("")
    show(Markdown(build_report(root)))


def _git(cwd: Path, *args: str) -> None:
    from kanban import git

    git.run(cwd, *args)
