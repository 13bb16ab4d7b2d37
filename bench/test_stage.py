"""The test stage: `[test] command` run by kanban versus a tester agent, for changes whose tests pass.

Both runs take the same tasks through `kanban run --no-merge` with scripted
task agents and reviewers (real supervised subprocesses, real git). The only
difference is the test stage:

- with `[test] command`: kanban runs the project's tests itself (a script that
  takes --test-seconds), and no tester agent starts;
- baseline, no `[test] command`: a tester agent starts, spends --agent-seconds
  (a real CLI's start-up and model turns; measured against a scripted server on
  127.0.0.1 a claude turn is several seconds, a real model's far more), runs the
  same tests and writes its verdict.

Prints wall time, agent runs and the ratio, side by side in one run.

    python bench/test_stage.py [--tasks 6] [--test-seconds 1] [--agent-seconds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kanban.commands.init import init
from kanban.commands.run import run as run_loop
from kanban.history import History

TESTS = """\
import sys, time
time.sleep({seconds})
print("all tests passed", sys.argv[1:])
"""

AGENT = """\
import os, subprocess, sys, time
role = os.environ["KANBAN_ROLE"]
report = open(os.environ["KANBAN_REPORT_FILE"], "w")
if role == "task":
    time.sleep(0.2)
    open("src/feature_%s.py" % os.environ["KANBAN_TASK_ID"].split("-")[1], "w").write("X = 1\\n")
    subprocess.run(["git", "add", "-A", "src"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "feature"], check=True)
    report.write("done\\n")
elif role == "reviewer":
    time.sleep(0.2)
    report.write("verdict: approve\\n")
else:  # tester: think, then run the same tests
    time.sleep({agent_seconds})
    code = subprocess.run([sys.executable, "tests_runner.py"]).returncode
    report.write("verdict: %s\\n" % ("pass" if code == 0 else "fail"))
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def build(root: Path, tasks: int, test_seconds: float, agent_seconds: float, with_command: bool) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.com")
    (root / "src").mkdir()
    (root / "src" / "__init__.py").write_text("")
    (root / "tests_runner.py").write_text(TESTS.format(seconds=test_seconds))
    agent = root.parent / f"agent-{root.name}.py"
    agent.write_text(AGENT.format(agent_seconds=agent_seconds))
    toml = (f'pool_size = 6\n[agent]\ncommand = {json.dumps([sys.executable, str(agent)])}\n'
            'timeout = "5m"\nstall = "5m"\n')
    if with_command:
        toml += f'[test]\ncommand = {json.dumps([sys.executable, "tests_runner.py", "{tests}"])}\n'
    (root / "kanban.toml").write_text(toml)
    (root / "TODO.md").write_text("# TODO\n" + "".join(
        f"\n## TASK-{n}: Feature {n}\nfiles: src/feature_{n}.py\n\nAdd feature {n}.\n" for n in range(1, tasks + 1)))
    init(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")


def measure(base: Path, name: str, args, with_command: bool) -> dict:
    root = base / name
    with contextlib.redirect_stdout(None):
        build(root, args.tasks, args.test_seconds, args.agent_seconds, with_command)
    start = time.monotonic()
    with open(root.parent / f"{name}.log", "w") as out, contextlib.redirect_stdout(out):
        code = run_loop(root, no_merge=True, live=False)
    wall = time.monotonic() - start
    with History(root) as history:
        runs = history.runs()
    agents = [r for r in runs if r.role != "test"]
    return {"wall": wall, "code": code, "agent_runs": len(agents),
            "testers": sum(1 for r in agents if r.role == "tester"),
            "test_runs": sum(1 for r in runs if r.role == "test")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--test-seconds", type=float, default=1.0)
    parser.add_argument("--agent-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kanban-bench-test-stage-") as tmp:
        base = Path(tmp)
        command = measure(base, "command", args, with_command=True)
        agent = measure(base, "agent", args, with_command=False)
    print(f"{args.tasks} tasks, tests take {args.test_seconds:g}s, a tester agent {args.agent_seconds:g}s more; "
          "kanban run --no-merge, pool of 6")
    print(f"{'test stage':<26}{'wall':>9}{'agent runs':>12}{'testers':>9}{'test runs':>11}{'exit':>6}")
    for name, r in (("[test] command", command), ("tester agent (baseline)", agent)):
        print(f"{name:<26}{r['wall']:>8.2f}s{r['agent_runs']:>12}{r['testers']:>9}{r['test_runs']:>11}{r['code']:>6}")
    print(f"ratio: {command['wall'] / agent['wall']:.2f}x the baseline's wall time; "
          f"{agent['agent_runs'] - command['agent_runs']} agent runs saved")
    return 0 if command["code"] == 0 and agent["code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
