"""The program a Ray job runs on a worker node: one kanban run, from the shared remote and back.

`python -m kanban.executors.ray_job` with its spec in the job's environment (KANBAN_RAY_JOB:
zlib-compressed JSON, base64; it never holds a credential's value unless the person asked for
that in `[executor] send_secrets`). It needs the standard library, git and this kanban, not Ray:

1. the workspace: a bare clone of the shared remote per node (`<workspace>/<remote hash>/cache.git`,
   fetched under a lock) and one worktree per task, kept warm between runs (ignored files such
   as build caches survive; tracked and untracked files are reset to the run's commit);
2. the run's commit (the ref kanban pushed) checked out on the task's branch, the node's main
   moved to the person's (so `git diff main...HEAD` means the same here), a tester's unfinished
   merge of main made again, the run directory's files (prompt.md, a preset's files)
   written with the person's paths turned into this node's;
3. the agent under kanban's own supervisor (kanban.supervisor, as on the person's machine: the
   timeout, the stall, the retry lines, its whole process tree killed), watching this program:
   when Ray stops the job (SIGTERM, then SIGKILL) or loses it, the agent goes too;
4. the branch's head pushed back to this try's own ref (never a branch; never main), and one
   result line, `<nonce> result {json}`, last on stdout. Everything before it is the agent's
   output, streamed as it comes; kanban reads both from the job's logs.

Credentials come by name: each name in the spec's "secrets" is read from this worker's own
environment, or from a file of that name in `secret_dir` (a secret store's mount), and given
to the agent only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import time
import zlib
from pathlib import Path
from typing import Any

SPEC_VARIABLE = "KANBAN_RAY_JOB"
REPORT_LIMIT = 64 * 1024  # bytes of the agent's report carried back
SECRET_LIMIT = 64 * 1024  # bytes of one secret file read
STREAM_STEP = 0.2  # seconds between looks at the agent's log
CHUNK = 1 << 16
SETUP_TIMEOUT = 1800.0  # seconds one `[worktree] setup` command may take on a node


def decode_spec(text: str) -> dict[str, Any]:
    data = json.loads(zlib.decompress(base64.b64decode(text.encode("ascii"))).decode("utf-8"))
    if not isinstance(data, dict) or data.get("v") != 1:
        raise ValueError("not a kanban Ray job spec of this version")
    return data


def encode_spec(spec: dict[str, Any]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(spec, separators=(",", ":")).encode("utf-8"), 6)).decode()


class Job:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.nonce = str(spec["nonce"])
        self.remote = str(spec["remote"])
        base = Path(os.path.expanduser(str(spec["workspace"])))
        self.home = base / hashlib.sha256(self.remote.encode()).hexdigest()[:16]
        self.cache = self.home / "cache.git"
        self.worktree = self.home / "wt" / _safe(str(spec["slot"]))
        self.run_dir = self.home / "runs" / _safe(str(spec["name"]))
        self.stopping = 0  # SIGTERMs received
        self.out = sys.stdout.buffer
        self.ended_with_newline = True

    # -- output ------------------------------------------------------------------------

    def say(self, kind: str, data: dict[str, Any]) -> None:
        """One line of ours among the agent's output, on a line of its own."""
        line = f"{self.nonce} {kind} {json.dumps(data, separators=(',', ':'))}\n".encode()
        self.write(line if self.ended_with_newline else b"\n" + line)

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.out.flush()
            self.ended_with_newline = data.endswith(b"\n")

    # -- the workspace -------------------------------------------------------------------

    def git(self, cwd: Path, *args: str, check: bool = True) -> str:
        from kanban import git

        status, out, err = git.run_bytes(cwd, list(args), env={"GIT_TERMINAL_PROMPT": "0"}, timeout=600)
        if status != 0 and check:
            raise RuntimeError(f"git {' '.join(args[:2])} failed: {os.fsdecode(err).strip()[-500:]}")
        return os.fsdecode(out).strip() if status == 0 else ""

    def prepare(self) -> str:
        """The run's commit checked out in this node's warm worktree; the commit."""
        from kanban import locks

        self.home.mkdir(parents=True, exist_ok=True)
        refs = [f"+{self.spec['in_ref']}:{self.spec['in_ref']}"]
        for key in ("merge_ref", "main_ref"):
            if self.spec.get(key):
                refs.append(f"+{self.spec[key]}:{self.spec[key]}")
        with locks.hold(self.home / "cache.lock", mode=0o600):
            if not (self.cache / "HEAD").exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                self.git(self.cache, "init", "--quiet", "--bare")
            self.git(self.cache, "fetch", "--quiet", "--no-tags", self.remote, *refs)
            for key, value in (self.spec.get("identity") or {}).items():
                if key in ("user.name", "user.email") and value:
                    self.git(self.cache, "config", key, str(value))
            sha = self.git(self.cache, "rev-parse", "--verify", f"{self.spec['in_ref']}^{{commit}}")
            if self.spec.get("main_ref") and self.spec.get("main_branch"):  # this node's main: the person's
                main = self.git(self.cache, "rev-parse", "--verify", f"{self.spec['main_ref']}^{{commit}}")
                self.git(self.cache, "update-ref", f"refs/heads/{self.spec['main_branch']}", main)
            if not (self.worktree / ".git").exists():
                if self.worktree.exists():  # half made (a node that died while adding it): made again
                    import shutil

                    shutil.rmtree(self.worktree, ignore_errors=True)
                self.git(self.cache, "worktree", "prune")
                self.worktree.parent.mkdir(parents=True, exist_ok=True)
                self.git(self.cache, "worktree", "add", "--quiet", "--force", "--detach", str(self.worktree), sha)
        wt = self.worktree
        self.git(wt, "merge", "--abort", check=False)
        self.git(wt, "reset", "--quiet", "--hard")
        self.git(wt, "clean", "-ffdq")  # untracked files go; ignored ones (caches) stay warm
        branch = self.spec.get("branch")
        if branch:
            self.git(wt, "checkout", "--quiet", "--force", "--ignore-other-worktrees", "-B", str(branch), sha)
        else:
            self.git(wt, "checkout", "--quiet", "--force", "--detach", sha)
        if self.spec.get("merge_ref"):  # a tester's conflicted merge of main, made again here
            self.git(wt, "merge", "--no-edit", "--no-ff", str(self.spec["merge_ref"]), check=False)
        report = wt / ".kanban-run"
        report.mkdir(exist_ok=True)
        (report / ".gitignore").write_text("*\n", encoding="utf-8")
        (report / "report.md").write_text("", encoding="utf-8")
        return sha

    def set_up(self, env: dict[str, str]) -> str | None:
        """`[worktree] setup` in this node's worktree, when its commands or inputs changed since it
        last ran here (the warm worktree keeps what it made); why it failed, or None."""
        setup = [list(a) for a in self.spec.get("setup") or []]
        if not setup:
            return None
        from kanban.runner import run_bounded

        inputs = list(self.spec.get("setup_inputs") or [])
        listing = (self.git(self.worktree, "ls-files", "-s", "--", *[f":(glob){g}" for g in inputs]) if inputs
                   else self.git(self.worktree, "rev-parse", "HEAD^{tree}"))
        key = hashlib.sha256((json.dumps([setup, inputs]) + "\n" + listing).encode()).hexdigest()
        stamp = self.home / "setup" / (_safe(str(self.spec["slot"])) + ".json")
        with contextlib.suppress(OSError, ValueError):
            if json.loads(stamp.read_text(encoding="utf-8")).get("key") == key:
                return None
        stamp.unlink(missing_ok=True)
        for argv in setup:
            try:
                done = run_bounded(argv, self.worktree, env, timeout=SETUP_TIMEOUT, keep_tail=True,
                                   merge_stderr=True)
            except (OSError, ValueError) as exc:
                return f"worktree set-up '{' '.join(argv)}' failed on {socket.gethostname()}: {exc}"
            self.write(done.output)
            if done.timed_out or done.returncode != 0:
                return (f"worktree set-up '{' '.join(argv)}' "
                        + (f"timed out after {SETUP_TIMEOUT:g} s" if done.timed_out else f"exited {done.returncode}")
                        + f" on {socket.gethostname()}")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": key, "at": time.time()}), encoding="utf-8")
        return None

    def here(self, text: str) -> str:
        """TEXT with the person's worktree and run directory turned into this node's."""
        local = self.spec["paths"]
        pairs = sorted(((local["run_dir"], str(self.run_dir)), (local["worktree"], str(self.worktree))),
                       key=lambda p: -len(p[0]))
        for theirs, ours in pairs:
            if theirs:
                text = text.replace(theirs, ours)
        return text

    def environment(self) -> tuple[dict[str, str], list[str]]:
        """The agent's environment: the spec's, with the named secrets read here; the names missing."""
        env = {str(k): self.here(str(v)) for k, v in (self.spec.get("env") or {}).items()}
        missing = []
        secret_dir = self.spec.get("secret_dir") or ""
        for name in self.spec.get("secrets") or []:
            value = os.environ.get(name)
            if value is None and secret_dir:
                with contextlib.suppress(OSError):
                    from kanban.untrusted import read_capped

                    value = read_capped(Path(os.path.expanduser(secret_dir)) / name, SECRET_LIMIT).rstrip("\n")
            if value is None:
                missing.append(name)
            else:
                env[name] = value
        return env, missing

    def write_files(self) -> None:
        if self.run_dir.exists():
            import shutil

            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        for name, (mode, data) in (self.spec.get("files") or {}).items():
            target = self.run_dir / _safe(name)
            raw = base64.b64decode(data)
            with contextlib.suppress(UnicodeDecodeError):
                raw = self.here(raw.decode("utf-8")).encode("utf-8")
            target.write_bytes(raw)
            os.chmod(target, int(mode) & 0o755)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from kanban.runner import LocalRunner

        self.say("start", {"host": socket.gethostname(), "pid": os.getpid()})
        try:
            self.prepare()
            self.write_files()
            env, missing = self.environment()
        except (OSError, RuntimeError, ValueError) as exc:
            return {"setup_error": str(exc)[-2000:]}
        failed = self.set_up(env)
        if failed:  # as on the person's machine: the run could not start, the agent's to answer for
            return {"result": {"exit_code": None, "signal": None, "timed_out": False, "stalled": False,
                               "cancelled": False, "error": failed}}
        if missing:
            self.say("warning", {"missing_secrets": missing})
        runner = LocalRunner(None, watch_caller=True)
        log = self.run_dir / "agent.log"
        spec = self.spec
        argv = [self.here(str(a)) for a in spec["argv"]]
        try:
            box = self.sandbox(argv, env)
            runner.submit(self.run_dir, argv, self.worktree, env, log,
                          float(spec["timeout"]), spec.get("stall"), float(spec.get("grace", 5.0)), wait=False,
                          idle_lines=spec.get("idle_lines") or (), retry_limit=spec.get("retry_limit"),
                          **({"sandbox": box} if box is not None else {}))
        except Exception as exc:  # noqa: BLE001 - the agent could not start: its result says so
            return {"result": {"exit_code": None, "signal": None, "timed_out": False, "stalled": False,
                               "cancelled": False, "error": f"agent did not start: {exc}"}}
        offset = 0
        asked = 0
        while True:
            done = runner.wait_any([self.run_dir], STREAM_STEP)
            offset = self.stream(log, offset)
            if self.stopping > asked:
                asked = self.stopping
                runner.cancel(self.run_dir, force=asked > 1)
            if done:
                break
        offset = self.stream(log, offset)
        result = runner.poll(self.run_dir).result or {"exit_code": None, "error": "the supervisor left no result"}
        return {"result": result, **self.bring_back()}

    def sandbox(self, argv: list[str], env: dict[str, str]):
        """The bubblewrap sandbox the run asked for (`[agent] sandbox = "bwrap"`), planned for this
        node's checkout: writing only its worktree and its branch of this node's cache, the
        branch settled by the supervisor before the head travels home. None: not asked for."""
        request = self.spec.get("sandbox")
        if not request:
            return None
        from kanban import sandbox

        if self.spec.get("branch") != request.get("branch"):
            raise RuntimeError(f"the sandbox needs the task's branch {request.get('branch')} checked out")
        private = self.home / "sandbox" / _safe(str(self.spec["slot"]))
        return sandbox.plan_here(self.worktree, self.worktree, self.run_dir, private, request, argv, env)

    def stream(self, log: Path, offset: int) -> int:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    self.write(chunk)
                    offset += len(chunk)
        except FileNotFoundError:
            pass
        return offset

    def bring_back(self) -> dict[str, Any]:
        """What travels home: the head (pushed to this try's ref), the report, the merge state."""
        from kanban.untrusted import read_capped

        back: dict[str, Any] = {"report": read_capped(self.worktree / ".kanban-run" / "report.md", REPORT_LIMIT)}
        head = self.git(self.worktree, "rev-parse", "--verify", "HEAD^{commit}", check=False) or None
        back["head"] = head
        back["merge_unfinished"] = bool(
            self.git(self.worktree, "rev-parse", "--verify", "-q", "MERGE_HEAD", check=False)
            or self.git(self.worktree, "diff", "--name-only", "--diff-filter=U", check=False))
        if head and self.spec.get("out_ref"):
            try:
                self.git(self.worktree, "push", "--quiet", "--force", "--no-verify", self.remote,
                         f"{head}:{self.spec['out_ref']}")
            except RuntimeError as exc:
                back["push_error"] = str(exc)[-1000:]
        return back


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "_"


