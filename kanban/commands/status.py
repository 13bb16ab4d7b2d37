"""`kanban status`: the board at a glance, for people or (--json) for scripts.

The JSON schema (version 1) is documented in README.md; keep them in step.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kanban.board import Board
from kanban.errors import KanbanError
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column, Role, Task
from kanban.output import emit_json, error, human_duration, say, show
from kanban.store import load_board

SCHEMA_VERSION = 1
SHOWN_PER_COLUMN = 20
DEFAULT_POOL = 6  # kanban.config's default pool_size, for a summary made without a config


def status(root: Path, *, as_json: bool, show_all: bool) -> int:
    """Exit 0; 2 when the board breaks a rule (an unknown or circular `depends`, an ID used twice):
    the board is still shown, under that one error line."""
    from kanban.config import load_config

    board = load_board(root, check=False)  # a file kanban cannot read at all is still exit 2 here
    problem = board_problem(board)
    config = load_config(root)  # a bad kanban.toml is exit 2 here as everywhere
    with _history(root) as history:
        budget = None
        if history is not None and config.budget:
            from kanban.budget import budget_reason

            def budget(task_id: str) -> str | None:
                return budget_reason(history, config, task_id, None)

        agents, cluster = _placed(root, config, _running_agents(root))
        summary = summarize(board, agents=agents, costs=_costs(history, config),
                            seen=_seen(history), pool_size=config.pool_size, budget=budget)
    summary["cluster"] = cluster
    summary["error"] = str(problem) if problem else None
    if problem:
        error(str(problem))  # before the board, so it reads at the top
    if as_json:
        emit_json(summary)
    else:
        render(summary, show_all=show_all)
    return problem.code if problem else 0


def board_problem(board: Board) -> KanbanError | None:
    """The first rule the board breaks (kanban.board.validate), or None."""
    from kanban.board import validate

    try:
        validate(board)
    except KanbanError as exc:
        return exc
    return None


@contextlib.contextmanager
def _history(root: Path) -> Iterator[Any]:
    """The history, read-only (status never writes: works on a read-only disk); None without one."""
    from kanban.history import History
    from kanban.paths import history_db

    if not history_db(root).exists():
        yield None
        return
    with History(root, readonly=True) as history:
        yield history


def _seen(history) -> set[str]:
    """Tasks kanban has done something with: any run or event in the history."""
    if history is None:
        return set()
    rows = history.db.execute("SELECT task FROM events UNION SELECT task FROM runs")
    return {task for (task,) in rows}


def summarize(board: Board, agents: list[dict[str, Any]], costs: dict[str, Any] | None = None, *,
              seen: set[str] | None = None, pool_size: int = DEFAULT_POOL,
              budget: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """The board as plain data: the --json output, and what the human view draws.

    Each column lists its tasks in the order the scheduler takes them (escalated ones
    last), each with what it waits for or what happens to it next. `costs` is _costs():
    spend per task and in total, the running agents' so far, and the budget notice;
    without it every cost is null. `seen`: the tasks the history knows (the others in
    TODO are new). `budget(task_id)`: why no agent of that task may start now, or None.
    """
    from kanban.scheduler import blocked_reasons_all, plan

    costs = costs or _costs(None, None)
    agents = [{**a, **_figures(costs["live"].get((a["task"], a["role"], a["attempt"])))} for a in agents]

    tasks = board.tasks()
    entries = [(f, e) for f, e in board.located() if e.task_id]  # one to one with tasks, in order
    running = {a["task"]: _as_role(a["role"]) for a in agents}
    starts = plan(tasks, done=board.done_ids, running=running, pool_size=pool_size)
    queue = [t.id for t in sorted((t for t in tasks if t.ready and not t.escalated),
                                  key=lambda t: (t.priority, t.order))]
    blocked = blocked_reasons_all([t for t in tasks if t.column is Column.TODO], tasks, board.done_ids)
    facts = _Facts(tasks, blocked, agents, starts, queue, seen or set(), budget)
    rank = _pick_rank(tasks)
    columns: dict[str, Any] = {}
    for column in BOARD_COLUMNS:
        in_column = sorted((i for i, t in enumerate(tasks) if t.column is column),
                           key=lambda i: (tasks[i].escalated, rank.get(tasks[i].id, len(tasks)), i))
        rows = []
        for i in in_column:
            t = tasks[i]
            row = _task_row(entries[i], t)
            row.update(_figures(costs["tasks"].get(t.id)))
            if column is Column.TODO:
                row["blocked_by"] = blocked[t.id]
            row.update(facts.plan_of(t, entries[i][1]))
            rows.append(row)
        columns[column.value] = {"file": COLUMN_FILES[column], "count": len(rows), "tasks": rows}
    new = [{"title": e.title, "file": "TODO.md", "line": e.line_no} for e in board.new_entries()]
    return {
        "schema": SCHEMA_VERSION,
        "root": str(board.root),
        "error": None,
        "columns": columns,
        "new": new,
        "agents": agents,
        "queue": queue,
        "escalated": [t.id for t in tasks if t.escalated],
        "done": len(board.done_ids),
        "pool": {"size": pool_size, "busy": len(running),
                 "starting": [s.task_id for s in starts if not facts.held(s.task_id)]},
        "cost": costs["total"],
        "budget": costs["budget"],
    }


_ROLE_WORDS = {"task": "task agent", "reviewer": "reviewer", "tester": "tester", "test": "tests"}


def _as_role(role: str) -> Role:
    # A run of the [test] command holds its task and a slot like the tester it stands for.
    if role == "test":
        return Role.TESTER
    try:
        return Role(role)
    except ValueError:  # a role this version does not know still holds a slot
        return Role.TASK


def _pick_rank(tasks: list[Task]) -> dict[str, int]:
    """Each task's place in the scheduler's own order (kanban.scheduler.plan: finishing first,
    then priority, then place on the board), as if nothing held any task back."""
    from dataclasses import replace

    from kanban.scheduler import plan

    free = [replace(t, depends=(), files=(), markers=frozenset(), status=None) for t in tasks]
    starts = plan(free, done=set(), running={}, pool_size=len(free))
    return {s.task_id: n for n, s in reversed(list(enumerate(starts)))}


class _Facts:
    """What the plan says of each task: new, starting next, running, waiting (for what), escalated (why)."""

    def __init__(self, tasks: list[Task], blocked: dict[str, list[str]], agents: list[dict[str, Any]], starts,
                 queue: list[str], seen: set[str], budget: Callable[[str], str | None] | None) -> None:
        from kanban.scheduler import Leases

        self.by_id = {t.id: t for t in tasks}
        self.blocked = blocked  # kanban.scheduler.blocked_reasons of the TODO tasks
        self.agent = {a["task"]: a for a in agents}
        self.starts = {s.task_id: s for s in starts}
        self.picked = Leases(self.by_id[s.task_id] for s in starts if s.pick and s.task_id in self.by_id)
        self.queue = {task_id: n for n, task_id in enumerate(queue, 1)}
        self.seen = seen
        self.budget = budget
        self._held: dict[str, str | None] = {}

    def held(self, task_id: str) -> str | None:
        """The budget that keeps the task's next agent from starting (asked only of tasks about to start)."""
        if self.budget is None:
            return None
        if task_id not in self._held:
            self._held[task_id] = self.budget(task_id)
        return self._held[task_id]

    def plan_of(self, t: Task, entry) -> dict[str, Any]:
        new = t.column is Column.TODO and t.id not in self.seen
        agent = self.agent.get(t.id)
        start = self.starts.get(t.id)
        held = self.held(t.id) if start else None
        waits = [] if agent or (start and not held) else self._waits(t, held)
        escalation = _last_note_line(entry) if t.escalated else None
        out = {
            "new": new,
            "next": start.role.value if start and not held else None,
            "agent": ({k: agent[k] for k in ("role", "attempt", "elapsed", "timeout")} if agent else None),
            "queue_position": self.queue.get(t.id),
            "escalation": escalation,
            "waits": waits,
        }
        out["plan"] = _plan_words(t, out)
        return out

    def _waits(self, t: Task, held: str | None) -> list[dict[str, Any]]:
        if t.escalated:
            return [_wait("person", None, "escalated")]
        if t.ready:
            return []  # the merge queue's, not the pool's
        found = [self._word(reason) for reason in self.blocked.get(t.id, ())]
        if t.column is Column.TODO and not found and not held:
            found += [_wait("files", o.id, f"files held by {o.id}, which starts next")
                      for o in self.picked.overlapping(t)]
        if held:
            found.append(_wait("budget", None, held))
        if not found:
            found.append(_wait("slot", None, "waits for a free slot"))
        return found

    def _word(self, reason: str) -> dict[str, Any]:
        """A reason of kanban.scheduler.blocked_reasons as a wait, in the plan's words."""
        m = _SCHEDULER_REASON_RE.fullmatch(reason)
        if m is None:
            return _wait("other", None, reason)
        dep, nowhere, holder = m.group("dep"), m.group("nowhere"), m.group("holder")
        if holder:
            return _wait("files", holder, f"files held by {holder}")
        other = self.by_id.get(dep)
        how = " (on no board)" if nowhere else " (escalated)" if other is not None and other.escalated else ""
        return _wait("depends", dep, f"waits for {dep}{how}")


