#!/usr/bin/env python3
"""The merge queue beside the pool, and speculative verification: figures side by side.

1. `kanban run`, 24 tasks of scripted agents (0.2-2.0 s per role, seeded, each lasting that
   long from its own exec: its start-up and commit fall inside it), pool 6, serial
   queue with a 0.5 s verify: makespan / lower bound, with the queue beside the pool (this
   kanban) and, in the same run, with the queue blocking the loop as it used to (every drain
   waits for its verifications). Lower bound (issue 12): the largest of agent time / pool,
   the fastest task's three roles + 24 verifications, the slowest task's three roles + one.
2. `kanban merge-queue`, 12 ready tasks, a 2 s verify, one bad task among them:
   `parallel = 1` against `parallel = 3`, wall time and ratio; main never holds the bad one.

    python bench/queue_beside_pool.py [--tasks 24] [--verify 0.5] [--queue-tasks 12] [--queue-verify 2.0]

Timing is this machine's (shared, noisy): read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

ROLES = ("task", "reviewer", "tester")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def sealed_env(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[user]\n\tname = bench\n\temail = b@e\n")
    os.environ.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(home / ".gitconfig"), GIT_CONFIG_NOSYSTEM="1")


def run_bench(tmp: Path, n: int, verify: float, blocking: bool, seed: int = 7) -> dict:
    from agents_kit import make_project, task_md

    import kanban.commands.run as run_mod

    rng = random.Random(seed)
    plan = {f"TASK-{i}": [round(rng.uniform(0.2, 2.0), 2) for _ in ROLES] for i in range(1, n + 1)}
    repo = tmp / ("blocking" if blocking else "beside") / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# bench\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    tasks = "".join(task_md(t, f"Add module {t}", files=f"src/{t}.py") for t in plan)
    verify_argv = ["sleep", str(verify)]  # a 0.5 s verify lasts 0.5 s (a Python one: 20 ms more, its start-up)
    p = make_project(repo, repo.parent / "kit", tasks, pool_size=6, timeout="60s",
                     extra_toml=f"\n[merge]\nverify = {json.dumps(verify_argv)}\n")
    rules = []
    for t, durations in plan.items():
        for role, d in zip(ROLES, durations):
            # The agent lasts D from its own exec, its Python start-up and commit included (as in
            # bench/schedule.py): a 0.2 s agent is 0.2 s, and the lower bound counts no more.
            steps = ([["commit", f"src/{t}.py"]] if role == "task" else []) + [["last", d]]
            rules.append({"task": t, "role": role, "steps": steps})
    p.set_rules(rules)
    original, thread = run_mod.drain, run_mod.QUEUE_THREAD
    if blocking:  # the old loop: each drain inside it, waiting for its verifications
        run_mod.drain = lambda engine, **kw: original(engine, **{**kw, "wait": True})
        run_mod.QUEUE_THREAD = False
    try:
        began = time.monotonic()
        code = run_mod.run(p.root, no_merge=False, live=False)
        makespan = time.monotonic() - began
    finally:
        run_mod.drain, run_mod.QUEUE_THREAD = original, thread
        p.kill_everything()
    chains = [sum(d) for d in plan.values()]
    lower = max(sum(chains) / 6, min(chains) + n * verify, max(chains) + verify)
    done = sum(1 for t in plan if f"{t}:" in (p.root / "CHANGELOG.md").read_text())
    return {"makespan": makespan, "lower": lower, "ratio": makespan / lower, "code": code, "done": done}


def queue_bench(tmp: Path, n: int, verify: float, parallel: int) -> dict:
    root = tmp / f"queue-p{parallel}" / "repo"
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# bench\n")
    from kanban.commands.init import init

    init(root, quiet=True)
    script = root.parent / "verify.py"
    script.write_text(f"import os, sys, time\ntime.sleep({verify!r})\n"
                      "sys.exit(1 if any(f.startswith('BAD') for f in os.listdir('.')) else 0)\n")
    (root / "kanban.toml").write_text(f'main_branch = "main"\n[agent]\npreset = "demo"\n[merge]\n'
                                      f'verify = {json.dumps([sys.executable, str(script)])}\nparallel = {parallel}\n')
    git(root, "add", "-A")
    git(root, "add", "-f", "TESTING.md")
    git(root, "commit", "-q", "-m", "initial")
    bad = n // 2
    entries = []
    for i in range(1, n + 1):
        wt = root / ".worktrees" / f"TASK-{i}"
        git(root, "worktree", "add", "-q", "-b", f"kanban/TASK-{i}", str(wt), "main")
        (wt / ("BAD" if i == bad else f"mod{i}.py")).write_text("x\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", f"TASK-{i}")
        entries.append(f"\n## TASK-{i}: Add module {i}\npriority: {i}\nstatus: ready to merge\n")
    with open(root / "TESTING.md", "a") as out:
        out.write("".join(entries))
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kanban", "-C", str(root), "merge-queue", "--json"],
                          capture_output=True, text=True)
    wall = time.monotonic() - began
    out = json.loads(proc.stdout)
    main_files = git(root, "ls-tree", "-r", "--name-only", "main").split()
    return {"wall": wall, "merged": len(out["merged"]), "failed": out["failed"], "bad_in_main": "BAD" in main_files}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--verify", type=float, default=0.5)
    ap.add_argument("--queue-tasks", type=int, default=12)
    ap.add_argument("--queue-verify", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kanban-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sealed_env(tmp / "home")
        print(f"1. kanban run: {args.tasks} tasks, 0.2-2.0 s per role, pool 6, serial queue, {args.verify} s verify")
        rows = {"beside the pool (now)": run_bench(tmp, args.tasks, args.verify, blocking=False),
                "blocking the loop (before)": run_bench(tmp, args.tasks, args.verify, blocking=True)}
        for name, r in rows.items():
            print(f"   {name:28} makespan {r['makespan']:6.1f} s  lower bound {r['lower']:5.1f} s  "
                  f"ratio {r['ratio']:.2f}  merged {r['done']}/{args.tasks}  exit {r['code']}")
        a, b = rows["beside the pool (now)"], rows["blocking the loop (before)"]
        print(f"   blocking / beside: {b['makespan'] / a['makespan']:.2f}x   (target: ratio <= 1.15)")
        print(f"2. kanban merge-queue: {args.queue_tasks} ready tasks, one bad, {args.queue_verify} s verify")
        q = {p: queue_bench(tmp, args.queue_tasks, args.queue_verify, p) for p in (1, 3)}
        for p, r in q.items():
            print(f"   parallel = {p}: {r['wall']:6.1f} s  merged {r['merged']}  sent back {r['failed']}  "
                  f"bad in main: {r['bad_in_main']}")
        print(f"   parallel 1 / parallel 3: {q[1]['wall'] / q[3]['wall']:.2f}x   (target: >= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
