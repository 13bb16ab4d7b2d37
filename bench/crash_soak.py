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

With --hand-edits HZ a person edits TODO.md by hand all along, HZ times a second and
without kanban's lock (half the edits one `echo >>`-style append in place, half a
whole-file save swapped in the way editors save), while readers load the board
concurrently (`kanban status --json` in a loop, and load_board in this process).
It counts hand edits lost (a marker no longer in TODO.md) and torn reads (a load that
fails or sees a task twice or not at all) outside the windows between a SIGKILL and
its repair, where a move cut in half is expected until repair. --duration SECONDS
runs trials until that much time has passed.

    python bench/crash_soak.py --hand-edits 20 --duration 300 --seed 1

With --executor ray every run (agents, verifications) is a Ray job on a real Ray cluster
this soak starts on this machine (tests/ray_kit.py: a head and two workers), the work
travelling through a bare repository as the shared remote; a SIGKILLed kanban leaves its
jobs running, and the next command re-attaches to them. Processes left are looked for in the
workers' workspace too.

    python bench/crash_soak.py --executor ray --trials 30 --seed 1
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
import threading
import time
from collections import Counter
from pathlib import Path

COMMANDS = ("tick", "run", "merge-queue")
READER_ARGS = "status --json --all"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def kanban(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanban", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


INTRO = "Crash soak tasks.\n"
HAND_NOTES = "\n# Hand notes\n\nLines appended by hand go here: after the last entry, not in one.\n"


EXTRA_KEYS: list[str] = []  # more places of the repository's processes (--executor ray: the workers' workspace)


def build(path: Path, mode: str, hand_edits: bool = False, parallel: int = 1, executor: str = "") -> Path:
    from kanban.commands.demo import DEMO_CONFIG, build_demo_repo

    root = build_demo_repo(path)
    config = DEMO_CONFIG.format(timeout="20s", stall="20s", mode=mode) + executor
    if parallel > 1:  # speculative verifications: several checks at once, landed in order
        config = config.replace(f'mode = "{mode}"', f'mode = "{mode}"\nparallel = {parallel}', 1)
    (root / "kanban.toml").write_text(config)
    (root / "TODO.md").write_text("# TODO\n\n" + INTRO + (HAND_NOTES if hand_edits else ""))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "soak config")
    return root


def add_tasks(root: Path, rng: random.Random, n: int, counter: list[int]) -> list[str]:
    """Add n new entries with fixed IDs (SOAK-N) to TODO.md (before the hand notes, if any)."""
    ids = []
    entries = ""
    for _ in range(n):
        counter[0] += 1
        tid = f"SOAK-{counter[0]}"
        ids.append(tid)
        directive = rng.choice(["sleep 0.3", "sleep 0.6", "sleep 0.2\ndemo: reject-first",
                                "sleep 0.2\ndemo: test-fail-first", "sleep 0.2\ndemo: fail-first"])
        entries += f"\n## {tid}: soak task {counter[0]}\nfiles: src/soak_{counter[0]}.py\n\ndemo: {directive}\n"

    def insert(text: str) -> str:
        at = text.find(HAND_NOTES)
        return text + entries if at < 0 else text[:at] + entries + text[at:]

    save_as_editor(root / "TODO.md", insert)  # a hand editor may be at work: never over its edits
    return ids


# -- a person editing by hand, and readers, while the soak runs ------------------------------

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))


