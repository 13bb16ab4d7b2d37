"""kanban/planner.py, the pure part of `kanban plan`: reading, checking, numbering, rendering."""

from __future__ import annotations

from pathlib import Path

from kanban import planner
from kanban.board import parse_file
from kanban.model import Column, Task

SOURCE = "report.md"


def read(text: str):
    return planner.read_plan(text, SOURCE)


def messages(problems) -> list[str]:
    return [str(e) for _, found in sorted(problems.items()) for e in found]


def test_labels_are_ids_or_placeholders_and_a_plain_colon_stays_in_the_title():
    found = read("## NEW-1: One\n\n## TASK-A: Two\n\n## Fix: the login bug\n\n## Re-add: the cache\n\n## Untitled\n")
    assert [(p.label, p.title) for p in found] == [
        ("NEW-1", "One"), ("TASK-A", "Two"), (None, "Fix: the login bug"), (None, "Re-add: the cache"),
        (None, "Untitled")]


def test_prose_and_level_one_headings_are_not_part_of_the_plan_and_metadata_is_cleaned():
    [p] = read("Intro.\n\n# A heading\n\n## NEW-1: T\npriority: 2\ntrack: \x1b[31mred\x1b[0m   team\n\nBody.\n")
    assert p.meta == {"priority": "2", "track": "red team"}
    assert p.body == "Body." and p.line == 5 and p.meta_lines == {"priority": 6, "track": 7}


def test_every_cycle_is_named_once_and_a_self_dependency_as_the_board_names_it():
    found = read("## NEW-1: A\ndepends: NEW-2\n\n## NEW-2: B\ndepends: NEW-1\n\n"
                 "## NEW-3: C\ndepends: NEW-4\n\n## NEW-4: D\ndepends: NEW-3\n\n## NEW-5: E\ndepends: NEW-5\n")
    assert messages(planner.check_plan(found, set(), SOURCE)) == [
        "report.md:2: dependency cycle NEW-1 -> NEW-2 -> NEW-1; remove one of these depends so the chain has an end",
        "report.md:8: dependency cycle NEW-3 -> NEW-4 -> NEW-3; remove one of these depends so the chain has an end",
        "report.md:14: NEW-5 depends on itself; remove it from its own depends line",
    ]


def test_existing_ids_and_done_ids_may_be_depended_on_but_not_unknown_ones():
    found = read("## NEW-1: A\ndepends: TASK-3, TASK-9\n")
    assert planner.check_plan(found, {"TASK-3", "TASK-9"}, SOURCE) == {}
    assert messages(planner.check_plan(found, {"TASK-3"}, SOURCE)) == [
        "report.md:2: depends names TASK-9, which is on no board file and not in CHANGELOG.md; fix the ID or remove "
        "it from depends"]


def test_partial_leaves_out_what_depends_on_what_is_left_out_transitively():
    found = read("## NEW-1: ok\n\n## NEW-2: bad\npriority: high\n\n## NEW-3: x\ndepends: NEW-2\n\n"
                 "## NEW-4: y\ndepends: NEW-3\n\n## NEW-5: z\ndepends: NEW-1\n")
    kept, said = planner.keep_valid(found, planner.check_plan(found, set(), SOURCE), SOURCE)
    assert kept == [0, 4]
    assert [str(e) for e in said] == [
        "report.md:7: NEW-3 is left out: it depends on NEW-2, which is left out",
        "report.md:10: NEW-4 is left out: it depends on NEW-3, which is left out"]


def test_numbering_starts_after_the_highest_id_and_rewrites_labels_in_depends():
    found = read("## TASK-2: A\n\n## NEW-9: B\ndepends: TASK-2, TASK-2, TASK-5\ntrack: t\nowner: me\n")
    planned = planner.number(found, {"TASK-2", "TASK-5", "TASK-40", "API-900"})
    assert [(p.task_id, p.meta) for p in planned] == [
        ("TASK-41", {}),
        ("TASK-42", {"depends": "TASK-41, TASK-5", "track": "t", "owner": "me"})]


def test_the_section_parses_back_to_the_same_tasks():
    found = read("## NEW-1: A\npriority: 1\nfiles: a.py\n\nDo A.\n\n## NEW-2: B\ndepends: NEW-1\n")
    planned = planner.number(found, set())
    text = "".join("".join(b) for b in planner.section(planner.heading("F", "2026-01-02"), planned))
    assert text.startswith("# Plan: F (2026-01-02)\n\n## TASK-1: A\n")
    f = parse_file(Path("TODO.md"), Column.TODO, text.encode())
    assert [(e.task_id, e.title, e.meta(), e.body()) for e in f.entries()] == [
        ("TASK-1", "A", {"priority": "1", "files": "a.py"}, "Do A."), ("TASK-2", "B", {"depends": "TASK-1"}, "")]


def test_the_board_summary_names_waiting_and_flying_tasks_and_the_files_in_flight():
    tasks = [Task("TASK-1", "Waiting \x1b[1mbold", Column.TODO, priority=2, depends=("TASK-9",)),
             Task("TASK-2", "Flying", Column.REVIEW, files=("src/a.py", "src/b/*")),
             Task("TASK-3", "Stuck", Column.IN_PROGRESS, files=("c.py",), markers=frozenset({"ESCALATED"}))]
    text = planner.board_summary(tasks, done=1)
    assert "- TASK-1: Waiting bold (priority 2; depends: TASK-9)" in text
    assert "- TASK-2: Flying [REVIEW.md] (priority 3; files: src/a.py, src/b/*)" in text
    assert "- TASK-3: Stuck [IN_PROGRESS.md, escalated]" in text
    assert "Files in flight (held until their task is merged): src/a.py, src/b/*" in text
    assert text.endswith("Merged (in CHANGELOG.md): 1 task.")
    many = planner.board_summary([Task(f"T-{i}", "t", Column.TODO) for i in range(300)], 0, limit=10)
    assert "- ... and 290 more" in many and many.count("\n- T-") == 10
