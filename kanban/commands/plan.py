"""`kanban plan "FEATURE"`: a planner agent proposes tasks, checked like a hand-written board and
appended to TODO.md under a level-1 heading for the person to edit. Nothing starts until
`kanban tick` or `kanban run`.

`--from FILE` takes the plan from FILE instead of asking a planner (the answer of an earlier
run, kept in its run directory, or what `--dry-run` printed, edited): checked and written the
same way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kanban.errors import BAD_INPUT, WORK_FAILED, KanbanError
from kanban.output import emit_json, emit_text, error, note, say, warn
from kanban.planner import (
    Planned,
    Proposed,
    board_summary,
    check_feature,
    check_plan,
    heading,
    keep_valid,
    number,
    read_plan,
    section,
)

FROM_LIMIT = 1 << 20  # bytes of a --from file
INTERRUPTED = 130


def plan(root: Path, feature: str, *, dry_run: bool, from_file: Path | None, partial: bool, as_json: bool) -> int:
    from kanban.commands.tick import check_repository
    from kanban.config import load_config
    from kanban.store import load_board

    feature = check_feature(feature)
    config = load_config(root)
    check_repository(root, config)
    board = load_board(root)  # a bad board is exit 2 before a planner is paid for
    answer = None
    if from_file is not None:
        source, text = str(from_file), _read_from(from_file)
    else:
        try:
            answer = _ask(root, config, feature, board_summary(board.tasks(), len(board.done_ids)))
        except KeyboardInterrupt:
            error("interrupted: the planner was stopped and recorded as cancelled; nothing was written")
            return INTERRUPTED
        if answer.failure:
            return _failed(root, config, answer, feature, as_json)
        source, text = answer.source, _answer_text(answer)
    proposed = read_plan(text, source)
    board = load_board(root)  # as it is now: the planner took a while
    problems = check_plan(proposed, board.all_ids(), source)
    kept, knocked = keep_valid(proposed, problems, source) if partial else (
        [] if problems else list(range(len(proposed))), [])
    errors = sorted((p for ps in problems.values() for p in ps), key=lambda e: e.line or 0) + knocked
    title = heading(feature, time.strftime("%Y-%m-%d"))
    if not kept:
        some_valid = -1 not in problems and len(problems) < len(proposed)
        return _refused(root, feature, title, proposed, errors, source, answer, as_json, some_valid)
    for problem in errors:  # --partial: what was left out, and why
        warn(str(problem))
    chosen = [proposed[i] for i in kept]
    planned = number(chosen, board.all_ids()) if dry_run else _write(root, title, chosen)
    return _show(root, feature, title, planned, proposed, kept, source, answer, as_json, errors,
                 written=not dry_run)


def _answer_text(answer) -> str:
    """The planner's report, refused when it filled the bytes a report is read to (it is cut off)."""
    from kanban.agents import REPORT_READ_LIMIT

    if len(answer.text.encode("utf-8")) >= REPORT_READ_LIMIT - 3:  # a character cut in two reads as U+FFFD
        raise KanbanError(f"the planner's answer is over the {REPORT_READ_LIMIT // 1024} KiB a report may have",
                          file=answer.source, hint="ask for a smaller feature, or plan it in parts")
    return answer.text


def _ask(root: Path, config, feature: str, board_text: str):
    from kanban.history import History
    from kanban.planrun import run_planner
    from kanban.runner import LocalRunner

    with History(root) as history:
        return run_planner(root, config, history, LocalRunner(root), feature, board_text)


def _read_from(path: Path) -> str:
    """The --from file's text: a regular UTF-8 file of at most FROM_LIMIT bytes, else one clear line."""
    from kanban.untrusted import UnsafeFile, read_regular

    try:
        data = read_regular(path, FROM_LIMIT)
    except UnsafeFile as exc:
        raise KanbanError(f"the --from file {exc}", file=path, hint=exc.hint) from None
    except FileNotFoundError:
        raise KanbanError("there is no such --from file", file=path,
                          hint="give the plan's path: the report of an earlier run, or what --dry-run printed"
                          ) from None
    except OSError as exc:
        raise KanbanError(f"cannot read the --from file: {exc.strerror or exc}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KanbanError(f"the --from file is not valid UTF-8 (byte {exc.start + 1})", file=path,
                          line=data.count(b"\n", 0, exc.start) + 1, hint="save it as UTF-8 text") from None


def _write(root: Path, title: str, chosen: list[Proposed]) -> list[Planned]:
    """The tasks appended to TODO.md in one atomic write, numbered against the board as it is then."""
    from kanban.board import Board
    from kanban.model import Column
    from kanban.store import update

    def change(board: Board) -> list[Planned]:
        board.assign_ids()  # a person's new headings are numbered first, as by `kanban add`
        planned = number(chosen, board.all_ids())
        board.files[Column.TODO].append_section(section(title, planned))
        return planned

    return update(root, change)


# -- what the person sees ---------------------------------------------------------------------


