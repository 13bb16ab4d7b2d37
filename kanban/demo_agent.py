"""The built-in scripted agent for `kanban demo`: no network, no model, real git.

It plays any role by the rules of the agent contract (DESIGN section 6),
steered by `demo:` lines in the task's description:

    demo: sleep 1.5          how long the work takes (seconds)
    demo: fail-first         the first task attempt exits 1
    demo: hang-first         the first task attempt hangs (with a grandchild) until killed
    demo: reject-first       the first review rejects
    demo: test-fail-first    the first test run fails
    demo: no-verdict         reviewers and testers write a report without a verdict line

As the planner (`kanban plan`) it proposes three tasks for the feature its prompt names.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

_DIRECTIVE = re.compile(r"^\s*demo:\s*(.+?)\s*$", re.M)


def directives(prompt: str) -> dict[str, str]:
    found = {}
    for text in _DIRECTIVE.findall(prompt):
        word, _, value = text.partition(" ")
        found[word] = value.strip()
    return found


def say(message: str) -> None:
    print(message, flush=True)


def work(seconds: float) -> None:
    """Take some time, printing as it goes so the stall watchdog sees progress."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.25, left))
        say(".")


def git(*args: str) -> str:
    """git in the worktree, through kanban's git room. Its environment is ours as given (no
    cleaning: the agent's command-scope config and a sandbox's GIT_DIR are meant for it)."""
    from kanban import git as kgit

    status, out, err = kgit.run_bytes(".", args, base={}, env=dict(os.environ))
    if status != 0:
        raise SystemExit(f"git {' '.join(args[:2])} failed: {os.fsdecode(err).strip()}")
    return os.fsdecode(out)


def report(text: str) -> None:
    path = os.environ.get("KANBAN_REPORT_FILE")
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


def hang() -> None:
    say("working on something that will never finish...")
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])  # a grandchild, killed with us
    while True:  # keeps printing, so it is the timeout (not the stall watchdog) that stops it
        time.sleep(0.5)
        say("still working...")


def task_role(task_id: str, attempt: int, d: dict[str, str]) -> int:
    if "hang-first" in d and attempt == 1:
        hang()
    work(float(d.get("sleep") or random.uniform(0.3, 1.0)))
    if "fail-first" in d and attempt == 1:
        say("error: the build broke (the demo's planned first failure)")
        report("The first attempt failed on purpose: the demo shows a retry.")
        return 1
    path = Path("demo") / f"{task_id}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"# {task_id}\n\nImplemented by the demo agent, attempt {attempt}.\n", encoding="utf-8")
    git("add", str(path))
    git("commit", "-q", "-m", f"{task_id}: implement (demo agent)")
    report(f"Wrote {path} and committed it.")
    say(f"committed {path}")
    return 0


def reviewer_role(task_id: str, attempt: int, d: dict[str, str]) -> int:
    main = os.environ.get("KANBAN_MAIN_BRANCH", "main")
    say(git("diff", "--stat", f"{main}...HEAD").strip() or "(empty diff)")
    work(float(d.get("sleep") or random.uniform(0.2, 0.6)) / 2)
    if "no-verdict" in d:
        report("Looked at the change.")  # and forgot the verdict line, as a real model may
        return 0
    if "reject-first" in d and attempt == 1:
        report("Rejected: the change needs a test for the empty case (the demo's planned rejection).\n\n"
               "verdict: reject")
        return 0  # like the real CLIs, the verdict is what it writes, not its exit status
    report("Approved: the change does what the task asks.\n\nverdict: approve")
    return 0


def tester_role(task_id: str, attempt: int, d: dict[str, str]) -> int:
    say("running the targeted tests...")
    work(float(d.get("sleep") or random.uniform(0.2, 0.6)) / 2)
    if "test-fail-first" in d and attempt == 1:
        report("FAILED tests/test_demo.py::test_empty - AssertionError (the demo's planned test failure)\n\n"
               "verdict: fail")
        return 0
    report("All targeted tests passed.\n\nverdict: pass")
    say("all tests passed")
    return 0


def planner_role(prompt: str) -> int:
    """Three tasks for the feature named on the line after "...this feature:" in the prompt."""
    lines = prompt.splitlines()
    at = next((i for i, line in enumerate(lines) if line.rstrip().endswith("feature:")), None)
    named = [line.strip() for line in lines[at + 1:] if line.strip()][:1] if at is not None else []
    feature = named[0] if named else "the feature"
    work(random.uniform(0.2, 0.5))
    report(f"""## NEW-1: Core of {feature}
priority: 2
files: demo/core.md

Write the core of {feature}, with its tests.

## NEW-2: Command line for {feature}
depends: NEW-1
files: demo/cli.md

Expose the core on the command line.

## NEW-3: Document {feature}
depends: NEW-1
files: demo/docs.md

Say in the README how to use it.""")
    say("proposed 3 tasks")
    return 0


ROLES = {"task": task_role, "reviewer": reviewer_role, "tester": tester_role}


def main(argv: list[str]) -> int:
    prompt_file = argv[1] if len(argv) > 1 else os.environ.get("KANBAN_PROMPT_FILE", "")
    prompt = Path(prompt_file).read_text(encoding="utf-8") if prompt_file else ""
    role = os.environ.get("KANBAN_ROLE", "task")
    task_id = os.environ.get("KANBAN_TASK_ID", "TASK-0")
    attempt = int(os.environ.get("KANBAN_ATTEMPT", "1"))
    say(f"demo agent: {role} for {task_id}, attempt {attempt}")
    if role == "planner":
        return planner_role(prompt)
    return ROLES[role](task_id, attempt, directives(prompt))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
