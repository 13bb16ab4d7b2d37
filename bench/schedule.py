#!/usr/bin/env python3
"""Scheduling benchmark: how close does `kanban run` get to the ideal makespan?

60 independent tasks (no `depends`, no `files`) go through the three roles
(task agent -> reviewer -> tester) with scripted agents of deterministic
pseudo-random durations (0.2-2 s per task and role, seeded), pool of 6. The
agent is a small Python script written into a temp dir at run time; it
sleeps its planned duration (counted from its own process start, so Python
start-up is not charged to kanban) and, as task agent, writes a file and
commits it.

Reported:
  * makespan of `kanban run --no-merge` (in-process `run(root, no_merge=True,
    live=False)` by default, `--subprocess` for `python -m kanban -C ROOT run
    --no-merge`), checked: every task `ready to merge` in TESTING.md, 180 runs,
    all ok;
  * lower bound = max(total planned agent time / pool, longest per-task
    chain), the ratio makespan / lower bound, and slot utilisation (history
    runs table: sum(ended - started) / (pool x makespan)), plus the same
    with the agents' own measured lifetimes;
  * an ideal zero-overhead greedy list schedule (kanban's policy: testers,
    then reviewers, then picks), simulated;
  * a wave baseline ("start six, wait for all six, repeat"), really run with
    `sleep` processes (role by role: all task-agent runs, then all reviews,
    then all tests), and simulated (per-task waves are the same waves in
    another order, so the same makespan);
  * where the time between one agent's exit and the next agent's start on a
    slot goes, the per-handover overhead the target allows, and (in-process
    only) the engine's CPU time and its wall time per operation.

Usage: python bench/schedule.py [--tasks 60] [--pool 6] [--seed 7]
                                [--subprocess] [--sim-waves] [--keep]
Exit status: 0 target met, 1 target missed or a check failed. Timings are
wall-clock: run it on an otherwise idle machine (the load average is printed).

Why no dependency-chain scenario: `depends` means "merged first" (DESIGN.md
section 2), and `--no-merge` never merges, so a dependent task would never be
picked. A chain scenario needs the merge queue in the loop and a different
lower bound; this benchmark keeps to the well-defined case.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROLES = ("task", "reviewer", "tester")
TARGET = 1.15

AGENT_SCRIPT = r'''
"""Scripted bench agent: sleep the planned time; as task agent, commit a file first."""
import json, os, subprocess, sys, time

t_exec = time.time()


def proc_start_wall():
    # Our own start, from /proc (clock ticks since boot), as wall-clock time.
    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    ticks = int(data[data.rindex(b")") + 1:].split()[19])
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


t0 = proc_start_wall()
plan = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "plan.json")))
task, role = os.environ["KANBAN_TASK_ID"], os.environ["KANBAN_ROLE"]
attempt = os.environ.get("KANBAN_ATTEMPT", "1")
assert os.path.exists(sys.argv[1]), "prompt file missing"
planned = plan["durations"][task][role]
if role == "task":
    name = f"bench_{task}.txt"
    with open(name, "w") as f:
        f.write(f"{task} done\n")
    for args in (["git", "add", name], ["git", "commit", "-q", "-m", f"{task}: bench work"]):
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL, capture_output=True)
left = t0 + planned - time.time()
if left > 0:
    time.sleep(left)
t_exit = time.time()
with open(os.path.join(plan["timing_dir"], f"{task}.{role}.{attempt}.json"), "w") as f:
    json.dump({"proc_start": t0, "exec": t_exec, "exit": t_exit, "planned": planned}, f)
'''


# -- the plan ------------------------------------------------------------------------


def make_plan(n: int, seed: int, lo: float, hi: float) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    return {f"TASK-{i}": {role: round(rng.uniform(lo, hi), 3) for role in ROLES} for i in range(1, n + 1)}


def lower_bound(plan: dict, pool: int) -> tuple[float, float, float]:
    total = sum(sum(d.values()) for d in plan.values())
    chain = max(sum(d.values()) for d in plan.values())
    return max(total / pool, chain), total, chain


def simulate_greedy(plan: dict, pool: int, overhead: float = 0.0) -> float:
    """Zero-overhead (or fixed per-start overhead) list schedule with kanban's policy:
    when a slot frees, start a tester, else a reviewer, else a task agent, else pick from TODO."""
    order = list(plan)  # TODO order
    todo = list(order)
    waiting: dict[str, list[str]] = {"tester": [], "reviewer": [], "task": []}
    running: list[tuple[float, str, str]] = []  # (end, task, role)
    now = 0.0
    nxt = {"task": "reviewer", "reviewer": "tester"}
    while todo or running or any(waiting.values()):
        while len(running) < pool:
            for role in ("tester", "reviewer", "task"):
                if waiting[role]:
                    tid = waiting[role].pop(0)
                    break
            else:
                if not todo:
                    break
                tid, role = todo.pop(0), "task"
            running.append((now + overhead + plan[tid][role], tid, role))
        running.sort()
        end, tid, role = running.pop(0)
        now = end
        if role in nxt:
            waiting[nxt[role]].append(tid)
    return now


def budget(plan: dict, pool: int, lb: float) -> float:
    """The largest per-start overhead with which the greedy schedule still meets the target."""
    lo, hi = 0.0, 2.0
    if simulate_greedy(plan, pool) > TARGET * lb:
        return 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if simulate_greedy(plan, pool, mid) <= TARGET * lb else (lo, mid)
    return lo


def simulate_waves(plan: dict, pool: int) -> float:
    """Sum of the longest run per wave. Role by role (all task runs, then all reviews, then
    all tests) and per task (six tasks through their 3 stages, then the next six) are the
    same waves in another order, so they have the same makespan."""
    ids = list(plan)
    batches = [ids[i:i + pool] for i in range(0, len(ids), pool)]
    return sum(max(plan[t][role] for t in b) for role in ROLES for b in batches)


def run_waves(plan: dict, pool: int) -> float:
    """Really run it: launch POOL `sleep`s, wait for all, repeat; task runs, then reviews, then tests."""
    ids = list(plan)
    t0 = time.monotonic()
    for role in ROLES:
        for i in range(0, len(ids), pool):
            procs = [subprocess.Popen(["sleep", f"{plan[t][role]:.3f}"]) for t in ids[i:i + pool]]
            for p in procs:
                p.wait()
    return time.monotonic() - t0


# -- the repository ------------------------------------------------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def build_repo(tmp: Path, plan: dict, pool: int) -> Path:
    from kanban.commands.init import init

    root = tmp / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "kanban bench")
    git(root, "config", "user.email", "bench@kanban.invalid")
    (root / "README.md").write_text("bench repository\n")
    command = json.dumps([sys.executable, str(tmp / "agent.py"), "{prompt_file}"])
    (root / "kanban.toml").write_text(
        'main_branch = "main"\n'
        f"pool_size = {pool}\n\n"
        "[agent]\n"
        f"command = {command}\n"
        'timeout = "60s"\n'
        'stall = "60s"\n'
        'kill_grace = "1s"\n'
    )
    entries = "".join(f"## {tid}: Bench task {tid.split('-')[1]}\n\nScripted bench work.\n\n" for tid in plan)
    (root / "TODO.md").write_text("# TODO\n\n" + entries)
    with contextlib.redirect_stdout(io.StringIO()):
        init(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench repository")
    return root


# -- instrumentation (in-process run only) -----------------------------------------------


class Probe:
    """Inclusive wall time and call count per wrapped function."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.wait_results = {"woke": 0, "timed out": 0}
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, label: str | None = None) -> None:
        original = getattr(owner, attr)
        label = label or attr
        self.total[label] += 0.0
        self.calls[label] += 0

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def install(self) -> None:
        from kanban import agents, engine, history, runner
        from kanban import git as kgit

        E = engine.Engine
        self.wrap(E, "tick", "Engine.tick (one whole pass)")
        self.wrap(E, "_assign_new_ids", "  _assign_new_ids")
        self.wrap(E, "_reap", "  _reap (poll live runs, finish the ended)")
        self.wrap(E, "_finish", "    _finish (judge + transition + history)")
        self.wrap(E, "_judge", "      _judge (git rev-parse HEAD)")
        self.wrap(E, "apply", "    Engine.apply (any transition, incl. picks)")
        self.wrap(engine, "update", "      store.update (locked board write)")
        self.wrap(E, "_notice_person_resets", "  _notice_person_resets")
        self.wrap(E, "_fill", "  _fill")
        self.wrap(E, "_plan", "    _plan (load board + schedule)")
        self.wrap(E, "_start", "    _start (one agent)")
        self.wrap(agents, "ensure_worktree", "      ensure_worktree")
        self.wrap(kgit, "add_worktree", "        git worktree prune + add")
        self.wrap(kgit, "merge_main_into", "      git merge main (tester)")
        self.wrap(agents, "prompt_values", "      prompt_values (git diff / ls-files)")
        self.wrap(engine, "render_role", "      render_role")
        self.wrap(history.History, "port_for", "      history.port_for")
        self.wrap(history.History, "start_run", "      history.start_run")
        self.wrap(runner.LocalRunner, "submit", "      runner.submit (spawn supervisor)")
        self.wrap(runner, "_await_start", "        of which: wait for agent.json")
        self.wrap(E, "_load", "Engine._load (parse board; inside the above)")
        self.wrap(history.History, "live_runs", "history.live_runs (inside and outside)")
        self.wrap(history.History, "event", "history.event (inside the above)")
        self.wrap(kgit, "run", "git.run (every git call, inside the above)")
        self.wrap(kgit, "run_status", "git.run_status (inside the above)")

        original_wait = runner.LocalRunner.wait_any
        probe = self

        def wait_any(self_, run_dirs, timeout):
            t = time.perf_counter()
            done = original_wait(self_, run_dirs, timeout)
            probe.total["runner.wait_any (loop idle)"] += time.perf_counter() - t
            probe.calls["runner.wait_any (loop idle)"] += 1
            probe.wait_results["woke" if done else "timed out"] += 1
            return done

        runner.LocalRunner.wait_any = wait_any
        self._undo.append((runner.LocalRunner, "wait_any", original_wait))

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


