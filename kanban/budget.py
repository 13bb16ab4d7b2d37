"""Budgets: `[budget] task / run / day` in kanban.toml; at a limit no new agent starts.

A limit is dollars ("$2", "$0.05", "2.50") or tokens ("500k tokens",
"2M tokens", "15000 tokens"). `task` counts every run of one task, `run` the
runs started since the current `kanban run` began, `day` the runs started
since 00:00 UTC. Spend is what the history recorded for finished runs plus
what the logs of the running agents say so far. A limit is reached when the
spend is at or over it; agents already running are never stopped by it.

`blocked` is the pure check. `budget_reason` does the history queries and
calls it: the engine asks it before it starts an agent. `record_budget`
writes the `budget` event (once per task and reason) and `budget_notice`
reads the latest one back for `kanban status`.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from kanban.config import Config
    from kanban.history import History

DAY = 86400.0
LIMIT_HINT = 'write dollars like "$2" or "$0.50", or tokens like "500k tokens" or "2M tokens"'
LOG_TAIL = 1024 * 1024  # of a running agent's log, read for its spend so far

_DOLLARS_RE = re.compile(r"\$?\s*(\d+(?:\.\d+)?|\.\d+)")
_TOKENS_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([kKM]?)\s*tokens?")
_SCALE = {"": 1, "k": 1_000, "K": 1_000, "M": 1_000_000}


@dataclass(frozen=True)
class Limit:
    amount: float  # dollars, or a whole number of tokens
    unit: str  # "usd" or "tokens"

    def spent(self, spend: Spend) -> float:
        return spend.cost_usd if self.unit == "usd" else float(spend.tokens)

    def reached(self, spend: Spend) -> bool:
        return self.spent(spend) >= self.amount

    def __str__(self) -> str:
        return usd(self.amount) if self.unit == "usd" else f"{tokens(self.amount)} tokens"


@dataclass(frozen=True)
class BudgetConfig:
    task: Limit | None = None  # all runs of one task
    run: Limit | None = None  # runs started since this `kanban run` began
    day: Limit | None = None  # runs started since 00:00 UTC

    def __bool__(self) -> bool:
        return any((self.task, self.run, self.day))


class Spend(NamedTuple):
    cost_usd: float = 0.0  # dollars, of the runs whose cost is known
    tokens: int = 0
    runs: int = 0  # runs counted
    unpriced: int = 0  # of them, runs with tokens but no dollar figure
    priced: int = 0  # of them, runs with a dollar figure

    def __add__(self, other: Any) -> Spend:  # type: ignore[override]
        if not isinstance(other, Spend):
            return NotImplemented
        return Spend._make(a + b for a, b in zip(self, other))

    @classmethod
    def of(cls, cost_usd: float | None, tokens: int | None) -> Spend:
        """The spend of one run."""
        count = tokens or 0
        return cls(cost_usd or 0.0, count, 1, int(cost_usd is None and count > 0), int(cost_usd is not None))


def parse_limit(value: Any) -> Limit | None:
    """A Limit from "$2", "2.50", "$0.05", "500k tokens", "2M tokens"; None if it is none of those.

    Bare TOML numbers are refused (None): 2 could mean dollars or tokens.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if match := _TOKENS_RE.fullmatch(text):
        amount = float(match.group(1)) * _SCALE[match.group(2)]
        if not math.isfinite(amount) or amount < 1 or amount > 1e15:
            return None
        return Limit(float(round(amount)), "tokens")
    if match := _DOLLARS_RE.fullmatch(text):
        amount = float(match.group(1))
        if not math.isfinite(amount) or amount <= 0 or amount > 1e9:
            return None
        return Limit(amount, "usd")
    return None


# --- how figures are shown -----------------------------------------------------------


def usd(amount: float) -> str:
    """$2.04, $0.05, and enough digits that a small spend is not shown as its limit: $0.0512."""
    if amount == 0 or abs(amount) >= 1:
        return f"${amount:,.2f}"
    text = f"{amount:.4f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{amount:.2f}")


def tokens(count: float) -> str:
    """1234 -> 1.2k, 2_000_000 -> 2M."""
    count = float(count)
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= scale:
            text = f"{count / scale:.1f}".removesuffix(".0")
            return text + suffix
    return str(int(count))


# --- the check --------------------------------------------------------------------------