# What kanban.scheduler.blocked_reasons says (the scheduler decides; status only words it).
_SCHEDULER_REASON_RE = re.compile(
    r"waiting on (?P<dep>\S+)(?P<nowhere> \(on no board\))?|files overlap (?P<holder>\S+)")


def _wait(kind: str, on: str | None, text: str) -> dict[str, Any]:
    return {"kind": kind, "on": on, "text": text}


def _plan_words(t: Task, facts: dict[str, Any]) -> str:
    """What the human view prints after the title: "new; waits for TASK-3", "reviewer starts next"."""
    if facts["escalation"] is not None:  # without the note's time stamp: the line is long enough
        return "escalated: " + (_STAMP_RE.sub("", facts["escalation"]) or facts["escalation"])
    words = ["new"] if facts["new"] else []
    agent = facts["agent"]
    if agent:
        words.append(f"{_ROLE_WORDS.get(agent['role'], agent['role'])} running, attempt {agent['attempt']}, "
                     f"{human_duration(agent['elapsed'])} of {human_duration(agent['timeout'])}")
    elif facts["queue_position"]:
        words.append(f"#{facts['queue_position']} in the merge queue")
    elif facts["next"]:
        words.append("starts next" if t.column is Column.TODO else f"{_ROLE_WORDS[facts['next']]} starts next")
    picks = [w["on"] for w in facts["waits"] if w["kind"] == "files" and w["text"].endswith(", which starts next")]
    words += [w["text"] for w in facts["waits"] if len(picks) < 2 or w["on"] not in picks]
    if len(picks) > 1:  # one phrase for the picks ahead of it: "files held by TASK-7 and TASK-9, which start next"
        words.append(f"files held by {', '.join(picks[:-1])} and {picks[-1]}, which start next")
    return "; ".join(words)