# -- running kanban -----------------------------------------------------------------------


def run_kanban(root: Path, subprocess_mode: bool, probe: Probe | None, log: Path) -> tuple[float, float, dict]:
    """(wall-clock start, makespan, CPU seconds used) of one `kanban run --no-merge`."""
    import resource

    def cpu(who):
        u = resource.getrusage(who)
        return u.ru_utime + u.ru_stime

    self0, kids0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    if subprocess_mode:
        with open(log, "w") as out:
            t_wall, t0 = time.time(), time.monotonic()
            code = subprocess.call([sys.executable, "-m", "kanban", "-C", str(root), "run", "--no-merge"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
    else:
        from kanban.commands.run import run

        if probe:
            probe.install()
        try:
            with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                t_wall, t0 = time.time(), time.monotonic()
                code = run(root, no_merge=True, live=False)
                elapsed = time.monotonic() - t0
        finally:
            if probe:
                probe.uninstall()
    if code != 0:
        raise SystemExit(f"kanban run exited {code}; see {log}")
    # In-process: "self" is the engine; reaped children are supervisors and the agents they
    # waited for. As a subprocess, the engine is a child, so everything is in "children".
    return t_wall, elapsed, {"self": cpu(resource.RUSAGE_SELF) - self0,
                             "children": cpu(resource.RUSAGE_CHILDREN) - kids0}


def check_outcome(root: Path, plan: dict) -> tuple[list[str], list]:
    """Problems found (empty = all good) and the runs table."""
    from kanban.history import History
    from kanban.model import Column
    from kanban.store import load_board

    problems = []
    tasks = load_board(root).tasks()
    ready = {t.id for t in tasks if t.column is Column.TESTING and t.ready and not t.escalated}
    missing = sorted(set(plan) - ready, key=lambda s: int(s.split("-")[1]))
    if missing:
        problems.append(f"{len(missing)} task(s) not 'ready to merge' in TESTING: {', '.join(missing[:10])}")
    testing_md = (root / "TESTING.md").read_text()
    n_ready = testing_md.count("status: ready to merge")
    if n_ready != len(plan):
        problems.append(f"TESTING.md has {n_ready} 'status: ready to merge' lines, expected {len(plan)}")
    with History(root) as h:
        runs = h.runs()
    if len(runs) != 3 * len(plan):
        problems.append(f"{len(runs)} runs in the history, expected {3 * len(plan)} (retries?)")
    bad = [f"{r.task}/{r.role}#{r.attempt}: {r.outcome}" for r in runs if r.outcome != "ok"]
    if bad:
        problems.append("runs not ok: " + "; ".join(bad[:10]))
    return problems, runs


def iso(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def analyse(runs: list, timing_dir: Path, pool: int, t_begin: float, root: Path) -> dict:
    """Per-run latencies and the slot turnaround (agent exit -> next agent start on that slot)."""
    from kanban.runner import LocalRunner

    rows = []
    for r in runs:
        timing = json.loads((timing_dir / f"{r.task}.{r.role}.{r.attempt}.json").read_text())
        result = json.loads((r.run_path(LocalRunner(root)) / "result.json").read_text())
        rows.append({
            "task": r.task, "role": r.role, "planned": timing["planned"],
            "hist_start": r.started, "hist_end": r.ended,
            "proc_start": timing["proc_start"], "exec": timing["exec"], "exit": timing["exit"],
            "result_end": iso(result["ended"]),
        })
    starts = sorted(x["proc_start"] for x in rows)
    exits = sorted(x["exit"] for x in rows)
    last_pick = max(x["proc_start"] for x in rows if x["role"] == "task")
    # While TODO still has tasks, a freed slot can always be refilled at once, so the
    # k-th exit frees the slot that the (k+pool)-th start fills.
    gaps = [starts[k + pool] - exits[k] for k in range(len(exits) - pool) if starts[k + pool] <= last_pick]

    def mean(key):
        return statistics.mean(key(x) for x in rows)

    return {
        "rows": rows,
        "gaps": gaps,
        "hist_busy": sum(x["hist_end"] - x["hist_start"] for x in rows),
        "agent_busy": sum(x["exit"] - x["proc_start"] for x in rows),
        "overrun": mean(lambda x: (x["exit"] - x["proc_start"]) - x["planned"]),
        "first_start": min(x["proc_start"] for x in rows) - t_begin,
        "A_exit_to_result": mean(lambda x: x["result_end"] - x["exit"]),
        "B_result_to_reap": mean(lambda x: x["hist_end"] - x["result_end"]),
        "D_histstart_to_proc": mean(lambda x: x["proc_start"] - x["hist_start"]),
        "last_exit": max(exits),
    }


# -- output --------------------------------------------------------------------------------


def line(label: str, value: str) -> None:
    print(f"  {label:<52} {value}")


def pct(x: float) -> str:
    return f"{100 * x:5.1f} %"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--pool", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min", type=float, default=0.2, dest="lo")
    ap.add_argument("--max", type=float, default=2.0, dest="hi")
    ap.add_argument("--subprocess", action="store_true", help="run `python -m kanban run` in a child process")
    ap.add_argument("--sim-waves", action="store_true", help="simulate the wave baseline instead of running it")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import kanban

    plan = make_plan(args.tasks, args.seed, args.lo, args.hi)
    lb, total, chain = lower_bound(plan, args.pool)
    tmp = Path(tempfile.mkdtemp(prefix="kanban-bench-"))
    timing_dir = tmp / "timing"
    timing_dir.mkdir()
    (tmp / "agent.py").write_text(AGENT_SCRIPT)
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps({"durations": plan, "timing_dir": str(timing_dir)}))

    print(f"kanban scheduling benchmark  (kanban from {Path(kanban.__file__).parent}, {os.cpu_count()} CPUs)")
    print(f"  {args.tasks} independent tasks x 3 roles, pool {args.pool}, durations U({args.lo}, {args.hi}) s, "
          f"seed {args.seed}; work dir {tmp}")
    try:
        root = build_repo(tmp, plan, args.pool)
        probe = None if args.subprocess else Probe()
        mode = "subprocess `python -m kanban run --no-merge`" if args.subprocess else \
            "in-process run(root, no_merge=True, live=False)"
        print(f"  running kanban ({mode}) ...", flush=True)
        load_before = os.getloadavg()[0]
        t_begin, makespan, cpu_used = run_kanban(root, args.subprocess, probe, tmp / "kanban-run.log")
        load_after = os.getloadavg()[0]
        problems, runs = check_outcome(root, plan)
        if problems:
            print("\nFAILED CHECK:\n  " + "\n  ".join(problems) + f"\n  (log: {tmp / 'kanban-run.log'})")
            args.keep = True
            return 1
        a = analyse(runs, timing_dir, args.pool, t_begin, root)

        greedy = simulate_greedy(plan, args.pool)
        sim_wave_roles = simulate_waves(plan, args.pool)
        if args.sim_waves:
            wave_real = None
        else:
            print("  running the wave baseline with real `sleep` processes ...", flush=True)
            wave_real = run_waves(plan, args.pool)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    gap_mean = statistics.mean(a["gaps"]) if a["gaps"] else 0.0
    print()
    print(f"Work: {3 * args.tasks} agent runs, total planned agent time {total:.2f} s")
    line("lower bound = max(total / pool, longest chain)",
         f"{lb:7.2f} s   (total/pool {total / args.pool:.2f} s, longest chain {chain:.2f} s)")
    print()
    print(f"  {'schedule':<52} {'makespan':>8}   {'/ LB':>6}   {'slot util.':>10}")
    rows = [
        ("ideal greedy list schedule (simulated, 0 overhead)", greedy, total / (args.pool * greedy)),
        ("kanban run --no-merge (measured)", makespan, a["hist_busy"] / (args.pool * makespan)),
    ]
    if wave_real is not None:
        rows.append(("waves of 6, role by role (real `sleep`s)", wave_real, total / (args.pool * wave_real)))
    rows += [
        ("waves of 6 (simulated; role by role = per task)", sim_wave_roles, total / (args.pool * sim_wave_roles)),
    ]
    for label, span, util in rows:
        print(f"  {label:<52} {span:7.2f} s  {span / lb:6.3f}x   {pct(util):>10}")
    ratio = makespan / lb
    verdict = "MET" if ratio <= TARGET else "MISSED"
    print()
    print(f"Target: kanban run within {TARGET:.2f}x of the lower bound: {ratio:.3f}x -> {verdict}")
    print()
    print("kanban run, details")
    line("all tasks 'ready to merge' in TESTING.md, runs ok", f"yes ({len(runs)} runs, no retries)")
    line("slot util. from history (ended-started, as kanban sees it)", pct(a["hist_busy"] / (args.pool * makespan)))
    line("slot util. from agent lifetimes (process start..exit)", pct(a["agent_busy"] / (args.pool * makespan)))
    line("slot util. of the planned work (total / (pool x makespan))", pct(total / (args.pool * makespan)))
    line("mean agent overrun of its plan (startup, git commit)", f"{1000 * a['overrun']:6.1f} ms")
    line("machine load average (1 min) before / after the run",
         f"{load_before:.1f} / {load_after:.1f} on {os.cpu_count()} CPUs (other work skews timings)")
    if not args.subprocess:
        line("engine CPU time (this process), per agent run",
             f"{cpu_used['self']:6.2f} s = {1000 * cpu_used['self'] / len(runs):.0f} ms "
             f"({100 * cpu_used['self'] / makespan:.0f} % of one CPU)")
        line("supervisors + agents + their git CPU time", f"{cpu_used['children']:6.2f} s")
    else:
        line("kanban + supervisors + agents CPU time", f"{cpu_used['children']:6.2f} s")
    line("start of run() -> first agent process" + (" (incl. interpreter start)" if args.subprocess else ""),
         f"{1000 * a['first_start']:6.1f} ms")
    line("last agent exit -> run() returns", f"{1000 * (t_begin + makespan - a['last_exit']):6.1f} ms")
    print()
    print("Slot turnaround: agent exit -> next agent start on the freed slot (while TODO is non-empty)")
    if a["gaps"]:
        q = statistics.quantiles(a["gaps"], n=10)
        line(f"mean / median / p90 / max over {len(a['gaps'])} handovers",
             f"{1000 * gap_mean:.0f} / {1000 * statistics.median(a['gaps']):.0f} / {1000 * q[-1]:.0f} / "
             f"{1000 * max(a['gaps']):.0f} ms")
    line("A  agent exit -> result.json (supervisor sweep)", f"{1000 * a['A_exit_to_result']:6.1f} ms (mean per run)")
    line("B  result.json -> reaped (history ended)", f"{1000 * a['B_result_to_reap']:6.1f} ms")
    line("D  history started -> agent process start (spawn)", f"{1000 * a['D_histstart_to_proc']:6.1f} ms")
    if a["gaps"]:
        line("C  the rest: engine work between reap and next start",
             f"{1000 * (gap_mean - a['A_exit_to_result'] - a['B_result_to_reap'] - a['D_histstart_to_proc']):6.1f} ms")
        runs_per_slot = 3 * args.tasks / args.pool
        line("predicted cost: turnaround x runs per slot",
             f"{gap_mean * runs_per_slot:6.2f} s  ({runs_per_slot:.0f} runs per slot)")
        line("greedy simulation with that overhead per start", f"{simulate_greedy(plan, args.pool, gap_mean):6.2f} s")
        line(f"turnaround budget to meet {TARGET:.2f}x (same simulation)",
             f"{1000 * budget(plan, args.pool, lb):6.0f} ms")
    else:
        line("(too few tasks for saturated handovers: use more tasks than the pool)", "")
    if probe:
        print()
        print(f"Engine time by operation (in-process, inclusive; wall {makespan:.2f} s)")
        print(f"  {'operation':<52} {'calls':>6} {'total s':>8} {'ms/call':>8} {'% wall':>7}")
        for label in probe.total:
            tot, n = probe.total[label], probe.calls[label]
            if not n:
                continue
            print(f"  {label:<52} {n:6d} {tot:8.2f} {1000 * tot / n:8.1f} {100 * tot / makespan:6.1f}%")
        w = probe.wait_results
        line("wait_any returns: woke on a result / timed out (0.5 s)", f"{w['woke']} / {w['timed out']}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
