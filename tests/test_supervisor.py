"""The supervisor and LocalRunner, with real processes and real signals.

Every agent gets a unique marker in its argv (forked children inherit it),
so a scan of /proc finds whatever of a run is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kanban import procs
from kanban.runner import LaunchError, LocalRunner

HANG_WITH_CHILDREN = """
import os, signal, subprocess, sys, time
marker = sys.argv[1]
for ignore_term in (True, False):
    if os.fork() == 0:
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(300)
        os._exit(0)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
print("spawned", flush=True)
time.sleep(300)
"""

IGNORE_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""

SLEEP = "import time; print('sleeping', flush=True); time.sleep(300)"


def live_pids(needle: str) -> list[int]:
    """Non-zombie processes whose command line contains NEEDLE."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def marker(tmp_path):
    """A unique argv marker; kills anything left of the test's runs afterwards."""
    mark = f"kanban-test-{uuid.uuid4().hex}"
    yield mark
    for needle in (mark, f"{tmp_path}/"):  # agents and their children; supervisors
        for pid in live_pids(needle):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def runner():
    return LocalRunner()


def script(tmp_path: Path, body: str, name: str = "agent.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def submit(runner, tmp_path, argv, name="run", **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("grace", 0.5)
    env = kw.pop("env", dict(os.environ))
    run_dir = tmp_path / name
    return runner.submit(run_dir, argv, cwd=tmp_path, env=env, log=run_dir / "agent.log", **kw)


def wait_result(runner, run_dir: Path, timeout: float = 5.0) -> dict:
    assert runner.wait_any([run_dir], timeout) == [run_dir], "run did not finish in time"
    return json.loads((run_dir / "result.json").read_text())


def wait_for(predicate, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def py(tmp_path, body, marker, name="agent.py"):
    return [sys.executable, str(script(tmp_path, body, name)), marker]


def test_quick_success(tmp_path, marker, runner):
    body = (
        "import os, sys\n"
        "print('hello', sys.stdin.read() == '', os.getcwd(), flush=True)\n"
        "print(os.environ.get('KANBAN_TASK_ID'), 'HOME' in os.environ)\n"
    )
    env = {"PATH": os.environ["PATH"], "KANBAN_TASK_ID": "T-7"}
    handle = submit(runner, tmp_path, py(tmp_path, body, marker), env=env)
    result = wait_result(runner, handle.run_dir)

    assert result["exit_code"] == 0 and result["signal"] is None
    assert not (result["timed_out"] or result["stalled"] or result["cancelled"])
    assert "error" not in result
    started = datetime.fromisoformat(result["started"])
    ended = datetime.fromisoformat(result["ended"])
    assert started.tzinfo == UTC and started <= ended
    assert 0 <= result["duration"] < 5
    # stdin is /dev/null, cwd and the complete environment are the spec's
    assert runner.read_log(handle.run_dir) == f"hello True {tmp_path}\nT-7 False\n"
    assert runner.read_log(handle.run_dir, tail=6) == "False\n"
    agent = json.loads((handle.run_dir / "agent.json").read_text())
    assert agent["pid"] == agent["pgid"] == handle.agent_pid
    assert agent["start_time"] == handle.agent_start_time
    assert agent["supervisor_pid"] == handle.supervisor_pid and agent["supervisor_start_time"]
    state = runner.poll(handle.run_dir)
    assert state.running is False and state.result == result and state.agent_pid == handle.agent_pid
    assert (handle.run_dir / "spec.json").stat().st_mode & 0o077 == 0  # env may hold secrets


def test_failing_agent(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, ["sh", "-c", "echo oops >&2; exit 3", marker])
    result = wait_result(runner, handle.run_dir)
    assert result["exit_code"] == 3 and result["signal"] is None
    assert runner.read_log(handle.run_dir) == "oops\n"  # stderr goes to the log too


def test_timeout_kills_the_whole_tree(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, py(tmp_path, HANG_WITH_CHILDREN, marker), timeout=1.0)
    wait_for(lambda: "spawned" in runner.read_log(handle.run_dir))
    assert len(live_pids(marker)) == 4  # agent, two forks, one exec'd grandchild

    result = wait_result(runner, handle.run_dir)
    assert result["timed_out"] and not result["cancelled"]
    assert result["exit_code"] is None and result["signal"] == signal.SIGTERM
    assert 1.0 <= result["duration"] < 2.5  # the TERM-ignoring fork costs the grace
    assert live_pids(marker) == []  # result.json promises nothing is left


def test_orphans_are_swept_after_a_normal_exit(tmp_path, marker, runner):
    body = "import os, time\nif os.fork() == 0:\n    time.sleep(300)\nprint('bye')\n"
    handle = submit(runner, tmp_path, py(tmp_path, body, marker))
    result = wait_result(runner, handle.run_dir)
    assert result["exit_code"] == 0 and not result["timed_out"]
    assert live_pids(marker) == []


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, py(tmp_path, IGNORE_TERM, marker), timeout=0.8, grace=0.5)
    result = wait_result(runner, handle.run_dir)
    assert result["timed_out"] and result["signal"] == signal.SIGKILL
    assert result["duration"] >= 1.3
    assert live_pids(marker) == []


def test_stall_watchdog(tmp_path, marker, runner):
    quiet = submit(runner, tmp_path, py(tmp_path, SLEEP, marker), "quiet", timeout=3.0, stall=0.5)
    chatty_body = "import time\nfor i in range(10):\n    print(i, flush=True); time.sleep(0.1)\n"
    chatty_argv = py(tmp_path, chatty_body, marker, "chatty.py")
    chatty = submit(runner, tmp_path, chatty_argv, "chatty", timeout=3.0, stall=0.5)
    quiet_result = wait_result(runner, quiet.run_dir)
    assert quiet_result["stalled"] and not quiet_result["timed_out"]
    assert 0.5 <= quiet_result["duration"] < 1.5
    chatty_result = wait_result(runner, chatty.run_dir)
    assert chatty_result["exit_code"] == 0 and not chatty_result["stalled"]


def test_retry_lines_are_not_progress_for_the_stall_watchdog(tmp_path, marker, runner):
    # A CLI that only says it is reconnecting is stalled, however much it prints.
    body = ("import json, time\nprint('started', flush=True)\nfor i in range(30):\n"
            "    print(json.dumps({'type': 'system', 'subtype': 'api_retry', 'attempt': i}), flush=True)\n"
            "    time.sleep(0.1)\n")
    idle = [r'"subtype": "api_retry"']
    retrying = submit(runner, tmp_path, py(tmp_path, body, marker, "retry.py"), "retrying", timeout=5.0,
                      stall=0.6, idle_lines=idle)
    plain = submit(runner, tmp_path, py(tmp_path, body, marker, "retry2.py"), "plain", timeout=5.0, stall=0.6)
    result = wait_result(runner, retrying.run_dir)
    assert result["stalled"] and result["duration"] < 2.0
    assert not wait_result(runner, plain.run_dir)["stalled"]  # without the patterns, output is progress



def test_an_agent_that_only_retries_is_stopped_at_its_retry_limit(tmp_path, marker, runner):
    body = ("import time\nprint('working', flush=True)\ntime.sleep(0.3)\nprint('real progress', flush=True)\n"
            "for i in range(100):\n    print('Retrying in 0.1 seconds...', flush=True)\n    time.sleep(0.1)\n")
    run = submit(runner, tmp_path, py(tmp_path, body, marker, "retry3.py"), "limited", timeout=8.0, stall=30.0,
                 idle_lines=[r"^Retrying in"], retry_limit=1.0)
    result = wait_result(runner, run.run_dir, timeout=8.0)
    assert result["retrying"] and result["stalled"] and not result["timed_out"]
    assert 1.0 <= result["duration"] < 3.0


def test_cancel(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, py(tmp_path, SLEEP, marker))
    runner.cancel(handle.run_dir)
    result = wait_result(runner, handle.run_dir, timeout=2.0)
    assert result["cancelled"] and result["signal"] == signal.SIGTERM
    assert live_pids(marker) == []
    runner.cancel(handle.run_dir)  # cancelling a finished run is a no-op
    assert json.loads((handle.run_dir / "result.json").read_text()) == result


def test_force_cancel_skips_the_grace(tmp_path, marker, runner):
    forced = submit(runner, tmp_path, py(tmp_path, IGNORE_TERM, marker), "forced", grace=30)
    polite = submit(runner, tmp_path, py(tmp_path, IGNORE_TERM, marker, "b.py"), "polite", grace=30)
    for handle in (forced, polite):
        wait_for(lambda h=handle: "ready" in runner.read_log(h.run_dir))
    runner.cancel(forced.run_dir, force=True)
    runner.cancel(polite.run_dir)
    time.sleep(0.3)
    runner.cancel(polite.run_dir, force=True)  # `stop --force` during the grace
    for handle in (forced, polite):
        result = wait_result(runner, handle.run_dir, timeout=2.0)
        assert result["cancelled"] and result["signal"] == signal.SIGKILL
        assert result["duration"] < 3
    assert live_pids(marker) == []


def test_timeout_holds_after_the_launcher_exits(tmp_path, marker):
    run_dir = tmp_path / "run"
    launcher = (
        "import os, sys; from pathlib import Path; from kanban.runner import LocalRunner\n"
        "r = Path(sys.argv[1])\n"
        "LocalRunner().submit(r, sys.argv[2:], cwd=r.parent, env=dict(os.environ),"
        " log=r / 'agent.log', timeout=1.0, grace=0.3)\n"
    )
    argv = py(tmp_path, HANG_WITH_CHILDREN, marker)
    subprocess.run([sys.executable, "-c", launcher, str(run_dir), *argv], check=True, timeout=10)

    agent = json.loads((run_dir / "agent.json").read_text())
    assert procs.alive(agent["supervisor_pid"], agent["supervisor_start_time"])
    fresh = LocalRunner()  # knows nothing but the run directory
    assert fresh.poll(run_dir).running
    result = wait_result(fresh, run_dir)
    assert result["timed_out"]
    assert live_pids(marker) == []


def test_dead_supervisor_then_cancel_kills_the_group(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, py(tmp_path, HANG_WITH_CHILDREN, marker), timeout=30)
    wait_for(lambda: "spawned" in runner.read_log(handle.run_dir))
    os.kill(handle.supervisor_pid, signal.SIGKILL)
    wait_for(lambda: not runner.poll(handle.run_dir).supervisor_alive)

    state = runner.poll(handle.run_dir)
    assert state.running and state.result is None and state.agent_pid == handle.agent_pid
    assert runner.active(tmp_path) == [handle.run_dir]
    runner.cancel(handle.run_dir)
    assert live_pids(marker) == []
    result = runner.poll(handle.run_dir).result
    assert result["cancelled"] and "supervisor was gone" in result["error"]
    assert runner.active(tmp_path) == []


def test_pid_reuse_guard(tmp_path, marker, runner):
    me = os.getpid()
    start = procs.process_start_time(me)
    assert procs.alive(me, start)
    assert not procs.alive(me, start + 1)
    assert not procs.alive(None, start)
    assert procs.process_start_time(2**22 + 1) is None  # above pid_max

    # A run whose recorded agent pid now belongs to a stranger: hands off.
    stranger = subprocess.Popen([sys.executable, "-c", SLEEP, marker], start_new_session=True)
    run_dir = tmp_path / "stale"
    run_dir.mkdir()
    wrong = procs.process_start_time(stranger.pid) + 1
    (run_dir / "spec.json").write_text(json.dumps({"log": str(run_dir / "agent.log"), "grace": 0.1}))
    ids = {"pid": stranger.pid, "pgid": stranger.pid, "start_time": wrong}
    ids |= {"supervisor_pid": stranger.pid, "supervisor_start_time": wrong}
    (run_dir / "agent.json").write_text(json.dumps(ids))
    state = runner.poll(run_dir)
    assert not state.running and not state.supervisor_alive
    assert runner.wait_any([run_dir], 1.0) == [run_dir]  # a lost run counts as over
    runner.cancel(run_dir, force=True)
    assert stranger.poll() is None  # still alive
    assert json.loads((run_dir / "result.json").read_text())["cancelled"]
    stranger.kill()
    stranger.wait()


def test_supervisor_ignores_hup_and_int_and_obeys_term(tmp_path, marker, runner):
    handle = submit(runner, tmp_path, py(tmp_path, SLEEP, marker))
    wait_for(lambda: "sleeping" in runner.read_log(handle.run_dir))
    os.kill(handle.supervisor_pid, signal.SIGHUP)
    os.kill(handle.supervisor_pid, signal.SIGINT)
    time.sleep(0.3)
    state = runner.poll(handle.run_dir)
    assert state.running and state.supervisor_alive
    # The agent must not inherit ignored signals from its supervisor.
    status = Path(f"/proc/{handle.agent_pid}/status").read_text()
    sig_ign = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn")), 16)
    assert sig_ign & (1 << (signal.SIGHUP - 1) | 1 << (signal.SIGINT - 1)) == 0
    # Its session is its own, not ours.
    assert os.getsid(handle.supervisor_pid) == handle.supervisor_pid != os.getsid(0)

    os.kill(handle.supervisor_pid, signal.SIGTERM)
    result = wait_result(runner, handle.run_dir, timeout=2.0)
    assert result["cancelled"] and result["signal"] == signal.SIGTERM
    assert live_pids(marker) == []


def test_agent_that_cannot_start(tmp_path, marker, runner):
    with pytest.raises(LaunchError, match="did not start.*No such file"):
        submit(runner, tmp_path, [str(tmp_path / f"missing-{marker}")])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["exit_code"] is None and "error" in result
    with pytest.raises(Exception, match="already used"):
        submit(runner, tmp_path, ["true"])


def test_supervisor_bug_still_writes_a_result(tmp_path):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps({"argv": ["true"]}))  # no log, cwd, ...
    subprocess.run([sys.executable, "-m", "kanban.supervisor", str(run_dir)], timeout=10, check=True)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["exit_code"] is None and "KeyError" in result["error"]


