"""`kanban status`: the board at a glance, for people or (--json) for scripts.

The JSON schema (version 1) is documented in README.md; keep them in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kanban.board import Board
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column, Task
from kanban.output import emit_json, say, show
from kanban.store import load_board

SCHEMA_VERSION = 1
SHOWN_PER_COLUMN = 20


def status(root: Path, *, as_json: bool, show_all: bool) -> int:
    from kanban.config import load_config

    board = load_board(root)
    config = load_config(root)  # a bad kanban.toml is exit 2 here as everywhere
    summary = summarize(board, agents=_running_agents(root), costs=_costs(root, config))
    if as_json:
        emit_json(summary)
    else:
        render(summary, show_all=show_all)
    return 0


def summarize(board: Board, agents: list[dict[str, Any]], costs: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The board as plain data: the --json output, and what the human view draws.

    `costs` is _costs(): spend per task and in total, the running agents' so far,
    and the budget notice; without it every cost is null.
    """
    from kanban.scheduler import blocked_reasons_all

    costs = costs or _costs(None, None)
    agents = [{**a, **_figures(costs["live"].get((a["task"], a["role"], a["attempt"])))} for a in agents]

    tasks = board.tasks()
    where = {e.task_id: (f, e) for f, e in board.located() if e.task_id}
    blocked = blocked_reasons_all([t for t in tasks if t.column is Column.TODO], tasks, board.done_ids)
    columns: dict[str, Any] = {}
    for column in BOARD_COLUMNS:
        in_column = [t for t in tasks if t.column is column]
        rows = []
        for t in in_column:
            row = _task_row(where[t.id], t)
            row.update(_figures(costs["tasks"].get(t.id)))
            if column is Column.TODO:
                row["blocked_by"] = blocked[t.id]
            rows.append(row)
        columns[column.value] = {"file": COLUMN_FILES[column], "count": len(rows), "tasks": rows}
    new = [{"title": e.title, "file": "TODO.md", "line": e.line_no} for e in board.new_entries()]
    return {
        "schema": SCHEMA_VERSION,
        "root": str(board.root),
        "columns": columns,
        "new": new,
        "agents": agents,
        "queue": [t.id for t in sorted((t for t in tasks if t.ready and not t.escalated),
                                       key=lambda t: (t.priority, t.order))],
        "escalated": [t.id for t in tasks if t.escalated],
        "done": len(board.done_ids),
        "cost": costs["total"],
        "budget": costs["budget"],
    }


def _figures(spend) -> dict[str, Any]:
    """cost_usd and tokens of a Spend, null when not known."""
    if spend is None:
        return {"cost_usd": None, "tokens": None}
    return {"cost_usd": round(spend.cost_usd, 6) if spend.priced else None,
            "tokens": spend.tokens if spend.tokens else None}


def _costs(root: Path | None, config) -> dict[str, Any]:
    """Spend from the history (without creating one): per task (finished runs plus the running
    agent so far), per running agent, in total and today (UTC), and the budget notice."""
    from kanban.budget import Spend

    empty = {"usd": 0.0, "tokens": 0, "today_usd": 0.0, "today_tokens": 0, "unpriced_runs": 0}
    out: dict[str, Any] = {"tasks": {}, "live": {}, "total": empty, "budget": None}
    if root is None or config is None:
        return out
    from kanban.history import DB_NAME

    if not (root / ".kanban" / DB_NAME).exists():
        return out
    from kanban.budget import budget_notice, live_costs, utc_midnight
    from kanban.history import History

    with History(root, readonly=True) as history:  # status never writes: works on a read-only disk
        tasks = history.spend_by_task()
        total, today = history.spend(), history.spend(since=utc_midnight())
        live = live_costs(history, config)
        notice = budget_notice(history)
    midnight = utc_midnight()
    for run, cost in live:
        spend = Spend.of(cost.get("cost_usd"), cost.get("tokens"))
        out["live"][(run.task, run.role, run.attempt)] = spend
        tasks[run.task] = tasks.get(run.task, Spend()) + spend
        total += spend
        if run.started >= midnight:
            today += spend
    out["tasks"] = tasks
    out["total"] = {"usd": round(total.cost_usd, 6), "tokens": total.tokens,
                    "today_usd": round(today.cost_usd, 6), "today_tokens": today.tokens,
                    "unpriced_runs": total.unpriced}
    out["budget"] = notice
    return out


