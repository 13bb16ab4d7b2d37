"""A markdown report of what happened, from the history: runs, failures, merges."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from kanban import paths
from kanban.history import History

LOG_LINES = 8
ROLES = ("task", "reviewer", "tester", "planner")  # the planner: `kanban plan`'s runs, of no task


def build_report(root: Path) -> str:
    if not paths.history_db(root).exists():
        return "# kanban report\n\nNo history yet: nothing has run in this repository.\n"
    with History(root, readonly=True) as history:  # a report never writes: works on a read-only disk
        runs = history.runs()
        events = history.events()
        verifications = history.verifications()
    out = ["# kanban report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    out += _totals(runs, events)
    out += _per_role(runs)
    out += _per_task(runs, events)
    out += _cost_per_role(runs)
    out += _runs(runs)
    out += _failures(root, runs)
    out += _verify_failures(verifications)
    out += _merges(events, verifications)
    return "\n".join(out).rstrip() + "\n"


def _totals(runs, events) -> list[str]:
    finished = [r for r in runs if r.ended]
    merged = {e[1] for e in events if e[2] == "merged"}
    escalated = {e[1] for e in events if e[2] == "escalated"}
    busy = sum(r.ended - r.started for r in finished)
    span = (max(r.ended for r in finished) - min(r.started for r in finished)) if finished else 0.0
    priced = [r for r in runs if r.cost_usd is not None]
    unpriced = [r for r in runs if r.cost_usd is None and r.tokens]
    plans = sum(1 for r in runs if r.task == paths.PLAN_TASK)
    lines = ["## Totals", "",
             f"- tasks: {len({r.task for r in runs if r.task != paths.PLAN_TASK})} worked on, {len(merged)} merged, "
             f"{len(escalated)} escalated" + (f"; plans: {plans} planner run{'s' if plans != 1 else ''}" if plans
                                              else ""),
             f"- agent runs: {len(runs)} ({sum(1 for r in finished if r.outcome == 'ok')} succeeded, "
             f"{sum(1 for r in finished if r.outcome != 'ok')} failed, {len(runs) - len(finished)} running)",
             f"- timeouts: {sum(r.timed_out for r in runs)}, stalls: {sum(r.stalled for r in runs)}",
             f"- agent time: {_dur(busy)} over a span of {_dur(span)}"]
    lost = [r for r in runs if r.infra_failures]
    if lost:  # the executor's infrastructure (a Ray node that died, a lost job): tried again, never a strike
        lines.append(f"- infrastructure failures: {sum(r.infra_failures for r in lost)} tries lost by the cluster "
                     f"in {len(lost)} run(s), each tried again on another node (no strike)")
    if priced or unpriced:
        lines.append(f"- cost: {_usd(sum(r.cost_usd for r in priced))} over {_tokens_in_out(runs)}")
    if unpriced:
        lines.append(f"- unpriced runs (tokens but no price for their model): {len(unpriced)};"
                     " add the model under [pricing] in kanban.toml")
    return lines + [""]


def _usd(amount: float) -> str:
    from kanban.budget import usd

    return usd(amount)


def _count(n: int | None) -> str:
    from kanban.budget import tokens

    return tokens(n) if n else "0"


def _tokens_in_out(runs) -> str:
    total = sum(r.tokens or 0 for r in runs)
    split = [r for r in runs if r.input_tokens is not None or r.output_tokens is not None]
    text = f"{_count(total)} tokens"
    if split:
        text += (f" ({_count(sum(r.input_tokens or 0 for r in split))} in,"
                 f" {_count(sum(r.output_tokens or 0 for r in split))} out)")
    return text


def _cost_of(runs) -> str:
    """The dollars of some runs; "-" when none is priced, a "+" when some are not."""
    priced = [r.cost_usd for r in runs if r.cost_usd is not None]
    if not priced:
        return "unpriced" if any(r.tokens for r in runs) else "-"
    return _usd(sum(priced)) + ("+" if any(r.cost_usd is None and r.tokens for r in runs) else "")


def _cost_per_role(runs) -> list[str]:
    lines = ["## Cost per role", "", "| role | runs | cost | tokens | in | out |",
             "| --- | --- | --- | --- | --- | --- |"]
    for role in ROLES:
        rs = [r for r in runs if r.role == role]
        if rs:
            lines.append(f"| {role} | {len(rs)} | {_cost_of(rs)} | {_count(sum(r.tokens or 0 for r in rs))} "
                         f"| {_count(sum(r.input_tokens or 0 for r in rs))} "
                         f"| {_count(sum(r.output_tokens or 0 for r in rs))} |")
    lines += ["", "A cost ending in + leaves out runs whose model has no price.", ""]
    return lines


def _runs(runs) -> list[str]:
    lines = ["## Runs", "", "| task | role | attempt | model | outcome | time | tokens (in/out) | cost |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(runs, key=lambda r: (_task_key(r.task), r.id)):
        split = (f" ({_count(r.input_tokens)}/{_count(r.output_tokens)})"
                 if r.input_tokens is not None or r.output_tokens is not None else "")
        tokens = f"{_count(r.tokens)}{split}" if r.tokens is not None else "-"
        cost = _usd(r.cost_usd) if r.cost_usd is not None else ("unpriced" if r.tokens else "-")
        time_ = _dur(r.ended - r.started) if r.ended else "running"
        lines.append(f"| {r.task} | {r.role} | {r.attempt} | {r.model or '-'} | {r.outcome or 'running'} "
                     f"| {time_} | {tokens} | {cost} |")
    return lines + [""]


def _per_role(runs) -> list[str]:
    by_role = defaultdict(list)
    for r in runs:
        if r.ended:
            by_role[r.role].append(r.ended - r.started)
    lines = ["## Time per role", "", "| role | runs | total | mean | longest |", "| --- | --- | --- | --- | --- |"]
    for role in ROLES:
        times = by_role.get(role, [])
        if times:
            lines.append(f"| {role} | {len(times)} | {_dur(sum(times))} | {_dur(sum(times) / len(times))} "
                         f"| {_dur(max(times))} |")
    return lines + [""]


def _per_task(runs, events) -> list[str]:
    by_task = defaultdict(list)
    for r in runs:
        if r.task != paths.PLAN_TASK:  # the planner's runs are in the role tables, not a task's
            by_task[r.task].append(r)
    outcome = {}
    for e in events:
        if e[2] in ("merged", "escalated"):
            outcome[e[1]] = e[2]
        elif e[2] == "reset":
            outcome.pop(e[1], None)
    lines = ["## Tasks", "", "| task | attempts (task/review/test) | agent time | timeouts | cost | tokens | outcome |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task in sorted(by_task, key=_task_key):
        rs = by_task[task]
        attempts = "/".join(str(sum(1 for r in rs if r.role == role)) for role in ("task", "reviewer", "tester"))
        total = sum((r.ended or time.time()) - r.started for r in rs)
        lines.append(f"| {task} | {attempts} | {_dur(total)} | {sum(r.timed_out for r in rs)} "
                     f"| {_cost_of(rs)} | {_count(sum(r.tokens or 0 for r in rs))} "
                     f"| {outcome.get(task, 'in progress')} |")
    return lines + [""]


def _failures(root: Path, runs) -> list[str]:
    failed = [r for r in runs if r.ended and r.outcome != "ok"]
    if not failed:
        return ["## Failures", "", "None.", ""]
    lines = ["## Failures", ""]
    for r in failed:
        why = r.reason or ("timed out" if r.timed_out else "stalled" if r.stalled else "stopped" if r.cancelled
                           else f"exit {r.exit_code}" if r.exit_code is not None else f"signal {r.signal}")
        lines += [f"### {r.task} {r.role} attempt {r.attempt}: {why}", "", "```text"]
        lines += _tail(Path(r.log)) or ["(empty log)"]
        lines += ["```", ""]
    return lines


def _verify_failures(verifications) -> list[str]:
    """Each `[merge] verify` run that did not pass, with the last lines of its own log."""
    # a discarded run is a speculation stopped because the merge under it changed: no failure
    failed = [v for v in verifications if v.ended is not None and v.outcome not in ("pass", "discarded")]
    if not verifications:
        return []
    if not failed:
        return ["## Verify failures", "", "None.", ""]
    lines = ["## Verify failures", ""]
    for v in failed:
        lines += [f"### {verification_title(v)}: {verification_how(v)}", "", "```text"]
        lines += _tail(Path(v.log)) or [f"(empty or missing log: {_shown_path(v.log)})"]
        lines += ["```", ""]
    return lines


def _merges(events, verifications=()) -> list[str]:
    # One task, one line: the merge queue logs "merged" both as the transition and with the commit.
    merged = list(dict.fromkeys(e[1] for e in events if e[2] == "merged"))
    conflicts = [e for e in events if e[2] == "merge_conflict"]
    failed = [e for e in events if e[2] == "verify_failed"]
    lines = ["## Merge queue", "",
             f"- merged: {len(merged)}" + (f" ({', '.join(merged)})" if merged else ""),
             f"- conflicts sent back to testing: {len(conflicts)}",
             f"- post-merge check failures sent back to review: {len(failed)}"]
    finished = [v for v in verifications if v.ended is not None and v.outcome != "discarded"]
    if verifications:  # each run recorded with its own log
        passed = sum(1 for v in finished if v.outcome == "pass")
        flaky = list(dict.fromkeys(v.tasks for v in finished if v.try_ > 1 and v.outcome == "pass"))
        discarded = sum(1 for v in verifications if v.outcome == "discarded")
        repeats = sum(1 for v in verifications if v.try_ > 1)
        lines.append(f"- verification runs: {len(finished)} ({passed} passed, {len(finished) - passed} failed"
                     + (f", {repeats} repeat(s) of a failure" if repeats else "") + ")"
                     + (f", {len(verifications) - len(finished) - discarded} running"
                        if len(finished) + discarded < len(verifications) else ""))
        if discarded:
            lines.append(f"- speculations stopped because a merge ahead of them failed: {discarded}")
        if flaky:
            lines.append(f"- flaky (failed, then passed when run again): {', '.join(flaky)}")
    else:  # a history from before per-run verify records: the queue's events
        verifies = [e for e in events if e[2] == "verify"]
        passed = sum(1 for e in verifies if (e[5] or "").startswith("pass"))
        lines.append(f"- verification runs: {len(verifies)} ({passed} passed, {len(verifies) - passed} failed)")
    return lines + [""]


# --- how a run ended, in words (here and in `kanban logs`) ------------------------------------


def run_how(run, *, now: float | None = None, stall: float | None = None) -> str:
    """How an agent run or a `[test] command` run ended: "exit status 1 after 3m12s", "timed out
    after 15m", "stalled after 5m without output", "stopped by a person", "still running"."""
    from kanban.output import human_duration as dur
    from kanban.untrusted import clean

    if run.ended is None:
        return f"still running, {dur((now or time.time()) - run.started)} of {dur(run.timeout)}"
    took = dur(run.ended - run.started)
    reason = clean(run.reason or "", max_bytes=600, max_line=300).strip()
    if run.cancelled:
        return f"stopped by a person after {took}"
    if run.timed_out:
        return f"timed out after {dur(run.timeout)}"
    if run.stalled:
        if reason.startswith("gave up"):
            return f"{reason} (after {took})"
        return (f"stalled after {dur(stall)} without output" if stall else "stalled: its log stopped growing") \
            + f" (ran {took})"
    if run.outcome == "ok":
        return f"{'passed' if run.role == 'test' else 'succeeded'} after {took}"
    if run.exit_code not in (None, 0):
        base = f"exit status {run.exit_code}"
    elif run.signal:
        base = f"killed by signal {run.signal}"
    else:
        base = "failed"
    text = f"{base} after {took}"
    if reason and reason not in (base, f"exit {run.exit_code}"):
        text += f": {reason}"
    return text