def save_as_editor(path: Path, edit) -> None:
    """An editor's save: the new file swapped in for the old one, which must be the one it read
    (otherwise kanban wrote meanwhile: that goes back and the edit is made again on top). No lock."""
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.hand-editor")  # one per editor
    while True:
        old = path.read_bytes()
        new = edit(old.decode("utf-8")).encode("utf-8")
        tmp.write_bytes(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        _exchange(tmp, path)
        came = tmp.read_bytes()
        if came == old:
            tmp.unlink()
            return
        expected = new
        for _ in range(50):
            _exchange(tmp, path)
            back = tmp.read_bytes()
            if back == expected:
                break
            expected, came = came, back
        tmp.unlink()
        time.sleep(0.002)


class HandEditor(threading.Thread):
    """HZ edits a second to TODO.md: a marker line appended in place (one O_APPEND write, like
    `echo >>`), or a marker line added under the intro by a whole-file save; once either kind
    passes KEEP lines, a save deletes the oldest of them (TODO.md stays the size of a real file,
    and a deletion must not be undone either)."""

    KEEP = 200

    def __init__(self, root: Path, hz: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.path, self.period, self.rng = root / "TODO.md", 1.0 / hz, random.Random(seed)
        self.stop = threading.Event()
        self.appended: list[str] = []
        self.saved: list[str] = []
        self.deleted: list[str] = []
        self.edits = Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        n, next_at = 0, time.monotonic()
        while not self.stop.is_set():
            n += 1
            try:
                self.step(n)
            except OSError as exc:
                self.errors.append(str(exc))
            next_at += self.period * self.rng.uniform(0.5, 1.5)
            time.sleep(max(0.0, next_at - time.monotonic()))

    def step(self, n: int) -> None:
        for live in (self.appended, self.saved):
            if len(live) > self.KEEP:
                doomed = set(live[:50])
                save_as_editor(self.path, lambda t, d=doomed: "".join(
                    line for line in t.splitlines(keepends=True) if line.strip() not in d))
                self.deleted += live[:50]
                del live[:50]
                self.edits["deletions (whole-file save)"] += 1
                return
        if self.rng.random() < 0.5:
            marker = f"hand-append-{n}"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, f"{marker}\n".encode())
            finally:
                os.close(fd)
            self.appended.append(marker)
            self.edits["appends (in place)"] += 1
        else:
            marker = f"hand-save-{n}"
            save_as_editor(self.path, lambda t, m=marker: t.replace(INTRO, f"{INTRO}{m}\n", 1))
            self.saved.append(marker)
            self.edits["insertions (whole-file save)"] += 1

    def lost(self) -> list[str]:
        """Marker lines missing from TODO.md, and deleted ones that came back (exact lines)."""
        lines = {line.strip() for line in self.path.read_text(encoding="utf-8").splitlines()}
        return ([m for m in self.appended + self.saved if m not in lines]
                + [f"{m} (deleted, came back)" for m in self.deleted if m in lines])


class Readers:
    """`kanban status --json` in a loop and load_board in a loop, each load checked: it must not
    fail and must show every task at most once. The soak marks the windows from a SIGKILL to the
    end of its repair as unsafe (a move cut in half by the kill is expected there)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stop = threading.Event()
        self.unsafe = 0  # > 0 while a kill's damage may be on disk; a counter, bumped at each change
        self.epoch = 0
        self.counts: Counter = Counter()
        self.torn: list[str] = []
        self.threads = [threading.Thread(target=self._status, daemon=True),
                        threading.Thread(target=self._load, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def set_unsafe(self, unsafe: bool) -> None:
        self.unsafe = 1 if unsafe else 0
        self.epoch += 1

    def _record(self, kind: str, epoch: int, unsafe: int, problem: str | None) -> None:
        if unsafe or self.unsafe or epoch != self.epoch:  # a kill's damage may have been visible
            self.counts[f"{kind}_in_kill_windows"] += 1
            if problem:
                self.counts[f"{kind}_in_kill_windows_inconsistent"] += 1
            return
        self.counts[kind] += 1
        if problem:
            self.torn.append(f"{kind}: {problem}")

    def _status(self) -> None:
        while not self.stop.is_set():
            epoch, unsafe = self.epoch, self.unsafe
            try:
                proc = kanban(self.root, *READER_ARGS.split(), timeout=120)
            except subprocess.TimeoutExpired:
                self._record("status", epoch, unsafe, "timed out")
                continue
            problem = None
            if proc.returncode != 0:
                problem = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            else:
                seen = Counter(t["id"] for c in json.loads(proc.stdout)["columns"].values() for t in c["tasks"])
                twice = sorted(t for t, k in seen.items() if k > 1)
                problem = f"saw {twice} twice" if twice else None
            self._record("status", epoch, unsafe, problem)

    def _load(self) -> None:
        from kanban.errors import KanbanError
        from kanban.store import load_board

        while not self.stop.is_set():
            epoch, unsafe = self.epoch, self.unsafe
            try:
                board = load_board(self.root)  # validates: a task in two files is "used twice"
                seen = Counter(e.task_id for _, e in board.located() if e.task_id)
                twice = sorted(t for t, k in seen.items() if k > 1)
                problem = f"saw {twice} twice" if twice else None
            except KanbanError as exc:
                problem = str(exc)
            self._record("load", epoch, unsafe, problem)
            time.sleep(0.02)


def run_to_end(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`kanban run` to its end; one that never ends is a failure (exit 124), not the end of the soak."""
    try:
        return kanban(root, "run", *args)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return subprocess.CompletedProcess(exc.cmd, 124, out, f"did not end within {exc.timeout:g} s; last output: "
                                           + " | ".join(out.strip().splitlines()[-3:]))


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
        if READER_ARGS in cmd:  # the soak's own concurrent readers (--hand-edits)
            continue
        if any(k in cmd or cwd == k or cwd.startswith(k + "/") for k in (key, *EXTRA_KEYS)):
            found.append((pid, cmd.strip()[:120]))
    return found


def unrecorded_agents(root: Path) -> list[tuple[int, str]]:
    """Agent processes running in a worktree with no live run recorded for the task."""
    from kanban.history import History

    with History(root) as h:
        live = {r.task for r in h.live_runs()}
    out = []
    for pid, cmd in repo_processes(root):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        for wt in [str(root / ".worktrees")] + [str(p) for k in EXTRA_KEYS for p in Path(k).glob("*/wt")]:
            if cwd.startswith(wt + "/"):
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
        count[tid] += len(re.findall(rf"^- {re.escape(tid)}:", changelog, re.MULTILINE))
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
    from kanban.executors import runner_for
    from kanban.history import History
    from kanban.repair import find_problems

    config = load_config(root)
    with History(root) as h:
        return find_problems(root, config, h, runner_for(root, config), scope="full")


def do_repair(root: Path) -> list[str]:
    from kanban.commands.preflight import run_repair
    from kanban.config import load_config

    return run_repair(root, load_config(root))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=("serial", "batch"), default="serial")
    ap.add_argument("--parallel", type=int, default=1, help="[merge] parallel: verifications at once")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--time-limit", type=float, default=None, help="stop starting trials after this many seconds")
    ap.add_argument("--duration", type=float, default=None,
                    help="run trials (as many as --trials allows, unbounded if not given) for this many seconds")
    ap.add_argument("--hand-edits", type=float, default=0.0, metavar="HZ",
                    help="edit TODO.md by hand HZ times a second, with readers loading the board meanwhile")
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="ray: every run a Ray job on a local Ray cluster this soak starts")
    args = ap.parse_args()
    if args.executor == "ray":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from ray_kit import Cluster

        cluster = Cluster(workers=2).start()
        try:
            return soak(args, cluster)
        finally:
            cluster.stop()
    return soak(args)