def test_wait_any_reacts_fast_and_active_lists_the_rest(tmp_path, marker, runner):
    quick = submit(runner, tmp_path, ["sh", "-c", "sleep 0.3", marker], "quick")
    slow = submit(runner, tmp_path, py(tmp_path, SLEEP, marker), "slow")
    t0 = time.monotonic()
    assert runner.wait_any([quick.run_dir, slow.run_dir], 5.0) == [quick.run_dir]
    assert time.monotonic() - t0 < 0.3 + 0.5
    assert runner.active(tmp_path) == [slow.run_dir]
    assert runner.active(tmp_path / "nowhere") == []
    t0 = time.monotonic()
    assert runner.wait_any([slow.run_dir], 0.2) == []
    assert 0.2 <= time.monotonic() - t0 < 0.5
    runner.cancel(slow.run_dir, force=True)
    wait_result(runner, slow.run_dir)


def test_an_armed_run_starts_its_agent_only_when_released_and_its_timeout_counts_from_then(tmp_path):
    runner = LocalRunner()
    marker = tmp_path / "ran"
    argv = [sys.executable, "-c",
            f"import time, pathlib; pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(0.6)"]
    run_dir = tmp_path / "armed"
    runner.submit(run_dir, argv, cwd=tmp_path, env=dict(os.environ), log=tmp_path / "armed.log", timeout=3.0,
                  armed=True)
    time.sleep(3.5)  # longer than its timeout (which leaves the agent room on a loaded machine): armed is not running
    assert runner.poll(run_dir).running and not marker.exists()
    runner.release(run_dir)
    assert runner.wait_any([run_dir], timeout=20) == [run_dir]
    result = runner.poll(run_dir).result
    assert marker.exists() and result["exit_code"] == 0 and not result["timed_out"], result


def test_an_armed_run_cancelled_before_its_turn_never_starts(tmp_path):
    runner = LocalRunner()
    marker = tmp_path / "ran"
    run_dir = tmp_path / "armed"
    runner.submit(run_dir, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], cwd=tmp_path,
                  env=dict(os.environ), log=tmp_path / "armed.log", timeout=30.0, armed=True)
    time.sleep(0.3)
    runner.cancel(run_dir, force=True)
    assert runner.wait_any([run_dir], timeout=10) == [run_dir]
    result = runner.poll(run_dir).result
    assert result["cancelled"] and result["exit_code"] is None and not marker.exists(), result
    deadline = time.monotonic() + 10  # it exits right after writing its result
    while runner.poll(run_dir).supervisor_alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not runner.poll(run_dir).supervisor_alive


def test_cancel_and_release_of_a_run_never_submitted_do_nothing(tmp_path):
    """A queue killed between recording a verification and submitting it leaves no run directory."""
    runner = LocalRunner()
    missing = tmp_path / "never"
    runner.cancel(missing, force=True)
    runner.release(missing)
    assert not missing.exists()
    state = runner.poll(missing)
    assert not state.running and state.result is None
