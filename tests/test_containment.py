"""What an agent can reach of the rest of a run without the sandbox: real processes, real kanban.

- The supervisor is the agent's parent, so /proc/<ppid>/environ is the first place an agent
  looks for more than it was given: it must hold the agent's own environment and nothing else
  (no secret that [env] kept from the agent), and kanban itself is not dumpable.
- An agent that daemonises (double fork + setsid: out of its process group) must not outlive
  its run, whether the agent ends by itself or at its timeout: result.json means nothing of
  the run is left, so the pool slot it frees is really free.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import git, run_cli

from kanban import procs
from kanban.runner import LocalRunner

SECRET = "sekret-containment-" + uuid.uuid4().hex[:8]

# The agent: its parent's environment and command line, written where the test finds them.
READ_PARENT = r'''
import json, os, subprocess, sys
from pathlib import Path
ppid = os.getppid()
found = {"ppid": ppid}
for name in ("environ", "cmdline"):
    try:
        found[name] = Path(f"/proc/{ppid}/{name}").read_bytes().decode(errors="replace").split("\0")
    except OSError as exc:
        found[name] = f"unreadable: {exc}"
Path(sys.argv[1]).write_text(json.dumps(found))
if os.environ["KANBAN_ROLE"] == "task":
    Path("work.txt").write_text("done\n")
    subprocess.run(["git", "add", "work.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
'''


def _project(root: Path, kit: Path, source: str, *args: str) -> None:
    kit.mkdir(exist_ok=True)
    (kit / "agent.py").write_text(source)
    command = json.dumps([sys.executable, str(kit / "agent.py"), *args])
    (root / "kanban.toml").write_text(f'main_branch = "main"\n[agent]\ncommand = {command}\ntimeout = "20s"\n'
                                      'kill_grace = "0.5s"\n')
    (root / "TODO.md").write_text("# TODO\n\n## TASK-1: do it\n\nThe work.\n")
    (root / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")


def _wait_for(predicate, timeout: float = 15.0, what: str = "the agent") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} did not get there in time"
        time.sleep(0.05)


def _runs_done(root: Path) -> bool:
    runs = root / ".kanban" / "runs"
    return all((p.parent / "result.json").exists() for p in runs.rglob("spec.json"))


@pytest.mark.parametrize("spawner", ["on", "off"])
def test_the_supervisor_holds_only_the_agents_environment(repo, tmp_path, monkeypatch, spawner):
    """kanban (a real process, the secret in its environment) starts the agent: its parent, the
    supervisor, must not carry the secret [env] denied the agent, nor anything else of kanban's.
    Forked by the spawner (kanban.spawner) its environment is empty; started as a program of its
    own (KANBAN_SPAWNER=off, or a spawner that failed) it is exactly the agent's."""
    monkeypatch.setenv("KANBAN_SPAWNER", spawner)
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)  # *_TOKEN: denied by the default [env]
    monkeypatch.setenv("KANBAN_CONTAINMENT_OTHER", "kanban-only")  # on no allowlist
    dump = tmp_path / "parent.json"
    _project(repo, tmp_path / "kit", READ_PARENT, str(dump))
    proc = run_cli(repo, "tick")
    assert proc.returncode == 0, proc.stderr
    _wait_for(dump.exists)
    _wait_for(lambda: _runs_done(repo), what="the run")
    seen = json.loads(dump.read_text())
    assert isinstance(seen["environ"], list), seen  # root, or the same user: it was readable
    environ = set(seen["environ"]) - {""}
    assert not [e for e in environ if SECRET in e or e.startswith(("MY_SERVICE_TOKEN=", "KANBAN_CONTAINMENT"))], \
        environ
    boot = "kanban.spawner" if spawner == "on" else "kanban.supervisor"
    assert any(boot in part for part in seen["cmdline"]), seen["cmdline"]  # our parent
    spec = json.loads(next((repo / ".kanban" / "runs").rglob("spec.json")).read_text())
    if spawner == "on":
        assert environ == set(), environ
    else:  # exactly what the agent itself was given (spec.json), nothing added
        assert "KANBAN_TASK_ID=TASK-1" in environ and any(e.startswith("PATH=") for e in environ)
        assert environ == {f"{k}={v}" for k, v in spec["env"].items()}


def test_kanban_is_not_dumpable_once_it_can_start_agents():
    """So a non-root agent of the same user cannot read kanban's own /proc/<pid>/environ."""
    LocalRunner()
    assert procs.is_dumpable() is False


# --- daemons ------------------------------------------------------------------------------------

# Double fork + setsid: the daemon is in a session and process group of its own, its parent
# gone. It writes a heartbeat until killed. Then the agent exits, or hangs (the timeout case).
DAEMONISE = r'''
import os, sys, time
heartbeat, mode, marker = sys.argv[1], sys.argv[2], sys.argv[3]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(sys.executable, [sys.executable, "-c", """
import sys, time
while True:
    with open(sys.argv[1], "a") as f:
        f.write("beat\\n")
    time.sleep(0.05)
""", heartbeat, marker, "daemon"])
    os._exit(0)
os.wait()
end = time.time() + 10
while not os.path.exists(heartbeat) and time.time() < end:
    time.sleep(0.01)
print("daemon is beating", flush=True)
if mode == "hang":
    time.sleep(300)
'''


def _live(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
                state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker.encode() in cmdline and state not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


@pytest.fixture
def marker():
    mark = f"kanban-containment-{uuid.uuid4().hex}"
    yield mark
    for pid in _live(mark):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_daemon_that_left_the_process_group_ends_with_the_run(tmp_path, marker, mode):
    heartbeat = tmp_path / "heartbeat"
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(DAEMONISE))
    runner = LocalRunner()
    run_dir = tmp_path / "run"
    runner.submit(run_dir, [sys.executable, str(agent), str(heartbeat), mode, marker], cwd=tmp_path,
                  env=dict(os.environ), log=run_dir / "agent.log", timeout=1.5 if mode == "hang" else 10, grace=0.3)
    assert runner.wait_any([run_dir], 15) == [run_dir]
    result = json.loads((run_dir / "result.json").read_text())
    assert "daemon is beating" in runner.read_log(run_dir)
    assert result["timed_out"] == (mode == "hang"), result
    # result.json is there: nothing of the run may be left, the daemon included
    assert _live(marker) == [], "the daemon outlived its run"
    size = heartbeat.stat().st_size
    time.sleep(0.3)
    assert heartbeat.stat().st_size == size, "the heartbeat goes on"
    assert not runner.poll(run_dir).running
