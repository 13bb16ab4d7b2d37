"""Crash soak: SIGKILL `kanban tick`, `kanban run` and `kanban merge-queue` at random instants.

After each kill: count what is inconsistent (by kind), run the full repair,
count again (must be 0), run `kanban run` to its end, and check the invariants:
each task in exactly one of TODO/IN_PROGRESS/REVIEW/TESTING/CHANGELOG (none
lost, none duplicated), no orphan worktree or `kanban/*` branch, no process of
the repository left running (after the run ends no agent may run, recorded or
not), and every value main's ref has held since the start (its reflog)
verified by the merge queue (a `verify` pass event for that exact commit). Escalated
tasks are retried; one escalated again in the next trial is stuck (a failure),
and after the last trial every task must have reached CHANGELOG.md.

One repository is reused across trials; each trial adds fresh tasks.

    python bench/crash_soak.py --trials 200 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

COMMANDS = ("tick", "run", "merge-queue")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def kanban(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanban", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def build(path: Path, mode: str) -> Path:
    from kanban.commands.demo import DEMO_CONFIG, build_demo_repo

    root = build_demo_repo(path)
    (root / "kanban.toml").write_text(DEMO_CONFIG.format(timeout="20s", stall="20s", mode=mode))
    (root / "TODO.md").write_text("# TODO\n\nCrash soak tasks.\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "soak config")
    return root


def add_tasks(root: Path, rng: random.Random, n: int, counter: list[int]) -> list[str]:
    """Append n new entries with fixed IDs (SOAK-N) to TODO.md."""
    ids = []
    text = (root / "TODO.md").read_text()
    for _ in range(n):
        counter[0] += 1
        tid = f"SOAK-{counter[0]}"
        ids.append(tid)
        directive = rng.choice(["sleep 0.3", "sleep 0.6", "sleep 0.2\ndemo: reject-first",
                                "sleep 0.2\ndemo: test-fail-first", "sleep 0.2\ndemo: fail-first"])
        text += f"\n## {tid}: soak task {counter[0]}\nfiles: src/soak_{counter[0]}.py\n\ndemo: {directive}\n"
    (root / "TODO.md").write_text(text)
    return ids


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def crash(root: Path, command: str, delay: float) -> bool:
    """Start the command in its own session, SIGKILL its group after DELAY; True if it was still running."""
    argv = [sys.executable, "-m", "kanban", "-C", str(root), command]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return True


def repo_processes(root: Path) -> list[tuple[int, str]]:
    """Processes (not us) whose command line or working directory is inside ROOT."""
    me = os.getpid()
    found = []
    key = str(root)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X"):
                continue
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
        except (OSError, ValueError):
            continue
        if key in cmd or cwd == key or cwd.startswith(key + "/"):
            found.append((pid, cmd.strip()[:120]))
    return found


def unrecorded_agents(root: Path) -> list[tuple[int, str]]:
    """Agent processes running in a worktree with no live run recorded for the task."""
    from kanban.history import History

    with History(root) as h:
        live = {r.task for r in h.live_runs()}
    wt = root / ".worktrees"
    out = []
    for pid, cmd in repo_processes(root):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(wt) + "/"):
            task = Path(cwd).relative_to(wt).parts[0]
            if task not in live:
                out.append((pid, cmd))
    return out


def placements(root: Path, ids: list[str]) -> dict[str, int]:
    from kanban.store import load_board

    board = load_board(root, check=False)
    count = Counter(e.task_id for _, e in board.located() if e.task_id)
    changelog = (root / "CHANGELOG.md").read_text()
    for tid in ids:
        count[tid] += len(re.findall(rf"^- {re.escape(tid)}:", changelog, re.M))
    return {tid: count[tid] for tid in ids}


def orphans(root: Path) -> list[str]:
    from kanban.store import load_board

    board = load_board(root, check=False)
    on_board = {e.task_id for _, e in board.located() if e.task_id}
    out = [f"branch {b}" for b in git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/kanban/").split()
           if b.removeprefix("kanban/") not in on_board]
    wt_root = (root / ".worktrees").resolve()
    for line in git(root, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            p = Path(line[9:])
            if p.parent == wt_root and p.name not in on_board:
                out.append(f"worktree {p.name}")
    return out


def unverified(root: Path, base: str) -> list[str]:
    """Values main's ref has held since BASE (its reflog) with no verify pass for that exact commit.

    The reflog, not the first-parent history: a batch writes one merge commit per task and main
    jumps to the verified tip, so the commits inside a batch are never main on their own.
    """
    from kanban.history import History

    with History(root) as h:
        passed = {d.split()[1] for (_, _, kind, _, _, d) in h.events("-") if kind == "verify" and d.startswith("pass")}
    held = []
    for sha in git(root, "reflog", "show", "--format=%H", "refs/heads/main").split():
        if sha == base:
            break
        held.append(sha)
    return [c for c in dict.fromkeys(held) if c[:10] not in passed]


def problems_now(root: Path) -> list:
    from kanban.config import load_config
    from kanban.history import History
    from kanban.repair import find_problems
    from kanban.runner import LocalRunner

    config = load_config(root)
    with History(root) as h:
        return find_problems(root, config, h, LocalRunner(), scope="full")


def do_repair(root: Path) -> list[str]:
    from kanban.commands.preflight import run_repair
    from kanban.config import load_config

    return run_repair(root, load_config(root))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=("serial", "batch"), default="serial")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--time-limit", type=float, default=None, help="stop starting trials after this many seconds")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    work = args.dir or Path(tempfile.mkdtemp(prefix="kanban-soak-"))
    root = build(work / "repo", args.mode)
    base = git(root, "rev-parse", "main").strip()
    counter = [0]
    all_ids: list[str] = []
    before: Counter = Counter()
    after: Counter = Counter()
    per_command: Counter = Counter()
    killed = 0
    lost = duplicated = orphan_count = stray = unrecorded = unverified_count = run_failures = 0
    escalated = stuck = 0
    prev_escalated: set[str] = set()
    started = time.monotonic()
    trials = 0
    failures: list[str] = []
    for trial in range(args.trials):
        if args.time_limit and time.monotonic() - started > args.time_limit:
            break
        trials += 1
        command = rng.choice(COMMANDS)
        per_command[command] += 1
        all_ids += add_tasks(root, rng, rng.randint(1, 3), counter)
        if command == "merge-queue":  # something to merge: bring the tasks to TESTING first
            kanban(root, "run", "--no-merge")
            delay = rng.uniform(0.05, 1.5)
        elif command == "tick":
            delay = rng.uniform(0.05, 0.8)
        else:
            delay = rng.uniform(0.1, 5.0)
        killed += crash(root, command, delay)
        found = [p for p in problems_now(root)]
        before.update(p.kind for p in found)
        do_repair(root)
        from kanban.repair import NOTE_ONLY

        left = [p for p in problems_now(root) if p.kind not in NOTE_ONLY]
        after.update(p.kind for p in left)
        if left:
            failures.append(f"trial {trial} ({command}): left after repair: " + "; ".join(map(str, left)))
        done = kanban(root, "run")
        if done.returncode != 0:
            run_failures += 1
            failures.append(f"trial {trial} ({command}): kanban run exit {done.returncode}: "
                            + (done.stderr.strip().splitlines() or [""])[-1])
        places = placements(root, all_ids)
        lost_now = [t for t, n in places.items() if n == 0]
        dup_now = [t for t, n in places.items() if n > 1]
        orph = orphans(root)
        unrec = unrecorded_agents(root)
        procs_left = repo_processes(root)
        unver = unverified(root, base)
        lost += len(lost_now)
        duplicated += len(dup_now)
        orphan_count += len(orph)
        unrecorded += len(unrec)
        stray += len(procs_left)
        unverified_count += len(unver)
        for what, items in (("lost", lost_now), ("duplicated", dup_now), ("orphans", orph),
                            ("unrecorded agents", unrec), ("processes left", procs_left),
                            ("unverified commits on main", unver)):
            if items:
                failures.append(f"trial {trial} ({command}): {what}: {items}")
        # escalated tasks stay on the board by design: a person takes them over; clear them for the next trial
        from kanban.store import load_board

        esc = [t.id for t in load_board(root).tasks() if t.escalated]
        escalated += len(esc)
        again = sorted(set(esc) & prev_escalated)  # escalated, retried, escalated again: stuck
        stuck += len(again)
        if again:
            failures.append(f"trial {trial} ({command}): escalated again after a retry (stuck): {again}")
        prev_escalated = set(esc)
        for tid in esc:
            kanban(root, "retry", tid)
        print(f"trial {trial + 1}: {command} killed after {delay:.2f}s: found {len(found)}, left {len(left)}",
              file=sys.stderr, flush=True)
    # the end: every task must reach CHANGELOG.md (escalations were retried above)
    final = kanban(root, "run")
    if final.returncode != 0:
        run_failures += 1
    unfinished = [t for t in all_ids if not re.search(rf"^- {re.escape(t)}:", (root / "CHANGELOG.md").read_text(), re.M)]
    if unfinished:
        failures.append(f"after the last trial, not in CHANGELOG.md: {unfinished}")
    elapsed = time.monotonic() - started
    summary = {
        "trials": trials, "per_command": dict(per_command), "killed_while_running": killed,
        "tasks": len(all_ids), "inconsistencies_before_repair": dict(before),
        "inconsistencies_before_repair_total": sum(before.values()),
        "inconsistencies_after_repair": sum(after.values()), "after_by_kind": dict(after),
        "tasks_lost": lost, "tasks_duplicated": duplicated, "orphan_worktrees_or_branches": orphan_count,
        "agents_without_record": unrecorded, "processes_left_after_run": stray,
        "unverified_commits_on_main": unverified_count, "kanban_run_failures": run_failures,
        "escalations_seen": escalated, "tasks_stuck": stuck, "tasks_unfinished": len(unfinished),
        "merged": len(re.findall(r"^- SOAK-", (root / "CHANGELOG.md").read_text(), re.M)),
        "seconds": round(elapsed, 1), "repo": str(root),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    for line in failures[:40]:
        print("FAIL " + line)
    bad = (lost or duplicated or orphan_count or unrecorded or stray or unverified_count or sum(after.values())
           or stuck or unfinished or run_failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
