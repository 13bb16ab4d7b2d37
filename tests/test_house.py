"""House rules over kanban's own source, checked by reading it (issue 12, item 1).

- Only the executor (runner, supervisor, procs) knows a run directory's files and signals
  process groups.
- Only kanban.git starts git.
- Only the executor and kanban.git start processes; the few justified exceptions are listed.

Each failure names the offending FILE:LINE.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import kanban

PACKAGE = Path(kanban.__file__).resolve().parent
EXECUTOR = {"kanban/runner.py", "kanban/supervisor.py", "kanban/procs.py", "kanban/spawner.py",
            # The Ray executor (issue 13): its runner keeps its own record (ray.json) beside the run
            # files and writes result.json; the job wrapper runs the supervisor on a worker node.
            "kanban/executors/ray_runner.py", "kanban/executors/ray_job.py"}
GIT_ROOM = "kanban/git.py"

RUN_FILES = ("spec.json", "result.json", "agent.json", "launcher.json", "supervisor.log")
RUN_FILE_NAMES = {"SPEC", "RESULT", "AGENT", "CANCEL", "SUPERVISOR_LOG", "LAUNCHER"}  # their constants

SUBPROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
OS_SPAWNS = {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"}  # and exec*, spawn*

# Modules that may start a process although they are not the executor, and why.
SPAWN_EXCEPTIONS = {
    # The git room: it starts git (and only git), with its cleaned environment.
    GIT_ROOM: "starts git",
    # The scripted demo agent is a separate program (the agent kanban runs, not kanban): its
    # `hang-first` leaves a grandchild on purpose, to show that the supervisor kills it too.
    "kanban/demo_agent.py": "the demo agent's own grandchild",
}


def _modules() -> list[tuple[str, Path]]:
    root = PACKAGE.parent
    return sorted((p.relative_to(root).as_posix(), p) for p in PACKAGE.rglob("*.py"))


@functools.lru_cache(maxsize=1)
def _trees() -> tuple[tuple[str, str, ast.Module], ...]:
    """(module path, its text, its syntax tree) for every module of kanban, read once."""
    found = []
    for name, path in _modules():
        text = path.read_text(encoding="utf-8")
        found.append((name, text, ast.parse(text, str(path))))
    return tuple(found)


def _dotted(node: ast.AST) -> str:
    """`os.kill` for os.kill, `killpg` for a bare name; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def _report(found: list[str], what: str) -> str:
    return f"{what}:\n  " + "\n  ".join(found)


def test_the_executor_modules_exist():
    names = {name for name, _ in _modules()}
    assert EXECUTOR <= names and GIT_ROOM in names
    assert set(SPAWN_EXCEPTIONS) <= names


def test_only_the_executor_knows_the_run_files():
    found = []
    for name, text, tree in _trees():
        if name in EXECUTOR:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for run_file in RUN_FILES:
                if run_file in line:
                    found.append(f"{name}:{lineno}: mentions {run_file}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("kanban.supervisor", "kanban.runner"):
                for alias in node.names:
                    if alias.name in RUN_FILE_NAMES:
                        found.append(f"{name}:{node.lineno}: imports {node.module}.{alias.name}")
            if isinstance(node, ast.Attribute) and node.attr in RUN_FILE_NAMES \
                    and _dotted(node.value).endswith(("supervisor", "runner")):
                found.append(f"{name}:{node.lineno}: uses {_dotted(node)}")
    assert not found, _report(found, "run directory files read outside the executor")


def test_only_the_executor_signals_processes():
    found = []
    for name, _, tree in _trees():
        if name in EXECUTOR:
            continue
        for node, called in _calls(tree):
            last = called.rsplit(".", 1)[-1]
            if last == "killpg" or called in ("os.kill", "signal.pthread_kill") or called.endswith(".send_signal"):
                found.append(f"{name}:{node.lineno}: calls {called}")
        for node in ast.walk(tree):
            # procs.signal_group / stop_group are the executor's one group killer (owner checked by
            # start time): calling it is fine, reaching past it is not.
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "signal"):
                for alias in node.names:
                    if alias.name in ("kill", "killpg", "pthread_kill"):
                        found.append(f"{name}:{node.lineno}: imports {node.module}.{alias.name}")
    assert not found, _report(found, "processes signalled outside the executor")


def _starts_with_git(node: ast.AST) -> bool:
    return (isinstance(node, (ast.List, ast.Tuple)) and bool(node.elts)
            and isinstance(node.elts[0], ast.Constant) and node.elts[0].value == "git")