PROBE_LINE = "kanban-probe "


def probe(remote: str, names: list[str]) -> int:
    """`--probe REMOTE NAME...` (kanban preflight): whether this worker runs this kanban, reaches the
    remote, has the named secrets (their names only are printed, never a value), and can make
    the bubblewrap sandbox."""
    import kanban
    from kanban import git, sandbox

    status, _, err = git.run_bytes(None, ["ls-remote", remote, "refs/kanban/*"], env={"GIT_TERMINAL_PROMPT": "0"},
                                   timeout=60)
    found = {"host": socket.gethostname(), "kanban": getattr(kanban, "__version__", "?"), "remote": status == 0,
             "remote_error": os.fsdecode(err).strip()[-300:] if status else "",
             "missing": [n for n in names if n not in os.environ]}
    found["sandbox"], found["sandbox_detail"] = sandbox.available()
    print(PROBE_LINE + json.dumps(found), flush=True)
    return 0


def main() -> int:
    from kanban import procs

    if len(sys.argv) >= 3 and sys.argv[1] == "--probe":
        return probe(sys.argv[2], sys.argv[3:])

    procs.set_undumpable()  # our /proc/<pid>/environ holds the spec and the worker's environment
    try:
        spec = decode_spec(os.environ[SPEC_VARIABLE])
    except (KeyError, ValueError, zlib.error) as exc:
        print(f"kanban ray job: no usable spec in ${SPEC_VARIABLE}: {exc}", file=sys.stderr)
        return 2
    job = Job(spec)

    def on_term(*_: object) -> None:
        job.stopping += 1

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.time()
    outcome = job.run()
    outcome["took"] = round(time.time() - started, 3)
    job.say("result", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
