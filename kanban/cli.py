"""The command line: Typer declarations only. Each command's work is a plain function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from kanban.errors import KanbanError

app = typer.Typer(
    name="kanban",
    help="Run a team of coding agents over a git repository, steered by markdown files you edit by hand.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_ROOT: dict[str, Optional[Path]] = {"path": None}


def _root() -> Path:
    from kanban.workspace import find_root

    return find_root(_ROOT["path"])


@app.callback()
def _options(
    root: Optional[Path] = typer.Option(None, "-C", "--root", help="Run as if started in this directory."),
) -> None:
    _ROOT["path"] = root


@app.command()
def demo(
    directory: Optional[Path] = typer.Option(None, "--dir", help="Build the demo repository here (default: a temp dir)."),
) -> None:
    """Build a throwaway repository with a sample board and run it offline with the scripted agent."""
    from kanban.commands.demo import demo as run

    raise typer.Exit(run(directory, live=None))


@app.command()
def init() -> None:
    """Create the board files, kanban.toml and prompts/ (existing files are left alone)."""
    from kanban.commands.init import init as run

    raise typer.Exit(run(_root()))


@app.command()
def add(
    title: str = typer.Argument(..., help="The task's title."),
    priority: Optional[int] = typer.Option(None, "--priority", "-p", help="1 is most urgent; default 3."),
    depends: str = typer.Option("", "--depends", "-d", help="IDs that must be merged first, comma-separated."),
    files: str = typer.Option("", "--files", "-f", help="Paths or globs the task will touch, comma-separated."),
    track: str = typer.Option("", "--track", help="Optional grouping."),
    body: str = typer.Option("", "--body", "-b", help="Description: problem, location, required fix."),
    json_out: bool = typer.Option(False, "--json", help="Print the new ID as JSON."),
) -> None:
    """Append a task entry to TODO.md."""
    from kanban.commands.add import add as run

    raise typer.Exit(run(_root(), title, priority=priority, depends=depends, files=files, track=track,
                         body=body, as_json=json_out))


@app.command()
def status(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output (schema in README)."),
    all_tasks: bool = typer.Option(False, "--all", "-a", help="List every task, not the first 20 per column."),
) -> None:
    """The board at a glance: columns, running agents, merge queue, escalations."""
    from kanban.commands.status import status as run

    raise typer.Exit(run(_root(), as_json=json_out, show_all=all_tasks))


@app.command()
def preflight(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable results."),
    repair: bool = typer.Option(False, "--repair",
                                help="First fix what a crash or a hand edit left inconsistent, one line per fix."),
) -> None:
    """Check the repository, config, agents and services before spawning; exit 1 if any check fails."""
    from kanban.commands.preflight import preflight as run

    raise typer.Exit(run(_root(), as_json=json_out, repair=repair))


@app.command()
def tick(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would start; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """One non-blocking pass: reap finished or timed-out agents, apply transitions, fill free slots."""
    from kanban.commands.tick import tick as run

    raise typer.Exit(run(_root(), dry_run=dry_run, as_json=json_out))


@app.command("run")
def run_(
    no_merge: bool = typer.Option(False, "--no-merge", help="Stop at TESTING: do not drain the merge queue."),
) -> None:
    """Tick in a loop with a live view, reacting as soon as an agent ends, until nothing is left to do."""
    from kanban.commands.run import run

    raise typer.Exit(run(_root(), no_merge=no_merge))


@app.command("merge-queue")
def merge_queue(
    batch: bool = typer.Option(False, "--batch", help="Merge tasks with disjoint changes together, verified once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be merged; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Drain the tasks that are ready to merge into main (serial, or --batch)."""
    from kanban.commands.merge_queue import merge_queue as run

    raise typer.Exit(run(_root(), batch=batch, dry_run=dry_run, as_json=json_out))


@app.command()
def report(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report to this file."),
) -> None:
    """A markdown report of runs from the history: durations, failures, retries, timeouts, merges."""
    from kanban.commands.report import report as run

    raise typer.Exit(run(_root(), output=output))


@app.command()
def logs(
    task_id: str = typer.Argument(..., metavar="ID", help="The task's ID."),
    role: Optional[str] = typer.Option(None, "--role", "-r", help="task, reviewer, tester, or test (the [test] command)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    all_runs: bool = typer.Option(False, "--all", "-a", help="Every run of the task, not just the latest."),
) -> None:
    """Print the log of a task's latest run (an agent, or the [test] command)."""
    from kanban.commands.control import logs as run

    if role is not None and role not in ("task", "reviewer", "tester", "test"):
        raise KanbanError(f"--role must be task, reviewer, tester or test, got {role!r}")
    raise typer.Exit(run(_root(), task_id, role=role, follow=follow, all_runs=all_runs))


@app.command()
def stop(
    task_id: str = typer.Argument(..., metavar="ID", help="The task's ID."),
    force: bool = typer.Option(False, "--force", help="SIGKILL at once instead of SIGTERM and a grace period."),
) -> None:
    """Stop a task's running agent (its whole process group); the task is then escalated."""
    from kanban.commands.control import stop as run

    raise typer.Exit(run(_root(), task_id, force=force))


@app.command()
def retry(task_id: str = typer.Argument(..., metavar="ID", help="The task's ID.")) -> None:
    """Clear [ESCALATED] from a task so the next tick resumes it with fresh strikes."""
    from kanban.commands.control import retry as run

    raise typer.Exit(run(_root(), task_id))


def main() -> None:
    """Console entry point: one readable line for any error, never a traceback."""
    from kanban.output import error

    try:
        app()  # standalone: Typer itself reports usage errors (exit 2) and handles Exit
    except KanbanError as exc:
        error(str(exc))
        sys.exit(exc.code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        # A read-only or full file system, a permission: the environment, not a bug.
        mapped = _environment_error(exc)
        if mapped is not None:
            error(str(mapped))
            sys.exit(mapped.code)
        sys.exit(_report_crash(exc))


def _environment_error(exc: BaseException) -> KanbanError | None:
    from kanban.errors import from_environment

    try:
        root = _root()
    except Exception:  # noqa: BLE001 - only for showing paths relative to the repository
        root = None
    try:
        return from_environment(exc, root)
    except Exception:  # noqa: BLE001 - never let the mapping hide the original error
        return None


def _report_crash(exc: BaseException) -> int:
    import tempfile
    import traceback

    from kanban.output import error

    where = "could not save the details"
    try:
        with tempfile.NamedTemporaryFile("w", prefix="kanban-crash-", suffix=".log", delete=False) as log:
            traceback.print_exception(exc, file=log)
        where = f"details in {log.name}"
    except Exception as saving:  # noqa: BLE001 - a read-only or full /tmp must not turn into a traceback
        where = f"could not save the details: {type(saving).__name__}: {saving}"
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the message holds
    error(f"internal error: {text} ({where}); please report it")
    return 3
