"""The spawner (kanban.spawner): supervisors forked from one warm interpreter, real processes.

A forked supervisor must be what a supervisor started as a program was: a session of its own
that outlives the spawner and kanban, holding nothing of kanban's (no environment, no pipe
end that would keep the spawner or kanban waiting). The spawner must end with kanban, and a
spawner that cannot serve must cost nothing but speed: the runner starts supervisors as
programs of their own again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_supervisor import live_pids, py, submit, wait_for, wait_result

from kanban import procs
from kanban.runner import LocalRunner
from kanban.spawner import Spawner

SLEEP = "import sys, time; print('up', flush=True); time.sleep(float(sys.argv[2]))"


@pytest.fixture
def marker():
    """A unique argv marker; kills whatever of the test's agents is left afterwards."""
    mark = f"kanban-test-{uuid.uuid4().hex}"
    yield mark
    for pid in live_pids(mark):
        os.kill(pid, signal.SIGKILL)


def _spawner_pid(runner: LocalRunner) -> int | None:
    proc = runner._spawner._proc
    return None if proc is None or proc.poll() is not None else proc.pid


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


def test_supervisors_are_forked_by_the_spawner_and_outlive_it(tmp_path, marker):
    runner = LocalRunner()
    handle = submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["1.0"])
    spawner = _spawner_pid(runner)
    assert spawner is not None, "the first submit started a spawner"
    assert _parent(handle.supervisor_pid) == spawner  # forked, not started as a program
    assert json.loads((tmp_path / "run" / "launcher.json").read_text())["supervisor_pid"] == handle.supervisor_pid
    comm = Path(f"/proc/{handle.supervisor_pid}/comm").read_text().strip()
    assert comm.startswith("kanban-super"), comm
    # a session of its own, and nothing of the spawner's pipes: closing them ends the spawner at once
    assert os.getsid(handle.supervisor_pid) == handle.supervisor_pid
    runner.close()
    wait_for(lambda: not procs.alive(spawner, procs.process_start_time(spawner)), timeout=3.0)
    assert procs.alive(handle.supervisor_pid, procs.process_start_time(handle.supervisor_pid))
    result = wait_result(LocalRunner(), tmp_path / "run", timeout=10.0)  # a new runner knows it by its files
    assert result["exit_code"] == 0 and (tmp_path / "run" / "agent.log").read_text().strip() == "up"


def test_one_spawner_serves_every_run_of_a_runner(tmp_path, marker):
    runner = LocalRunner()
    parents = []
    for i in range(4):
        handle = submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.5"], name=f"run{i}")
        parents.append(_parent(handle.supervisor_pid))
    spawner = _spawner_pid(runner)
    assert parents == [spawner] * 4
    for i in range(4):
        assert wait_result(runner, tmp_path / f"run{i}")["exit_code"] == 0
    assert _spawner_pid(runner) == spawner
    runner.close()


def test_a_killed_spawner_is_replaced_and_a_failing_one_falls_back_to_programs(tmp_path, marker):
    runner = LocalRunner()
    submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.1"], name="a")
    old = _spawner_pid(runner)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: runner._spawner._proc.poll() is not None)
    second = submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.1"], name="b")
    new = _spawner_pid(runner)
    assert new not in (None, old) and _parent(second.supervisor_pid) == new
    # a spawner that cannot answer (here: not a program at all) gives way to supervisors as programs
    runner._spawner.close()
    runner._spawner = Spawner()
    runner._spawner._started = lambda: subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    import kanban.spawner as spawner_mod

    limit, spawner_mod.REPLY_LIMIT = spawner_mod.REPLY_LIMIT, 0.3
    try:
        third = submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.1"], name="c")
    finally:
        spawner_mod.REPLY_LIMIT = limit
    assert not runner._spawner.usable
    cmdline = Path(f"/proc/{third.supervisor_pid}/cmdline").read_bytes()
    assert b"kanban.supervisor" in cmdline and str(tmp_path / "c").encode() in cmdline
    for name in "abc":
        assert wait_result(runner, tmp_path / name)["exit_code"] == 0, name
    runner.close()


def test_the_spawner_ends_with_kanban(tmp_path, marker):
    """kanban SIGKILLed mid-run: its spawner ends (EOF on its pipe), the run it started goes on."""
    code = (
        "import os, sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from kanban.runner import LocalRunner\n"
        "r = LocalRunner()\n"
        "run = Path(sys.argv[2])\n"
        "h = r.submit(run, sys.argv[3:], cwd=run.parent, env=dict(os.environ), log=run / 'agent.log', timeout=10)\n"
        "print(r._spawner._proc.pid, h.supervisor_pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    kanban = subprocess.Popen([sys.executable, "-c", code, root, str(tmp_path / "run"),
                               *py(tmp_path, SLEEP, marker), "1.0"], stdout=subprocess.PIPE, text=True)
    spawner, supervisor = map(int, kanban.stdout.readline().split())
    spawner_start = procs.process_start_time(spawner)
    kanban.kill()
    kanban.wait()
    wait_for(lambda: not procs.alive(spawner, spawner_start), timeout=3.0)
    assert procs.alive(supervisor, procs.process_start_time(supervisor))
    assert wait_result(LocalRunner(), tmp_path / "run", timeout=10.0)["exit_code"] == 0


def test_an_idle_spawner_ends_by_itself_and_a_later_submit_starts_another(tmp_path, marker):
    runner = LocalRunner()
    runner._spawner.idle_exit = 0.3
    submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.6"], name="a")
    first = _spawner_pid(runner)
    time.sleep(0.45)
    assert _spawner_pid(runner) == first, "a spawner with a live supervisor stays"
    assert wait_result(runner, tmp_path / "a")["exit_code"] == 0
    wait_for(lambda: _spawner_pid(runner) is None, timeout=3.0)  # idle, nothing alive: it ended
    second = submit(runner, tmp_path, py(tmp_path, SLEEP, marker) + ["0.1"], name="b")
    assert _spawner_pid(runner) not in (None, first) and runner._spawner.usable
    assert wait_result(runner, tmp_path / "b")["exit_code"] == 0 and second.supervisor_pid
    runner.close()


def test_an_agent_of_a_forked_supervisor_starts_with_no_signal_blocked_or_ignored(tmp_path, marker):
    """The spawner holds SIGCHLD around each fork and ignores ^C and hang-ups: none of that may
    reach the agent, whose children (a test runner's, a shell's) rely on those signals."""
    body = ("import sys\n"
            "status = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n"
            "print('masks', int(status['SigBlk'], 16), int(status['SigIgn'], 16) & ~(1 << 12 | 1 << 24), flush=True)\n")
    runner = LocalRunner()
    handle = submit(runner, tmp_path, py(tmp_path, body, marker))
    assert _parent(handle.supervisor_pid) == _spawner_pid(runner)
    assert wait_result(runner, handle.run_dir)["exit_code"] == 0
    # SIGPIPE and SIGXFSZ aside: the agent's own Python ignores them
    assert "masks 0 0" in (handle.run_dir / "agent.log").read_text()
    runner.close()