def _last_note_line(entry) -> str:
    """Why a task was escalated: the first line of its last note (the tool writes the reason there)."""
    from kanban.untrusted import clean

    items = [line for line in entry.notes().splitlines() if _NOTE_ITEM_RE.match(line)]
    if not items:
        return "waiting for a person"
    text = _NOTE_ITEM_RE.sub("", items[-1], count=1).strip()
    text = re.sub(r"^\\(?=[`~<#=*+>|-])", "", text)  # a defused first character, as the note writer left it
    return clean(text, max_bytes=600, max_line=200).strip() or "waiting for a person"


_NOTE_ITEM_RE = re.compile(r"^ {0,3}[-*+][ \t]+")
_STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)? UTC:? ")


def _figures(spend) -> dict[str, Any]:
    """cost_usd and tokens of a Spend, null when not known."""
    if spend is None:
        return {"cost_usd": None, "tokens": None}
    return {"cost_usd": round(spend.cost_usd, 6) if spend.priced else None,
            "tokens": spend.tokens if spend.tokens else None}


def _costs(history, config) -> dict[str, Any]:
    """Spend from the history (None: there is none): per task (finished runs plus the running
    agent so far), per running agent, in total and today (UTC), and the budget notice."""
    from kanban.budget import Spend

    empty = {"usd": 0.0, "tokens": 0, "today_usd": 0.0, "today_tokens": 0, "unpriced_runs": 0}
    out: dict[str, Any] = {"tasks": {}, "live": {}, "total": empty, "budget": None}
    if history is None or config is None:
        return out
    from kanban.budget import budget_notice, live_costs, utc_midnight

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


