"""A person edits TODO.md and REVIEW.md by hand while `kanban run` works: every edit survives.

The editor here behaves like an editor plugin that takes kanban's board lock
(`.kanban/board.lock`) around each read-modify-write, so each edit is one
clean step; kanban itself re-reads before every write and never writes over
a file that changed since it read it.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import git

from kanban.store import atomic_write, board_lock, load_board

BOARD = ["TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md"]


def _setup(repo: Path, n_tasks: int) -> None:
    (repo / "kanban.toml").write_text('pool_size = 3\n[agent]\npreset = "demo"\ntimeout = "20s"\n')
    body = "".join(f"\n## TASK-{i}: Task {i}\n\ndemo: sleep 0.4\n" for i in range(1, n_tasks + 1))
    (repo / "TODO.md").write_text("# TODO\n\nIntro by the person.\n" + body)
    (repo / "REVIEW.md").write_text("# Review\n\nReview notes by the person.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")


def _edit(repo: Path, name: str, change) -> bool:
    path = repo / name
    with board_lock(repo):
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        new = change(text)
        if new is None or new == text:
            return False
        atomic_write(path, new.encode("utf-8"))
        return True


def _entries(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of `## TASK-N` entries, in order."""
    starts = [m.start() for m in re.finditer(r"(?m)^## (\[\w+\] )?TASK-\d+:", text)]
    return [(s, starts[i + 1] if i + 1 < len(starts) else len(text)) for i, s in enumerate(starts)]


def test_hand_edits_during_run_all_survive(repo):
    _setup(repo, 8)
    rng = random.Random(7)
    proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(repo), "run", "--no-merge"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kept: dict[str, list[str]] = {"TODO.md": [], "REVIEW.md": []}
    deleted: list[str] = []
    body_edits: list[str] = []
    hand_tasks: list[str] = []
    edits = 0
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and edits < 60:
            n = edits
            action = rng.choice(["prose", "prose", "task", "body", "reorder", "delete", "review", "review_body"])
            if action == "prose":
                marker = f"note-{n} by hand"
                if _edit(repo, "TODO.md", lambda t: t.replace("Intro by the person.\n",
                                                              f"Intro by the person.\n{marker}\n", 1)):
                    kept["TODO.md"].append(marker)
            elif action == "task" and len(hand_tasks) < 6:
                title = f"Hand task {n}"
                if _edit(repo, "TODO.md", lambda t: t + f"\n## {title}\n\ndemo: sleep 0.2\n"):
                    hand_tasks.append(title)
            elif action == "body":
                marker = f"edited-{n}"

                def add_line(t: str, marker=marker):
                    spans = _entries(t)
                    if not spans:
                        return None
                    start, end = spans[-1]
                    entry = t[start:end].rstrip("\n") + f"\n{marker}\n"
                    return t[:start] + entry + ("\n" if end < len(t) else "") + t[end:].lstrip("\n")

                if _edit(repo, "TODO.md", add_line):
                    body_edits.append(marker)
            elif action == "reorder":
                def swap(t: str):
                    spans = _entries(t)
                    if len(spans) < 2:
                        return None
                    (a0, a1), (b0, b1) = spans[0], spans[1]
                    first, second = t[a0:a1], t[b0:b1]
                    return t[:a0] + second + first + t[b1:]

                _edit(repo, "TODO.md", swap)
            elif action == "delete" and kept["TODO.md"]:
                marker = kept["TODO.md"].pop(0)
                if _edit(repo, "TODO.md", lambda t, m=marker: t.replace(m + "\n", "", 1)):
                    deleted.append(marker)
                else:
                    kept["TODO.md"].append(marker)
            elif action == "review":
                marker = f"review-note-{n}"
                if _edit(repo, "REVIEW.md", lambda t: t.replace("Review notes by the person.\n",
                                                                f"Review notes by the person.\n{marker}\n", 1)):
                    kept["REVIEW.md"].append(marker)
            elif action == "review_body":
                marker = f"reviewed-by-hand-{n}"

                def add_review_line(t: str, marker=marker):
                    spans = _entries(t)
                    if not spans:
                        return None
                    start, end = spans[0]
                    entry = t[start:end].rstrip("\n") + f"\n\n{marker}\n"
                    return t[:start] + entry + ("\n" if end < len(t) else "") + t[end:].lstrip("\n")

                if _edit(repo, "REVIEW.md", add_review_line):
                    body_edits.append(marker)
            edits += 1
            time.sleep(rng.uniform(0.02, 0.15))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert edits >= 20, f"only {edits} edits happened while kanban run worked"
    texts = {name: (repo / name).read_text(encoding="utf-8") for name in BOARD}
    everything = "".join(texts.values())
    for name, markers in kept.items():
        for marker in markers:
            assert marker in texts[name], (marker, name)
    for marker in deleted:
        assert marker not in everything, marker
    for marker in body_edits:
        assert marker in everything, marker
    for title in hand_tasks:
        assert title in everything, title
    board = load_board(repo)  # validates: no ID twice, nothing lost
    ids = [t.id for t in board.tasks()]
    # a hand task added just as the run ended has no ID yet: the next write of TODO.md gives it one
    unnumbered = len(board.new_entries())
    assert len(ids) == len(set(ids)) and len(ids) + unnumbered == 8 + len(hand_tasks), (ids, unnumbered)
