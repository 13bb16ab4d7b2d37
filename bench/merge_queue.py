"""Merge queue benchmark: 32 disjoint task branches, a verify command of about half a second.

Prints wall time and verification runs for serial and batch mode, with every
task good and with one bad task, beside the targets: batch at least 8x faster
than serial when all are good; with one bad task among n, at most
ceil(log2 n) + 2 verification runs.

    python bench/merge_queue.py [--tasks 32] [--verify-seconds 0.5]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kanban.commands.init import init
from kanban.commands.tick import open_engine
from kanban.merge_queue import drain

VERIFY = """\
import pathlib, sys, time
time.sleep({seconds})
sys.exit(1 if pathlib.Path("BAD").exists() else 0)
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def build(root: Path, tasks: int, verify_seconds: float, bad: int | None) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.com")
    (root / "verify.py").write_text(VERIFY.format(seconds=verify_seconds))
    (root / "kanban.toml").write_text(
        f'[agent]\npreset = "demo"\n[merge]\nverify = ["{sys.executable}", "verify.py"]\n')
    init(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    entries = ["# Testing\n"]
    for n in range(1, tasks + 1):
        branch = f"kanban/TASK-{n}"
        git(root, "branch", branch, "main")
        wt = root / ".worktrees" / f"TASK-{n}"
        git(root, "worktree", "add", "-q", str(wt), branch)
        (wt / f"feature_{n}.txt").write_text(f"feature {n}\n")
        if n == bad:
            (wt / "BAD").write_text("this task breaks verification\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", f"TASK-{n}: feature {n}")
        entries.append(f"\n## TASK-{n}: Add feature {n}\nstatus: ready to merge\n")
    (root / "TESTING.md").write_text("".join(entries))


def measure(tasks: int, verify_seconds: float, batch: bool, bad: int | None) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="kanban-bench-mq-") as tmp:
        root = Path(tmp) / "repo"
        build(root, tasks, verify_seconds, bad)
        engine = open_engine(root)
        started = time.perf_counter()
        report = drain(engine, batch=batch)
        elapsed = time.perf_counter() - started
        engine.history.close()
        return elapsed, report.verifications, len(report.merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--verify-seconds", type=float, default=0.5)
    args = parser.parse_args()
    n = args.tasks
    bad = n // 2 + 3  # somewhere past the middle
    bound = math.ceil(math.log2(n)) + 2
    rows = []
    for label, batch, culprit in (("serial, all good", False, None), ("batch, all good", True, None),
                                  ("serial, one bad", False, bad), ("batch, one bad", True, bad)):
        elapsed, verifications, merged = measure(n, args.verify_seconds, batch, culprit)
        rows.append((label, elapsed, verifications, merged))
        print(f"  ran {label}: {elapsed:.2f}s", file=sys.stderr)
    print(f"\nmerge queue: {n} disjoint task branches, verify ~{args.verify_seconds}s\n")
    print(f"{'scenario':<20} {'wall time':>10} {'verifications':>14} {'merged':>7}")
    for label, elapsed, verifications, merged in rows:
        print(f"{label:<20} {elapsed:>9.2f}s {verifications:>14} {merged:>7}")
    speedup = rows[0][1] / rows[1][1]
    print(f"\nbatch speed-up, all good: {speedup:.1f}x (target: at least 8x)"
          f" -> {'met' if speedup >= 8 else 'MISSED'}")
    print(f"batch verifications with one bad task: {rows[3][2]} (bound ceil(log2 {n}) + 2 = {bound})"
          f" -> {'met' if rows[3][2] <= bound else 'MISSED'}")
    print(f"tasks merged with one bad: serial {rows[2][3]}, batch {rows[3][3]} (expected {n - 1})")


if __name__ == "__main__":
    main()
