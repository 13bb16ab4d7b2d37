"""What happened, in words a person uses: the shape shared by the engine, the merge queue,
the live view and notifications.

A pass of the engine or of the merge queue returns its happenings as data; the view
prints their text, `[notify]` acts on their kind. The queue's current state is a value
the view can read at any moment (a verification may run for minutes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Kinds a person may want to be told about: `[notify]` runs its command on these.
ESCALATED = "escalated"  # a task waits for a person
QUEUE_BLOCKED = "queue_blocked"  # the merge queue stopped or is blocked (dirty checkout, push failing, ...)
BUDGET_REACHED = "budget_reached"  # a [budget] limit stopped new agents
RUN_FINISHED = "run_finished"  # `kanban run` ended (its summary is the text)
NOTIFY_KINDS = (ESCALATED, QUEUE_BLOCKED, BUDGET_REACHED, RUN_FINISHED)


@dataclass(frozen=True)
class Happening:
    kind: str  # one of NOTIFY_KINDS, or: started, retrying, timed_out, approved, rejected, tested,
    # test_failed, merged, verify_failed, conflict, repaired, problem, pushed, info,
    # committed (a task agent's work is done and goes to review)
    text: str  # one line, in words: "TASK-5 timed out after 15m; retrying"
    task: str = ""  # "" when it concerns no single task
    title: str = ""


@dataclass
class QueueState:
    """What the merge queue is doing now: idle, merging, verifying, or blocked (and why)."""

    state: str = "idle"  # idle | merging | verifying | blocked
    tasks: tuple[str, ...] = ()
    since: float = field(default_factory=time.time)
    why: str = ""  # for blocked

    def describe(self, now: float | None = None) -> str:
        from kanban.output import human_duration

        who = " + ".join(self.tasks)
        if self.state == "verifying":
            return f"verifying {who} for {human_duration((now or time.time()) - self.since)}"
        if self.state == "merging":
            return f"merging {who}"
        if self.state == "blocked":
            return f"blocked: {self.why}"
        return "idle"
