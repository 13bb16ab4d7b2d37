"""kanban.runner.run_bounded: the executor's one way to run a short command and wait for it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from kanban import procs
from kanban.runner import run_bounded


def test_output_streams_and_exit_status(tmp_path: Path) -> None:
    done = run_bounded([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                       tmp_path, timeout=10)
    assert (done.returncode, done.output, done.errors, done.timed_out) == (3, b"out\n", b"err\n", False)
    merged = run_bounded(["sh", "-c", "echo a; echo b >&2"], tmp_path, timeout=10, merge_stderr=True)
    assert merged.output == b"a\nb\n" and merged.errors == b""


def test_output_is_bounded_to_its_head_or_its_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('x' * 100000 + 'END')"]
    assert run_bounded(argv, tmp_path, timeout=10, output_limit=10).output == b"x" * 10
    assert run_bounded(argv, tmp_path, timeout=10, output_limit=10, keep_tail=True).output == b"x" * 6 + b"END\n"


def test_the_timeout_stops_the_whole_group_grandchildren_included(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    t0 = time.monotonic()
    done = run_bounded([sys.executable, "-c", script], tmp_path, timeout=1.0, grace=0.2)
    assert done.timed_out and done.returncode < 0
    assert time.monotonic() - t0 < 10
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while procs.alive(grandchild, procs.process_start_time(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs.alive(grandchild, procs.process_start_time(grandchild))


def test_a_child_left_holding_the_output_is_not_waited_for(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = run_bounded(["sh", "-c", "echo hi; sleep 4 & exit 0"], tmp_path, timeout=20)
    assert (done.returncode, done.output, done.timed_out) == (0, b"hi\n", False)
    assert time.monotonic() - t0 < 3


def test_on_start_gives_a_stop_for_another_thread(tmp_path: Path) -> None:
    stops = []
    threading.Timer(0.5, lambda: stops[0]()).start()
    done = run_bounded(["sleep", "30"], tmp_path, timeout=20, on_start=stops.append)
    assert not done.timed_out and done.returncode < 0


def test_a_missing_program_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_bounded([str(tmp_path / "nope")], tmp_path, timeout=5)
