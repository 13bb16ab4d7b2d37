#!/usr/bin/env python3
"""A pool of 24 on a local Ray cluster against the local executor, side by side (issue 13).

N tasks (default 100; no `depends`, no `files`), every role a short scripted agent (ROLE
seconds of sleep; the task agent then commits one file), no `[test] command`, no `[merge]
verify`: `kanban run` in-process with the merge queue, once with `[executor] kind = "local"`,
once with `kind = "ray"` on a real Ray cluster on this machine (tests/ray_kit.py: a head and
two workers of 12 `agent_slot`s each), the work travelling through a bare repository as the
shared remote. Both runs use pool POOL.

Printed for each: makespan, the lower bound (the largest of total agent time / pool and the
slowest task's three roles in a row), their ratio; and kanban's own overhead per run: the
CPU time of the kanban process (the engine, the merge queue, and for Ray its Jobs API calls)
and the wall time spent inside Engine.tick, per run, and the CPU of the children it waited for
(local: the supervisors with their agents, and git; Ray: git only, the agents run on the
cluster); then Ray's ratios over the local ones. The machine is shared and has few cores (Ray
starts a Python worker per job: on 2 cores that, not kanban, sets Ray's makespan), so read the
ratios.

    python bench/ray_pool.py [--tasks 100] [--role 1.0] [--pool 24] [--only local|ray]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from queue_beside_pool import ROLES, sealed_env  # noqa: E402 - found through the sys.path line above


def build(tmp: Path, n: int, role_time: float, pool: int, executor: str):
    import many_tasks

    return many_tasks.build(tmp, n, role_time, pool, timeout="300s", stall="300s", extra_toml=executor)


def measure(kind: str, n: int, role_time: float, pool: int, cluster=None) -> dict:
    import kanban.commands.run as run_mod
    from kanban.engine import Engine

    with tempfile.TemporaryDirectory(prefix=f"kanban-bench-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        sealed_env(tmp / "home")
        executor = ""
        if kind == "ray":
            remote = tmp / "runs.git"
            subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
            executor = (f'\n[executor]\nkind = "ray"\naddress = "{cluster.address}"\nremote = "{remote}"\n'
                        f'workspace = "{tmp / "workers"}"\npython = "{sys.executable}"\n')
        p, ids = build(tmp, n, role_time, pool, executor)
        in_tick = [0.0]
        original = Engine.tick

        def tick(self, *a, **kw):
            t = time.perf_counter()
            try:
                return original(self, *a, **kw)
            finally:
                in_tick[0] += time.perf_counter() - t

        Engine.tick = tick  # type: ignore[method-assign]
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                before = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
                began = time.monotonic()
                code = run_mod.run(p.root, no_merge=False, live=False)
                makespan = time.monotonic() - began
                after = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        finally:
            Engine.tick = original  # type: ignore[method-assign]
            p.kill_everything()
        changelog = (p.root / "CHANGELOG.md").read_text()
        merged = sum(1 for t in ids if f"{t}:" in changelog)
        runs = len(p.runs())
    cpu_self = (after[0].ru_utime - before[0].ru_utime) + (after[0].ru_stime - before[0].ru_stime)
    cpu_children = (after[1].ru_utime - before[1].ru_utime) + (after[1].ru_stime - before[1].ru_stime)
    chain = len(ROLES) * role_time
    lower = max(n * chain / pool, chain)
    return {"kind": kind, "makespan": makespan, "lower": lower, "ratio": makespan / lower, "merged": merged,
            "runs": runs, "code": code, "cpu_per_run": cpu_self / max(runs, 1),
            "children_cpu_per_run": cpu_children / max(runs, 1), "tick_per_run": in_tick[0] / max(runs, 1),
            "tail": out.getvalue()[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--role", type=float, default=1.0, help="seconds per role")
    ap.add_argument("--pool", type=int, default=24)
    ap.add_argument("--only", choices=("local", "ray"))
    args = ap.parse_args()
    results = []
    if args.only != "ray":
        results.append(measure("local", args.tasks, args.role, args.pool))
    if args.only != "local":
        from ray_kit import Cluster

        cluster = Cluster(workers=2, slots=(args.pool + 1) // 2).start()
        try:
            results.append(measure("ray", args.tasks, args.role, args.pool, cluster))
        finally:
            cluster.stop()
    print(f"{args.tasks} tasks, {args.role} s per role, pool {args.pool}, merge queue on, no verify; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'executor':9} {'makespan':>9} {'lower':>7} {'ratio':>6} {'merged':>7} {'runs':>5} "
          f"{'kanban CPU/run':>15} {'children CPU/run':>17} {'in tick/run':>12}")
    for r in results:
        print(f"{r['kind']:9} {r['makespan']:8.1f}s {r['lower']:6.1f}s {r['ratio']:6.2f} {r['merged']:7d} "
              f"{r['runs']:5d} {1000 * r['cpu_per_run']:13.0f}ms {1000 * r['children_cpu_per_run']:15.0f}ms "
              f"{1000 * r['tick_per_run']:10.0f}ms")
        if r["code"] != 0 or r["merged"] != args.tasks:
            print(f"  CHECK FAILED ({r['kind']}): exit {r['code']}; the run said:\n{r['tail']}")
    if len(results) == 2:
        local, ray = results
        print(f"ray / local: makespan ratio {ray['ratio'] / local['ratio']:.2f}x, kanban CPU per run "
              f"{ray['cpu_per_run'] / max(local['cpu_per_run'], 1e-9):.2f}x, "
              f"in tick per run {ray['tick_per_run'] / max(local['tick_per_run'], 1e-9):.2f}x")
    return 0 if all(r["code"] == 0 and r["merged"] == args.tasks for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
