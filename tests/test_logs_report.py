"""Failures that are easy to find: `kanban logs` shows every run of a task (agent, [test] command,
`[merge] verify`) and how each ended; `kanban report` lists verify failures with their logs' tails;
logs, stop and retry answer one way for an ID nobody knows; notes never start with escape debris."""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
from agents_kit import task_md
from conftest import run_cli, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from kanban.entry import Entry
from kanban.history import History
from kanban.untrusted import clean

UNKNOWN = "error: no task TASK-99 on the board or in its history; 'kanban status' lists the tasks\n"
# Nothing a terminal acts on may be left: C0 but tab and newline, DEL, C1, and the Unicode
# controls that reorder or hide text.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")


def _run(history: History, root: Path, role: str, attempt: int, text: str, result: dict | None,
         outcome: str = "failed", *, task: str = "TASK-1", stall: float | None = None, **kw) -> int:
    """A run as the engine records it, with a real log file (and spec.json for its stall limit)."""
    run_dir = root / ".kanban" / "runs" / task / f"{role}-{attempt}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "agent.log").write_text(text)
    if stall is not None:
        (run_dir / "spec.json").write_text(json.dumps({"stall": stall}))
    run = history.start_run(task=task, role=role, attempt=attempt, run_dir=str(run_dir),
                            log=str(run_dir / "agent.log"), timeout=900, head_before=None)
    if result is not None:
        history.finish_run(run, outcome=outcome, result=result, **kw)
    return run


def _verify(history: History, root: Path, tasks: list[str], text: str, *, outcome: str | None, how: str = "",
            try_: int = 1, code: int | None = None) -> Path:
    log = root / ".kanban" / "verify" / f"{len(history.verifications()) + 1}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    vid = history.start_verification(tasks, "1a2b3c4d5e6f" + "0" * 28, str(log), try_=try_)
    if outcome is not None:
        history.finish_verification(vid, outcome=outcome, how=how, exit_code=code, timed_out=outcome == "timeout")
    return log


