"""Task IDs never outgrow their limit, and `kanban add --body` never breaks the board.

An ID over 64 characters is not read back as an ID, so an entry that got one
would get a new ID at every write. A body that holds a level-1/2 heading would
end the entry there; one that leaves a code fence or an HTML block open would
hide every task added below it. Each is refused with one line, exit 2, and
TODO.md unchanged.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, snapshot

from kanban.commands.add import add
from kanban.errors import KanbanError
from kanban.ids import MAX_ID_LEN, is_valid_id, next_ids
from kanban.store import load_board


def _files(root) -> dict[str, bytes]:
    """Every file but the lock a board command takes (created empty, never written)."""
    found = snapshot(root)
    found.pop(".kanban/board.lock", None)
    return found


def _one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# --- IDs at the length limit ---------------------------------------------------------------

LONGEST = "TASK-" + "9" * (MAX_ID_LEN - len("TASK-"))  # a valid 64-character ID; the next has 65


def test_the_next_id_after_a_64_character_one_is_refused_not_assigned(tmp_path):
    assert len(LONGEST) == MAX_ID_LEN and is_valid_id(LONGEST)
    (tmp_path / "TODO.md").write_text(f"# TODO\n\n## {LONGEST}: the biggest\n")
    before = _files(tmp_path)
    line = _one_line_exit_2(run_cli(tmp_path, "add", "one more"))
    assert line.startswith("error: TODO.md:3: cannot number a new task")
    assert "65 characters" in line and "smaller number" in line
    assert _files(tmp_path) == before


def test_a_hand_written_heading_is_not_numbered_past_the_limit_on_a_write(tmp_path):
    """A new heading gets its ID at the next write of TODO.md, whatever the command."""
    (tmp_path / "TODO.md").write_text(f"## [ESCALATED] {LONGEST}: stuck\n\n## Added by hand\n")
    before = _files(tmp_path)
    line = _one_line_exit_2(run_cli(tmp_path, "retry", LONGEST))
    assert "cannot number a new task" in line and "TODO.md:1" in line
    assert _files(tmp_path) == before
    assert [t.id for t in load_board(tmp_path).tasks()] == [LONGEST]  # the board still loads as it was


def test_the_last_id_that_fits_is_given_and_read_back_as_an_id(tmp_path):
    almost = "TASK-" + "9" * (MAX_ID_LEN - len("TASK-") - 1)  # 63 characters: the next one has 64
    (tmp_path / "TODO.md").write_text(f"## {almost}: nearly\n")
    out = json.loads(run_cli(tmp_path, "add", "fits", "--json", check_code=0).stdout)
    assert len(out["id"]) == MAX_ID_LEN and is_valid_id(out["id"])
    status = json.loads(run_cli(tmp_path, "status", "--json", check_code=0).stdout)
    assert [t["id"] for t in status["columns"]["TODO"]["tasks"]] == [almost, out["id"]]
    assert status["new"] == []  # not left as a heading without ID, to be renumbered at every write
    text = (tmp_path / "TODO.md").read_text()
    run_cli(tmp_path, "status", check_code=0)
    assert (tmp_path / "TODO.md").read_text() == text


def test_next_ids_counts_up_from_the_highest_and_never_over_the_limit():
    assert next_ids(["TASK-3", "TASK-10", "API-99", "TASK-2"], 2) == ["TASK-11", "TASK-12"]
    assert next_ids([]) == ["TASK-1"]
    with pytest.raises(KanbanError, match="over the 64-character limit") as caught:
        next_ids([LONGEST, "TASK-1"], locate=lambda tid: ("TODO.md", 7))
    assert (caught.value.file, caught.value.line) == ("TODO.md", 7)
    fits = next_ids(["TASK-" + "9" * 58], 1)
    assert len(fits[0]) == MAX_ID_LEN
    assert next_ids([LONGEST[:-1] + "8"]) == [LONGEST]
    with pytest.raises(KanbanError):
        next_ids([LONGEST[:-1] + "8"], 2)  # the second of two would not fit


# --- add --body -------------------------------------------------------------------------------

REFUSED_BODIES = [
    ("unclosed-backticks", "Steps:\n```\nmake test", "opens a code fence (line 2 of --body: ```)"),
    ("unclosed-tildes", "~~~~\ncode\n~~~", "opens a code fence (line 1 of --body: ~~~~)"),
    ("reopened-fence", "```\na\n```\n\n```py\nb", "opens a code fence (line 5 of --body: ```)"),
    ("html-comment", "text\n<!-- hidden\nmore", "opens an HTML block or comment (line 2 of --body)"),
    ("pre-block", "<pre>\nx", "opens an HTML block or comment (line 1 of --body)"),
    ("h2", "Problem\n## Details\nmore", "holds a markdown heading (line 2 of --body: '## Details')"),
    ("h1", "# Title", "holds a markdown heading (line 1 of --body: '# Title')"),
    ("setext", "intro\n\nSection\n-------\ntext", "holds a markdown heading (line 3 of --body: 'Section'"),
    ("escape", "look \x1b]52;c;Y3VybA==\x07 here", "holds a control character or terminal escape (line 1"),
    ("carriage-return", "one\rtwo", "holds a carriage return (line 1"),
]


@pytest.mark.parametrize("name,body,says", REFUSED_BODIES, ids=[b[0] for b in REFUSED_BODIES])
def test_add_refuses_a_body_that_would_break_the_board(tmp_path, name, body, says):
    (tmp_path / "TODO.md").write_text("# TODO\n\n## TASK-1: first\n")
    before = _files(tmp_path)
    line = _one_line_exit_2(run_cli(tmp_path, "add", "second", "--body", body))
    assert says in line, line
    if "heading" in says:
        assert "fence" not in line  # the old message blamed an unclosed fence for a heading
        assert "indent" in line or "blank line" in line
    assert _files(tmp_path) == before


def test_heading_message_says_how_to_fix(tmp_path):
    line = _one_line_exit_2(run_cli(tmp_path, "add", "t", "--body", "text\n\n## Sub"))
    assert line == ("error: the body holds a markdown heading (line 3 of --body: '## Sub'), which would end the"
                    " task's entry there; indent that line by four spaces, or drop the '#' (### and deeper"
                    " headings are fine)")


def test_an_unclosed_fence_would_have_hidden_tasks_added_later(tmp_path):
    """Why it is refused: what the fence hides, shown with a hand-written TODO.md."""
    (tmp_path / "TODO.md").write_text("## TASK-1: first\n\nSteps:\n```\nmake test\n\n## TASK-2: hidden\n")
    assert [t.id for t in load_board(tmp_path).tasks()] == ["TASK-1"]


ACCEPTED_BODIES = [
    "**Problem:** x\n\n```python\nprint('## not a heading')\n```\n\n### Details\n\n    ## indented code\n",
    "~~~\n```\n~~~\n",
    "a | b\n--|--\n1 | 2\n",
    "<!-- a note -->\ntext\n",
    "Steps:\n- one\n- two\n\n> quoted ## text\n",
    "\n\nleading blank lines\n",
    "a tab\there and unicode é ✓",
]


@pytest.mark.parametrize("body", ACCEPTED_BODIES)
def test_add_keeps_accepting_self_contained_bodies(tmp_path, body):
    options = {"priority": None, "depends": "", "files": "", "track": "", "as_json": False}
    add(tmp_path, "first", body=body, **options)  # in-process: the CLI path is the refused bodies' test
    add(tmp_path, "second", body="", **options)
    (tmp_path / "TODO.md").write_text((tmp_path / "TODO.md").read_text() + "\n## Added by hand\n")
    board = load_board(tmp_path)
    assert [t.id for t in board.tasks()] == ["TASK-1", "TASK-2"]
    assert [e.title for e in board.new_entries()] == ["Added by hand"]
    assert board.find("TASK-1")[1].body() == body.strip()


def test_add_refuses_a_title_with_a_terminal_escape(tmp_path):
    line = _one_line_exit_2(run_cli(tmp_path, "add", "title \x1b[2J clear"))
    assert "control character" in line
    assert not (tmp_path / "TODO.md").exists()
