#!/usr/bin/env python3
"""Issue 12's acceptance figures, all in one run, each beside its target.

Runs, one after the other on this machine (shared and noisy: every figure is a ratio of
two measurements taken in the same run, or a count):

  1. kanban run, 24 tasks of 0.2-2.0 s agents, pool 6, serial queue, 0.5 s verify:
     makespan / lower bound                                    (queue_beside_pool.py)
  2. kanban run, 100 tasks of 0.2 s agents, no verify: makespan / lower bound (many_tasks.py)
  3. cost per merge / the raw git floor, and per merge at 96 ready tasks / at 6 (merge_cost.py)
  4. idle kanban run with 6 sleeping agents: CPU-s per minute, and with 5,000 more tasks
                                                                (idle_cpu.py)
  5. one pick on a 10,000-task board minus one on a 10-task board  (board_scale.py)
  6. merge-queue, 12 ready tasks, one bad, 2 s verify: parallel 1 / parallel 3
                                                                (queue_beside_pool.py)
  7. pick and finish on a 50k-file repository with warm worktrees, after the first;
     set-up runs                                                (warm_worktrees.py)

    python bench/targets.py [--skip 7] [--files 50000]

Each bench file also runs alone, with more detail. bench/crash_soak.py (200 trials per
merge mode) is not run here: it takes an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]


def quietly(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def makespan_24(tmp: Path) -> tuple[str, float, str, bool]:
    import queue_beside_pool as q

    r = quietly(q.run_bench, tmp / "m24", 24, 0.5, blocking=False)
    return ("kanban run, 24 tasks, 0.5 s verify: makespan / lower bound", r["ratio"], "<= 1.15",
            r["ratio"] <= 1.15 and r["done"] == 24)


def makespan_100(tmp: Path) -> tuple[str, float, str, bool]:
    import many_tasks

    import kanban.commands.run as run_mod

    n, role, pool = 100, 0.2, 6
    p, ids = many_tasks.build(tmp / "m100", n, role, pool)
    try:
        began = time.monotonic()
        code = quietly(run_mod.run, p.root, no_merge=False, live=False)
        makespan = time.monotonic() - began
    finally:
        p.kill_everything()
    changelog = (p.root / "CHANGELOG.md").read_text()
    merged = sum(1 for t in ids if f"{t}:" in changelog)
    chain = 3 * role
    ratio = makespan / max(n * chain / pool, chain)
    return ("kanban run, 100 tasks of 0.2 s, no verify: makespan / lower bound", ratio, "<= 1.5",
            ratio <= 1.5 and merged == n and code == 0)


def merge_cost(tmp: Path) -> list[tuple[str, float, str, bool]]:
    import merge_cost as mc

    rows = quietly(mc.figures, tmp / "mc", [6, 96])
    ratio = statistics.mean(k / f for k, f, _ in rows.values())
    scale = rows[96][0] / rows[6][0]
    return [("cost per merge / raw git floor (6 and 96 ready)", ratio, "<= 1.5", ratio <= 1.5),
            ("per-merge cost at 96 ready / at 6", scale, "<= 1.2", scale <= 1.2)]


def idle(tmp: Path) -> list[tuple[str, float, str, bool]]:
    import idle_cpu

    small = quietly(idle_cpu.measure, tmp / "idle", 0, 20.0, 90.0)
    big = quietly(idle_cpu.measure, tmp / "idle", 5000, 20.0, 90.0)
    ratio = big["kanban"] / small["kanban"] if small["kanban"] else float("inf")
    return [("idle run, 6 agents asleep: kanban CPU-s per minute", small["kanban"], "<= 0.5", small["kanban"] <= 0.5),
            ("the same with 5,000 more tasks / without", ratio, "<= 1.5", ratio <= 1.5)]


def pick(tmp: Path) -> tuple[str, float, str, bool]:
    import board_scale

    small = quietly(board_scale.read_figures, 10, 5)["pick"]
    big = quietly(board_scale.read_figures, 10000, 5)["pick"]
    return ("one pick: 10,000-task board minus 10-task board (s)", big - small, "<= 0.1", big - small <= 0.1)


def parallel(tmp: Path) -> tuple[str, float, str, bool]:
    import queue_beside_pool as q

    one = quietly(q.queue_bench, tmp / "par", 12, 2.0, 1)
    three = quietly(q.queue_bench, tmp / "par", 12, 2.0, 3)
    ratio = one["wall"] / three["wall"]
    ok = ratio >= 2.5 and not one["bad_in_main"] and not three["bad_in_main"]
    return ("merge-queue 12 ready, one bad, 2 s verify: parallel 1 / parallel 3", ratio, ">= 2.5 (bad kept off)", ok)


def warm(tmp: Path, files: int) -> list[tuple[str, float, str, bool]]:
    import warm_worktrees as w

    root = tmp / "warm" / "repo"
    quietly(w.build, root, files)
    counter = tmp / "warm" / "setup-count"
    picks, finishes, _ = quietly(w.run, root, True, 5, counter)
    worst = max(picks[1:] + finishes[1:])
    runs = len(counter.read_text())
    return [(f"warm worktrees, {files} files: worst pick/finish after the first (s)", worst, "<= 0.3", worst <= 0.3),
            ("warm worktrees: set-up runs for 5 tasks in one worktree", float(runs), "== 1", runs == 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip", default="", help="comma-separated numbers of the figures to skip")
    ap.add_argument("--files", type=int, default=50_000, help="files in the warm-worktree repository")
    args = ap.parse_args()
    skip = {int(s) for s in args.skip.split(",") if s}
    rows: list[tuple[str, float, str, bool]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kanban-targets-") as name:
        tmp = Path(name)
        from queue_beside_pool import sealed_env

        sealed_env(tmp / "home")
        steps = [(1, lambda: [makespan_24(tmp)]), (2, lambda: [makespan_100(tmp)]), (3, lambda: merge_cost(tmp)),
                 (4, lambda: idle(tmp)), (5, lambda: [pick(tmp)]), (6, lambda: [parallel(tmp)]),
                 (7, lambda: warm(tmp, args.files))]
        for number, step in steps:
            if number in skip:
                continue
            print(f"running {number} ...", file=sys.stderr, flush=True)
            rows += step()
    width = max(len(r[0]) for r in rows)
    print(f"issue 12 targets ({time.monotonic() - began:.0f} s on this machine)\n")
    print(f"  {'figure':{width}}  {'value':>8}  {'target':<22} ")
    for what, value, target, ok in rows:
        print(f"  {what:{width}}  {value:8.2f}  {target:<22} {'met' if ok else 'NOT met'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
