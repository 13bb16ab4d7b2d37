"""How the board code scales: synthetic boards of 1,000 and 10,000 tasks.

Run:  python bench/board_scale.py [--reps 7] [--sizes 1000,10000] [--profile]

For each size it builds a realistic board in a temp dir (most tasks in TODO.md,
the rest in IN_PROGRESS.md, REVIEW.md and TESTING.md; metadata, body lines,
some fenced code, some notes) and prints the median of several repetitions of:

  status      `python -m kanban -C DIR status`, a subprocess, output to /dev/null
  parse+save  in process: load_board (with validation) + mark every file dirty + save,
              cold (kanban's memo caches cleared before each run)
  move        in process: update(root, lambda b: b.move(ID, Column.REVIEW))
  mistune     mistune alone: create_markdown(renderer=None)(text), the full parse, over
              the same four files (the baseline)

and the ratio parse+save / mistune; then `kanban --help` as a subprocess (median
of 10). Targets are printed beside the figures. --profile adds a cProfile of
parse+save at the largest size and of the status command's work at the smallest.

Then reading the board the way a running `kanban run` does (issue 12), side by side
for a small and a large board (--read-sizes, default 10,10000), caches warm unless
said otherwise:

  load cold        load_board after kanban's memo caches are cleared
  load warm        load_board again, every file's bytes unchanged
  load 1 changed   load_board after a hand edit of one file (IN_PROGRESS.md; TODO.md,
                   the big one, in its own column)
  pick             update(): move one entry TODO -> IN_PROGRESS and touch it, as the
                   engine's PICKED transition does; `pick+load` adds the load that
                   follows it in Engine._start. Target (issue 12): a pick on the largest
                   board at most 0.1 s slower than on the smallest, printed below the table
  changelog        merge_queue.add_to_changelog of one new entry into a CHANGELOG.md
                   holding that many entries under Unreleased (a drain: every call
                   adds one more); `+load` adds the load that reads the new done IDs;
                   `released`: 10 entries under Unreleased, the rest in past releases

--only reads (or scale) runs one of the two parts.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mistune

from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column
from kanban.store import board_lock, load_board, save, update

# Most tasks wait in TODO.md; the three in-flight files hold what agents work on.
SHARES = {Column.TODO: 0.94, Column.IN_PROGRESS: 0.02, Column.REVIEW: 0.02, Column.TESTING: 0.02}
# A measurement whose first run takes longer than this is reported from that one run.
BUDGET_S = 30.0
TITLES = ["Fix race in cache invalidation", "Add retry to the upload client", "Split the settings module",
          "Document the merge queue", "Speed up the importer", "Handle empty config files",
          "Make `kanban status` show agents", "Remove the legacy v1 API", "Tighten path validation"]
TARGET_PARSE_SAVE_10K = 1.0
TARGET_RATIO = 2.0
TARGET_HELP = 0.3
TARGET_PICK_EXTRA = 0.1  # issue 12: one pick on 10,000 tasks, seconds over one on 10


def entry(n: int, rng: random.Random, column: Column) -> str:
    lines = []
    marker = "[RETRY] " if rng.random() < 0.05 else ""
    lines.append(f"## {marker}TASK-{n}: {rng.choice(TITLES)} ({n})")
    lines.append(f"priority: {rng.randint(1, 5)}")
    if n > 10 and rng.random() < 0.5:
        deps = sorted({f"TASK-{rng.randint(max(1, n - 200), n - 1)}" for _ in range(rng.randint(1, 3))})
        lines.append(f"depends: {', '.join(deps)}")
    lines.append(f"files: src/pkg{n % 40}/mod{n % 97}.py, tests/test_mod{n % 97}.py")
    if column is Column.TESTING and rng.random() < 0.3:
        lines.append("status: ready to merge")
    lines.append("")
    lines.append(f"**Problem:** module {n % 97} does the wrong thing when the input is empty.")
    lines.append(f"**Location:** src/pkg{n % 40}/mod{n % 97}.py:{rng.randint(1, 900)}")
    lines.append("**Required Fix:** check the length first and return early; add a test.")
    if n % 5 == 0:
        lines += ["", "```python", "def f(x):", "    ## not a heading: inside a fence", "    return x or None", "```"]
    if n % 7 == 0:
        lines += ["", "### Notes", "", "- 2026-01-02 10:00 retry: tests failed (3 of 120)",
                  "- 2026-01-02 11:30 review: rename the helper, then ok"]
    return "\n".join(lines) + "\n\n"


def build_board(root: Path, n_tasks: int, seed: int = 1) -> dict[Column, list[str]]:
    """Write the four files; return the IDs in each column."""
    rng = random.Random(seed)
    counts = {c: int(n_tasks * share) for c, share in SHARES.items()}
    counts[Column.TODO] += n_tasks - sum(counts.values())
    ids: dict[Column, list[str]] = {c: [] for c in BOARD_COLUMNS}
    texts = {c: [f"# {COLUMN_FILES[c][:-3].replace('_', ' ').title()}\n\n",
                 "Tasks for the agents; edit freely. Level-1 headings group them.\n\n"] for c in BOARD_COLUMNS}
    n = 0
    order = [c for c in BOARD_COLUMNS for _ in range(counts[c])]
    rng.shuffle(order)
    for column in order:
        n += 1
        if n % 500 == 1:
            texts[column].append(f"# Batch {n // 500 + 1}\n\n")
        texts[column].append(entry(n, rng, column))
        ids[column].append(f"TASK-{n}")
    for c in BOARD_COLUMNS:
        (root / COLUMN_FILES[c]).write_text("".join(texts[c]), encoding="utf-8")
    (root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n- TASK-0: bootstrap\n", encoding="utf-8")
    (root / "kanban.toml").write_text("", encoding="utf-8")
    return ids


SINGLE_RUNS: list[str] = []


def median_time(fn, reps: int, label: str = "") -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if times[0] > BUDGET_S:
            SINGLE_RUNS.append(f"{label}: one run only ({times[0]:.1f} s > {BUDGET_S:.0f} s budget)")
            break
    return statistics.median(times)


def run_cli(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kanban", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"kanban {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def clear_caches() -> None:
    """Forget what kanban memoised (e.g. parsed headings by text), so every run is a cold load."""
    for name, module in list(sys.modules.items()):
        if name == "kanban" or name.startswith("kanban."):
            for value in list(vars(module).values()):
                if not isinstance(value, type) and callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()  # functools caches, and kanban's own (a class's instances)


def parse_and_save(root: Path) -> None:
    clear_caches()
    board = load_board(root)
    with board_lock(root):
        for f in board.files.values():
            f.mark_dirty()
        save(board)


def mistune_alone(texts: list[str]):
    md = mistune.create_markdown(renderer=None)

    def run() -> None:
        for text in texts:
            md(text)

    return run


def profile(label: str, fn, limit: int = 18) -> None:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(limit)
    print(f"\n--- cProfile: {label} (cumulative) ---")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    print(f"--- cProfile: {label} (own time) ---")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])


def timed(setup, fn, reps: int) -> float:
    """The median time of FN, SETUP run untimed before each repetition."""
    times = []
    for _ in range(reps):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hand_edit(path: Path, counter: list[int]) -> None:
    """A person's edit of one file: a new line of prose at its end."""
    counter[0] += 1
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"A note, edit {counter[0]}.\n")


