"""RayRunner's own judgement, against a scripted Jobs API (no cluster): kanban's deadline,
infrastructure failures tried again and never the agent's, a lost job, a cancel, a restart.

tests/test_ray.py runs the same code on a real cluster."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import kanban.executors.ray_runner as rr
from kanban.config import Config, ExecutorConfig
from kanban.executors.ray_job import decode_spec
from kanban.executors.ray_runner import RayRunner


class FakeJobs:
    """The Jobs API as RayRunner uses it; each job's status and log set by the test."""

    def __init__(self) -> None:
        self.jobs: dict[str, SimpleNamespace] = {}
        self.logs: dict[str, str] = {}
        self.stopped: list[str] = []
        self.submitted: list[dict] = []

    def submit_job(self, **kw) -> str:
        sid = kw["submission_id"]
        self.submitted.append(kw)
        self.jobs[sid] = SimpleNamespace(submission_id=sid, status="PENDING", message="",
                                         driver_node_id="ab" * 28, driver_agent_http_address="http://10.0.0.7:52365")
        return sid

    def list_jobs(self):
        return list(self.jobs.values())

    def get_job_logs(self, sid: str) -> str:
        return self.logs.get(sid, "")

    def stop_job(self, sid: str) -> bool:
        self.stopped.append(sid)
        self.jobs[sid].status = "STOPPED"
        return True

    # the test's side
    def spec(self, n: int = -1) -> dict:
        return decode_spec(self.submitted[n]["runtime_env"]["env_vars"]["KANBAN_RAY_JOB"])

    def finish(self, sid: str, result: dict | None, status: str = "SUCCEEDED", **extra) -> None:
        nonce = None
        for kw in self.submitted:
            if kw["submission_id"] == sid:
                nonce = decode_spec(kw["runtime_env"]["env_vars"]["KANBAN_RAY_JOB"])["nonce"]
        text = f"{nonce} start {{}}\nagent output\n"
        if result is not None:
            text += f"{nonce} result {json.dumps({'result': result, **extra})}\n"
        self.logs[sid] = text
        self.jobs[sid].status = status


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def setup(repo: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(rr, "STATUS_EVERY", 0.0)
    monkeypatch.setattr(rr, "RELAUNCH_AFTER", 0.0)
    remote = tmp_path / "runs.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    wt = repo / ".worktrees" / "TASK-1"
    git(repo, "worktree", "add", "-q", "-b", "kanban/TASK-1", str(wt))
    config = Config(executor=ExecutorConfig(kind="ray", remote=str(remote), infra_retries=2))
    jobs = FakeJobs()
    runner = RayRunner(repo, config, client=jobs)
    rdir = repo / ".kanban" / "runs" / "TASK-1" / "task-1"
    rdir.mkdir(parents=True)
    (rdir / "prompt.md").write_text(f"work in {wt}\n")
    return SimpleNamespace(repo=repo, wt=wt, remote=remote, jobs=jobs, runner=runner, rdir=rdir, config=config)


def submit(s, timeout: float = 30.0, **kw):
    env = {"PATH": "/bin", "ANTHROPIC_API_KEY": "sk-secret", "KANBAN_WORKTREE": str(s.wt)}
    handle = s.runner.submit(s.rdir, ["agent", "--prompt", str(s.rdir / "prompt.md")], s.wt, env,
                             s.rdir / "agent.log", timeout, **kw)
    if not kw.get("armed"):
        launched(s)
    return handle


def ended(runner, rdir: Path):
    """Polls until the run is over (its commit is fetched home on a launch thread first)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = runner.poll(rdir)
        if not state.running:
            return state
        time.sleep(0.01)
    raise AssertionError("the run never ended")


def launched(s, tries: int | None = None) -> None:
    """Polls until the launch thread's push and submission are recorded (TRIES submissions in all)."""
    want = len(s.jobs.submitted) + 1 if tries is None else tries
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s.runner.poll(s.rdir)
        state = json.loads((s.rdir / "ray.json").read_text())
        if len(s.jobs.submitted) >= want and not state.get("launching"):
            return
        time.sleep(0.01)
    raise AssertionError("the launch was never recorded")


def test_the_job_carries_the_commit_the_paths_and_no_secret(setup):
    s = setup
    submit(s)
    spec = s.jobs.spec()
    head = git(s.wt, "rev-parse", "HEAD")
    assert git(s.remote, "rev-parse", spec["in_ref"]) == head
    assert spec["in_ref"].startswith("refs/kanban/runs/") and spec["branch"] == "kanban/TASK-1"
    # main travels too, under a private ref, so that `git diff main...HEAD` works on the node
    assert git(s.remote, "rev-parse", spec["main_ref"]) == git(s.repo, "rev-parse", "main")
    assert git(s.remote, "for-each-ref", "refs/heads/") == ""  # no branch of the remote was written
    assert spec["secrets"] == ["ANTHROPIC_API_KEY"] and "ANTHROPIC_API_KEY" not in spec["env"]
    assert "sk-secret" not in json.dumps(s.jobs.submitted, default=str)
    assert spec["files"]["prompt.md"][1] and spec["paths"]["worktree"] == str(s.wt)
    assert s.jobs.submitted[0]["entrypoint_resources"] == {"agent_slot": 1.0}
    assert s.runner.ref(s.rdir) == "ray:.kanban/runs/TASK-1/task-1"
    assert s.runner.resolve(s.runner.ref(s.rdir)) == s.repo / ".kanban/runs/TASK-1/task-1"


def test_the_pushed_commit_comes_home_and_the_run_is_judged_by_it(setup, tmp_path):
    s = setup
    submit(s)
    spec = s.jobs.spec()
    other = tmp_path / "node"  # what the worker did: a commit on the run's commit, pushed to its try's ref
    git(tmp_path, "clone", "-q", str(s.remote), str(other))
    git(other, "fetch", "-q", "origin", f"{spec['in_ref']}:x")
    git(other, "checkout", "-q", "x")
    (other / "new.txt").write_text("new\n")
    git(other, "add", "new.txt")
    git(other, "commit", "-q", "-m", "agent's work")
    git(other, "push", "-q", "origin", f"HEAD:{spec['out_ref']}")
    sid = s.jobs.submitted[0]["submission_id"]
    s.jobs.jobs[sid].status = "RUNNING"
    assert s.runner.poll(s.rdir).running
    assert s.runner.where(s.rdir) == f"10.0.0.7 ({'ab' * 4})"
    s.jobs.finish(sid, {"exit_code": 0}, head=git(other, "rev-parse", "HEAD"), report="verdict: approve\n")
    state = ended(s.runner, s.rdir)
    assert not state.running and state.result["exit_code"] == 0 and state.result["infra_failures"] == 0
    assert git(s.wt, "rev-parse", "HEAD") == git(other, "rev-parse", "HEAD")  # the branch moved
    assert git(s.repo, "rev-parse", "main") != git(other, "rev-parse", "HEAD")  # main did not
    assert (s.rdir / "agent.log").read_text() == "agent output\n"


def test_kanban_stops_a_job_past_its_deadline(setup, monkeypatch):
    s = setup
    monkeypatch.setattr(rr, "MARGIN", 0.0)
    submit(s, timeout=0.2, grace=0.1)
    sid = s.jobs.submitted[0]["submission_id"]
    s.jobs.jobs[sid].status = "RUNNING"
    assert s.runner.poll(s.rdir).running
    time.sleep(0.4)
    assert s.runner.poll(s.rdir).running  # stop_job asked: the job is STOPPED at the next look
    assert s.jobs.stopped == [sid]
    state = s.runner.poll(s.rdir)
    assert not state.running and state.result["timed_out"] and not state.result.get("infra")


def test_a_lost_job_is_tried_again_and_is_no_strike(setup):
    s = setup
    submit(s)
    first = s.jobs.submitted[0]["submission_id"]
    s.jobs.finish(first, None, status="FAILED")  # the node died: no result line
    assert s.runner.poll(s.rdir).running
    launched(s, 2)
    second = s.jobs.submitted[-1]["submission_id"]
    assert second != first and second.endswith("-t2")
    del s.jobs.jobs[second]  # Ray lost it altogether
    assert s.runner.poll(s.rdir).running
    launched(s, 3)
    third = s.jobs.submitted[-1]["submission_id"]
    assert third.endswith("-t3")
    s.jobs.finish(third, {"exit_code": 0})
    result = ended(s.runner, s.rdir).result
    assert result["exit_code"] == 0 and result["infra_failures"] == 2 and not result.get("infra")
    assert result["node"] == f"10.0.0.7 ({'ab' * 4})"  # never seen running: its node read from the ended job


def test_past_the_limit_the_run_is_an_infrastructure_failure(setup):
    s = setup
    submit(s)
    for n in range(3):  # infra_retries = 2: three tries
        s.jobs.finish(s.jobs.submitted[-1]["submission_id"], {"exit_code": 0}, push_error="remote hung up")
        state = s.runner.poll(s.rdir)
        if n < 2:
            launched(s, n + 2)
    assert not state.running and state.result["infra"] and state.result["infra_failures"] == 3
    assert "push failed" in state.result["error"]


def test_a_cancel_stops_the_job(setup):
    s = setup
    submit(s)
    sid = s.jobs.submitted[0]["submission_id"]
    s.jobs.jobs[sid].status = "RUNNING"
    s.runner.cancel(s.rdir)
    assert s.jobs.stopped == [sid]
    result = s.runner.poll(s.rdir).result
    assert result["cancelled"] and not result.get("infra")


def test_a_new_kanban_reattaches_from_the_run_directory(setup):
    s = setup
    submit(s)
    sid = s.jobs.submitted[0]["submission_id"]
    s.jobs.jobs[sid].status = "RUNNING"
    fresh = RayRunner(s.repo, s.config, client=s.jobs)  # knows nothing but the run directory
    assert fresh.poll(s.rdir).running and fresh.active(s.repo / ".kanban" / "runs") == [s.rdir]
    s.jobs.finish(sid, {"exit_code": 3})
    assert ended(fresh, s.rdir).result["exit_code"] == 3
    assert fresh.active(s.repo / ".kanban" / "runs") == []
    assert len(s.jobs.submitted) == 1  # re-attached, never submitted again


def test_an_armed_verification_is_submitted_at_its_release(setup):
    s = setup
    submit(s, armed=True)
    assert s.jobs.submitted == [] and s.runner.poll(s.rdir).running
    s.runner.release(s.rdir)
    launched(s, 1)
    assert len(s.jobs.submitted) == 1


def test_the_push_and_submission_run_beside_the_engine(setup, monkeypatch):
    """submit returns before its push and submission; the poll that finds them done records them."""
    import threading

    s = setup
    gate = threading.Event()
    real = s.jobs.submit_job
    monkeypatch.setattr(s.jobs, "submit_job", lambda **kw: gate.wait(10) and real(**kw))
    began = time.monotonic()
    s.runner.submit(s.rdir, ["agent"], s.wt, {"PATH": "/bin"}, s.rdir / "agent.log", 30.0)
    assert time.monotonic() - began < 5 and s.jobs.submitted == []
    assert s.runner.poll(s.rdir).running and s.runner.poll(s.rdir).running  # polled while it is under way
    state = json.loads((s.rdir / "ray.json").read_text())
    assert state["launching"].endswith("-t1") and state["job"] is None and state["tries"] == []
    gate.set()
    launched(s, 1)
    state = json.loads((s.rdir / "ray.json").read_text())
    assert state["job"] == s.jobs.submitted[0]["submission_id"] and len(state["tries"]) == 1
    assert len(s.jobs.submitted) == 1  # the polls meanwhile started no second one


@pytest.mark.parametrize("went_through", [True, False])
def test_a_kanban_killed_mid_launch_is_followed_by_one_that_asks_ray(setup, monkeypatch, went_through):
    s = setup
    submit(s)
    sid = s.jobs.submitted[0]["submission_id"]
    state = json.loads((s.rdir / "ray.json").read_text())  # as the killed kanban left it: launching
    state.update(launching=sid, job=None, tries=[])
    (s.rdir / "ray.json").write_text(json.dumps(state))
    if not went_through:
        del s.jobs.jobs[sid]
    fresh = RayRunner(s.repo, s.config, client=s.jobs)
    assert fresh.poll(s.rdir).running
    after = json.loads((s.rdir / "ray.json").read_text())
    if went_through:  # adopted: the same job, not submitted again
        assert after["job"] == sid and not after.get("launching") and len(s.jobs.submitted) == 1
        s.jobs.finish(sid, {"exit_code": 0})
        assert ended(fresh, s.rdir).result["infra_failures"] == 0
    else:  # never reached Ray: tried again, as the cluster's failure, not the agent's
        s.runner = fresh
        launched(s, 2)
        after = json.loads((s.rdir / "ray.json").read_text())
        assert after["job"].endswith("-t2") and "kanban stopped while submitting try 1" in after["infra"][0]