def verification_title(v, task: str | None = None) -> str:
    """"verify of TASK-1 + TASK-2 at 1a2b3c4d5e", or for TASK's own page "verify at 1a2b3c4d5e with TASK-2";
    ", run again" for the run that repeats a failure (a flaky check)."""
    if task is None:
        text = f"verify of {' + '.join(v.task_ids()) or '(no task)'} at {v.sha[:10]}"
    else:
        others = [t for t in v.task_ids() if t != task]
        text = f"verify at {v.sha[:10]}" + (f" with {' + '.join(others)}" if others else "")
    return text + (", run again" if v.try_ > 1 else "")


def verification_how(v, *, now: float | None = None) -> str:
    """How a `[merge] verify` run ended: "passed after 2m", "failed: exit status 1 after 2m",
    "timed out after 15m", "could not start: ...", "still running"."""
    from kanban.output import human_duration as dur
    from kanban.untrusted import clean

    if v.ended is None:
        return f"still running, {dur((now or time.time()) - v.started)} so far"
    took = dur(v.ended - v.started)
    how = clean(v.how or "", max_bytes=600, max_line=300).strip()
    if v.outcome == "pass":
        return f"passed after {took}"
    if v.outcome in ("timeout", "error") and how:
        return how
    return f"failed: {how or (f'exit status {v.exit_code}' if v.exit_code is not None else v.outcome)} after {took}"


def _shown_path(path: str) -> str:
    from kanban.untrusted import clean

    return clean(path, max_bytes=600, max_line=300)


def _tail(path: Path) -> list[str]:
    """The log's last lines, as untrusted text: read capped from the end, escapes and controls removed."""
    from kanban.untrusted import clean, read_capped

    text = clean(read_capped(path, 64 * 1024, tail=True), max_bytes=64 * 1024)
    return [line.replace("```", "'''") for line in text.strip().splitlines()[-LOG_LINES:]]


def _task_key(task: str) -> tuple[str, int]:
    prefix, _, num = task.rpartition("-")
    return (prefix, int(num)) if num.isdigit() else (task, 0)


def _dur(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"