def build_changelog(path: Path, n_entries: int, *, released: bool = False) -> None:
    """N_ENTRIES merged tasks under Unreleased (a long drain), or RELEASED: 10 under Unreleased
    and the rest in past releases of 50 entries each."""
    cats = ["Added", "Changed", "Fixed"]
    out = ["# Changelog\n\nAll notable changes.\n\n"]
    n = 0

    def section(title: str, count: int) -> None:
        nonlocal n
        out.append(f"## {title}\n\n")
        per = -(-count // len(cats))
        last = n + count
        for cat in cats:
            out.append(f"### {cat}\n\n")
            for _ in range(per):
                if n < last:
                    n += 1
                    out.append(f"- CL-{n}: {TITLES[n % len(TITLES)]} ({n})\n")
            out.append("\n")

    section("[Unreleased]", min(10, n_entries) if released else n_entries)
    version = 1000
    while n < n_entries:
        version -= 1
        section(f"[0.{version}.0] - 2026-01-01", min(50, n_entries - n))
    out.append("## [0.1.0] - 2025-01-01\n\n### Added\n\n- the first release\n")
    path.write_text("".join(out), encoding="utf-8")


def read_figures(n: int, reps: int) -> dict[str, float]:
    from kanban.merge_queue import add_to_changelog

    out: dict[str, float] = {}

    def noop() -> None:
        return None

    with tempfile.TemporaryDirectory(prefix=f"kanban-bench-read-{n}-") as d:
        root = Path(d)
        (root / ".kanban").mkdir()
        ids = build_board(root, n)
        load_board(root)
        out["load cold"] = timed(clear_caches, lambda: load_board(root), reps)
        load_board(root)
        out["load warm"] = timed(noop, lambda: load_board(root), reps)
        edits = [0]
        out["load 1 changed"] = timed(lambda: hand_edit(root / COLUMN_FILES[Column.IN_PROGRESS], edits),
                                      lambda: load_board(root), reps)
        out["load TODO changed"] = timed(lambda: hand_edit(root / COLUMN_FILES[Column.TODO], edits),
                                         lambda: load_board(root), reps)
        to_pick = ids[Column.TODO][::-1]  # a different task each time: no file's text comes back
        picked: list[str] = []

        def pick() -> None:
            task_id = to_pick[len(picked) % len(to_pick)]
            picked.append(task_id)

            def change(board) -> None:
                board.move(task_id, Column.IN_PROGRESS)
                board.touch(task_id).add_marker("RETRY")

            update(root, change)

        def put_back() -> None:  # untimed: the board keeps its size (and a small one its TODO tasks)
            if picked:
                update(root, lambda board: board.move(picked[-1], Column.TODO))
                load_board(root)  # as the engine would, planning its next pass

        load_board(root)
        out["pick"] = timed(put_back, pick, reps)
        out["pick+load"] = timed(put_back, lambda: (pick(), load_board(root)), reps)
        changelog = root / COLUMN_FILES[Column.DONE]
        build_changelog(changelog, n)
        load_board(root)
        merged = iter(range(1, 10**9))

        def merge_one() -> None:
            add_to_changelog(root, [(f"TASK-{next(merged) + 10**6}", "Fix the importer", "Fixed")])

        merge_one()  # the drain under way: the timed merges follow another one
        out["changelog"] = timed(noop, merge_one, reps)
        out["changelog+load"] = timed(noop, lambda: (merge_one(), load_board(root)), reps)
        build_changelog(changelog, n, released=True)
        load_board(root)
        merge_one()
        out["changelog released"] = timed(noop, merge_one, reps)
    return out


def print_reads(sizes: list[int], reps: int) -> None:
    figures = {}
    for n in sizes:
        print(f"reading the board: {n} tasks; timing ...", file=sys.stderr, flush=True)
        figures[n] = read_figures(n, reps)
    print(f"\nreading the board (issue 12): median of {reps} runs, milliseconds\n")
    head = f"{'':<20}" + "".join(f"{f'{n} tasks':>14}" for n in sizes)
    print(head)
    print("-" * len(head))
    for key in figures[sizes[0]]:
        print(f"{key:<20}" + "".join(f"{figures[n][key] * 1000:>14.2f}" for n in sizes))
    small, large = min(sizes), max(sizes)
    if large > small:
        extra = figures[large]["pick"] - figures[small]["pick"]
        ok = "met" if extra <= TARGET_PICK_EXTRA else "MISSED"
        print(f"\ntarget: a pick on {large} tasks at most {TARGET_PICK_EXTRA:.1f} s more than on {small}: "
              f"{extra:.3f} s more  [{ok}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--read-sizes", default="10,10000")
    ap.add_argument("--only", choices=["scale", "reads"], help="run only this part")
    ap.add_argument("--profile", action="store_true", help="cProfile parse+save and status at the largest size")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.only != "scale":
        print_reads([int(s) for s in args.read_sizes.split(",")], args.reps)
    if args.only == "reads":
        return

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"kanban-bench-{n}-") as d:
            root = Path(d)
            ids = build_board(root, n)
            texts = [(root / COLUMN_FILES[c]).read_text(encoding="utf-8") for c in BOARD_COLUMNS]
            size_mb = sum(len(t.encode()) for t in texts) / 1e6
            load_board(root)  # validates: the synthetic board must be a valid one
            print(f"{n} tasks: {size_mb:.2f} MB, {len(ids[Column.TODO])} in TODO.md, "
                  f"{n - len(ids[Column.TODO])} in flight; timing ...", file=sys.stderr, flush=True)
            status = median_time(lambda root=root: run_cli("-C", str(root), "status"), args.reps,
                                 f"status, {n} tasks")
            parse_save = median_time(lambda root=root: parse_and_save(root), args.reps)
            to_move = iter(ids[Column.TODO][::-1])


            def move_one(root: Path = root, to_move: Iterator[str] = to_move) -> None:
                clear_caches()
                update(root, lambda b: b.move(next(to_move), Column.REVIEW))

            move = median_time(move_one, args.reps)
            base = median_time(mistune_alone(texts), args.reps)
            rows.append((n, size_mb, status, parse_save, move, base))
            if args.profile and n == max(sizes):
                profile(f"parse+save, {n} tasks", lambda root=root: parse_and_save(root))
            if args.profile and n == min(sizes):
                from kanban.commands.status import summarize

                profile(f"status work in process (load + summarize), {n} tasks",
                        lambda root=root: summarize(load_board(root), agents=[]))
    help_time = median_time(lambda: run_cli("--help"), 10)

    print(f"\nboard_scale: median of {args.reps} runs "
          f"(python {sys.version.split()[0]}, mistune {mistune.__version__})\n")
    head = f"{'tasks':>7} {'MB':>5} {'status (subproc)':>17} {'parse+save':>11} {'move 1':>8} {'mistune alone':>14} " \
           f"{'tool/mistune':>13}"
    print(head)
    print("-" * len(head))
    for n, mb, status, parse_save, move, base in rows:
        print(f"{n:>7} {mb:>5.2f} {status:>16.3f}s {parse_save:>10.3f}s {move:>7.3f}s {base:>13.3f}s "
              f"{parse_save / base:>12.2f}x")
    print()
    print("targets:")
    big = [r for r in rows if r[0] == 10000]
    if big:
        n, mb, status, parse_save, move, base = big[0]
        ok = "met" if parse_save < TARGET_PARSE_SAVE_10K else "MISSED"
        print(f"  10,000 tasks parse+save < {TARGET_PARSE_SAVE_10K:.1f} s: {parse_save:.3f} s  [{ok}]")
    for n, _mb, _status, parse_save, _move, base in rows:
        ratio = parse_save / base
        ok = "met" if ratio <= TARGET_RATIO else "MISSED"
        print(f"  {n:>6} tasks: tool (parse+save) within {TARGET_RATIO:.0f}x of mistune alone: {ratio:.2f}x  [{ok}]")
    ok = "met" if help_time < TARGET_HELP else "MISSED"
    print(f"  kanban --help < {TARGET_HELP} s: {help_time:.3f} s (median of 10)  [{ok}]")
    for note in SINGLE_RUNS:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