def _placed(root: Path, config, agents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """The running agents with the agent's pid on this machine and the node it runs on ("node":
    None on this machine; "pid": None on another, or before it started), and the
    executor's free capacity in words (None for the local executor: the pool line says it)."""
    from kanban.executors import runner_for

    runner = runner_for(root, config)
    for a in agents:
        a["pid"] = a["node"] = None
        with contextlib.suppress(KanbanError, OSError, ValueError):
            handle = runner.resolve(a["ref"])
            a["pid"], a["node"] = runner.pid(handle), runner.where(handle)
    placed = [{k: v for k, v in a.items() if k != "ref"} for a in agents]
    return placed, None if config.executor.kind == "local" else runner.capacity()


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


def _column_lines(name: str, col: dict[str, Any], summary: dict[str, Any], *, show_all: bool):
    """(header, lines, hidden): a column's lines in plan order, new headings first, the header
    counting exactly the lines shown ("TODO (20 of 31)" when some are left out)."""
    from rich.text import Text

    lines = []
    if name == "TODO":
        for new in summary["new"]:
            lines.append(Text.assemble(("new ", "green"), f"{new['title']} (line {new['line']})"))
    lines += [_task_text(row) for row in col["tasks"]]
    total = len(lines)
    shown = lines if show_all else lines[:SHOWN_PER_COLUMN]
    header = f"{name} ({total})" if len(shown) == total else f"{name} ({len(shown)} of {total})"
    return header, shown, total - len(shown)


def _render_stacked(summary: dict[str, Any], *, show_all: bool) -> None:
    from rich.text import Text

    for name, col in summary["columns"].items():
        header, lines, hidden = _column_lines(name, col, summary, show_all=show_all)
        show(Text(header, style="bold underline"))
        for text in lines:
            _show_hanging(text)
        if hidden:
            show(Text(f"  ... and {hidden} more (--all)", style="dim"))


def _show_hanging(text) -> None:
    """A line indented by two, wrapped lines by four, no trailing spaces."""
    from rich.text import Text

    from kanban.output import console

    for n, part in enumerate(text.wrap(console(), max(20, console().width - 4))):
        line = Text("  " if n == 0 else "    ")
        line.append_text(part)
        line.rstrip()
        show(line)


def _render_table(summary: dict[str, Any], *, show_all: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", expand=True, show_lines=False, pad_edge=False)
    cells = []
    for name, col in summary["columns"].items():
        header, lines, hidden = _column_lines(name, col, summary, show_all=show_all)
        table.add_column(header, overflow="fold", ratio=1)
        text = Text("\n").join(lines)
        if hidden:
            text.append(("\n" if lines else "") + f"... and {hidden} more (--all)", style="dim")
        cells.append(text)
    table.add_row(*cells)
    show(table)


def _render_footer(summary: dict[str, Any]) -> None:
    from kanban.budget import tokens, usd

    if summary["agents"]:
        say("Agents running:")
        for a in summary["agents"]:
            so_far = _money(a)
            pid = f"pid {a['pid']}" if a["pid"] else ("" if a.get("node") else "starting")
            where = f"  on {a['node']}" if a.get("node") else ""
            say(f"  {a['task']}  {a['role']:<8} attempt {a['attempt']}  "
                f"{human_duration(a['elapsed'])} of {human_duration(a['timeout'])}  {pid}{where}"
                + (f"  {so_far} so far" if so_far else ""))
    pool = summary.get("pool")
    if pool and (pool["busy"] or pool["starting"]):
        say(f"Pool: {pool['busy']} of {pool['size']} slots busy"
            + (f"; next tick starts {', '.join(pool['starting'])}" if pool["starting"] else ""))
    if summary.get("cluster"):
        say(f"Cluster: {summary['cluster']}")
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
    """ID, priority, markers, title, status, cost, then what the plan says: "- new; waits for TASK-3"."""
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
    plan = row.get("plan")
    if plan is None and row.get("blocked_by"):  # a summary from before plans: its scheduler reasons
        plan = "; ".join(row["blocked_by"])
    if plan:
        text.append(f" - {plan}", style=_plan_style(row))
    return text


def _plan_style(row: dict[str, Any]) -> str:
    if row.get("escalation") is not None:
        return "red"
    if row.get("agent") or row.get("next") or row.get("queue_position"):
        return "green"
    return "dim"
