"""The Ray executor on a real Ray cluster on this machine (issue 13).

One cluster per test session (tests/ray_kit.py: a head and two worker nodes on loopback
addresses), a bare repository as the shared remote. The whole pipeline, a hung agent stopped
at its timeout, kanban killed and restarted while its jobs run, and a worker node killed
mid-run (last: it leaves the cluster one node short).

Marked `ray`: .ci/run installs the extra and runs them on their own (`pytest -m ray`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from agents_kit import live_pids, make_project, task_md  # noqa: E402
from ray_kit import SECRET_NAME, SECRET_VALUE, Cluster  # noqa: E402

from kanban.commands.run import run as run_loop  # noqa: E402
from kanban.history import History  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture(scope="session")
def cluster():
    kept = os.environ.get("KANBAN_TEST_RAY_CLUSTER")  # a record from `python tests/ray_kit.py RECORD`
    found = Cluster.attach(Path(kept)) if kept else Cluster(workers=2).start()
    try:
        yield found
    finally:
        found.stop()


def executor_toml(tmp_path: Path, cluster: Cluster) -> str:
    """`[executor]` for the test's cluster, with a fresh bare repository as the shared remote."""
    remote = tmp_path / "runs.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    return (f'\n[executor]\nkind = "ray"\naddress = "{cluster.address}"\nremote = "{remote}"\n'
            f'workspace = "{tmp_path / "workers"}"\npython = "{sys.executable}"\n')


def ray_project(repo: Path, tmp_path: Path, cluster: Cluster, tasks: str, *, rules=None, test_command=True,
                verify=True, timeout: str = "60s", extra: str = ""):
    toml = executor_toml(tmp_path, cluster) + f'secrets = ["{SECRET_NAME}"]\n'
    if test_command:
        toml += """
        [test]
        command = ["python3", "-c", "import os; print('tests ran in', os.getcwd())"]
        """
    if verify:
        toml += """
        [merge]
        mode = "batch"
        verify = ["python3", "-c", "import os; print('verified in', os.getcwd())"]
        """
    return make_project(repo, tmp_path / "kit", tasks, rules=rules, timeout=timeout, extra_toml=toml + extra)


def changelog(root: Path) -> str:
    return (root / "CHANGELOG.md").read_text()


def test_the_whole_pipeline_runs_on_the_cluster(repo, tmp_path, cluster, capsys):
    tasks = "".join(task_md(f"TASK-{n}", files=f"work/TASK-{n}*") for n in (1, 2, 3))
    project = ray_project(repo, tmp_path, cluster, tasks, extra="""
        [worktree]
        setup = [["python3", "-c", "import os; print('set up in', os.getcwd())"]]
        """)
    code = run_loop(repo, no_merge=False, live=False)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err + project.describe()
    text = changelog(repo)
    assert all(f"TASK-{n}" in text for n in (1, 2, 3)), text
    # every run went to the cluster: task agents, reviewers, the test stage's command
    runs = project.runs()
    assert {r.role for r in runs} == {"task", "reviewer", "test"}
    assert all(r.run_ref.startswith("ray:") and r.node for r in runs), [(r.run_ref, r.node) for r in runs]
    assert all(r.outcome == "ok" and not r.infra_failures for r in runs)
    # the agents' commits came home through the remote, and main holds them
    merged = subprocess.run(["git", "log", "--format=%s", "main"], cwd=repo, capture_output=True, text=True).stdout
    assert all(f"TASK-{n}: task attempt 1" in merged for n in (1, 2, 3)), merged
    # the agents ran on the workers, in the node-local workspace, with the same placeholders
    starts = project.events("start")
    assert starts and all(str(tmp_path / "workers") in e["cwd"] and e["cwd"] == e["worktree"] for e in starts)
    assert all(Path(e["prompt_file"]).name == "prompt.md" and str(tmp_path / "workers") in e["prompt_file"]
               for e in starts)
    # [worktree] setup ran on the node, in its warm worktree, once per task there
    logs = [(repo / ".kanban" / "runs" / f"TASK-{n}" / "task-1" / "agent.log").read_text() for n in (1, 2, 3)]
    assert all(f"set up in {tmp_path / 'workers'}" in text for text in logs), logs
    # the credential came from the worker's own environment, by name; never in the job's metadata
    assert all(e["env"].get(SECRET_NAME) == SECRET_VALUE for e in starts)
    from ray.job_submission import JobSubmissionClient

    shown = json.dumps([j.model_dump() if hasattr(j, "model_dump") else j.__dict__ for j in
                        JobSubmissionClient(cluster.address).list_jobs()], default=str)
    assert SECRET_VALUE not in shown
    # the verifications ran there too, on the candidate merge commit the queue pushed
    with History(repo) as h:
        verifications = h.verifications()
    assert verifications and all(v.outcome == "pass" and (v.run_ref or "").startswith("ray:")
                                 for v in verifications)
    assert "verified in" in Path(verifications[0].log).read_text()
    # nothing but the queue wrote main: the remote has only kanban's private refs
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)"], cwd=tmp_path / "runs.git",
                          capture_output=True, text=True).stdout.split()
    assert refs and all(r.startswith("refs/kanban/runs/") for r in refs), refs