# --- an ID nobody knows --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["logs", "stop", "retry"])
def test_an_unknown_id_gets_the_same_answer_from_logs_stop_and_retry(tmp_path, command):
    (tmp_path / "TODO.md").write_text(task_md("TASK-1"))
    before = snapshot(tmp_path)
    proc = run_cli(tmp_path, command, "TASK-99")
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, UNKNOWN, "")
    assert snapshot(tmp_path) == before and not (tmp_path / ".kanban").exists()  # nothing created
    with History(tmp_path) as history:  # a history that knows other tasks changes nothing
        history.event("TASK-2", "picked", "TODO", "IN_PROGRESS")
    proc = run_cli(tmp_path, command, "TASK-99")
    assert (proc.returncode, proc.stderr) == (2, UNKNOWN)
    bad = run_cli(tmp_path, command, "--", "../x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a valid ID" in bad.stderr


def test_a_task_known_only_to_the_history_or_the_changelog_is_not_unknown(tmp_path):
    (tmp_path / "TODO.md").write_text(task_md("TASK-1"))
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n- TASK-3: merged one\n")
    with History(tmp_path) as history:
        history.event("TASK-2", "picked", "TODO", "IN_PROGRESS")
    logs = run_cli(tmp_path, "logs", "TASK-2")
    assert logs.returncode == 2 and "no agent runs recorded for TASK-2" in logs.stderr
    stop = run_cli(tmp_path, "stop", "TASK-2")
    assert stop.returncode == 1 and "no agent is running for TASK-2" in stop.stderr
    retry = run_cli(tmp_path, "retry", "TASK-2")
    assert retry.returncode == 2 and "TASK-2 is not on the board: only its history is left" in retry.stderr
    retry = run_cli(tmp_path, "retry", "TASK-3")
    assert retry.returncode == 2 and "TASK-3 is not on the board: it is merged (in CHANGELOG.md)" in retry.stderr
    assert "no agent runs recorded for TASK-1" in run_cli(tmp_path, "logs", "TASK-1").stderr  # on the board
    assert "TASK-1 is not escalated" in run_cli(tmp_path, "retry", "TASK-1", check_code=1).stderr


# --- kanban logs: every run, and how it ended -----------------------------------------------------


def test_logs_lists_agent_test_and_verify_runs_with_how_each_ended(tmp_path):
    (tmp_path / "TODO.md").write_text(task_md("TASK-1"))
    with History(tmp_path) as h:
        _run(h, tmp_path, "task", 1, "first try\n\x1b[31mboom\x1b[0m\n", {"exit_code": 1}, reason="exit status 1")
        _run(h, tmp_path, "task", 2, "slow\n", {"timed_out": True, "signal": 15}, reason="timed out after 15m")
        _run(h, tmp_path, "task", 3, "quiet\n", {"stalled": True, "signal": 15}, stall=300,
             reason="stalled: its log stopped growing")
        _run(h, tmp_path, "reviewer", 1, "no verdict here\n", {"exit_code": 0}, reason="no verdict: nothing written")
        _run(h, tmp_path, "tester", 1, "stopped\n", {"cancelled": True, "signal": 15}, "cancelled")
        _run(h, tmp_path, "test", 1, "3 passed\n", {"exit_code": 0}, "ok")
        _run(h, tmp_path, "task", 1, "other task\n", {"exit_code": 0}, "ok", task="TASK-2")
        _verify(h, tmp_path, ["TASK-1", "TASK-2"], "FAILED test_cache\n", outcome="fail", how="exit status 1", code=1)
        _verify(h, tmp_path, ["TASK-2"], "not ours\n", outcome="fail", how="exit status 1", code=1)
        _verify(h, tmp_path, ["TASK-1"], "tests still running...\n", outcome="timeout", how="timed out after 15m",
                try_=2)
        _run(h, tmp_path, "tester", 2, "working on it\n", None)  # still running
    out = run_cli(tmp_path, "logs", "TASK-1", check_code=0).stdout
    listed = out.split("==> ")[0].splitlines()
    assert listed[0] == "TASK-1: 9 runs, the latest shown ('kanban logs TASK-1 --all' prints every log)"
    assert [" ".join(line.split()) for line in listed[1:-1]] == [
        "task attempt 1 exit status 1 after 0s",
        "task attempt 2 timed out after 15m",
        "task attempt 3 stalled after 5m without output (ran 0s)",
        "reviewer attempt 1 failed after 0s: no verdict: nothing written",
        "tester attempt 1 stopped by a person after 0s",
        "test attempt 1 passed after 0s",
        "verify at 1a2b3c4d5e with TASK-2 failed: exit status 1 after 0s",
        "verify at 1a2b3c4d5e, run again timed out after 15m",
    ]
    assert re.fullmatch(r"tester attempt 2 still running, \ds of 15m", " ".join(listed[-1].split()))
    assert re.search(r"==> TASK-1 tester attempt 2: still running, \ds of 15m\n"
                     r"    \.kanban/runs/TASK-1/tester-2/agent\.log\nworking on it\n$", out)
    assert "first try" not in out and "not ours" not in out and "other task" not in out

    every = run_cli(tmp_path, "logs", "TASK-1", "--all", check_code=0).stdout
    assert every.count("==> ") == 9 and "not ours" not in every
    verify = ("==> TASK-1 verify at 1a2b3c4d5e with TASK-2: failed: exit status 1 after 0s\n"
              "    .kanban/verify/1.log\nFAILED test_cache\n")
    for text in ("first try\nboom\n", verify, "3 passed\n", "tests still running...\n"):
        assert text in every
    assert not CONTROLS.search(every)
    tests_only = run_cli(tmp_path, "logs", "TASK-1", "--role", "test", check_code=0).stdout
    assert tests_only == ("==> TASK-1 test attempt 1: passed after 0s\n"
                          "    .kanban/runs/TASK-1/test-1/agent.log\n3 passed\n")


def test_logs_follow_of_a_verify_ends_with_it_or_with_its_queue(tmp_path):
    (tmp_path / "TODO.md").write_text(task_md("TASK-1"))
    with History(tmp_path) as h:
        log = _verify(h, tmp_path, ["TASK-1"], "verifying\n", outcome=None)
    # no merge queue holds its lock: a verify left open by a queue that died has ended too
    start = time.monotonic()
    out = run_cli(tmp_path, "logs", "TASK-1", "--follow", check_code=0).stdout
    assert "still running" in out and "verifying\n" in out and time.monotonic() - start < 20

    lock = os.open(tmp_path / ".kanban" / "merge.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a merge queue at work

    def finish() -> None:
        time.sleep(1.0)
        with log.open("a") as f:
            f.write("1 failed\n")
        with History(tmp_path) as h:
            h.finish_verification(1, outcome="fail", how="exit status 1", exit_code=1)

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        out = run_cli(tmp_path, "logs", "TASK-1", "--follow", check_code=0).stdout
    finally:
        writer.join()
        os.close(lock)
    assert out.endswith("verifying\n1 failed\n")


# --- kanban report: verify failures with their logs' tails ----------------------------------------


def test_report_lists_verify_failures_with_the_cleaned_tails_of_their_logs(tmp_path):
    noisy = "".join(f"line {i}\n" for i in range(1, 41)) + "\x1b]52;c;Y3VybA==\x07```\x1b[2Jfinal \x00words\n"
    with History(tmp_path) as h:
        _verify(h, tmp_path, ["TASK-1"], "all good\n", outcome="pass", how="exit status 0", code=0)
        _verify(h, tmp_path, ["TASK-1", "TASK-2"], noisy, outcome="fail", how="exit status 1", code=1)
        _verify(h, tmp_path, ["TASK-1", "TASK-2"], "", outcome="timeout", how="timed out after 15m", try_=2)
        _verify(h, tmp_path, ["TASK-3"], "", outcome="error", how="could not start: no such program 'pytst'")
        _verify(h, tmp_path, ["TASK-4"], "busy\n", outcome=None)
    out = run_cli(tmp_path, "report", check_code=0).stdout
    section = out.split("## Verify failures\n")[1].split("\n## ")[0]
    heads = [line for line in section.splitlines() if line.startswith("### ")]
    assert heads == ["### verify of TASK-1 + TASK-2 at 1a2b3c4d5e: failed: exit status 1 after 0s",
                     "### verify of TASK-1 + TASK-2 at 1a2b3c4d5e, run again: timed out after 15m",
                     "### verify of TASK-3 at 1a2b3c4d5e: could not start: no such program 'pytst'"]
    first = section.split("```text\n")[1].split("\n```")[0].splitlines()
    assert first == [f"line {i}" for i in range(34, 41)] + ["'''final words"]  # the last 8, fence defused
    assert "(empty or missing log:" in section and "all good" not in out and "busy" not in out
    assert not CONTROLS.search(out)
    assert "- verification runs: 4 (1 passed, 3 failed, 1 repeat(s) of a failure), 1 running" in out


def test_report_without_verify_records_keeps_its_old_lines(tmp_path):
    with History(tmp_path) as h:
        h.event("TASK-1", "verify", detail="pass")
        h.event("TASK-1", "verify", detail="fail: exit 1")
    out = run_cli(tmp_path, "report", check_code=0).stdout
    assert "## Verify failures" not in out and "- verification runs: 2 (1 passed, 1 failed)" in out


# --- notes never start with escape debris ---------------------------------------------------------

# Whole sequences as programs print them: what a terminal swallows, clean must swallow, leaving no
# `[31m`, `(B` or `]0;title` behind.
_PARAMS = st.text(alphabet="0123456789;:?<=>", max_size=8)
SEQUENCES = st.one_of(
    st.builds(lambda p, i, f: "\x1b[" + p + i + f, _PARAMS, st.text(alphabet=" !\"#$%&'()*+,-./", max_size=2),
              st.sampled_from("@ABCDHJKmhlnsu~`")),  # CSI
    st.builds(lambda p, f: "\u009b" + p + f, _PARAMS, st.sampled_from("mJHK")),  # 8-bit CSI
    st.builds(lambda k, t, end: "\x1b" + k + t + end, st.sampled_from("]P_^X"),
              st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30),
              st.sampled_from(["\x07", "\x1b\\", "\u009c"])),  # OSC, DCS, APC, PM, SOS strings
    st.builds(lambda i, f: "\x1b" + i + f, st.text(alphabet=" !\"#$%&'()*+,-./", min_size=1, max_size=2),
              st.sampled_from("0AB<@GJ8")),  # ESC ( B, ESC % G, ESC # 8, ...
    st.sampled_from(["\x1b7", "\x1b8", "\x1bc", "\x1b=", "\x1b>", "\x1bM", "\x1bD", "\x1bN"]),  # two-byte ones
    st.sampled_from(["\r", "\r\n", "\b", "\b\b\b", "\x07", "\x00", "\x7f", "\x0b", "\x0c", "\x1c", "\u0085",
                     "\u202e", "\u2066", "\ufeff"]),  # control characters on their own
)
# What a person reads: letters, digits, punctuation, symbols, spaces (no controls).
ORDINARY = st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"))
WORD = st.text(alphabet=ORDINARY, min_size=1, max_size=20)
FAST = settings(max_examples=300, deadline=None)


@FAST
@given(prefix=st.lists(SEQUENCES, min_size=1, max_size=6), first=st.text(alphabet=st.characters(
    whitelist_categories=("L", "N")), min_size=1, max_size=10), rest=st.lists(WORD, max_size=3))
def test_a_note_that_starts_with_escapes_starts_at_its_text(prefix, first, rest):
    text = first + " ".join(["", *rest]) if rest else first
    entry = Entry(["## TASK-1: t\n", "\n", "Body.\n"], 1)
    entry.add_note("".join(prefix) + text + "\nsecond line")
    notes = entry.notes().splitlines()
    assert notes[0] == "- " + text.rstrip()
    assert notes[1] == "  second line"
    assert not CONTROLS.search(entry.text()) and "\x1b" not in entry.text()


@FAST
@given(parts=st.lists(st.one_of(WORD, SEQUENCES.filter(lambda s: "\r" not in s), st.just("\n")), max_size=12))
def test_clean_takes_out_whole_sequences_and_keeps_every_word(parts):
    words = "".join(p for p in parts if CONTROLS.search(p) is None and "\x1b" not in p)
    assert clean("".join(parts), max_bytes=1 << 20) == words


@FAST
@given(text=st.text(alphabet=st.one_of(ORDINARY, st.sampled_from("\n\t")), max_size=200))
def test_clean_leaves_ordinary_text_as_it_was(text):
    assert clean(text) == text


@FAST
@given(parts=st.lists(st.one_of(st.text(max_size=30), SEQUENCES, st.sampled_from(["\x1b", "\x1b[", "\x1b]0;",
                                                                                  "\u009b", "\u009d"])),
                      max_size=10))
def test_clean_leaves_no_control_character_whatever_the_input(parts):
    out = clean("".join(parts), max_bytes=2000, max_line=80)
    assert not CONTROLS.search(out)
    assert len(out.encode()) <= 2000 and all(len(line) <= 80 for line in out.split("\n"))
    assert clean(out, max_bytes=2000, max_line=80) == out  # cleaning twice changes nothing more


def test_escape_debris_that_used_to_be_left_behind():
    cases = {"\x1b(B\x1b[mplain": "plain", "\x1b[31": "", "\u009b31mred": "red", "\x1bP+q544e\x1b\\ok": "ok",
             "\x1b]0;title\nnext line": "\nnext line", "\x1b#8x": "x", "\x1b%Gx": "x", "\x1bcreset": "reset",
             "\x1b[2\x1bJx": "x", "\u202eevil": "evil", "\u009d0;t\u009cx": "x"}
    assert {k: clean(k) for k in cases} == cases
    entry = Entry(["## TASK-1: t\n"], 1)
    entry.add_note("\r\x1b[2K\rprogress 50%\rdone")
    entry.add_note("\x1b[2K     indented, which would make the item a code block")
    assert entry.notes() == "- progress 50%\n  done\n- indented, which would make the item a code block"
