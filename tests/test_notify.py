"""`[notify]`: the person's command, run on escalations, budgets, a blocked queue and the end of a
run, with real agents (agents_kit's scripted fake) and a real notify program that appends its
argv, environment and stdin as a JSON line to a file."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from agents_kit import live_pids, task_md
from conftest import git, run_cli

from kanban.commands.run import run as run_loop
from kanban.config import NotifyConfig, load_config
from kanban.errors import KanbanError
from kanban.notify import Notice, deliver, fill, one_line

pytestmark = pytest.mark.timeout(60)

ESCALATED = frozenset({"ESCALATED"})
KEYS = ("KANBAN_EVENT", "KANBAN_TASK", "KANBAN_TITLE", "KANBAN_SUMMARY", "KANBAN_REPO")
NOTIFY_SCRIPT = textwrap.dedent("""\
    import json, os, sys
    record = {"argv": sys.argv[2:], "env": {k: os.environ.get(k) for k in %r},
              "cwd": os.getcwd(), "stdin": sys.stdin.read(), "pgid": os.getpgid(0), "sid": os.getsid(0)}
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(record) + "\\n")
    """) % (KEYS,)
FAIL_TWICE = [{"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["exit", 1]]},
              {"task": "TASK-1", "role": "task", "attempt": 2, "steps": [["exit", 1]]}]


def notify_toml(command: list[str], extra: str = "") -> str:
    return f"\n[notify]\ncommand = {json.dumps(command)}\n{extra}"


def recorder(tmp_path: Path) -> tuple[list[str], Path]:
    script, out = tmp_path / "notify.py", tmp_path / "calls.jsonl"
    script.write_text(NOTIFY_SCRIPT)
    return [sys.executable, str(script), str(out), "{event}", "{task}", "{title}", "{summary}"], out


def calls(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


# --- the run: one call per escalation, one at the end ----------------------------------------------


def test_one_call_per_escalation_and_one_at_the_end_of_the_run(kit, tmp_path, capsys):
    command, out = recorder(tmp_path)
    p = kit(task_md("TASK-1", "Fails twice") + task_md("TASK-2", "Slow but fine"),
            extra_toml=notify_toml(command))
    # TASK-2 keeps the run going (many passes) after TASK-1 is escalated
    p.set_rules(FAIL_TWICE + [{"task": "TASK-2", "role": "task", "steps": [["sleep", 1.0], ["commit"]]}])
    assert run_loop(p.root, no_merge=False, live=False) == 1
    assert p.where("TASK-1")[1] == ESCALATED and p.where("TASK-2") is None  # merged

    got = calls(out)
    assert [(c["env"]["KANBAN_EVENT"], c["env"]["KANBAN_TASK"]) for c in got] == [
        ("escalated", "TASK-1"), ("run_finished", "")]
    escalated, finished = got
    assert escalated["argv"][:3] == ["escalated", "TASK-1", "Fails twice"]
    assert escalated["env"]["KANBAN_TITLE"] == "Fails twice"
    assert escalated["argv"][3] == escalated["env"]["KANBAN_SUMMARY"]
    assert escalated["argv"][3].startswith("TASK-1 ") and "\n" not in escalated["argv"][3]
    assert finished["argv"][3].startswith("nothing left to do after ")
    assert "escalated, waiting for a person: TASK-1" in finished["argv"][3]
    for c in got:
        assert c["env"]["KANBAN_REPO"] == str(p.root) and c["cwd"] == str(p.root)
        assert c["stdin"] == "" and c["sid"] == c["pgid"] != os.getsid(0)  # /dev/null, its own session
    err = capsys.readouterr().err
    assert "notify" not in err  # nothing failed, nothing said


def test_a_budget_reached_is_told_once(kit, tmp_path, capsys):
    from kanban.history import History

    command, out = recorder(tmp_path)
    p = kit(task_md("TASK-1") + task_md("TASK-2"), extra_toml=notify_toml(command) + '\n[budget]\nday = "$0.01"\n')
    with History(p.root) as history:  # today's spend so far: an earlier run of another task
        run_id = history.start_run(task="TASK-9", role="task", attempt=1, run_dir=str(tmp_path), log="x.log",
                                   timeout=60, head_before=None)
        history.finish_run(run_id, outcome="ok", result={"exit_code": 0}, cost_usd=0.05, tokens=1000)
    assert run_loop(p.root, no_merge=False, live=False) == 1
    assert p.runs("TASK-1") == [] and p.runs("TASK-2") == []  # held in TODO, both
    got = calls(out)
    assert [c["env"]["KANBAN_EVENT"] for c in got] == ["budget_reached", "run_finished"]  # one for both tasks
    assert "budget reached: today (UTC) spent $0.05 of $0.01" in got[0]["env"]["KANBAN_SUMMARY"]


# --- failing commands: one warning, the run goes on ---------------------------------------------------


@pytest.mark.parametrize("kind", ["exit1", "hangs"])  # not found: the test after
def test_a_failing_notify_command_is_one_warning_and_the_run_still_succeeds(kit, tmp_path, capsys, kind):
    marker = f"notify-hang-{os.getpid()}-{time.monotonic_ns()}"
    command = {
        "exit1": [sys.executable, "-c", "import sys; print('webhook said no'); sys.exit(1)", "{event}"],
        # a child deaf to SIGTERM in its group too: the whole group goes at the timeout
        "hangs": [sys.executable, "-c", ("import signal, subprocess, sys, time; "
                                         "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                                         "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)', "
                                         "sys.argv[1]]); time.sleep(60)"), marker],
    }[kind]
    p = kit(task_md("TASK-1"), extra_toml=notify_toml(command, 'timeout = "0.5s"\n'))
    began = time.monotonic()
    assert run_loop(p.root, no_merge=True, live=False) == 0
    assert time.monotonic() - began < 15
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "[notify] command" in line]
    assert len(warnings) == 1, err
    expected = {"exit1": "exit status 1: webhook said no", "hangs": "timed out after 0.5s"}
    assert expected[kind] in warnings[0] and warnings[0].startswith("warning: notify: ")
    assert live_pids(marker) == []  # the hung command and its deaf child: killed
    records = [e[5] for e in p.history_events() if e[2] == "notify"]
    assert len(records) == 1 and records[0].startswith("run_finished: failed: ")


def test_the_same_failure_again_is_recorded_not_warned_again(kit, tmp_path, capsys):
    p = kit(task_md("TASK-1"), extra_toml=notify_toml([str(tmp_path / "gone"), "{event}"]))
    p.set_rules(FAIL_TWICE)  # an escalation, then the end: two calls, both failing
    assert run_loop(p.root, no_merge=True, live=False) == 1  # 1 for the escalation, not for the notifier
    assert capsys.readouterr().err.count("[notify] command") == 1
    records = [e[5] for e in p.history_events() if e[2] == "notify"]
    assert [r.split(":")[0] for r in records] == ["escalated TASK-1", "run_finished"]
    assert all(": failed: not found" in r for r in records)


# --- hostile text stays text ------------------------------------------------------------------------------


HOSTILE = "$(touch PWNED) `touch PWNED2` {summary} {title} ; rm -rf ~ %s {0} {event!r}"


def test_hostile_titles_stay_literal_and_single_line(kit, tmp_path, capsys):
    command, out = recorder(tmp_path)
    p = kit(task_md("TASK-1", HOSTILE),
            extra_toml=notify_toml(command + ["pre-{title}-post"], 'events = ["escalated"]\n'))
    p.set_rules(FAIL_TWICE)
    assert run_loop(p.root, no_merge=True, live=False) == 1
    (escalated,) = calls(out)  # events = ["escalated"]: not the end of the run
    assert escalated["env"]["KANBAN_EVENT"] == "escalated"
    assert escalated["argv"][2] == HOSTILE == escalated["env"]["KANBAN_TITLE"]  # not expanded again
    assert escalated["argv"][4] == f"pre-{HOSTILE}-post"
    assert "{summary}" not in escalated["argv"][3].replace(HOSTILE, "")
    assert not list(p.root.rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))


def test_values_are_one_printable_line_and_never_an_option():
    notice = Notice.of("escalated", "line one\nline two\r\n\x1b[31mred\x1b[0m \x1b]0;title\x07 \x00nul" + "x" * 500,
                       "TASK-1", "-rf --output=/etc/passwd\n{summary}")
    assert "\n" not in notice.summary and "\x1b" not in notice.summary and "\x00" not in notice.summary
    assert notice.summary.startswith("line one line two red ") and len(notice.summary) <= 300
    assert notice.title == "-rf --output=/etc/passwd {summary}"
    argv = fill(["notify", "{title}", "--", "[{task}] {title}", "-{event}", "{nope}", '{"text": "{summary}"}'],
                notice.values())
    assert argv[1] == " -rf --output=/etc/passwd {summary}"  # a value never makes an option
    assert argv[3] == "[TASK-1] -rf --output=/etc/passwd {summary}"
    assert argv[4] == "-escalated"  # the person's own dash stays
    assert argv[5] == "{nope}"
    assert argv[6] == '{"text": "' + notice.summary + '"}'  # literal braces are fine: no str.format
    assert one_line("a\tb\u2028c", 10) == "a b c"


def test_deliver_bounds_its_output_and_never_raises(tmp_path):
    config = NotifyConfig(command=(sys.executable, "-c", "import sys; sys.stdout.write('y' * 10_000_000); sys.exit(2)"),
                          timeout=5)
    outcome = deliver(config.command, config.timeout, tmp_path, Notice.of("run_finished", "done"))
    assert not outcome.ok and outcome.how.startswith("exit status 2: ") and len(outcome.how) < 300
    nul = deliver(("echo", "a\0b"), 1, tmp_path, Notice.of("run_finished", "x"))
    assert not nul.ok and "could not start" in nul.how


def test_the_notifier_tells_an_escalation_once_until_a_person_frees_it(tmp_path):
    from types import SimpleNamespace

    from kanban.config import Config
    from kanban.events import Happening
    from kanban.notify import Notifier

    command, out = recorder(tmp_path)
    notifier = Notifier(tmp_path, Config(notify=NotifyConfig(command=tuple(command))))
    again = SimpleNamespace(events=[Happening("escalated", "TASK-1 escalated: x", "TASK-1", "T"),
                                    Happening("budget_reached", "TASK-2 not started: budget reached: today (UTC) "
                                              "spent $3.00 of $2.00", "TASK-2"),
                                    Happening("budget_reached", "TASK-3 not started: budget reached: today (UTC) "
                                              "spent $3.10 of $2.00", "TASK-3")])
    for _ in range(3):  # three passes saying the same
        notifier.tick(again)
    notifier.forget_freed({"TASK-1"})  # still escalated
    notifier.tick(again)
    notifier.forget_freed(set())  # a person freed it; it fails again later: a new escalation
    notifier.tick(again)
    notifier.close()
    assert [(c["env"]["KANBAN_EVENT"], c["env"]["KANBAN_TASK"]) for c in calls(out)] == [
        ("escalated", "TASK-1"), ("budget_reached", "TASK-2"), ("escalated", "TASK-1")]


# --- kanban tick and kanban merge-queue, as cron runs them ------------------------------------------------


def test_tick_from_cron_tells_an_escalation_once(kit, tmp_path, capsys):
    from kanban.commands.tick import tick

    command, out = recorder(tmp_path)
    p = kit(task_md("TASK-1", "Cron task"), extra_toml=notify_toml(command))
    p.set_rules(FAIL_TWICE)
    deadline = time.monotonic() + 20
    while not (p.where("TASK-1") and p.where("TASK-1")[1] == ESCALATED):  # one `kanban tick` a cron run
        assert time.monotonic() < deadline, p.describe()
        assert tick(p.root, dry_run=False, as_json=False) == 0
        time.sleep(0.1)
    assert tick(p.root, dry_run=False, as_json=False) == 0  # later passes say nothing again
    assert [(c["env"]["KANBAN_EVENT"], c["env"]["KANBAN_TASK"], c["argv"][2]) for c in calls(out)] == [
        ("escalated", "TASK-1", "Cron task")]


def test_merge_queue_from_cron_tells_a_blocked_reason_once(kit, tmp_path, capsys):
    from kanban.commands.merge_queue import merge_queue

    command, out = recorder(tmp_path)
    p = kit(task_md("TASK-1"), extra_toml=notify_toml(command, 'events = ["queue_blocked"]\n'))
    assert run_loop(p.root, no_merge=True, live=False) == 0
    gitdir = p.root / ".git"
    (gitdir / "rebase-merge").mkdir()  # the person is rebasing main: the queue must not move it
    (gitdir / "rebase-merge" / "head-name").write_text("refs/heads/main\n")
    for _ in range(2):  # two cron runs of `kanban merge-queue`, each its own Notifier
        assert merge_queue(p.root, batch=False, dry_run=False, as_json=False) == 1
    blocked = calls(out)
    assert [c["env"]["KANBAN_EVENT"] for c in blocked] == ["queue_blocked"]
    assert "rebase is in progress" in blocked[0]["env"]["KANBAN_SUMMARY"]
    (gitdir / "rebase-merge" / "head-name").unlink()
    (gitdir / "rebase-merge").rmdir()
    assert merge_queue(p.root, batch=False, dry_run=False, as_json=False) == 0
    assert p.where("TASK-1") is None and "TASK-1" in git(p.root, "log", "--oneline", "main")
    assert len(calls(out)) == 1


# --- bad [notify] config: one line, exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "message"), [
    ('[notify]\ncommand = "notify-send"\n', 2, "notify.command must be a command (a list of strings)"),
    ('[notify]\ncmd = ["x"]\n', 2, 'unknown key notify.cmd; did you mean "command"?'),
    ('[notify]\ncommand = ["x"]\nevents = ["escalate"]\n', 3,
     'notify.events has an unknown event "escalate"; did you mean "escalated"?'),
    ('[notify]\ncommand = ["x"]\nevents = "escalated"\n', 3, "notify.events must be a list of event names"),
    ('[notify]\ncommand = ["x"]\ntimeout = "forever"\n', 3, "notify.timeout must be a duration"),
    ('[notify]\ncommand = ["x"]\ntimeout = "1h"\n', 3, "notify.timeout must be at most 5m"),
    ('[notify]\ncommand = ["x", "{evnt}"]\n', 2, "notify.command has an unknown placeholder {evnt}"),
    ('[notify]\ncommand = ["", "{event}"]\n', 2, "notify.command has an empty program name"),
    ("notify = 3\n", 1, "notify must be a table"),
])  # fmt: skip
def test_bad_notify_config_is_one_clear_error(tmp_path, text, line, message):
    (tmp_path / "kanban.toml").write_text(text)
    with pytest.raises(KanbanError) as info:
        load_config(tmp_path)
    assert info.value.file == "kanban.toml" and info.value.line == line, str(info.value)
    assert message in str(info.value)


def test_notify_config_defaults_and_values(tmp_path):
    (tmp_path / "kanban.toml").write_text('[notify]\ncommand = ["notify-send", "{event}", "{\\"a\\": 1}"]\n'
                                          'events = ["escalated", "run_finished"]\ntimeout = "3s"\n')
    config = load_config(tmp_path).notify
    assert config == NotifyConfig(command=("notify-send", "{event}", '{"a": 1}'), events=("escalated", "run_finished"),
                                  timeout=3.0)
    assert config.wants("escalated") and not config.wants("queue_blocked")
    assert not NotifyConfig().wants("escalated")  # no command: off


def test_bad_notify_config_stops_run_before_anything_moves(kit):
    p = kit(task_md("TASK-1"))
    with (p.root / "kanban.toml").open("a") as f:
        f.write('\n[notify]\ncommand = ["x"]\nevents = ["everything"]\n')
    before = p.board_bytes()
    proc = run_cli(p.root, "run")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "kanban.toml:" in proc.stderr
    assert "notify.events" in proc.stderr
    assert p.board_bytes() == before and p.runs() == []