def test_a_hung_agent_is_stopped_at_its_timeout_with_its_grandchildren(repo, tmp_path, cluster):
    rules = [{"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["spawn"], ["hang"]]}]
    project = ray_project(repo, tmp_path, cluster, task_md("TASK-1"), rules=rules, timeout="3s",
                          test_command=False, verify=False)
    project.drive(lambda: any(r.ended for r in project.runs("TASK-1")), timeout=90, step=0.2,
                  what="the hung run's end")
    first = project.runs("TASK-1")[0]
    assert first.timed_out == 1 and first.outcome == "failed", first
    assert "RETRY" in project.where("TASK-1")[1] or project.column("TASK-1") == "IN_PROGRESS"
    deadline = time.monotonic() + 10
    while live_pids(project.marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_pids(project.marker) == [], "the agent's grandchildren outlived its timeout"


def test_kanban_killed_and_restarted_reattaches_to_its_jobs(repo, tmp_path, cluster):
    flag = tmp_path / "kit" / "flag-go"
    rules = [{"role": "task", "steps": [["wait_for", str(flag)], ["commit"]]}]
    tasks = task_md("TASK-1", files="a") + task_md("TASK-2", files="b")
    project = ray_project(repo, tmp_path, cluster, tasks, rules=rules, test_command=False, verify=False)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(repo), "run"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(project.events("start")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(project.events("start")) == 2, "the agents did not start on the cluster"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kanban dies; its jobs run on
        first.wait()
    flag.touch()
    code = run_loop(repo, no_merge=False, live=False)
    assert code == 0, project.describe()
    assert "TASK-1" in changelog(repo) and "TASK-2" in changelog(repo)
    task_runs = [r for r in project.runs() if r.role == "task"]
    assert [(r.task, r.attempt, r.outcome) for r in task_runs] == [("TASK-1", 1, "ok"), ("TASK-2", 1, "ok")]
    # the two task agents were re-attached to, not run again
    assert [e["task"] for e in project.events("start") if e["role"] == "task"] in (["TASK-1", "TASK-2"],
                                                                                   ["TASK-2", "TASK-1"])


def test_preflight_checks_the_cluster_and_the_remote_from_a_worker(repo, tmp_path, cluster):
    ray_project(repo, tmp_path, cluster, task_md("TASK-1"), test_command=False, verify=False)
    from kanban.commands.preflight import run_checks
    from kanban.config import load_config
    from kanban.store import load_board

    checks = {c.name: c for c in run_checks(repo, load_config(repo), load_board(repo))}
    import ray

    assert checks["ray cluster"].ok and ray.__version__ in checks["ray cluster"].detail
    assert checks["ray nodes"].ok and checks["ray agent_slot"].ok, checks
    assert checks["shared remote"].ok, checks["shared remote"]
    worker = checks["remote from a worker"]
    assert worker.ok and "lacks" not in worker.detail, worker  # the secret is in the workers' environment


# A sandboxed agent on a worker: tries what the sandbox must make impossible, prints each try.
BOXED_AGENT = r"""
import json, os, subprocess, sys
from pathlib import Path

def attempt(name, fn):
    try:
        out = fn()
        ok = out.returncode == 0 if hasattr(out, "returncode") else bool(out) if out is not None else True
        said = (out.stdout + out.stderr)[-300:] if hasattr(out, "returncode") else repr(out)[:300]
    except Exception as exc:
        ok, said = False, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"try": name, "ok": ok, "out": said}), flush=True)

def sh(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)

role = os.environ["KANBAN_ROLE"]
if role == "task":
    attempt("pid namespace", lambda: os.getpid() <= 3)
    attempt("update-ref main", lambda: sh("git", "update-ref", "refs/heads/main", "HEAD"))
    attempt("see the host's /tmp", lambda: Path(sys.argv[1]).exists())
    attempt("write the person's checkout", lambda: Path(sys.argv[2]).write_text("escaped"))
    Path("work.txt").write_text("done\n")
    attempt("commit", lambda: sh("sh", "-c", "git add work.txt && git commit -q -m 'TASK-1: sandboxed work'"))
else:
    Path(os.environ["KANBAN_REPORT_FILE"]).write_text("verdict: approve\n" if role == "reviewer" else "verdict: pass\n")
"""


def test_a_sandboxed_agent_runs_in_bubblewrap_on_the_worker(repo, tmp_path, cluster):
    from kanban import sandbox

    ok, why = sandbox.available()
    if not ok:
        pytest.skip(f"bubblewrap cannot run here: {why}")
    outside = Path("/tmp") / f"kanban-ray-probe-{os.getpid()}-{time.monotonic_ns()}"  # in the real /tmp
    outside.write_text("the host's /tmp")
    agent = tmp_path / "boxed.py"
    # named in the script, not in its argv (the sandbox exposes the argv's paths, read-only)
    agent.write_text(BOXED_AGENT.replace("sys.argv[1]", repr(str(outside))).replace(
        "sys.argv[2]", repr(str(repo / "README.md"))))
    command = json.dumps([sys.executable, str(agent)])
    (repo / "kanban.toml").write_text(f'main_branch = "main"\n[agent]\ncommand = {command}\ntimeout = "60s"\n'
                                      f'sandbox = "bwrap"\n' + executor_toml(tmp_path, cluster))
    (repo / "TODO.md").write_text("# TODO\n\n## TASK-1: do it\n\nThe work.\n")
    (repo / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "project"], cwd=repo, check=True)
    code = run_loop(repo, no_merge=False, live=False)
    log = (repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "agent.log").read_text(errors="replace")
    tries = {t["try"]: t for t in (json.loads(line) for line in log.splitlines() if line.startswith('{"try"'))}
    assert code == 0 and "TASK-1" in changelog(repo), log
    with History(repo) as h:
        runs = h.runs("TASK-1")
    assert all(r.run_ref.startswith("ray:") and r.node for r in runs), runs
    assert tries["pid namespace"]["ok"] and tries["commit"]["ok"], tries  # inside bubblewrap, still working
    assert not tries["update-ref main"]["ok"] and "Read-only" in tries["update-ref main"]["out"], tries
    assert not tries["see the host's /tmp"]["ok"], tries  # its /tmp is its own
    assert not tries["write the person's checkout"]["ok"] and (repo / "README.md").read_text() == "# project\n", tries
    outside.unlink()
    merged = subprocess.run(["git", "log", "--format=%s", "main"], cwd=repo, capture_output=True, text=True).stdout
    assert "TASK-1: sandboxed work" in merged, merged  # the branch, settled on the node, came home


def test_a_dead_worker_node_is_not_a_strike(repo, tmp_path, cluster):
    """Last in the file: the cluster is one worker short afterwards."""
    flag = tmp_path / "kit" / "flag-go"
    rules = [{"task": "TASK-1", "role": "task", "steps": [["wait_for", str(flag)], ["commit"]]}]
    project = ray_project(repo, tmp_path, cluster, task_md("TASK-1"), rules=rules, test_command=False,
                          verify=False)
    from kanban.commands.tick import open_engine

    engine = open_engine(repo)
    try:
        engine.tick()
        run = engine.history.live_runs()[0]
        deadline = time.monotonic() + 60
        while not engine.runner.where(run.run_path(engine.runner)) and time.monotonic() < deadline:
            engine.tick()
            time.sleep(0.2)
        node = engine.runner.where(run.run_path(engine.runner))
        assert node, "the run was never placed"
        while not project.events("start") and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster.kill_node(node.split()[0])
        flag.touch()
        deadline = time.monotonic() + 120
        while project.column("TASK-1") == "IN_PROGRESS" and time.monotonic() < deadline:
            engine.tick()
            time.sleep(0.3)
    finally:
        engine.history.close()
    runs = project.runs("TASK-1")
    assert runs[0].outcome == "ok" and runs[0].infra_failures >= 1, runs[0]
    assert runs[0].node and runs[0].node.split()[0] != node.split()[0]
    assert project.column("TASK-1") in ("REVIEW", "TESTING", None)
    assert not project.where("TASK-1") or not project.where("TASK-1")[1], "a dead node counted as a strike"
    with History(repo) as h:
        assert not h.strikes("TASK-1")
        assert any(e[2] == "infra_failure" for e in h.events("TASK-1")), h.events("TASK-1")
    from kanban.report import build_report

    assert "infrastructure failures: " in build_report(repo)
