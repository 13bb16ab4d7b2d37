"""The Ray executor: every run a Ray job, its work travelling as git (docs/ray.md).

Behind the same seam as LocalRunner (kanban.runner.Runner): the engine, the merge queue and the
commands see a run directory on this machine, a log that grows there, and a result.json when it
is over; the board, the scheduler and the merge queue stay here, the only writer of main.

A run, from submit to result:

- submit records the run and returns; a launch thread pushes the worktree's commit (and a
  tester's unfinished merge of main) to the shared remote under a private ref,
  `refs/kanban/runs/<run>/in` (never a branch, never main), and submits
  `python -m kanban.executors.ray_job` as a Ray job (a push to a forge takes a second or more:
  never inside the engine's pass), which the next poll records: its spec in the job's environment
  (argv, the agents' filtered environment without credentials, which travel as names only, the
  run directory's files, the timeout), its Ray resources from `[executor.<kind>]`. What this
  runner knows of the run is in the run directory's ray.json, so a later kanban re-attaches to it.
- poll copies the job's log here as it grows (the stall is judged from it) and stops the job at
  the deadline (timeout + grace + a margin: the wrapper on the node enforces the timeout itself),
  so neither side alone keeps an agent alive.
- when the job ends, its result line says how the agent ended and which commit it pushed to
  `refs/kanban/runs/<run>/out-<try>`; that commit is fetched into the task's worktree here
  (`git reset --hard`: the branch moves, main never does), and the engine judges the run exactly
  as a local one.
- a job that Ray lost, whose node died, whose push failed, or that could not even be submitted
  is submitted again (a new try, on any node), up to `[executor] infra_retries`: an
  infrastructure failure, counted in the result (`infra_failures`), never the agent's strike.

References are `ray:` and the run directory relative to the repository (the job id changes with
each try, and is known only once submitted); `local:` runs (made before the switch to Ray) are
run on by a LocalRunner inside this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kanban import atomic, git, paths
from kanban.config import MODEL_CREDENTIALS, Config, Placement
from kanban.errors import KanbanError
from kanban.executors.ray_job import SPEC_VARIABLE, encode_spec
from kanban.runner import LOCAL_REF, LocalRunner, RunHandle, RunSpec, RunState, local_path, local_ref
from kanban.sandbox import Plan
from kanban.supervisor import RESULT, now_iso
from kanban.untrusted import clean

STATE = "ray.json"  # this runner's record of a run, in its run directory
RAY_REF = "ray:"
MARGIN = 15.0  # seconds past the wrapper's own deadline before kanban stops a job itself
STATUS_EVERY = 0.5  # seconds a listing of the cluster's jobs is reused
LOG_EVERY = 5.0  # seconds between copies of one running job's log (the wrapper judges the stall itself)
RELAUNCH_AFTER = 2.0  # seconds before a failed submission is tried again
LAUNCH_THREADS = 4  # pushes and submissions under way at once, beside the engine
LOG_MISSES = 5  # polls of an ended job whose log could not be read before its run counts as lost
WAIT_STEP = 0.2
CAPACITY_EVERY = 5.0  # seconds a capacity() answer is reused
FILES_LIMIT = 4 << 20  # bytes of a run directory's files sent with the job
SPEC_LIMIT = 100 << 10  # bytes of the encoded spec (it travels in one environment variable)
# A variable is a credential when one of its words (split at "_") says so: ANTHROPIC_API_KEY,
# CLAUDE_CODE_OAUTH_TOKEN, DB_PASSWORD; not GIT_AUTHOR_NAME.
SECRET_WORDS = frozenset({"KEY", "KEYS", "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PAT",
                          "CREDENTIAL", "CREDENTIALS", "AUTH", "OAUTH", "COOKIE", "SESSION", "APIKEY", "PRIVATE"})
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t(INFO|WARNING|ERROR) job_manager\.py:\d+ -- ")
AGENT_ROLES = ("task", "reviewer", "tester")


class RayRunner:
    """Runs agents, the test stage's command and verifications as Ray jobs (see the module's text)."""

    def __init__(self, root: Path | None, config: Config, client: Any = None) -> None:
        self.root = root
        self.config = config
        self.executor = config.executor
        self._client = client
        self._local = LocalRunner(root)
        self._jobs: dict[str, Any] = {}  # submission id -> JobDetails, from the last listing
        self._listed_at = 0.0
        self._logs_at: dict[Path, float] = {}
        self._grown_at: dict[Path, float] = {}  # when each run's log last grew (monotonic)
        self._capacity: tuple[float, str] | None = None
        self._log_misses: dict[Path, int] = {}
        self._launches: dict[Path, Any] = {}  # run directory -> the Future of its launch under way
        self._fetches: dict[Path, tuple[Any, dict]] = {}  # run directory -> (its fetch home, the job's outcome)
        self._launcher: Any = None  # a ThreadPoolExecutor, made at the first launch

    # -- the cluster -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            address = None if self.executor.address == "auto" else self.executor.address
            try:
                self._client = JobSubmissionClient(address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise KanbanError(f"cannot reach the Ray cluster at {self.executor.address}: {exc}",
                                  file=self.config.source,
                                  hint="start it (ray start --head) or fix [executor] address") from None
        return self._client

    def _job(self, sid: str | None, fresh: bool = False) -> Any:
        """The job's details from a listing at most STATUS_EVERY old; None when Ray does not know it."""
        if sid is None:
            return None
        now = time.monotonic()
        if fresh or now - self._listed_at > STATUS_EVERY or sid not in self._jobs:
            try:
                self._jobs = {j.submission_id: j for j in self.client.list_jobs() if j.submission_id}
                self._listed_at = now
            except Exception:  # noqa: BLE001 - the head is unreachable right now: nothing is known
                return _UNKNOWN
        return self._jobs.get(sid)

    # -- the protocol ----------------------------------------------------------------------

    def submit(
        self,
        run_dir: Path,
        argv: Sequence[str | os.PathLike],
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float,
        stall: float | None = None,
        grace: float = 5.0,
        wait: bool = True,
        idle_lines: Sequence[str] = (),
        retry_limit: float | None = None,
        sandbox: Plan | None = None,
        armed: bool = False,
    ) -> RunHandle:
        """Push the run's commit, submit its job (ARMED: at release()); return at once.

        WAIT is not waited for (a job starts when the cluster has room); a failed push or
        submission is an infrastructure failure that poll() tries again, never a LaunchError."""
        run_dir = Path(run_dir).resolve()
        if not argv:
            raise KanbanError("empty agent command", file=run_dir)
        if timeout <= 0:
            raise KanbanError(f"timeout must be positive, got {timeout}", file=run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / STATE).exists() or (run_dir / RESULT).exists():
            raise KanbanError("run directory already used", file=run_dir, hint="use a new attempt")
        cwd = Path(cwd).resolve()
        kind = self._kind(run_dir)
        name = _slug(self._rel(run_dir)) + "-" + secrets.token_hex(3)
        words = [os.fspath(a) for a in argv]
        agent_env, names = self._split_secrets(dict(env))
        state: dict[str, Any] = {
            "v": 1, "kind": kind, "name": name, "nonce": secrets.token_hex(16),
            "command": words, "cwd": str(cwd), "log": str(Path(log).resolve()),
            "timeout": float(timeout), "stall": None if stall is None else float(stall), "grace": float(grace),
            "idle_lines": list(idle_lines),
            "retry_limit": None if retry_limit is None or not idle_lines else float(retry_limit),
            "env": agent_env, "secrets": names, "armed": bool(armed), "released": not armed,
            # planned again on the worker, for its own checkout (kanban.sandbox.plan_here)
            "sandbox": None if sandbox is None else dict(sandbox.request),
            "tries": [], "infra": [], "job": None, "submitted": now_iso(),
        }
        self._save(run_dir, state)
        Path(state["log"]).parent.mkdir(parents=True, exist_ok=True)
        Path(state["log"]).touch()
        if not armed:
            self._launch(run_dir, state)
        return RunHandle(run_dir, None, None, 0, Path(state["log"]))

    def release(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        state = self._load(run_dir)
        if state is None:
            return self._local.release(run_dir)
        if not state.get("released"):
            state["released"] = True
            self._save(run_dir, state)
            self._launch(run_dir, state)

    def poll(self, run_dir: Path) -> RunState:
        run_dir = Path(run_dir)
        state = self._load(run_dir)
        if state is None:
            return self._local.poll(run_dir)
        result = _read_json(run_dir / RESULT)
        if result is not None:
            return RunState(False, result, None, True)
        if not state.get("released"):
            if state.get("stopping"):
                return self._settle(run_dir, state, _ended(cancelled=True, error="stopped before its turn came"))
            return RunState(True, None, None, True)
        if not self._launched(run_dir, state):  # its push and submission are under way
            return RunState(True, None, None, True)
        if state.get("job") is None:  # not submitted yet, or its last submission failed
            return self._give_up_or_wait(run_dir, state)
        job = self._job(state["job"])
        if job is _UNKNOWN:  # the head is unreachable: the wrapper still enforces the timeout there
            return RunState(True, None, None, True)
        status = None if job is None else str(getattr(job.status, "value", job.status))
        if status not in TERMINAL and job is not None:
            if status == "RUNNING":
                self._running(run_dir, state, job)
            return RunState(True, None, None, True)
        return self._finished(run_dir, state, job, status)

    def spec(self, run_dir: Path) -> RunSpec | None:
        state = self._load(Path(run_dir))
        if state is None:
            return self._local.spec(run_dir)
        return RunSpec([str(a) for a in state["command"]], Path(state["cwd"]), Path(state["log"]),
                       float(state["timeout"]), state.get("stall"), float(state.get("grace", 5.0)))

    def cancel(self, run_dir: Path, force: bool = False) -> None:
        run_dir = Path(run_dir)
        state = self._load(run_dir)
        if state is None:
            return self._local.cancel(run_dir, force)
        if (run_dir / RESULT).exists():
            return
        launch = self._launches.get(run_dir)
        if launch is not None:  # let it end, so that the job it submits is the one stopped
            with contextlib.suppress(Exception):
                launch.result(timeout=60)
            self._launched(run_dir, state)
        state["stopping"] = "kill" if force else "cancel"
        self._save(run_dir, state)
        if state.get("job"):
            with contextlib.suppress(Exception):
                self.client.stop_job(state["job"])
        elif state.get("released"):
            self._settle(run_dir, state, _ended(cancelled=True, error="stopped before Ray started it"))

    def reclaim(self, run_dir: Path, by: str) -> RunState:
        """A Ray run has no supervisor here to lose: the cluster (and the wrapper) hold it."""
        if self._load(Path(run_dir)) is None:
            return self._local.reclaim(run_dir, by)
        return self.poll(run_dir)

    def log_path(self, run_dir: Path) -> Path:
        state = self._load(Path(run_dir))
        if state is None:
            return self._local.log_path(run_dir)
        return Path(state["log"])

    def read_log(self, run_dir: Path, tail: int | None = None) -> str:
        from kanban.untrusted import read_capped

        state = self._load(Path(run_dir))
        if state is None:
            return self._local.read_log(run_dir, tail)
        if state.get("job") and not (Path(run_dir) / RESULT).exists():
            self._copy_log(Path(run_dir), state)
        return read_capped(Path(state["log"]), tail if tail is not None else 64 << 20, tail=tail is not None)

    def active(self, runs_root: Path) -> list[Path]:
        if not Path(runs_root).is_dir():
            return []
        ours = sorted(p.parent for p in Path(runs_root).rglob(STATE))
        return sorted(set(self._local.active(runs_root))
                      | {d for d in ours if not (d / RESULT).exists() and self.poll(d).running})

    def wait_any(self, run_dirs: Iterable[Path], timeout: float | None) -> list[Path]:
        dirs = [Path(d) for d in run_dirs]
        if not dirs and timeout is None:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [d for d in dirs if (d / RESULT).exists() or not self.poll(d).running]
            left = None if deadline is None else deadline - time.monotonic()
            if done or (left is not None and left <= 0):
                return done
            time.sleep(WAIT_STEP if left is None else max(0.0, min(WAIT_STEP, left)))

    def ref(self, run_dir: Path) -> str:
        return RAY_REF + local_ref(self.root, run_dir)[len(LOCAL_REF):]

    def resolve(self, ref: str) -> Path:
        if isinstance(ref, str) and ref.startswith(RAY_REF) and len(ref) > len(RAY_REF):
            return local_path(self.root, LOCAL_REF + ref[len(RAY_REF):])
        return local_path(self.root, ref)

    def where(self, run_dir: Path) -> str | None:
        """Which node runs it ("node 127.0.0.3 (3f2a9c1b)"), once Ray placed it; "here" for a local run."""
        state = self._load(Path(run_dir))
        if state is None:
            return self._local.where(run_dir)
        return state.get("node")

    def pid(self, run_dir: Path) -> int | None:
        """A local run's agent pid; None for a job on the cluster (its node says where it is)."""
        return self._local.pid(run_dir) if self._load(Path(run_dir)) is None else None

    def close(self) -> None:
        """What this process holds for its runs (the local runner's spawner); the runs go on."""
        self._local.close()

    def capacity(self) -> str | None:
        """The cluster's free capacity in words ("3 nodes, 14 of 16 agent_slot free"), asked at most
        every CAPACITY_EVERY seconds (the live view draws often)."""
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < CAPACITY_EVERY:
            return self._capacity[1]
        try:
            info = self.cluster()
        except Exception:  # noqa: BLE001 - status shows what it can
            self._capacity = (now, "the Ray cluster is unreachable")
            return self._capacity[1]
        placement = self.executor.placement_for("task")
        names = [name for name, _ in placement.resources] or ["CPU"]
        free = [f"{int(total - used)} of {int(total)} {name} free" for name in names
                for used, total in [info["resources"].get(name, (0.0, 0.0))]]
        self._capacity = (now, f"Ray {info['ray_version']}: {info['alive']} node{'s' if info['alive'] != 1 else ''}, "
                          + ", ".join(free))
        return self._capacity[1]

    def cluster(self) -> dict[str, Any]:
        """What the cluster says of itself: its Ray version, live and dead nodes, each resource (used, total)."""
        version = self.client._do_request("GET", "/api/version").json().get("ray_version", "?")
        status = self.client._do_request("GET", "/api/cluster_status").json()["data"]["clusterStatus"]
        usage = (status.get("loadMetricsReport") or {}).get("usage") or {}
        nodes = (status.get("loadMetricsReport") or {}).get("nodeTypes") or []
        resources: dict[str, tuple[float, float]] = {}
        wanted = {n for p in [self.executor.placement_for(k) for k in ("task", "reviewer", "tester", "test", "verify")]
                  for n, _ in p.resources} | {"CPU", "memory"}
        for name in wanted:  # the dashboard camel-cases the names: agent_slot is agentSlot there
            key = next((k for k in usage if k.replace("_", "").lower() == name.replace("_", "").lower()), None)
            if key is not None:
                used, total = usage[key]
                resources[name] = (float(used), float(total))
        alive = sum(int(count) for _, count in nodes) if nodes else len(
            (status.get("autoscalerReport") or {}).get("activeNodes") or {})
        return {"ray_version": version, "alive": alive, "resources": resources}

    # -- launching ---------------------------------------------------------------------------

    def _launch(self, run_dir: Path, state: dict[str, Any]) -> None:
        """One try: its push and submission started on a launch thread; the next poll records how
        it went (_launched). The try is recorded as launching first, so that a kanban killed
        meanwhile is followed by one that asks Ray whether it went through."""
        if state.get("launching"):  # one at a time
            return
        n = len(state["tries"]) + 1
        sid = f"kanban-{state['name']}-t{n}"
        state["launching"] = sid
        self._save(run_dir, state)
        self._launches[run_dir] = self._threads().submit(self._push_and_submit, run_dir, dict(state), n, sid)

    def _threads(self) -> Any:
        """The launch threads: pushes, submissions and fetches, beside the engine."""
        if self._launcher is None:
            from concurrent.futures import ThreadPoolExecutor

            self._launcher = ThreadPoolExecutor(LAUNCH_THREADS, thread_name_prefix="kanban-ray-launch")
        return self._launcher

    def _push_and_submit(self, run_dir: Path, state: dict[str, Any], n: int, sid: str) -> dict[str, Any]:
        """On a launch thread: the try's spec, its push, its submission. Reads the run's worktree
        (which nothing else touches while its run is out) and writes nothing of kanban's."""
        try:
            spec = self._job_spec(run_dir, state, n)
            encoded = encode_spec(spec)
            if len(encoded) > SPEC_LIMIT:
                raise KanbanError(f"the run's spec is {len(encoded)} bytes, more than a Ray job carries "
                                  f"({SPEC_LIMIT})")
            entrypoint = _entrypoint([self.executor.python, "-m", "kanban.executors.ray_job"])
            placement = self.executor.placement_for(state["kind"])
            self.client.submit_job(entrypoint=entrypoint, submission_id=sid,
                                   runtime_env={"env_vars": {SPEC_VARIABLE: encoded}},
                                   metadata={"kanban_run": self._rel(run_dir), "kanban_kind": state["kind"]},
                                   **_placement_args(placement))
        except Exception as exc:  # noqa: BLE001 - the remote, the network, the head: the cluster's fault
            return {"job": sid, "failed": f"could not submit try {n}: {_first_line(exc)}"}
        return {"job": sid, "out_ref": spec["out_ref"]}

    def _launched(self, run_dir: Path, state: dict[str, Any]) -> bool:
        """Whether no launch of the run is under way; one that ended is recorded in STATE first.
        A launch an earlier kanban left (killed while it ran) is settled by asking Ray for its job."""
        sid = state.get("launching")
        if sid is None:
            return True
        launch = self._launches.get(run_dir)
        if launch is not None and not launch.done():
            return False
        if launch is not None:
            del self._launches[run_dir]
            outcome = launch.result()
        else:
            job = self._job(sid, fresh=True)
            if job is _UNKNOWN:  # the head is unreachable: asked again at the next poll
                return False
            n = len(state["tries"]) + 1
            outcome = ({"job": sid, "out_ref": _run_refs(state) + f"/out-{n}"} if job is not None
                       else {"job": sid, "failed": f"kanban stopped while submitting try {n}"})
        state.pop("launching", None)
        if "failed" in outcome:
            state["infra"].append(outcome["failed"])
            state["tries"].append({"job": outcome["job"], "failed": True})
            state["job"] = None
            state["launch_failed_at"] = time.time()
        else:
            state["tries"].append({"job": outcome["job"], "out_ref": outcome["out_ref"]})
            state["job"] = outcome["job"]
            state.pop("running_at", None)
            self._grown_at[run_dir] = time.monotonic()
        self._save(run_dir, state)
        return True

    def _job_spec(self, run_dir: Path, state: dict[str, Any], n: int) -> dict[str, Any]:
        cwd = Path(state["cwd"])
        base = _run_refs(state)
        head = git.head(cwd)
        main = self.config.main_branch
        # main too (a private ref: the remote's branches are never written), so that the agents'
        # `git diff main...HEAD` means on the node what it means here
        refspecs = [f"{head}:{base}/in", f"{git.rev_parse(cwd, f'refs/heads/{main}')}:{base}/main"]
        merge: str | None = None
        if git.merge_in_progress(cwd):
            merge = git.rev_parse(cwd, "MERGE_HEAD")
            refspecs.append(f"{merge}:{base}/merge")
        git.push_refs(cwd, self.executor.remote, refspecs)
        identity = {key: git.run(cwd, "config", "--get", key, check=False).strip() for key in ("user.name",
                                                                                                "user.email")}
        return {
            "v": 1, "nonce": state["nonce"], "remote": self.executor.remote, "workspace": self.executor.workspace,
            "in_ref": f"{base}/in", "merge_ref": f"{base}/merge" if merge else None, "out_ref": f"{base}/out-{n}",
            "main_ref": f"{base}/main", "main_branch": main,
            "branch": git.current_branch(cwd), "slot": cwd.name, "name": f"{state['name']}-t{n}",
            "argv": state["command"], "env": state["env"], "secrets": state["secrets"],
            "secret_dir": self.executor.secret_dir, "timeout": state["timeout"], "stall": state["stall"],
            "grace": state["grace"], "idle_lines": state["idle_lines"], "retry_limit": state["retry_limit"],
            "paths": {"worktree": str(cwd), "run_dir": str(run_dir.resolve())},
            "files": _files(run_dir, Path(state["log"])), "identity": identity, "sandbox": state.get("sandbox"),
            # [worktree] setup runs on the node too, in its warm worktree, when its inputs changed there
            "setup": [list(a) for a in self.config.worktree.setup] if state["kind"] != "verify" else [],
            "setup_inputs": list(self.config.worktree.setup_inputs),
        }

    def _split_secrets(self, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The environment the job's metadata may show, and the credentials' names (read on the worker)."""
        names = sorted({n for n in env if n in MODEL_CREDENTIALS or is_secret_name(n)}
                       | set(self.executor.secrets))
        if self.executor.send_secrets:
            return env, [n for n in names if n not in env]
        return {k: v for k, v in env.items() if k not in names}, names

    # -- while it runs -------------------------------------------------------------------------

    def _running(self, run_dir: Path, state: dict[str, Any], job: Any) -> None:
        if "running_at" not in state:
            state["running_at"] = time.time()
            state["node"] = _node(job)
            self._save(run_dir, state)
        now = time.monotonic()
        if now - self._logs_at.get(run_dir, 0.0) >= LOG_EVERY:
            self._copy_log(run_dir, state)
        if state.get("stopping"):
            return
        over = time.time() - float(state["running_at"]) - state["timeout"] - state["grace"] - MARGIN
        grown = self._grown_at.setdefault(run_dir, now)
        stalled = state["stall"] is not None and now - grown > state["stall"] + state["grace"] + MARGIN
        if over > 0 or stalled:
            state["stopping"] = "timeout" if over > 0 else "stall"
            self._save(run_dir, state)
            with contextlib.suppress(Exception):
                self.client.stop_job(state["job"])

    def _copy_log(self, run_dir: Path, state: dict[str, Any]) -> str | None:
        """The agent's output so far, from the job's log, written to the run's log here; the job's whole
        log (None: it could not be read now)."""
        self._logs_at[run_dir] = time.monotonic()
        try:
            text = self.client.get_job_logs(state["job"])
        except Exception:  # noqa: BLE001 - the node is gone, or the head unreachable: keep what we have
            return None
        agent = _agent_output(text, state["nonce"], state["job"])
        log = Path(state["log"])
        data = agent.encode("utf-8", errors="surrogateescape")
        try:
            size = log.stat().st_size
        except FileNotFoundError:
            size = -1
        if len(data) > size:
            atomic.write_bytes_atomic(log, data)
            self._grown_at[run_dir] = time.monotonic()
        return text

    # -- when it ended -----------------------------------------------------------------------------

    def _finished(self, run_dir: Path, state: dict[str, Any], job: Any, status: str | None) -> RunState:
        if run_dir in self._fetches:
            return self._fetched(run_dir, state)
        if job is not None and not state.get("node"):
            state["node"] = _node(job)  # a short job may end between two polls, never seen running
            self._save(run_dir, state)
        text = self._copy_log(run_dir, state) if job is not None else ""
        if text is None:  # the job ended, its log unreadable right now: asked again a few times
            misses = self._log_misses[run_dir] = self._log_misses.get(run_dir, 0) + 1
            if misses < LOG_MISSES:
                return RunState(True, None, None, True)
        outcome = _result_line(text or "", state["nonce"])
        stopping = state.get("stopping")
        if outcome is not None and "result" in outcome and not outcome.get("push_error"):
            # fetched on a launch thread (a forge takes a second or more), before result.json says it is over
            self._fetches[run_dir] = (self._threads().submit(self._bring_home, dict(state), outcome), outcome)
            return self._fetched(run_dir, state)
        if stopping in ("cancel", "kill"):
            return self._settle(run_dir, state, _ended(cancelled=True, error="stopped with its Ray job"))
        if stopping in ("timeout", "stall"):
            return self._settle(run_dir, state, _ended(timed_out=stopping == "timeout", stalled=stopping == "stall",
                                                       error=f"its Ray job was stopped at the {stopping} deadline"))
        if outcome is not None and outcome.get("push_error"):
            why = f"its push failed: {outcome['push_error']}"
        elif outcome is not None and outcome.get("setup_error"):
            why = f"its workspace could not be set up: {outcome['setup_error']}"
        elif job is None:
            why = f"Ray lost the job {state['job']}"
        else:
            said = [ln for ln in (text or "").splitlines() if ln.strip() and not _RAY_LINE.match(ln)][-1:]
            why = (f"the job {status.lower() if status else 'ended'} without a result: {getattr(job, 'message', '')}"
                   + (f" (its log ends: {clean(said[0], max_bytes=300)})" if said else ""))
        return self._infra(run_dir, state, why)

    def _fetched(self, run_dir: Path, state: dict[str, Any]) -> RunState:
        """The run, once its commit is home: judged by it (running while the fetch is under way)."""
        fetch, outcome = self._fetches[run_dir]
        if not fetch.done():
            return RunState(True, None, None, True)
        del self._fetches[run_dir]
        try:
            fetch.result()
        except (KanbanError, OSError) as exc:
            return self._infra(run_dir, state, f"its commit could not be fetched: {_first_line(exc)}")
        result = dict(outcome["result"])
        stopping = state.get("stopping")
        if stopping in ("timeout", "stall"):
            result.update(timed_out=stopping == "timeout" or bool(result.get("timed_out")),
                          stalled=stopping == "stall" or bool(result.get("stalled")))
        return self._settle(run_dir, state, result)

    def _infra(self, run_dir: Path, state: dict[str, Any], why: str) -> RunState:
        """An infrastructure failure: another try on any node, up to the limit, never a strike."""
        state["infra"].append(_first_line(why)[:500])
        state["job"] = None
        state.pop("node", None)
        self._save(run_dir, state)
        return self._give_up_or_wait(run_dir, state)

    def _give_up_or_wait(self, run_dir: Path, state: dict[str, Any]) -> RunState:
        if len(state["infra"]) > self.executor.infra_retries:
            return self._settle(run_dir, state, _ended(infra=True, error=(
                f"the cluster failed it {len(state['infra'])} times (last: {state['infra'][-1]})")))
        if time.time() - float(state.get("launch_failed_at", 0)) >= RELAUNCH_AFTER:
            self._launch(run_dir, state)
        return RunState(True, None, None, True)

    def _bring_home(self, state: dict[str, Any], outcome: dict[str, Any]) -> None:
        """The pushed commit into the task's worktree here (its branch moves, nothing else), and the report."""
        if state["kind"] not in AGENT_ROLES or not outcome.get("head"):
            return
        cwd = Path(state["cwd"])
        out_ref = state["tries"][-1]["out_ref"]
        fetched = git.fetch_ref(cwd, self.executor.remote, out_ref)
        merge = git.merge_in_progress(cwd) and git.rev_parse(cwd, "MERGE_HEAD")
        if fetched != git.head(cwd) or merge:
            git.reset_hard(cwd, fetched)
        if merge and outcome.get("merge_unfinished"):  # left for the engine to see, as a local tester leaves it
            git.run_status(cwd, "merge", "--no-edit", "--no-ff", merge)
        from kanban.agents import REPORT_DIR, REPORT_NAME

        report = cwd / REPORT_DIR / REPORT_NAME
        if report.parent.is_dir() and isinstance(outcome.get("report"), str):
            atomic.write_text_atomic(report, outcome["report"])

    def _settle(self, run_dir: Path, state: dict[str, Any], result: dict[str, Any]) -> RunState:
        result = {"exit_code": None, "signal": None, "timed_out": False, "stalled": False, "cancelled": False,
                  "started": state.get("submitted"), "ended": now_iso(), "duration": None, **result}
        result.update(node=state.get("node"), job=state.get("job"), infra_failures=len(state["infra"]),
                      infra_errors=state["infra"][-5:])
        if not (run_dir / RESULT).exists():
            atomic.write_json_atomic(run_dir / RESULT, result, durable=True)
        return RunState(False, _read_json(run_dir / RESULT), None, True)

    # -- records -------------------------------------------------------------------------------

    def _kind(self, run_dir: Path) -> str:
        """task, reviewer, tester, test or verify: which `[executor.<kind>]` placement it gets."""
        if self.root is not None and run_dir.parent == paths.verify_runs_dir(self.root).resolve():
            return "verify"
        head = run_dir.name.rsplit("-", 1)[0]
        return head if head in ("task", "reviewer", "tester", "test") else "default"

    def _rel(self, run_dir: Path) -> str:
        return local_ref(self.root, run_dir)[len(LOCAL_REF):]

    def _load(self, run_dir: Path) -> dict[str, Any] | None:
        return _read_json(Path(run_dir) / STATE)

    def _save(self, run_dir: Path, state: dict[str, Any]) -> None:
        atomic.write_json_atomic(Path(run_dir) / STATE, state, mode=0o600, durable=True)


def _run_refs(state: dict[str, Any]) -> str:
    """The run's private refs on the shared remote: .../in, .../main, .../merge, .../out-<try>."""
    return f"refs/kanban/runs/{state['name']}"


def is_secret_name(name: str) -> bool:
    return any(word in SECRET_WORDS for word in name.upper().split("_"))


def cluster_checks(root: Path, config: Config) -> list[tuple[str, bool, str]]:
    """`kanban preflight` for `[executor] kind = "ray"`: (name, ok, detail) for the cluster (reachable,
    its Ray version, its nodes, free slots), the shared remote (from here and from a worker, with
    the secrets' names there) and a warning for `send_secrets`."""
    import ray

    ray_side = RayRunner(root, config)
    ex = config.executor
    checks: list[tuple[str, bool, str]] = []
    try:
        info = ray_side.cluster()
    except Exception as exc:  # noqa: BLE001 - anything the client raises: unreachable
        return [("ray cluster", False, f"cannot reach {ex.address}: {_first_line(exc)}; start it (ray start "
                                       "--head) or fix [executor] address")]
    same = info["ray_version"] == ray.__version__
    checks.append(("ray cluster", same, f"{ex.address}: Ray {info['ray_version']}" + (
        "" if same else f", but this machine has Ray {ray.__version__}; install the same version on both")))
    checks.append(("ray nodes", info["alive"] > 0, f"{info['alive']} live node(s)"))
    names = [n for n, _ in ex.placement_for("task").resources]
    for name in names:
        used, total = info["resources"].get(name, (0.0, 0.0))
        checks.append((f"ray {name}", total > 0, f"{int(total - used)} of {int(total)} free" if total else
                       f"no node has {name}; start the workers with ray start --resources='{{\"{name}\": 8}}'"))
    try:
        git.remote_refs(root, ex.remote)
        checks.append(("shared remote", True, f"{ex.remote} reachable from here"))
    except KanbanError as exc:
        checks.append(("shared remote", False, f"{ex.remote}: {exc}; check the URL and this machine's access"))
    checks.append(_probe_worker(ray_side))
    if ex.send_secrets:
        checks.append(("secrets", True, "WARNING: [executor] send_secrets = true: credentials travel in the jobs' "
                                        "metadata, which the Ray dashboard shows"))
    return checks


def _probe_worker(ray_side: RayRunner, limit: float = 90.0) -> tuple[str, bool, str]:
    """A one-off job on a worker: this kanban there, the remote reachable from there, the secrets' names."""
    from kanban.executors.ray_job import PROBE_LINE

    ex = ray_side.executor
    names = sorted(set(ex.secrets) | set(MODEL_CREDENTIALS))
    sid = f"kanban-preflight-{secrets.token_hex(4)}"
    try:
        ray_side.client.submit_job(entrypoint=_entrypoint([ex.python, "-m", "kanban.executors.ray_job", "--probe",
                                                         ex.remote, *names]),
                                 submission_id=sid, **_placement_args(ex.placement_for("task")))
        end = time.monotonic() + limit
        while time.monotonic() < end:
            status = str(getattr(ray_side.client.get_job_status(sid), "value", ""))
            if status in TERMINAL:
                break
            time.sleep(0.3)
        else:
            ray_side.client.stop_job(sid)
            return ("remote from a worker", False, f"the probe job did not run within {limit:g}s (no free slot?)")
        text = ray_side.client.get_job_logs(sid)
    except Exception as exc:  # noqa: BLE001
        return ("remote from a worker", False, f"the probe job failed: {_first_line(exc)}")
    line = next((ln for ln in reversed(text.splitlines()) if ln.startswith(PROBE_LINE)), None)
    if line is None:
        return ("remote from a worker", False, f"the worker could not run `{ex.python} -m kanban.executors.ray_job`: "
                                               f"{text.strip().splitlines()[-1] if text.strip() else 'no output'}; "
                                               "install kanban there or fix [executor] python")
    found = json.loads(line[len(PROBE_LINE):])
    if not found.get("remote"):
        return ("remote from a worker", False, f"{found.get('host')}: {found.get('remote_error')}")
    wanted = [n for n in ex.secrets if n in found.get("missing", [])]
    boxed = [r for r in AGENT_ROLES if ray_side.config.agent_for(r).sandbox == "bwrap"]
    if boxed and not found.get("sandbox"):
        return ("remote from a worker", False, f"{found.get('host')}: sandbox = \"bwrap\" for the "
                f"{', '.join(boxed)}, but {found.get('sandbox_detail') or 'bubblewrap does not work there'}; "
                "install bubblewrap on the workers (apt-get install bubblewrap)")
    return ("remote from a worker", True, f"{found.get('host')} reaches {ex.remote}" + (
        f"; bubblewrap works there ({found.get('sandbox_detail')})" if boxed else "") + (
        f"; it lacks {', '.join(wanted)} (set them in the workers' environment or secret_dir)" if wanted else ""))


class _Unknown:
    """The cluster could not be asked."""


_UNKNOWN = _Unknown()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ended(**fields: Any) -> dict[str, Any]:
    return {"exit_code": None, "signal": None, "timed_out": False, "stalled": False, "cancelled": False, **fields}


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[-80:] or "run"


def _entrypoint(argv: list[str]) -> str:
    """Ray takes the entrypoint as a shell string: built from an argv, every piece checked."""
    for word in argv:
        if not word or any(c in word for c in "\x00\n\r"):
            raise KanbanError(f"cannot pass {word!r} to a Ray job's entrypoint", hint="check [executor] python")
    return shlex.join(argv)


def _placement_args(p: Placement) -> dict[str, Any]:
    args: dict[str, Any] = {"entrypoint_resources": dict(p.resources)} if p.resources else {}
    if p.num_cpus is not None:
        args["entrypoint_num_cpus"] = p.num_cpus
    if p.memory is not None:
        args["entrypoint_memory"] = p.memory
    return args


def _files(run_dir: Path, log: Path) -> dict[str, list]:
    """The run directory's own files (prompt.md, a preset's ignore file and git wrapper), for the job."""
    import base64

    out: dict[str, list] = {}
    total = 0
    for path in sorted(run_dir.iterdir()):
        if path.name in (STATE, RESULT) or path == log or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > FILES_LIMIT:
            raise KanbanError(f"the run directory's files are more than {FILES_LIMIT} bytes", file=run_dir)
        out[path.name] = [path.stat().st_mode & 0o755, base64.b64encode(data).decode()]
    return out


def _node(job: Any) -> str | None:
    node = getattr(job, "driver_node_id", None)
    info = getattr(job, "driver_agent_http_address", None) or ""
    ip = re.sub(r"^https?://|:\d+$", "", info)
    if not node and not ip:
        return None
    return f"{ip or 'node'} ({str(node)[:8]})" if node else ip


def _agent_output(text: str, nonce: str, sid: str) -> str:
    """What the agent wrote, out of the job's log: after the wrapper's start line, before its
    result line, without Ray's own lines."""
    lines = text.splitlines(keepends=True)
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith(f"{nonce} start ")), None)
    if start is None:
        return ""
    out = []
    for line in lines[start:]:
        if line.startswith(f"{nonce} result "):
            break
        if line.startswith(f"{nonce} ") or line.startswith(f"Running entrypoint for job {sid}: ") \
                or _RAY_LINE.match(line):
            continue
        out.append(line)
    return "".join(out)


def _result_line(text: str, nonce: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(f"{nonce} result "):
            with contextlib.suppress(ValueError):
                data = json.loads(line[len(nonce) + 8:])
                return data if isinstance(data, dict) else None
    return None