def blocked(limits: BudgetConfig, spend_task: Spend | None, spend_run: Spend | None,
            spend_day: Spend | None, task_id: str = "this task") -> str | None:
    """The budget that keeps a new agent of `task_id` from starting, as a person reads it, or None.

    A spend given as None is not checked (e.g. no run is going on). The broadest
    limit reached is named: the day's, then the run's, then the task's.
    """
    checks = ((limits.day, spend_day, "today (UTC)"), (limits.run, spend_run, "this run"),
              (limits.task, spend_task, f"task {task_id}"))
    for limit, spend, what in checks:
        if limit is None or spend is None or not limit.reached(spend):
            continue
        if limit.unit == "usd":
            return f"budget reached: {what} spent {usd(spend.cost_usd)} of {usd(limit.amount)}"
        return f"budget reached: {what} used {tokens(spend.tokens)} of {tokens(limit.amount)} tokens"
    return None


def utc_midnight(now: float | None = None) -> float:
    """The Unix time of the last 00:00 UTC (Unix time has no leap seconds)."""
    now = time.time() if now is None else now
    return now - now % DAY


def live_costs(history: History, config: Config) -> list[tuple[Any, dict[str, Any]]]:
    """(run, its cost so far) for every running agent, from the end of its log.

    The cost dict is kanban.pricing.run_cost's: cost_usd None when not known yet.
    """
    from kanban.pricing import run_cost

    out = []
    for run in history.live_runs():
        try:
            preset = config.agent_for(run.role).preset
        except ValueError:
            preset = None
        out.append((run, run_cost(preset, getattr(run, "model", None), _log_tail(run.log),
                                  config.pricing)))
    return out


def _log_tail(path: str) -> str:
    from kanban.untrusted import read_capped  # the agent may have made its log a FIFO or a link

    return read_capped(Path(path), LOG_TAIL, tail=True)


def _live_spend(live: list[tuple[Any, dict[str, Any]]], *, task: str | None = None,
                since: float | None = None) -> Spend:
    total = Spend()
    for run, cost in live:
        if (task is not None and run.task != task) or (since is not None and run.started < since):
            continue
        total += Spend.of(cost.get("cost_usd"), cost.get("tokens"))
    return total


def budget_reason(history: History, config: Config, task_id: str | None, run_started_at: float | None,
                  *, now: float | None = None) -> str | None:
    """Why no new agent may start on `task_id` now, or None when every budget allows it.

    run_started_at: when the current `kanban run` began (time.time()), or None
    when there is none (a lone `kanban tick`): the run budget is then not checked.
    task_id None: an agent of no task (the planner): the task budget is not checked.
    """
    limits = config.budget
    if not limits:
        return None
    live = live_costs(history, config)
    spend_task = spend_run = spend_day = None
    if limits.task and task_id is not None:
        spend_task = history.spend(task=task_id) + _live_spend(live, task=task_id)
    if limits.run and run_started_at is not None:
        spend_run = history.spend(since=run_started_at) + _live_spend(live, since=run_started_at)
    if limits.day:
        midnight = utc_midnight(now)
        spend_day = history.spend(since=midnight) + _live_spend(live, since=midnight)
    return blocked(limits, spend_task, spend_run, spend_day, task_id or "this task")


# --- the `budget` event ------------------------------------------------------------------

BUDGET_EVENT = "budget"


def record_budget(history: History, task_id: str, reason: str) -> bool:
    """Record the `budget` event for a task held back, once: not again while nothing changed.

    True when it was recorded; False when the task's latest budget event, with no
    agent of it spawned since, already says the same.
    """
    row = history.db.execute(
        "SELECT kind, detail FROM events WHERE task=? AND kind IN (?, 'spawned') ORDER BY id DESC LIMIT 1",
        (task_id, BUDGET_EVENT)).fetchone()
    if row and row[0] == BUDGET_EVENT and row[1] == reason:
        return False
    history.event(task_id, BUDGET_EVENT, detail=reason)
    return True


def budget_notice(history: History, *, since: float | None = None, now: float | None = None) -> str | None:
    """The latest budget that holds work back, for `kanban status`, or None.

    From the `budget` events of today (UTC) or, when `since` (the current run's
    start) is earlier, of the current run; a task's event no longer counts once an
    agent of that task was spawned after it. When several tasks are held, the
    line says how many.
    """
    start = utc_midnight(now)
    if since is not None:
        start = min(start, since)
    rows = history.db.execute(
        "SELECT e.task, e.detail FROM events e WHERE e.kind=? AND e.time>=? AND NOT EXISTS"
        " (SELECT 1 FROM events s WHERE s.task=e.task AND s.kind='spawned' AND s.id>e.id)"
        " ORDER BY e.id DESC", (BUDGET_EVENT, start)).fetchall()
    if not rows:
        return None
    held = {task for task, _ in rows}
    reason = rows[0][1] or "budget reached"
    if len(held) > 1:
        reason += f" ({len(held)} tasks waiting)"
    return reason