def soak(args, cluster=None) -> int:
    if args.duration is not None:
        args.time_limit = args.duration
        if "--trials" not in sys.argv:
            args.trials = 10**9

    rng = random.Random(args.seed)
    work = args.dir or Path(tempfile.mkdtemp(prefix="kanban-soak-"))
    executor = ""
    if cluster is not None:
        remote, workspace = work / "runs.git", work / "workers"
        subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True, capture_output=True)
        executor = (f'\n[executor]\nkind = "ray"\naddress = "{cluster.address}"\nremote = "{remote}"\n'
                    f'workspace = "{workspace}"\npython = "{sys.executable}"\n')
        EXTRA_KEYS.append(str(workspace))
    root = build(work / "repo", args.mode, hand_edits=args.hand_edits > 0, parallel=args.parallel,
                 executor=executor)
    editor = readers = None
    if args.hand_edits > 0:
        editor = HandEditor(root, args.hand_edits, args.seed)
        readers = Readers(root)
        editor.start()
        readers.start()
    lost_edits: dict[str, int] = {}  # marker -> the trial after which it was first missing
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
            run_to_end(root, "--no-merge")
            delay = rng.uniform(0.05, 1.5)
        elif command == "tick":
            delay = rng.uniform(0.05, 0.8)
        else:
            delay = rng.uniform(0.1, 5.0)
        if readers:
            readers.set_unsafe(True)
        killed += crash(root, command, delay)
        found = [p for p in problems_now(root)]
        before.update(p.kind for p in found)
        do_repair(root)
        if readers:
            readers.set_unsafe(False)
        from kanban.repair import NOTE_ONLY

        left = [p for p in problems_now(root) if p.kind not in NOTE_ONLY]
        after.update(p.kind for p in left)
        if left:
            failures.append(f"trial {trial} ({command}): left after repair: " + "; ".join(map(str, left)))
        done = run_to_end(root)
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
        if editor:
            for marker in editor.lost():
                if marker not in lost_edits:
                    lost_edits[marker] = trial + 1
                    failures.append(f"trial {trial} ({command}): hand edit lost: {marker}")
        print(f"trial {trial + 1}: {command} killed after {delay:.2f}s: found {len(found)}, left {len(left)}",
              file=sys.stderr, flush=True)
    # the end: every task must reach CHANGELOG.md (escalations were retried above)
    final = run_to_end(root)
    if final.returncode != 0:
        run_failures += 1
    unfinished = [t for t in all_ids
                  if not re.search(rf"^- {re.escape(t)}:", (root / "CHANGELOG.md").read_text(), re.MULTILINE)]
    if unfinished:
        failures.append(f"after the last trial, not in CHANGELOG.md: {unfinished}")
    elapsed = time.monotonic() - started
    hand: dict = {}
    if editor and readers:
        editor.stop.set()
        editor.join(30)
        readers.join()
        for marker in editor.lost():
            lost_edits.setdefault(marker, trials)
        failures += [f"torn read: {t}" for t in readers.torn[:20]]
        hand = {
            "hand_edits_hz": args.hand_edits, "hand_edits_made": sum(editor.edits.values()),
            "hand_edits_by_kind": dict(editor.edits), "hand_edits_lost": len(lost_edits),
            "hand_editor_errors": len(editor.errors),
            "status_reads": readers.counts["status"], "load_reads": readers.counts["load"],
            "torn_reads": len(readers.torn),
            "reads_in_kill_windows": readers.counts["status_in_kill_windows"] + readers.counts["load_in_kill_windows"],
            "reads_in_kill_windows_inconsistent": (readers.counts["status_in_kill_windows_inconsistent"]
                                                   + readers.counts["load_in_kill_windows_inconsistent"]),
        }
    summary = {
        "trials": trials, "per_command": dict(per_command), "killed_while_running": killed,
        "tasks": len(all_ids), "inconsistencies_before_repair": dict(before),
        "inconsistencies_before_repair_total": sum(before.values()),
        "inconsistencies_after_repair": sum(after.values()), "after_by_kind": dict(after),
        "tasks_lost": lost, "tasks_duplicated": duplicated, "orphan_worktrees_or_branches": orphan_count,
        "agents_without_record": unrecorded, "processes_left_after_run": stray,
        "unverified_commits_on_main": unverified_count, "kanban_run_failures": run_failures,
        "escalations_seen": escalated, "tasks_stuck": stuck, "tasks_unfinished": len(unfinished),
        "merged": len(re.findall(r"^- SOAK-", (root / "CHANGELOG.md").read_text(), re.MULTILINE)),
        **hand, "executor": args.executor, "seconds": round(elapsed, 1), "repo": str(root),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
    for line in failures[:40]:
        print("FAIL " + line)
    bad = (lost or duplicated or orphan_count or unrecorded or stray or unverified_count or sum(after.values())
           or stuck or unfinished or run_failures or hand.get("hand_edits_lost") or hand.get("torn_reads"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
