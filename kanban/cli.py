"""The command line: Typer declarations only. Each command's work is a plain function."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from kanban.errors import KanbanError


class _Group(TyperGroup):
    """The top level: command summaries never cut off, and a typo names the command meant."""

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))  # wrapped, never "..."
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if (args and not ctx.resilient_parsing and not name.startswith("-")
                and self.get_command(ctx, name) is None):
            names = [n for n in self.list_commands(ctx) if not self.commands[n].hidden]
            import difflib  # only for a mistyped command

            close = difflib.get_close_matches(name, names, n=1)
            shown = name if name.isprintable() else repr(name)[1:-1]
            if close:
                raise KanbanError(f"no command '{shown}'. Did you mean '{close[0]}'?")
            raise KanbanError(f"no command '{shown}'", hint="run 'kanban --help' for the list")
        return super().resolve_command(ctx, args)


class _Command(TyperCommand):
    """Usage lines in the usual form, `kanban add [OPTIONS] TITLE`, whatever Typer's own style."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = (param.metavar or param.name or "ARG").upper()
            if param.nargs != 1:
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces


app = typer.Typer(
    name="kanban",
    help="Run a team of coding agents over a git repository, steered by markdown files you edit by hand.",
    cls=_Group,
    add_completion=True,  # --install-completion, --show-completion
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

_ROOT: dict[str, Path | None] = {"path": None}


def _root() -> Path:
    from kanban.workspace import find_root

    return find_root(_ROOT["path"])


def _print_version(value: bool) -> None:
    if value:
        from kanban import version

        sys.stdout.write(f"kanban {version()}\n")
        raise typer.Exit()


@app.callback()
def _options(
    root: Path | None = typer.Option(None, "-C", "--root", help="Run as if started in this directory."),
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    _ROOT["path"] = root


@app.command()
def demo(
    directory: Path | None = typer.Option(None, "--dir",
                                          help="Build the demo repository here, a new or empty directory "
                                               "(default: a temporary one, removed at the end)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary demo repository to look around in."),
) -> None:
    """Build a throwaway repository with a sample board and run it offline with the scripted agent."""
    from kanban.commands.demo import demo as run

    raise typer.Exit(run(directory, live=None, keep=keep))


@app.command()
def init() -> None:
    """Set up this git repository: board files, kanban.toml (with its main branch), prompts/; never overwrites."""
    from kanban.commands.init import init as run

    raise typer.Exit(run(_root()))


@app.command()
def add(
    title: str = typer.Argument(..., metavar="TITLE", help="The task's title."),
    priority: int | None = typer.Option(None, "--priority", "-p", help="1 is most urgent; default 3."),
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
    watch: bool = typer.Option(False, "--watch", "-w",
                               help="Keep running when nothing is left: pick up new and freed tasks until Ctrl-C."),
) -> None:
    """Tick in a loop with a live view, reacting as soon as an agent ends, until nothing is left to do
    (with --watch: until Ctrl-C). One run per repository."""
    from kanban.commands.run import run

    raise typer.Exit(run(_root(), no_merge=no_merge, watch=watch))


@app.command()
def plan(
    feature: str = typer.Argument(..., metavar="FEATURE", help="What to plan, in one line: it names the plan."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan as it would be written; change nothing."),
    from_file: Path | None = typer.Option(None, "--from", metavar="FILE",
                                          help="Take the plan from FILE (an earlier answer, or what --dry-run "
                                               "printed) instead of asking the planner."),
    partial: bool = typer.Option(False, "--partial",
                                 help="Keep the valid tasks of a plan with problems, naming the rest."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A planner agent proposes tasks for FEATURE, checked like a board you wrote and appended to TODO.md
    under a heading of their own, for you to edit. Nothing starts until 'tick' or 'run'."""
    from kanban.commands.plan import plan as run

    raise typer.Exit(run(_root(), feature, dry_run=dry_run, from_file=from_file, partial=partial, as_json=json_out))


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
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report to this file."),
) -> None:
    """A markdown report of runs from the history: durations, failures, retries, timeouts, merges."""
    from kanban.commands.report import report as run

    raise typer.Exit(run(_root(), output=output))


@app.command()
def logs(
    task_id: str = typer.Argument(..., metavar="ID", help="The task's ID."),
    role: str | None = typer.Option(None, "--role", "-r",
                                    help="task, reviewer, tester, test (the [test] command) "
                                         "or verify (the merge queue's checks)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    all_runs: bool = typer.Option(False, "--all", "-a", help="Every run of the task, not just the latest."),
) -> None:
    """Print the log of a task's latest run (an agent, or the [test] command)."""
    from kanban.commands.control import logs as run

    if role is not None and role not in ("task", "reviewer", "tester", "test", "verify"):
        raise KanbanError(f"--role must be task, reviewer, tester, test or verify, got {role!r}")
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


# Every command, `run` included, gets the usual usage line (see _Command).
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def main() -> None:
    """Console entry point: one readable line for any error, never a traceback."""
    try:
        # also under `python -m kanban`; standalone: Typer itself reports usage errors (exit 2) and handles Exit
        app(prog_name="kanban")
    except KanbanError as exc:
        # Here, not above: --version and --help never need it.
        from kanban.output import error

        error(str(exc))
        sys.exit(exc.code)
    except KeyboardInterrupt:
        from kanban.output import error

        error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        from kanban.output import error

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