def _task_row(located, t: Task) -> dict[str, Any]:
    f, entry = located
    return {
        "id": t.id,
        "title": t.title,
        "priority": t.priority,
        "markers": sorted(t.markers),
        "status": t.status,
        "depends": list(t.depends),
        "files": list(t.files),
        "track": t.track,
        "file": f.name,
        "line": entry.line_no,
    }


def _running_agents(root: Path) -> list[dict[str, Any]]:
    try:
        from kanban.history import running_agents
    except ImportError:
        return []
    return running_agents(root)


WIDE = 110  # below this many columns, the board is drawn as stacked sections


def render(summary: dict[str, Any], *, show_all: bool) -> None:
    from kanban.output import console

    if console().width < WIDE:
        _render_stacked(summary, show_all=show_all)
    else:
        _render_table(summary, show_all=show_all)
    _render_footer(summary)


def _render_stacked(summary: dict[str, Any], *, show_all: bool) -> None:
    from rich.text import Text

    for name, col in summary["columns"].items():
        show(Text(f"{name} ({col['count']})", style="bold underline"))
        if name == "TODO":
            for new in summary["new"]:
                show(Text.assemble(("  new ", "green"), f"{new['title']} (line {new['line']})"))
        rows = col["tasks"] if show_all else col["tasks"][:SHOWN_PER_COLUMN]
        for row in rows:
            line = Text("  ")
            line.append_text(_task_text(row))
            line.rstrip()
            show(line)
        if col["count"] - len(rows):
            show(Text(f"  ... and {col['count'] - len(rows)} more (--all)", style="dim"))


def _render_table(summary: dict[str, Any], *, show_all: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", expand=True, show_lines=False, pad_edge=False)
    cells = []
    for name, col in summary["columns"].items():
        table.add_column(f"{name} ({col['count']})", overflow="fold", ratio=1)
        rows = col["tasks"] if show_all else col["tasks"][:SHOWN_PER_COLUMN]
        text = Text()
        if name == "TODO":
            for new in summary["new"]:
                text.append("new ", style="green")
                text.append(f"{new['title']} (line {new['line']})\n")
        for row in rows:
            text.append_text(_task_text(row))
        hidden = col["count"] - len(rows)
        if hidden:
            text.append(f"... and {hidden} more (--all)\n", style="dim")
        cells.append(text)
    table.add_row(*cells)
    show(table)


def _render_footer(summary: dict[str, Any]) -> None:
    from kanban.budget import tokens, usd

    if summary["agents"]:
        say("Agents running:")
        for a in summary["agents"]:
            so_far = _money(a)
            say(f"  {a['task']}  {a['role']:<8} attempt {a['attempt']}  "
                f"{_duration(a['elapsed'])} of {_duration(a['timeout'])}  pid {a['pid']}"
                + (f"  {so_far} so far" if so_far else ""))
    if summary["queue"]:
        say("Ready to merge: " + ", ".join(summary["queue"]))
    if summary["escalated"]:
        say("Escalated (needs a person): " + ", ".join(summary["escalated"]), style="red")
    if summary["done"]:
        say(f"Done: {summary['done']} in CHANGELOG.md")
    cost = summary.get("cost") or {}
    if cost.get("usd") or cost.get("tokens"):
        line = f"Cost: {usd(cost['usd'])} ({tokens(cost['tokens'])} tokens), {usd(cost['today_usd'])} today (UTC)"
        if cost.get("unpriced_runs"):
            line += f"; {cost['unpriced_runs']} run(s) unpriced, see [pricing] in kanban.toml"
        say(line)
    if summary.get("budget"):
        notice = summary["budget"]
        say(notice[:1].upper() + notice[1:] + "; raise [budget] in kanban.toml to go on", style="yellow")


def _money(row: dict[str, Any]) -> str:
    """$0.42, or 12k tokens when unpriced, or "" when nothing is known."""
    from kanban.budget import tokens, usd

    if row.get("cost_usd"):
        return usd(row["cost_usd"])
    return f"{tokens(row['tokens'])} tokens" if row.get("tokens") else ""


def _task_text(row: dict[str, Any]):
    from rich.text import Text

    text = Text()
    text.append(row["id"], style="bold")
    text.append(f" p{row['priority']} ", style="cyan")
    for marker in row["markers"]:
        text.append(f"[{marker}] ", style="red" if marker == "ESCALATED" else "yellow")
    text.append(row["title"])
    if row.get("status"):
        text.append(f" ({row['status']})", style="green")
    if _money(row):
        text.append(f" {_money(row)}", style="magenta")
    if row.get("blocked_by"):
        text.append(f" - {'; '.join(row['blocked_by'])}", style="dim")
    text.append("\n")
    return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