def test_only_the_git_module_starts_git():
    found = []
    for name, _, tree in _trees():
        if name == GIT_ROOM:
            continue
        for node in ast.walk(tree):
            if _starts_with_git(node):
                found.append(f"{name}:{node.lineno}: an argv starting with \"git\"")
            if isinstance(node, ast.Import) and any(a.name == "git" or a.name.startswith("git.") for a in node.names):
                found.append(f"{name}:{node.lineno}: imports GitPython")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and (node.module == "git" or node.module.startswith("git.")):
                found.append(f"{name}:{node.lineno}: imports from GitPython")
        for node, called in _calls(tree):
            if called.rsplit(".", 1)[-1] in ("Repo", "Git"):
                found.append(f"{name}:{node.lineno}: calls {called} (GitPython)")
            if called.startswith("subprocess.") and node.args and _starts_with_git(node.args[0]):
                found.append(f"{name}:{node.lineno}: {called} of git")
    assert not found, _report(found, "git started outside kanban/git.py")


def _spawns(called: str) -> bool:
    module, _, attr = called.rpartition(".")
    if module == "subprocess":
        return attr in SUBPROCESS_CALLS
    if module == "os":
        return attr in OS_SPAWNS or attr.startswith(("exec", "spawn"))
    return called in ("asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell", "pty.spawn")


def test_only_the_executor_starts_processes():
    found = []
    for name, _, tree in _trees():
        if name in EXECUTOR or name in SPAWN_EXCEPTIONS:
            continue
        for node, called in _calls(tree):
            if _spawns(called):
                found.append(f"{name}:{node.lineno}: calls {called}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "os", "pty", "multiprocessing") \
                    and any(_spawns(f"{node.module}.{a.name}") or node.module == "multiprocessing"
                            for a in node.names):
                found.append(f"{name}:{node.lineno}: imports a way to start processes from {node.module}")
    assert not found, _report(found, "processes started outside the executor (kanban.runner.run_bounded "
                                     "runs short commands; add a justified exception to SPAWN_EXCEPTIONS "
                                     "only with its reason)")


def test_the_exceptions_start_only_what_they_are_excused_for():
    """kanban/git.py starts git only; the demo agent only its Python grandchild."""
    found = []
    for name, _, tree in _trees():
        if name not in SPAWN_EXCEPTIONS:
            continue
        for node, called in _calls(tree):
            if not _spawns(called):
                continue
            first = node.args[0] if node.args else None
            if name == GIT_ROOM and not _starts_with_git(first):
                found.append(f"{name}:{node.lineno}: {called} of something other than git")
            if name == "kanban/demo_agent.py" and not (isinstance(first, ast.List) and first.elts
                                                      and _dotted(first.elts[0]) == "sys.executable"):
                found.append(f"{name}:{node.lineno}: {called} of something other than its Python grandchild")
    assert not found, _report(found, "an excused module starts something it is not excused for")


def test_every_method_called_on_a_runner_is_in_the_protocol():
    """The engine, merge queue, repair and commands call only what `Runner` declares."""
    from kanban.runner import LocalRunner, Runner

    declared = {n for n, v in vars(Runner).items() if callable(v) and not n.startswith("_")}
    found = []
    for name, _, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)) \
                    and _dotted(node.value).split(".")[-1] == "runner" and node.attr not in declared:
                found.append(f"{name}:{node.lineno}: runner.{node.attr} is not in the Runner protocol")
    assert not found, _report(found, "runner methods used but not declared")
    for method in sorted(declared):  # and LocalRunner has each, with the very same signature
        ours, real = inspect.signature(getattr(Runner, method)), inspect.signature(getattr(LocalRunner, method))
        assert ours == real, f"Runner.{method}{ours} but LocalRunner.{method}{real}"


def test_the_ray_runner_has_the_protocols_signatures():
    """RayRunner stands in for LocalRunner everywhere: the very same methods and signatures."""
    from kanban.executors.ray_runner import RayRunner
    from kanban.runner import Runner

    declared = {n for n, v in vars(Runner).items() if callable(v) and not n.startswith("_")}
    for method in sorted(declared):
        ours, real = inspect.signature(getattr(Runner, method)), inspect.signature(getattr(RayRunner, method))
        assert ours == real, f"Runner.{method}{ours} but RayRunner.{method}{real}"
