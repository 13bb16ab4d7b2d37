#!/usr/bin/env python3
"""Many short tasks: `kanban run` with the merge queue, no verify (issue 12).

100 tasks (no `depends`, no `files`), every role a 0.2 s scripted agent (0.2 s from its own
exec, its start-up included; the task agent commits one file first), pool 6, no `[merge]
verify`: the merge queue merges each task into main as it becomes ready. In-process
`run(root, no_merge=False, live=False)`.

Printed: makespan, the lower bound (issue 12: the largest of total agent time / pool and
the slowest task's three roles in a row), their ratio beside the 1.5 target; and, counted
in-process, the git processes kanban started (per task, by subcommand, and how many of them
the merge queue's drains started), `load_board` calls (of which `read_board`) and
`store.update` calls, fsyncs, and the engine's wall time in its passes and drains and its CPU
time. With --profile FILE, a cProfile of the run is written there (read it with `python -m
pstats FILE`; --cpu: CPU time, not wall time), and its top functions by cumulative time are
printed; --sites counts the git processes by their caller.

    python bench/many_tasks.py [--tasks 100] [--role 0.2] [--pool 6] [--sites]
                               [--profile FILE [--cpu] [--top 40]]

Timing is this machine's (shared, noisy): read the ratio, and the counts, which are not.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from queue_beside_pool import ROLES, git, sealed_env  # noqa: E402 - found through the sys.path line above

TARGET = 1.5


class Counts:
    """Calls of the wrapped functions; git processes by subcommand, and inside a drain."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.git: Counter[str] = Counter()
        self.git_in_drain = 0
        self.in_drain = False
        self.sites: Counter[str] | None = None  # --sites: git processes by caller and subcommand
        self.wall: Counter[str] = Counter()  # seconds inside Engine.tick and the drains
        # CPU seconds of the git processes kanban waited for (children's rusage, taken around each call:
        # with the queue's drains on their own thread, a call's window may hold the other thread's git too)
        self.git_cpu = 0.0
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, label: str, git_args=None) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            self.calls[label] += 1
            if git_args is None:
                return original(*args, **kwargs)
            argv = git_args(*args, **kwargs)
            self.git[argv[0] if argv else "?"] += 1
            self.git_in_drain += self.in_drain or threading.current_thread().name == "kanban-merge-queue"
            if self.sites is not None:
                self.sites[f"{_caller()}: {' '.join(argv[:2 if argv[:1] == ['worktree'] else 1])}"] += 1
            before = _children_cpu()
            try:
                return original(*args, **kwargs)
            finally:
                self.git_cpu += _children_cpu() - before

        setattr(owner, attr, counted)
        self._undo.append((owner, attr, original))

    def install(self) -> None:
        import kanban.commands.run as run_mod
        from kanban import engine, store
        from kanban import git as kgit

        if hasattr(kgit, "_gitpython"):  # a kanban before git.py left GitPython (the "before" figures)
            self.wrap(kgit, "_gitpython", "git via GitPython", lambda cwd, args, env: list(args))
        self.wrap(kgit, "_exec", "git via subprocess", lambda cwd, args, **kw: list(args))
        if hasattr(kgit, "_git_text"):
            self.wrap(kgit, "_git_text", "git via GitPython", lambda cwd, args, env: list(args))
        self.wrap(kgit, "remove_worktree_in_background", "git in the background",
                  lambda root, path: ["worktree remove (background)"])
        self.wrap(store, "load_board", "store.load_board (every board read)")
        self.wrap(store, "read_board", "  of which store.read_board (shared)")
        self.wrap(store, "update", "store.update (board writes)")
        self.wrap(os, "fsync", "os.fsync (in-process)")
        self.wrap(engine, "update", "store.update (board writes)")
        original_drain = run_mod.drain

        def drain(*args, **kwargs):  # on the queue's thread: in_drain stays the loop's (inline drains)
            inline = threading.current_thread() is threading.main_thread()
            self.in_drain = inline
            t = time.perf_counter()
            try:
                return original_drain(*args, **kwargs)
            finally:
                self.in_drain = False
                self.wall["drain"] += time.perf_counter() - t

        run_mod.drain = drain
        self._undo.append((run_mod, "drain", original_drain))
        original_tick = engine.Engine.tick

        def tick(engine_self, *args, **kwargs):
            t = time.perf_counter()
            try:
                return original_tick(engine_self, *args, **kwargs)
            finally:
                self.wall["tick"] += time.perf_counter() - t

        engine.Engine.tick = tick
        self._undo.append((engine.Engine, "tick", original_tick))

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _caller() -> str:
    """The innermost kanban function outside git.py on the stack, with its caller."""
    import traceback

    frames = [f for f in traceback.extract_stack()[:-2]
              if "/kanban/" in f.filename and not f.filename.endswith("/kanban/git.py")]
    return " < ".join(f"{Path(f.filename).stem}.{f.name}" for f in reversed(frames[-2:])) or "?"