def _failed(root: Path, config, answer, feature: str, as_json: bool) -> int:
    from kanban.config import PLANNER
    from kanban.presets import cli_error
    from kanban.untrusted import clean, read_capped

    run, agent = answer.run, config.agent_for(PLANNER)
    said = None if agent.command else cli_error(agent.preset, read_capped(Path(run.log), 1 << 20, tail=True))
    line = (f"the {PLANNER} failed: {clean(answer.failure, max_bytes=600)}"
            + (f" ({agent.preset} said: {clean(said)})" if said else "")
            + f"; nothing was written; its log is {_relative(root, run.log)}")
    line = " ".join(line.split())
    if as_json:
        emit_json(_json(root, feature, None, [], [], [], answer.source, answer, [line], written=False))
    error(line)
    return WORK_FAILED


def _refused(root: Path, feature: str, title: str, proposed: list[Proposed], errors: list[KanbanError],
             source: str, answer, as_json: bool, some_valid: bool) -> int:
    lines = [str(e) for e in errors]
    summary = (f"the plan is refused: {len(lines)} problem{'s' if len(lines) != 1 else ''}"
               + (f" in {len(proposed)} task{'s' if len(proposed) != 1 else ''}" if proposed else "")
               + "; nothing was written")
    hint = (f"edit {source} and run kanban plan {_quoted(feature)} --from {source}"
            + (", or keep the valid tasks with --partial" if some_valid else ""))
    if as_json:
        emit_json(_json(root, feature, title, [], proposed, [], source, answer, lines, written=False))
    for line in lines:
        error(line)
    error(f"{summary}; {hint}")
    return BAD_INPUT


def _show(root: Path, feature: str, title: str, planned: list[Planned], proposed: list[Proposed], kept: list[int],
          source: str, answer, as_json: bool, problems: list[KanbanError], *, written: bool) -> int:
    if as_json:
        emit_json(_json(root, feature, title, planned, proposed, kept, source, answer, [str(p) for p in problems],
                        written=written))
        return 0
    ids = ", ".join(p.task_id for p in planned)
    left = len(proposed) - len(planned)
    left_words = f" ({left} left out)" if left else ""
    cost = _planner_words(answer)
    if not written:
        emit_text("".join("".join(block) for block in section(title, planned)))
        note(f"dry run: TODO.md is unchanged; {len(planned)} task{'s' if len(planned) != 1 else ''} would go to it "
             f"as {ids}{left_words}" + (f"; {cost}" if cost else ""))
        if answer is not None:
            note(f"to write this plan without asking the planner again: kanban plan {_quoted(feature)} --from "
                 f"{source}")
        return 0
    say(f"planned {len(planned)} task{'s' if len(planned) != 1 else ''} in TODO.md under '# {title}': {ids}"
        + left_words)
    if cost:
        say(cost)
    say("nothing starts until you run 'kanban tick' or 'kanban run'; edit or delete the tasks in TODO.md first")
    return 0


def _planner_words(answer) -> str:
    """"planner: 1m12s, $0.0412, 12.3k tokens (claude-sonnet-4)", or "" with --from."""
    if answer is None:
        return ""
    from kanban.budget import tokens, usd
    from kanban.output import human_duration

    run = answer.run
    parts = [human_duration((run.ended or run.started) - run.started)]
    if run.cost_usd is not None:
        parts.append(usd(run.cost_usd))
    if run.tokens:
        parts.append(f"{tokens(run.tokens)} tokens")
    return "planner: " + ", ".join(parts) + (f" ({run.model})" if run.model else "")


def _json(root: Path, feature: str, title: str | None, planned: list[Planned], proposed: list[Proposed],
          kept: list[int], source: str, answer, problems: list[str], *, written: bool) -> dict[str, Any]:
    kept_set = set(kept)
    return {
        "feature": feature,
        "heading": title,
        "file": "TODO.md",
        "written": written,
        "source": source,
        "tasks": [{"id": p.task_id, "label": p.label, "title": p.title,
                   "priority": int(p.meta.get("priority", 3)),
                   "depends": _list(p.meta.get("depends", "")), "files": _list(p.meta.get("files", "")),
                   "track": p.meta.get("track"), "body": p.body} for p in planned],
        "left_out": [{"label": p.label, "title": p.title, "line": p.line}
                     for i, p in enumerate(proposed) if planned and i not in kept_set],
        "problems": problems,
        "planner": None if answer is None else _run_json(root, answer),
    }


def _run_json(root: Path, answer) -> dict[str, Any]:
    run = answer.run
    return {"attempt": run.attempt, "outcome": run.outcome, "reason": run.reason,
            "seconds": round((run.ended or run.started) - run.started, 1), "model": run.model,
            "cost_usd": run.cost_usd, "tokens": run.tokens, "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens, "log": _relative(root, run.log), "report": answer.source}


def _list(text: str) -> list[str]:
    from kanban.board import split_list

    return split_list(text)


def _relative(root: Path, path: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)