def build(tmp: Path, n: int, role_time: float, pool: int, *, timeout: str = "60s", stall: str = "30s",
          extra_toml: str = ""):
    """N independent tasks, every role a ROLE_TIME-second scripted agent (the task agent commits one file)."""
    from agents_kit import make_project, task_md

    repo = tmp / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# bench\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    ids = [f"TASK-{i}" for i in range(1, n + 1)]
    tasks = "".join(task_md(t, f"Add module {t}") for t in ids)
    with contextlib.redirect_stdout(io.StringIO()):
        p = make_project(repo, tmp / "kit", tasks, pool_size=pool, timeout=timeout, stall=stall, extra_toml=extra_toml)
    p.set_rules([{"task": t, "role": role,
                  "steps": ([["commit", f"src/{t}.py"]] if role == "task" else []) + [["last", role_time]]}
                 for t in ids for role in ROLES])
    return p, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--role", type=float, default=0.2, help="seconds per role")
    ap.add_argument("--pool", type=int, default=6)
    ap.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    ap.add_argument("--top", type=int, default=40, help="functions of the profile printed")
    ap.add_argument("--sites", action="store_true", help="count git processes by caller")
    ap.add_argument("--cpu", action="store_true", help="profile CPU time (not wall time)")
    args = ap.parse_args()
    import kanban.commands.run as run_mod

    with tempfile.TemporaryDirectory(prefix="kanban-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sealed_env(tmp / "home")
        p, ids = build(tmp, args.tasks, args.role, args.pool)
        counts = Counts()
        if args.sites:
            counts.sites = Counter()
        counts.install()
        profile = (cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()) if args.profile else None
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                load_before = os.getloadavg()[0]
                cpu_before = resource.getrusage(resource.RUSAGE_SELF)
                children_before = _children_cpu()
                began = time.monotonic()
                if profile:
                    profile.enable()
                code = run_mod.run(p.root, no_merge=False, live=False)
                if profile:
                    profile.disable()
                makespan = time.monotonic() - began
                cpu_after = resource.getrusage(resource.RUSAGE_SELF)
                children = _children_cpu() - children_before
                load_after = os.getloadavg()[0]
        finally:
            counts.uninstall()
            p.kill_everything()
        changelog = (p.root / "CHANGELOG.md").read_text()
        merged = sum(1 for t in ids if f"{t}:" in changelog)
        in_main = len([f for f in git(p.root, "ls-tree", "--name-only", "main", "src/").split() if f])
        agent_runs = len(p.events("end"))
    chain = len(ROLES) * args.role
    total = args.tasks * chain
    lower = max(total / args.pool, chain)
    ratio = makespan / lower
    n = args.tasks
    print(f"kanban run: {n} tasks, {args.role} s per role, pool {args.pool}, merge queue on, no verify")
    print(f"  makespan {makespan:6.2f} s   lower bound {lower:5.2f} s (total/pool {total / args.pool:.2f} s, "
          f"chain {chain:.2f} s)   ratio {ratio:.2f}   target <= {TARGET}: {'MET' if ratio <= TARGET else 'MISSED'}")
    print(f"  merged {merged}/{n} (files in main {in_main}), agent runs {agent_runs}, exit {code}; "
          f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs (timings follow it)")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(f"  engine wall: ticks {counts.wall['tick']:.1f} s ({1000 * counts.wall['tick'] / n:.0f} ms per task), "
          f"drains {counts.wall['drain']:.1f} s ({1000 * counts.wall['drain'] / n:.0f} ms per task, on the "
          f"queue's thread beside the ticks); "
          f"engine CPU {cpu:.1f} s ({1000 * cpu / n:.0f} ms per task)")
    agents_cpu = children - counts.git_cpu  # supervisors (the runner reaps them) and their agents
    cores = os.cpu_count() or 1
    floor = agents_cpu / cores
    print(f"  CPU: kanban {cpu:.1f} s, its git {counts.git_cpu:.1f} s, supervisors and agents {agents_cpu:.1f} s "
          f"= {(cpu + children) / n:.2f} CPU-s per task; {cores} CPUs")
    print(f"  the agents' own CPU floor (supervisors and agents / CPUs, kanban costing nothing): {floor:.2f} s; "
          f"makespan / max(lower bound, that floor) {makespan / max(lower, floor):.2f}")
    git_total = sum(counts.git.values())
    print(f"  git processes started in-process: {git_total} = {git_total / n:.1f} per task "
          f"(merge queue drains: {counts.git_in_drain / n:.1f} per task, the rest: "
          f"{(git_total - counts.git_in_drain) / n:.1f} per task)")
    print("    by subcommand: " + ", ".join(f"{k} {v}" for k, v in counts.git.most_common()))
    for label, c in sorted(counts.calls.items()):
        if not label.startswith("git"):
            print(f"  {label:40} {c:6d} = {c / n:5.1f} per task")
    if counts.sites is not None:
        print("  git processes by caller (per task):")
        for site, c in counts.sites.most_common():
            print(f"    {c / n:5.2f}  {site}")
    if code != 0 or merged != n:
        print("  CHECK FAILED; the run said:\n" + out.getvalue()[-3000:])
    if profile:
        profile.dump_stats(str(args.profile))
        stats = io.StringIO()
        pstats.Stats(profile, stream=stats).sort_stats("cumulative").print_stats(args.top)
        print(stats.getvalue())
    return 0 if ratio <= TARGET and code == 0 and merged == n else 1


if __name__ == "__main__":
    sys.exit(main())
