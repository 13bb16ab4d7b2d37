"""Draining tested tasks into main: serial or batched, verified, never half-done.

Merges are computed with `git merge-tree --write-tree` and `git commit-tree`,
so nobody's checkout is disturbed while the queue works. Main moves only to
a verified commit: by compare-and-swap (`update-ref NEW OLD`) when it is not
checked out, or by `merge --ff-only` in the checkout that has it, so that
checkout moves with it and keeps the person's unrelated uncommitted work.

The merge commit itself holds the task's CHANGELOG.md line (when CHANGELOG.md
is committed on main), so main's history and its remote carry the changelog
and the person's checkout follows it without a dirty file. The other board
files are the person's working files: kanban never commits them, and a
branch's changes to them are dropped.

Crash safety comes from the order of steps: main moves first (durable), then
the CHANGELOG line in the working copy (already there when it came with the
merge), then the TESTING entry goes, then the worktree and branch. Each step
can be redone: a ready task whose branch is already in main is finished, not
merged again.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from kanban import git, locks, paths
from kanban.atomic import write_json_atomic
from kanban.changelog import category_for, insert_entry
from kanban.errors import KanbanError
from kanban.events import QUEUE_BLOCKED, Happening, QueueState
from kanban.ids import branch_name
from kanban.machine import Event
from kanban.model import COLUMN_FILES, Column
from kanban.output import human_duration
from kanban.untrusted import clean, read_capped

BOARD_FILES = tuple(COLUMN_FILES.values())
CHANGELOG = COLUMN_FILES[Column.DONE]
VERIFY_LOGS_KEPT = 200  # per-run verify logs under .kanban/verify-logs/, newest kept
OUTPUT_TAIL = 40
MAX_REDOS = 5
_TRANSIENT_PUSH = re.compile(
    r"Could not resolve host|Connection (timed out|reset|refused)|early EOF|remote end hung up|"
    r"HTTP [5]\d\d|Operation timed out|temporarily unavailable|index\.lock|cannot lock ref", re.I)
_REMOTE_MOVED = re.compile(r"^!\t[^\t]*\t\[rejected\]", re.M)


class Candidate(NamedTuple):
    task_id: str
    title: str
    sha: str
    category: str
    changed: frozenset[str]


class MainMoved(Exception):
    """Main changed under the queue: redo the merge on the new main."""


class MainBlocked(KanbanError):
    """Main cannot move now (a person's rebase under way, a checkout git refuses to move)."""


class TouchesDirty(MainBlocked):
    """The person's checkout of main has uncommitted work in files this merge brings in:
    this merge waits, the others go ahead."""

    def __init__(self, message: str, *, files: list[str], **kw) -> None:
        super().__init__(message, **kw)
        self.files = files


LANDING = "landing"  # history event: the queue verified this commit and moves main to it


@dataclass
class QueueReport:
    merged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    verifications: int = 0
    lines: list[str] = field(default_factory=list)
    events: list[Happening] = field(default_factory=list)  # the same, as data (view, notifications)
    waiting: dict[str, list[str]] = field(default_factory=dict)  # task -> dirty files it waits for
    blocked: str | None = None
    busy: bool = False
    in_flight: list[str] = field(default_factory=list)  # tasks whose verification still runs (kanban run)
    would_send_back: list[str] = field(default_factory=list)  # --dry-run: tasks a real run sends back


@contextlib.contextmanager
def merge_lock(root: Path) -> Iterator[bool]:
    from kanban.store import state_dir

    state_dir(root)  # created, or one clear line where it cannot be
    with locks.hold(paths.merge_lock(root), timeout=0) as got:
        yield got


class MergeQueue:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.root: Path = engine.root
        self.config = engine.config
        self.main = engine.config.main_branch
        self.report = QueueReport()
        self.dry_run = False
        self.changelog_untracked = False  # CHANGELOG.md not committed on main: entries go to the working copy
        self.changelog_hint_given = False
        self.parked: set[str] = set()  # tasks whose worktrees _advance released, not finished yet
        self.awaited: set[str] = set()  # tasks a task on the board depends on (see _advance)
        self.deferred: list[Candidate] | None = None  # see drain: landed, not finished yet
        self.main_after: str | None = None  # main as this drain's last merge left it

    def _say(self, kind: str, text: str, task: str = "", title: str = "") -> None:
        self.report.lines.append(text)
        self.report.events.append(Happening(kind, text, task, title))

    def _state(self, state: str, tasks: tuple[str, ...] = (), why: str = "", since: float | None = None) -> None:
        """What the queue does now, for the live view (a verification may run for minutes)."""
        self.engine.queue_state = QueueState(state, tasks, since or time.time(), why)

    # -- entry point ---------------------------------------------------------------

    def drain(self, *, batch: bool, dry_run: bool = False, wait: bool = True) -> QueueReport:
        """One drain: merge what is ready. WAIT=False (kanban run) never waits for a verification:
        those run beside the pool, and a later drain lands them."""
        with merge_lock(self.root) as got:
            if not got:
                self.report.busy = True
                return self.report
            self.dry_run = dry_run
            if dry_run:  # reads only: no repair, no clean-up, nothing sent back, nothing finished
                candidates = [c for c in self._candidates() if not self._in_main(c)]
                for group in (self._groups(candidates) if batch else [[c] for c in candidates]):
                    self.report.lines.append("would merge " + " + ".join(c.task_id for c in group)
                                             + (" as one batch" if len(group) > 1 else ""))
                return self.report
            self.report.lines += ["repair: " + line for line in self.engine.repair_once("merge")]
            _kill_leftover_verify(self.root)  # one an older kanban ran in-process
            self._cleanup_finished()
            if self.config.merge.push:
                self._push_pending()
            try:
                if batch or not self.config.merge.verify:
                    candidates = self._finish_already_merged(self._candidates())
                    self.deferred = []  # landed tasks, finished together at the end (one board write)
                    try:
                        for group in (self._groups(candidates) if batch else [[c] for c in candidates]):
                            self._merge_group(group)
                    finally:
                        deferred, self.deferred = self.deferred, None
                        if deferred:
                            self._finish_all(deferred)
                else:
                    self._pipeline(wait=wait)
            except MainBlocked as exc:
                self.report.blocked = str(exc)
                self._say(QUEUE_BLOCKED, f"merge queue stopped: {exc}")
                self._state("blocked", why=str(exc).splitlines()[0])
            else:
                if not self.report.in_flight:
                    self._state("idle")
            if self.report.waiting:
                files = sorted({f for fs in self.report.waiting.values() for f in fs})
                self._say(QUEUE_BLOCKED, "waiting to merge: " + ", ".join(self.report.waiting)
                          + " (uncommitted changes in your checkout touch " + _some(files)
                          + "; commit or stash them and the queue merges them)")
        return self.report

    # -- serial mode: verifications beside the pool, speculated ahead --------------------------

    def _pipeline(self, *, wait: bool) -> None:
        """Serial merges with up to `[merge] parallel` verifications at once, each on top of the
        ones ahead of it, landed in order as they pass. What runs is in the history, so a later
        drain (the next pass of `kanban run`, or a queue restarted after a crash) carries on."""
        while True:
            candidates = self._finish_already_merged(self._candidates())
            live = self._pipeline_pass(candidates)
            checking = [v for v in live if not v.armed]  # an armed one waits for its turn
            self.report.in_flight = [v.tasks for v in checking]
            if not live:
                return
            if checking:
                self._state("verifying", tuple(v.tasks for v in checking), since=min(v.started for v in checking))
            if not wait:
                return
            self.engine.runner.wait_any([v.run_path(self.engine.runner) for v in live if v.ref], timeout=0.5)

    def _pipeline_pass(self, candidates: list[Candidate]) -> list:
        """Reap, land in order, start what fits; returns the verifications still running."""
        history = self.engine.history
        main = git.branch_sha(self.root, self.main)
        tip, running = main, 0
        # Behind a failed check run once more, the queue builds on the chain without it (a failure
        # usually repeats) and lands nothing until it is judged: a pass on the retry (flaky) lands
        # it first and rebuilds what was built without it.
        behind_retry = False
        keep: set[int] = set()
        slots_busy: set[str] = set()
        landed: list[Candidate] = []  # finished after the next verification started: off its critical path
        # Passed at the head of the queue, main not moved yet: the checks behind them start first,
        # then main moves once for all of them (one fast-forward, not one per task).
        pending: list[tuple[Candidate, str]] = []
        landing_tip = main  # main once PENDING landed
        kept_before: set[int] = set()  # what KEEP held before PENDING: what still stands if they cannot land
        # A commit once verified keeps its place: a task that became ready since, even one of higher
        # priority, queues behind it rather than throwing its work away. Its first verification,
        # not a running one: a check that passed ahead of its turn (the one before it still running)
        # would otherwise lose its place to the one behind it, and the chain be rebuilt every pass.
        first = history.first_verifications()
        candidates = sorted(candidates, key=lambda c: first.get((c.task_id, c.sha), 1 << 62))  # stable: priority after

        def make_room() -> None:
            # Starting a new merge on TIP: every live verification not kept so far was built on a
            # chain that no longer exists. Stopped first, so no two checks ever share a worktree.
            self._stop_stray_verifications(keep)

        def land_pending() -> bool:
            """Move main over PENDING; False when it cannot (what was built on them is then stray)."""
            nonlocal main, landing_tip
            group = list(pending)
            pending.clear()
            trying = group[0][0]
            try:
                try:
                    self._advance(main, group[-1][1], landing=[c for c, _ in group])
                    landed.extend(c for c, _ in group)
                except TouchesDirty:
                    if len(group) == 1:
                        raise
                    for trying, sha in group:  # one at a time, as far as they go: which one touches the dirty file
                        self._advance(main, sha, landing=[trying])
                        landed.append(trying)
                        main = sha
            except TouchesDirty as exc:
                self.report.waiting[trying.task_id] = exc.files
            except MainMoved:
                self.report.lines.append(f"{self.main} moved while merging; merging again on the new {self.main}")
            else:
                main = landing_tip = git.branch_sha(self.root, self.main)
                return True
            keep.intersection_update(kept_before)
            main = landing_tip = git.branch_sha(self.root, self.main)
            return False
        try:
            for c in candidates:
                if c.task_id in self.report.waiting:
                    continue
                v = history.latest_verification(c.task_id, tip, c.sha)
                if v is not None and v.outcome == "discarded":
                    v = None
                if v is not None and v.ended is None:
                    if not self.engine.runner.poll(v.run_path(self.engine.runner)).running:
                        self._collect(v)
                        v = history.latest_verification(c.task_id, tip, c.sha)
                        if v is not None and v.outcome == "discarded":  # armed, and its supervisor gone
                            v = None
                    elif v.armed:  # made ready while the one ahead of it ran: started now, if its turn came
                        keep.add(v.id)
                        slots_busy.add(v.worktree or "")
                        if running >= self._parallel:
                            break  # nothing is built behind one that waits
                        self._release(v)
                        running += 1
                        tip = v.sha
                        continue
                    else:
                        keep.add(v.id)
                        slots_busy.add(v.worktree or "")
                        running += 1
                        if v.try_ > 1:
                            behind_retry = True
                        else:
                            tip = v.sha
                        continue
                if v is not None and v.outcome == "pass":
                    if tip != landing_tip or behind_retry:  # passed on top of one not landed yet: it waits its turn
                        tip = v.sha
                        continue
                    self._record_landing([c], v.sha)  # counts only once main holds it (see _landed)
                    # The next check, armed on top of this one, starts before main moves, and so do the
                    # ones built behind it: landing is off the queue's critical path. Should main not
                    # end up at v.sha, they are stray. Not with a push, which merges a remote that
                    # moved: main then ends up past v.sha.
                    if not self.config.merge.push:
                        self._release_next(candidates, c, v.sha)
                        if not pending:
                            kept_before = set(keep)
                        pending.append((c, v.sha))
                        landing_tip = tip = v.sha
                        continue
                    try:
                        self._advance(main, v.sha, landing=[c])
                    except TouchesDirty as exc:
                        self.report.waiting[c.task_id] = exc.files
                        break  # those behind it were built on it
                    except MainMoved:
                        self.report.lines.append(
                            f"{self.main} moved while merging; merging again on the new {self.main}")
                        break
                    landed.append(c)
                    # past v.sha when a push merged the remote
                    main = tip = landing_tip = git.branch_sha(self.root, self.main)
                    continue
                if v is not None:  # failed: once more, or it counts (judged only on main itself)
                    if v.try_ <= self.config.merge.verify_retries:
                        if running >= self._parallel:
                            break
                        make_room()
                        slot = self._free_slot(slots_busy)
                        retry = self._start_verification(v.sha, [c.task_id], base=tip, head=c.sha, try_=v.try_ + 1,
                                                         worktree=slot)
                        keep.add(retry.id)
                        slots_busy.add(str(slot))
                        running += 1
                        behind_retry = True
                        continue  # the ones behind it are built without it
                    if pending and tip == landing_tip and not behind_retry and not land_pending():
                        break  # judged only on main itself: the ones ahead of it land first
                    if tip != main or behind_retry:
                        break
                    self._verify_failed(c, self._collect(v)[1])
                    continue
                # not verified on this base yet: build it and start its verification, if a slot is free,
                # else make it ready to start the moment one is (armed: built, checked out, supervised)
                full = running >= self._parallel
                commit, conflicts = self._build(tip, c)
                if conflicts:
                    if pending and tip == landing_tip and not land_pending():
                        break
                    if tip == main:
                        self._conflict(c, conflicts)
                        continue
                    break  # it conflicts with a merge ahead of it: built again once that one landed
                try:
                    self._check_checkout(main, commit)
                except TouchesDirty as exc:
                    if full:
                        break
                    self.report.waiting[c.task_id] = exc.files
                    continue
                make_room()
                slot = self._free_slot(slots_busy)
                started = self._start_verification(commit, [c.task_id], base=tip, head=c.sha, try_=1, worktree=slot,
                                                   armed=full)
                keep.add(started.id)
                slots_busy.add(str(slot))
                if full:
                    break
                running += 1
                tip = commit
            if pending:
                land_pending()
            self._stop_stray_verifications(keep)  # speculations whose base is gone: rebuilt when their turn comes
        finally:
            if landed:  # in one board write, after the next verification started
                self._finish_all(landed)
        return [v for v in history.live_verifications() if v.id in keep]

    def _release_next(self, candidates: list[Candidate], c: Candidate, base: str) -> None:
        """Release the verification armed for the candidate after C on BASE, if there is one."""
        after = [n for n in candidates[candidates.index(c) + 1:] if n.task_id not in self.report.waiting]
        if not after:
            return
        v = self.engine.history.latest_verification(after[0].task_id, base, after[0].sha)
        if v is not None and v.armed and v.ended is None:
            self._release(v)

    def _release(self, v) -> None:
        self.engine.history.release_verification(v.id)
        self.engine.runner.release(v.run_path(self.engine.runner))
        self.report.verifications += 1
        self._state("verifying", tuple(v.task_ids()))

    def _free_slot(self, busy: set[str]) -> Path:
        for slot in range(self.config.merge.parallel + 1):  # one more for the armed one
            path = self._verify_slot_path(slot)
            if str(path) not in busy:
                return path
        raise AssertionError("more verifications than [merge] parallel")  # callers count them first

    # -- what to merge -------------------------------------------------------------------

    def _candidates(self) -> list[Candidate]:
        from kanban.store import read_board

        board = read_board(self.root)
        self.awaited = {d for t in board.tasks() for d in t.depends}
        ready = sorted((t for t in board.tasks() if t.ready and not t.escalated), key=lambda t: (t.priority, t.order))
        main_sha = git.branch_sha(self.root, self.main)
        shas = git.branch_shas(self.root, "refs/heads/kanban/")
        found = []
        for t in ready:
            branch = branch_name(t.id)
            if branch not in shas:
                if self.dry_run:
                    self.report.would_send_back.append(t.id)
                    self.report.lines.append(f"would send {t.id} back to testing: its branch {branch} is gone")
                else:
                    self._send_back(t.id, Event.MERGE_CONFLICT,
                                    f"its branch {branch} is gone; the tester recreates it")
                continue
            sha = shas[branch]
            _, entry = board.require(t.id)
            category = category_for(t.title, entry.meta().get("changelog"))
            changed = git.diff_names(self.root, f"{main_sha}...{sha}", None)
            held = self._held_for_a_person(t.id, changed, main_sha, sha)
            if held:
                if self.dry_run:
                    self.report.lines.append(f"would hold {t.id} for a person: {held.splitlines()[0]}")
                    continue
                self.report.failed.append(t.id)
                happened = self.engine.escalate_event(t.id, f"{_stamp()} not merged: {held}",
                                                      why="held for a person, not merged: " + held.splitlines()[0])
                self.report.lines.append(happened.text)
                self.report.events.append(happened)
                continue
            found.append(Candidate(t.id, t.title, sha, category, frozenset(changed)))
        return found

    def _held_for_a_person(self, task_id: str, changed: list[str], main_sha: str, sha: str) -> str | None:
        """Why a branch must not merge without a person: it writes kanban's own state, or its configuration."""
        state = state_paths(changed, self.config.worktree_dir)
        if state:
            return (f"its branch adds or changes files where kanban keeps its own state: {', '.join(state[:5])}. "
                    f"kanban never takes its state from a branch; remove them from the branch "
                    f"(`git rm -r --cached`), then run 'kanban retry {task_id}'.")
        if self.config.merge.allow_config_changes:
            return None
        configs = config_paths(changed)
        if PYPROJECT in changed and _tool_kanban(self.root, main_sha) != _tool_kanban(self.root, sha):
            configs.append(f"{PYPROJECT} [tool.kanban]")
        if configs:
            return (f"its branch changes kanban's configuration or prompts ({', '.join(configs[:5])}), which would "
                    f"steer every later agent and check. Review the change; to let it merge, set "
                    f"`[merge] allow_config_changes = true` (or merge it by hand), then run 'kanban retry {task_id}'.")
        return None

    def _groups(self, candidates: list[Candidate]) -> list[list[Candidate]]:
        """Tasks whose changed files are disjoint go together (first fit, in priority order)."""
        groups: list[tuple[list[Candidate], set[str]]] = []
        for c in candidates:
            for members, files in groups:
                if not (files & c.changed):
                    members.append(c)
                    files |= c.changed
                    break
            else:
                groups.append(([c], set(c.changed)))
        return [members for members, _ in groups]

    # -- merging ---------------------------------------------------------------------------

    def _merge_group(self, group: list[Candidate]) -> None:
        for _ in range(MAX_REDOS):
            self._state("merging", tuple(c.task_id for c in group))
            try:
                if len(group) == 1:
                    self._merge_one(group[0])
                else:
                    self._merge_batch(group)
                return
            except TouchesDirty as exc:
                if len(group) > 1:  # the others of the batch need not wait for the person
                    for c in group:
                        self._merge_group([c])
                else:
                    self.report.waiting[group[0].task_id] = exc.files
                return
            except MainMoved:
                self.report.lines.append(f"{self.main} moved while merging; merging again on the new {self.main}")
                group = self._finish_already_merged(group)
                if not group:
                    return
        raise KanbanError(f"{self.main} kept moving while the merge queue worked", code=1,
                          hint="run 'kanban merge-queue' again when it is quiet")

    def _merge_one(self, c: Candidate) -> None:
        # Where the last merge left main, if this drain moved it (a move by anyone else since is
        # caught where main moves: _advance compares and swaps).
        base = self.main_after or git.branch_sha(self.root, self.main)
        commit, conflicts = self._build(base, c)
        if conflicts:
            self._conflict(c, conflicts)
            return
        if self.config.merge.verify:  # waits for a person before minutes of verification (_advance checks again)
            self._check_checkout(base, commit)
        ok, output = self._verify(commit, [c])
        if not ok:
            self._verify_failed(c, output)
            return
        self._record_landing([c], commit)
        self.main_after = None
        self._advance(base, commit, landing=[c])
        self.main_after = commit if not self.config.merge.push else None  # a push may merge the remote in
        self._finish(c)

    def _merge_batch(self, group: list[Candidate]) -> None:
        self.main_after = None  # a batch moves main its own way
        base = git.branch_sha(self.root, self.main)
        chain = self._chain(base, group)
        if chain is None:  # a conflict inside the group: fall back to serial
            self.report.lines.append("conflict in batch " + " + ".join(c.task_id for c in group)
                                     + "; merging them one by one")
            for c in group:
                self._merge_group([c])
            return
        self._check_checkout(base, chain[-1][1])
        ok, output = self._verify(chain[-1][1], group, retries=0)  # a failure is bisected, then judged
        if ok:
            self._land(base, chain)
            return
        self._bisect(base, chain, output)

    def _chain(self, base: str, group: list[Candidate]) -> list[tuple[Candidate, str]] | None:
        """One merge commit per task, each on top of the last; None on any conflict."""
        chain, tip = [], base
        for c in group:
            commit, conflicts = self._build(tip, c)
            if conflicts:
                return None
            chain.append((c, commit))
            tip = commit
        return chain

    def _bisect(self, base: str, chain: list[tuple[Candidate, str]], failure: str) -> None:
        """The batch failed: find the first task whose merge breaks verification.

        Prefix k of the chain is commit chain[k-1]; prefix 0 is main (good), the
        whole chain is bad. Binary search costs ceil(log2 n) verifications, and
        the rest of the batch after the culprit is verified once more.
        """
        commits = [base] + [commit for _, commit in chain]
        lo, hi = 0, len(chain)
        failures = 1  # verifications that failed on a tree holding the culprit: the whole batch's
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ok, output = self._verify(commits[mid], [c for c, _ in chain[:mid]], retries=0)
            if ok:
                lo = mid
            else:
                hi, failure, failures = mid, output, failures + 1
        culprit = chain[hi - 1][0]
        # It counts as failed once `verify_retries + 1` checks holding it failed; else run it again.
        again = self.config.merge.verify_retries + 1 - failures
        if again > 0:
            ok, output = self._verify(commits[hi], [c for c, _ in chain[:hi]], retries=again - 1,
                                      first_try=failures + 1)
            if ok:  # flaky: it passes after all; what broke the batch is behind it
                self._land(base, chain[:hi])
                rest = [c for c, _ in chain[hi:]]
                if rest:
                    self._merge_group(rest)
                return
            failure = output
        if lo:
            self._land(base, chain[:lo])
        self._verify_failed(culprit, failure)
        rest = [c for c, _ in chain[hi:]]
        if rest:
            self._merge_group(rest)

    def _land(self, base: str, chain: list[tuple[Candidate, str]]) -> None:
        self._record_landing([c for c, _ in chain], chain[-1][1])
        self._advance(base, chain[-1][1], landing=[c for c, _ in chain])
        self._finish_all([c for c, _ in chain])

    def _build(self, base: str, c: Candidate) -> tuple[str, list[str]]:
        """The merge commit of `c` onto `base`, or the conflicted files.

        Board files and CHANGELOG.md belong to the person and the queue: a
        branch's changes to them are dropped (main's version is kept), so they
        never conflict and never overwrite the live board.
        """
        tree, conflicts = git.merge_tree(self.root, base, c.sha)
        real = [f for f in conflicts if f not in BOARD_FILES]
        if real:
            return "", real
        if conflicts or c.changed & set(BOARD_FILES):
            tree = git.tree_with_paths_from(self.root, tree, base, list(BOARD_FILES))
        tree = self._with_changelog_entry(tree, base, c)
        commit = git.commit_tree(self.root, tree, [base, c.sha], f"Merge {c.task_id}: {c.title}")
        return commit, []

    def _with_changelog_entry(self, tree: str, base: str, c: Candidate) -> str:
        """The merged tree with the task's line under `## [Unreleased]` of main's CHANGELOG.md.

        Only where the person has committed CHANGELOG.md: kanban never starts tracking a
        file on its own (an untracked one keeps getting its lines in the working copy).
        """
        from kanban.board import changelog_ids

        committed = git.read_blob(self.root, base, CHANGELOG)
        if committed is None:
            self.changelog_untracked = True
            return tree
        if c.task_id in changelog_ids(committed.decode("utf-8", errors="replace")):
            return tree
        data = insert_entry(committed, f"{c.task_id}: {c.title}", c.category)
        # main's CHANGELOG.md is the merged tree's too (a branch's change to it is dropped): its mode with it
        return git.tree_with_blob(self.root, tree, CHANGELOG, git.write_blob(self.root, data), mode=None)

    # -- verification ---------------------------------------------------------------------

    def _verify(self, commit: str, tasks: list[Candidate], *, base: str | None = None, retries: int | None = None,
                first_try: int = 1) -> tuple[bool, str]:
        """Run `[merge] verify` on COMMIT (the merged tree holding TASKS) and wait for it; a failure
        runs again RETRIES times (default `[merge] verify_retries`) before it counts (a pass then
        is recorded as flaky). FIRST_TRY: how many failures were seen already."""
        if not self.config.merge.verify:
            return True, ""
        self._stop_stray_verifications()
        ids = [c.task_id for c in tasks]
        head = tasks[0].sha if len(tasks) == 1 else None
        retries = self.config.merge.verify_retries if retries is None else retries
        output = ""
        for try_ in range(first_try, first_try + retries + 1):
            v = self._start_verification(commit, ids, base=base, head=head, try_=try_,
                                         worktree=self._verify_slot_path(0))
            self.engine.runner.wait_any([v.run_path(self.engine.runner)], timeout=None)
            ok, output = self._collect(v)
            if ok:
                return ok, output
        return False, output

    def _start_verification(self, commit: str, ids: list[str], *, base: str | None, head: str | None,
                            try_: int, worktree: Path, armed: bool = False):
        """Start one verification run under the executor (kanban's supervisor: its timeout, its whole
        process tree killed); returns its history row. Never waits for it. ARMED: everything but
        the check itself, which starts at _release."""
        from kanban.store import state_dir

        if not armed:
            self._state("verifying", tuple(ids))
            self.report.verifications += 1
        path = self._verify_worktree(commit, worktree)
        log = _new_verify_log(self.root, commit)
        state_dir(self.root)
        runs = paths.verify_runs_dir(self.root)
        runs.mkdir(exist_ok=True)
        run_dir = runs / log.stem
        vid = self.engine.history.start_verification(ids, commit, str(log), try_, base=base, head=head,
                                                     worktree=str(path), run_ref=self.engine.runner.ref(run_dir),
                                                     armed=armed)
        try:
            self.engine.runner.submit(run_dir, list(self.config.merge.verify), cwd=path, env=self._verify_env(),
                                      log=log, timeout=self.config.merge.verify_timeout, grace=2.0, wait=False,
                                      armed=armed)
        except KanbanError as exc:  # an armed one that could not start proves nothing: made again in its turn
            self.engine.history.finish_verification(vid, outcome="discarded" if armed else "error",
                                                    how=f"could not start: {exc}")
        return self.engine.history.verification(vid)

    def _collect(self, v) -> tuple[bool, str]:
        """A finished verification run: its outcome recorded, (passed, what to tell the task)."""
        if v.ended is None and v.armed:  # ended before its turn came (stopped, or its supervisor died)
            self.engine.history.finish_verification(v.id, outcome="discarded", how="ended before its turn came")
            return False, ""
        if v.ended is None:
            state = self.engine.runner.poll(v.run_path(self.engine.runner))
            result = state.result or {}
            exit_code = result.get("exit_code")
            if result.get("timed_out"):
                outcome, how = "timeout", f"timed out after {human_duration(self.config.merge.verify_timeout)}"
            elif result.get("error") and exit_code is None:
                outcome, how = "error", clean(str(result["error"]).splitlines()[0], max_bytes=300)
            elif state.result is None:
                outcome, how = "error", "its supervisor died without a result"
            elif result.get("signal"):
                outcome, how = "fail", f"killed by signal {result['signal']}"
            else:
                outcome, how = ("pass" if exit_code == 0 else "fail"), f"exit status {exit_code}"
            elapsed = time.time() - v.started
            with self.engine.history.transaction():  # the outcome and its event, or neither (found by a soak)
                self.engine.history.finish_verification(v.id, outcome=outcome, how=how, exit_code=exit_code,
                                                        timed_out=bool(result.get("timed_out")))
                self.engine.history.event("-", "verify", detail=f"{outcome} {v.sha[:10]} in {elapsed:.2f}s ({how})")
            _prune_verify_logs(self.root)
            if v.try_ > 1 and outcome == "pass":
                for task in v.task_ids():
                    self.engine.history.event(task, "flaky", detail=v.sha)
                self._say("flaky", f"{', '.join(v.task_ids())}: verification failed, then passed when run again; "
                                   f"recorded as flaky", v.task_ids()[0] if v.task_ids() else "")
            v = self.engine.history.verification(v.id)
        ok = v.outcome == "pass"
        log = Path(v.log)
        # The branch's code wrote this: bounded and cleaned before it reaches REVIEW.md and a prompt.
        output = clean(read_capped(log, 64 * 1024, tail=True), max_bytes=8000) if log.exists() else ""
        tail = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL:])
        where = log.relative_to(self.root) if log.is_relative_to(self.root) else log
        return ok, f"`{' '.join(self.config.merge.verify)}` failed on the merged tree ({v.how}; log: {where}):\n{tail}"

    def _stop_stray_verifications(self, keep: set[int] | frozenset[int] = frozenset()) -> None:
        """Verification runs no longer wanted (a queue killed mid-check, a speculation whose base is
        gone): stopped with their whole tree, and waited for, so their worktree can be reused."""
        stray = [v for v in self.engine.history.live_verifications() if v.id not in keep]
        for v in stray:
            if v.ref:
                self.engine.runner.cancel(v.run_path(self.engine.runner), force=True)
        if stray:
            self.engine.runner.wait_any([v.run_path(self.engine.runner) for v in stray if v.ref], timeout=5.0)
        for v in stray:
            self.engine.history.finish_verification(v.id, outcome="discarded", how="no longer needed")

    @property
    def _parallel(self) -> int:
        """Verifications at once: `[merge] parallel`, within `[executor.pool] verify`."""
        return min(self.config.merge.parallel, self.config.executor.pool.get("verify", self.config.merge.parallel))

    def _verify_slot_path(self, slot: int) -> Path:
        from kanban.store import state_dir

        state_dir(self.root)
        return paths.verify_slot(self.root, slot)

    def _verify_env(self) -> dict[str, str]:
        """Filtered by the checks' lists: a branch's test that prints os.environ shows no secret."""
        env = self.config.env.for_checks().filter(os.environ)
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    def _verify_worktree(self, commit: str, path: Path) -> Path:
        if not (path / ".git").exists():
            if path.exists():
                git.remove_worktree(self.root, path)
            with git._worktree_lock(self.root):
                git.run(self.root, "worktree", "add", "--detach", str(path), commit)
            from kanban.agents import _prepare

            _prepare(self.root, self.config, path)
        else:
            try:
                git.run(path, "checkout", "--detach", "--force", "-q", commit)
                git.run(path, "clean", "-ffdq")
            except git.GitError:  # a verify worktree broken some other way: start it afresh
                git.remove_worktree(self.root, path)
                if path.exists():
                    import shutil

                    shutil.rmtree(path, ignore_errors=True)
                    git.run(self.root, "worktree", "prune")
                return self._verify_worktree(commit, path)
        return path

    # -- moving main -----------------------------------------------------------------------

    def _advance(self, old: str, new: str, *, push: bool = True, landing: Sequence[Candidate] = ()) -> None:
        checkout = git.checkout_of(self.root, self.main)
        for path in dict.fromkeys(p for p in (checkout, self.root) if p is not None):
            busy = git.operation_in_progress(path, self.main)  # a person's rebase or merge of main
            if busy:
                raise MainBlocked(f"a git {busy} is in progress in {path}",
                                  hint=f"finish it or run 'git {busy} --abort', then run 'kanban merge-queue' "
                                       f"again; {self.main} was not moved", code=1)
        # The landing tasks' worktrees are parked before main moves: the checkout's new CHANGELOG.md
        # lets their dependents be picked at once (by `kanban run`'s loop, beside this drain), and
        # each should find an idle worktree, not set up a new one. Parked for nothing if main then
        # cannot move: the task's next agent takes one back, its set-up kept. A drain that finishes
        # its landings together at the end parks only those with dependents here: one release per
        # landing costs a listing of every worktree (96 ready tasks: +20 ms a merge).
        park = [c.task_id for c in landing if self.deferred is None or c.task_id in self.awaited]
        if checkout is None:
            self._park(park)
            if not git.update_ref(self.root, f"refs/heads/{self.main}", new, old):
                raise MainMoved()
        else:
            if git.branch_sha(self.root, self.main) != old:
                raise MainMoved()
            carry = self._check_checkout(old, new, checkout)
            self._park(park)
            # the intent, for repair: a `git merge --ff-only` killed after it wrote files and index
            # but before it moved the ref leaves the checkout half-way between old and new
            record = advance_record(self.root)
            intent: dict[str, Any] = {"checkout": str(checkout), "old": old, "new": new}
            entries = [[c.task_id, c.title, c.category] for c in landing]
            if carry is not None:
                intent["changelog"] = base64.b64encode(carry).decode()
                intent["entries"] = entries
            # Not synced: a power cut may lose it, as git's own writes in the checkout are not synced
            # either (core.fsync); what it guards against is a killed process.
            write_json_atomic(record, intent)
            try:
                from kanban.store import board_lock

                # Under the board's lock: git rewrites CHANGELOG.md in place (unlinked, then written),
                # and a load in between would find no done IDs (a `depends` on a merged task fails).
                with board_lock(self.root):
                    if carry is not None:
                        _set_changelog(self.root, git.read_blob(self.root, old, CHANGELOG) or b"", expect=carry)
                    ok, err = git.fast_forward_checkout(checkout, new)
                    if carry is not None:
                        restore_changelog(self.root, carry, old, new if ok else old, entries if ok else [])
            finally:
                record.unlink(missing_ok=True)
            if not ok:
                if git.branch_sha(self.root, self.main) != old:
                    raise MainMoved()
                raise MainBlocked(f"could not move the checkout of {self.main} in {checkout}: {git_refusal(err)}",
                                  hint=f"{self.main} was not moved; fix the checkout and run again", code=1)
        if push and self.config.merge.push:
            self._push()

    def _check_checkout(self, old: str, new: str, checkout: Path | None = None) -> bytes | None:
        """Raise TouchesDirty if the person's uncommitted work is in files moving main brings in.

        A CHANGELOG.md with uncommitted edits in the board's own checkout is no obstacle: its
        bytes are returned, to be carried over the fast-forward (three-way merged with the new
        entry). Returns None when there is nothing to carry.
        """
        if checkout is None:
            checkout = git.checkout_of(self.root, self.main)
        if checkout is None:  # main is checked out nowhere: no one's work is in the way
            return None
        changes = git.diff_status(self.root, old, new)
        incoming = {p for _, p in changes}
        dirty = set(git.dirty_paths(checkout))
        clash = dirty & incoming
        # Ignored files are not in `git status`, and `git merge` overwrites them without asking: a
        # file the merge adds that is there already and not dirty is one (a path of OLD's tree on
        # disk is tracked, or `git status` lists it: `git rm --cached` makes it dirty).
        clash |= {p for status, p in changes if status == "A" and os.path.lexists(checkout / p)}
        carry = None
        if CHANGELOG in clash and CHANGELOG in dirty and Path(checkout).resolve() == self.root.resolve():
            from kanban.store import board_path, read_bytes

            working = read_bytes(board_path(self.root, Column.DONE))
            at_old, at_new = (git.read_blob(self.root, rev, CHANGELOG) for rev in (old, new))
            if working is not None and at_old is not None and at_new is not None:
                carry = working
                clash.discard(CHANGELOG)
        if clash:
            files = sorted(clash)
            raise TouchesDirty(f"uncommitted changes in {checkout} touch files the merge brings in: " + _some(files),
                               files=files, code=1,
                               hint=f"commit or stash them, then run 'kanban merge-queue' again; "
                                    f"{self.main} was not moved")
        return carry

    def _push_pending(self) -> None:
        """A push that failed last time (main merged, remote behind) is retried first."""
        remote = self.config.merge.remote
        tracking = f"refs/remotes/{remote}/{self.main}"
        status, out, _ = git.run_status(self.root, "rev-parse", "-q", "--verify", tracking)
        if status == 0 and out.strip() != git.branch_sha(self.root, self.main):
            try:
                self._push()
            except KanbanError as exc:
                self.report.lines.append(f"push of {self.main} still failing: {exc}")

    def _push(self) -> None:
        """Push main; if the remote moved, merge it in, verify, and push again."""
        remote = self.config.merge.remote
        for _ in range(3):
            status, err = _push_with_retries(self.root, remote, self.main)
            if status == 0:
                self.report.lines.append(f"pushed {self.main} to {remote}")
                return
            failed = KanbanError(f"git push {remote} {self.main} failed: {err.splitlines()[-1] if err else status}",
                                 code=1, hint="check the remote; main was merged locally")
            # `[rejected]` in the porcelain status line means the remote moved; a hook's or a protected
            # branch's `[remote rejected]` does not, and neither do advice hints (which may be turned off)
            if not _REMOTE_MOVED.search(err):
                raise failed
            git.run(self.root, "fetch", "-q", remote, self.main)
            theirs = git.rev_parse(self.root, "FETCH_HEAD")
            ours = git.branch_sha(self.root, self.main)
            if git.is_ancestor(self.root, theirs, ours):  # nothing to merge: the push failed for another reason
                raise failed
            tree, conflicts = git.merge_tree(self.root, ours, theirs)
            if conflicts == [CHANGELOG]:  # lines added under Unreleased on both sides: keep them all
                tree, conflicts = self._union_changelog(tree, ours, theirs), []
            if conflicts:
                raise KanbanError(f"{remote}/{self.main} conflicts with {self.main} in " + ", ".join(conflicts[:5]),
                                  code=1, hint="merge it by hand, then run 'kanban merge-queue' again")
            merged = git.commit_tree(self.root, tree, [ours, theirs], f"Merge {remote}/{self.main}")
            ok, output = self._verify(merged, [])
            if not ok:
                raise KanbanError(f"{remote}/{self.main} merged with {self.main} fails verification", code=1,
                                  hint=output.splitlines()[0])
            self._advance(ours, merged, push=False)
        raise KanbanError(f"{remote} kept moving while pushing {self.main}", code=1)

    def _union_changelog(self, tree: str, ours: str, theirs: str) -> str:
        base = git.merge_base(self.root, ours, theirs)
        at_base = (git.read_blob(self.root, base, CHANGELOG) if base else None) or b""
        mine, their = (git.read_blob(self.root, rev, CHANGELOG) or b"" for rev in (ours, theirs))
        merged = git.merge_file(self.root, mine, at_base, their, union=True)
        if merged is None:
            raise KanbanError(f"{self.config.merge.remote}/{self.main} conflicts with {self.main} in {CHANGELOG}",
                              code=1, hint="merge it by hand, then run 'kanban merge-queue' again")
        mode = git.file_mode(self.root, ours, CHANGELOG) or "100644"
        return git.tree_with_blob(self.root, tree, CHANGELOG, git.write_blob(self.root, merged), mode)

    # -- outcomes --------------------------------------------------------------------------

    def _finish(self, c: Candidate) -> None:
        if self.deferred is not None:  # main holds it: a crash before the end leaves it to _finish_already_merged
            self.deferred.append(c)
        else:
            self._finish_all([c])

    def _finish_all(self, done: list[Candidate]) -> None:
        """After main moved: CHANGELOG lines in the working copy (already there when they came with
        the merge commit), then TESTING entries gone, then the worktrees _advance did not park, and
        branches."""
        add_to_changelog(self.root, [(c.task_id, c.title, c.category) for c in done])
        for overruled in self.engine.remove_merged({c.task_id: c.sha for c in done}):  # edited by hand meanwhile
            self.report.lines.append(overruled.text)
            self.report.events.append(overruled)
        self._remove_task_state([c.task_id for c in done])
        for c in done:
            self.report.merged.append(c.task_id)
            self._say("merged", f"{c.task_id} merged into {self.main}: {c.title}", c.task_id, c.title)
        if self.changelog_untracked and not self.changelog_hint_given:
            self.changelog_hint_given = True
            self._say("info", f"{CHANGELOG} is not committed on {self.main}, so its lines stay in your working "
                              f"copy; commit it once (git add {CHANGELOG} && git commit) and every merge commit "
                              f"carries its own line")

    def _release_worktrees(self, task_ids: list[str]) -> None:
        from kanban.agents import release_worktrees

        if task_ids:
            release_worktrees(self.root, self.config, task_ids)  # parked for the next pick, or removed

    def _park(self, task_ids: list[str]) -> None:
        self._release_worktrees(task_ids)
        self.parked.update(task_ids)

    def _remove_task_state(self, task_ids: list[str]) -> None:
        # Those _advance parked just before main moved are done; the rest (tasks found landed
        # after a crash, say) are released here.
        self._release_worktrees([t for t in task_ids if t not in self.parked])
        self.parked.difference_update(task_ids)
        git.delete_branches(self.root, [branch_name(t) for t in task_ids])
        for task_id in task_ids:
            self.engine.history.release_port(task_id)

    def _conflict(self, c: Candidate, files: list[str]) -> None:
        note = (f"{_stamp()} merge into {self.main} conflicts (main moved under the branch) in: "
                + ", ".join(files) + f"\nThe tester merges {self.main} again and resolves them.")
        self.report.conflicts.append(c.task_id)
        self._send_back(c.task_id, Event.MERGE_CONFLICT, note, why=f"in {_some(files)}")

    def _verify_failed(self, c: Candidate, output: str) -> None:
        self.report.failed.append(c.task_id)
        how = output.splitlines()[0].split("(", 1)[-1].split(";")[0] if output else ""
        self._send_back(c.task_id, Event.VERIFY_FAILED, f"{_stamp()} post-merge check failed:\n{output}", why=how)

    def _send_back(self, task_id: str, event: Event, note: str, why: str = "") -> None:
        """The machine decides where the task goes (back a stage, or escalated the second time)."""
        happened = self.engine.apply_event(task_id, event, note, why=why)
        self.report.lines.append(happened.text)
        self.report.events.append(happened)

    def _record_landing(self, tasks: list[Candidate], commit: str) -> None:
        """The queue's own record, written before main moves: these tasks land in COMMIT, verified.

        Only this record makes a task merged; a branch found in main without it got
        there some other way (an agent's `git update-ref`), unverified.
        """
        for c in tasks:
            self.engine.history.event(c.task_id, LANDING, detail=commit)

    def _landed(self, c: Candidate, main_sha: str) -> bool:
        commits = [d for _, _, kind, _, _, d in self.engine.history.events(c.task_id) if kind == LANDING and d]
        return any(git.is_ancestor(self.root, c.sha, s) and git.is_ancestor(self.root, s, main_sha)
                   for s in reversed(commits))

    def _finish_already_merged(self, candidates: list[Candidate]) -> list[Candidate]:
        """A crash after main moved leaves ready tasks whose branch is in main: finish, never merge twice.

        Only tasks the queue itself landed count; one that reached main unverified is held for a person.
        """
        main_sha = git.branch_sha(self.root, self.main)
        if len(candidates) > 1:  # one question for all of them
            merged_tips = git.merged_tips(self.root, main_sha, "refs/heads/kanban/")
            in_main = [c for c in candidates if merged_tips.get(branch_name(c.task_id)) == c.sha]
        else:
            in_main = [c for c in candidates if git.is_ancestor(self.root, c.sha, main_sha)]
        merged = [c for c in in_main if self._landed(c, main_sha)]
        if merged:
            self._finish_all(merged)
        for c in in_main:
            if c not in merged:
                self._unverified_in_main(c, main_sha)
        return [c for c in candidates if c not in in_main]

    def _in_main(self, c: Candidate) -> bool:
        return git.is_ancestor(self.root, c.sha, git.branch_sha(self.root, self.main))

    def _unverified_in_main(self, c: Candidate, main_sha: str) -> None:
        line = (f"WARNING: {self.main} ({main_sha[:10]}) holds {c.task_id}'s commit {c.sha[:10]}, but the merge "
                f"queue never verified or merged it: something else moved {self.main} (an agent's "
                f"`git update-ref`?). Not counted as merged.")
        self.report.failed.append(c.task_id)
        self.report.lines.append(line)
        self.engine.history.event(c.task_id, "unverified_main", detail=main_sha)
        note = (f"{_stamp()} {line}\nCheck {self.main}: `git log {self.main}` and reset it to the last commit "
                f"you trust, then run 'kanban retry {c.task_id}'.")
        self.report.events.append(self.engine.escalate_event(c.task_id, note, why="main holds its commit unverified"))

    def _cleanup_finished(self) -> None:
        """Worktrees and branches of tasks already in CHANGELOG.md and gone from the board."""
        from kanban.store import read_board

        board = read_board(self.root)
        on_board = {t.id for t in board.tasks()}
        finished = [b.removeprefix("kanban/") for b in git.branches(self.root, "refs/heads/kanban/")]
        finished = [t for t in finished if t in board.done_ids and t not in on_board]
        if finished:
            self._remove_task_state(finished)


PYPROJECT = "pyproject.toml"
CONFIG_PATHS = ("kanban.toml",)
CONFIG_DIRS = ("prompts/",)


def state_paths(changed: list[str], worktree_dir: str) -> list[str]:
    """Changed paths inside kanban's state folders (.kanban/, the worktree folder)."""
    roots = (f"{paths.STATE_DIR}/", worktree_dir.strip("/") + "/")
    return [p for p in changed if p.startswith(roots) or p in {r.rstrip("/") for r in roots}]


def config_paths(changed: list[str]) -> list[str]:
    return [p for p in changed if p in CONFIG_PATHS or p.startswith(CONFIG_DIRS)]


def _tool_kanban(root: Path, commit: str) -> object:
    """pyproject.toml's [tool.kanban] table at COMMIT (None when absent or unreadable)."""
    import tomllib

    status, out, _ = git.run_status(root, "show", f"{commit}:{PYPROJECT}")
    if status != 0:
        return None
    try:
        return tomllib.loads(out).get("tool", {}).get("kanban")
    except (tomllib.TOMLDecodeError, AttributeError):
        return "unreadable"


def add_to_changelog(root: Path, items: list[tuple[str, str, str]]) -> None:
    """Insert `- ID: title` lines under Unreleased, skipping IDs already there. One atomic write,
    never over a hand edit of CHANGELOG.md (re-read and applied again)."""
    from kanban.board import changelog_ids
    from kanban.store import update_file

    def change(original: bytes) -> bytes:
        present = changelog_ids(original.decode("utf-8", errors="replace"))
        data = original
        for task_id, title, category in items:
            if task_id not in present:
                data = insert_entry(data, f"{task_id}: {title}", category)
        return data

    update_file(root, Column.DONE, change)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TransientPush)


class _TransientPush(Exception):
    pass


def _push_with_retries(root: Path, remote: str, branch: str) -> tuple[int, str]:
    @retry(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
    def attempt() -> tuple[int, str]:
        status, out, err = git.run_status(root, "push", "--porcelain", remote, f"{branch}:{branch}")
        if status != 0 and _TRANSIENT_PUSH.search(err):
            raise _TransientPush(err)
        return status, out + err  # the porcelain status lines are on stdout

    try:
        return attempt()
    except _TransientPush as exc:
        return 1, str(exc)


def _some(items: list[str], shown: int = 8) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _set_changelog(root: Path, data: bytes, *, expect: bytes) -> None:
    """Put DATA in the working CHANGELOG.md if it still holds EXPECT (a hand edit since wins:
    the fast-forward then refuses, and nothing moves)."""
    from kanban.store import update_file

    update_file(root, Column.DONE, lambda now: data if now == expect else now)


def restore_changelog(root: Path, carried: bytes, old: str, head: str, entries: list[list[str]]) -> str:
    """The person's uncommitted CHANGELOG.md edits (CARRIED, made on top of OLD) back in the working
    copy, now at HEAD, with the ENTRIES ([id, title, category]) the merge brought: a three-way union
    merge (lines added at one place by both sides are both kept: a conflict to git, not to a
    changelog), else the entries inserted into CARRIED. Also run by repair after a crash."""
    from kanban.board import changelog_ids
    from kanban.store import update_file

    at_old, at_head = git.read_blob(root, old, CHANGELOG) or b"", git.read_blob(root, head, CHANGELOG) or b""
    wanted = git.merge_file(root, carried, at_old, at_head, union=True)
    if wanted is None and (entries or at_head == at_old):
        wanted = carried
        for task_id, title, category in entries:
            if task_id not in changelog_ids(wanted.decode("utf-8", errors="replace")):
                wanted = insert_entry(wanted, f"{task_id}: {title}", category)
    outcome = ["kept"]

    def change(now: bytes) -> bytes:
        if now in (at_old, at_head) and wanted is not None:
            outcome[0] = "restored"
            return wanted
        if wanted is None or now != wanted:
            outcome[0] = "saved"  # edited since: nothing is overwritten; the carried bytes are kept aside
        return now

    update_file(root, Column.DONE, change)
    if outcome[0] == "saved":
        from kanban.store import state_dir

        state_dir(root)
        found = paths.found_dir(root)
        found.mkdir(exist_ok=True)
        (found / f"{CHANGELOG}.{int(time.time())}").write_bytes(carried)
    return outcome[0]


def _new_verify_log(root: Path, commit: str) -> Path:
    from kanban.store import state_dir

    state_dir(root)
    folder = paths.verify_logs_dir(root)
    folder.mkdir(exist_ok=True)
    return folder / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{time.time_ns() % 10**9:09d}-{commit[:10]}.log"


def _prune_verify_logs(root: Path) -> None:
    logs = sorted(paths.verify_logs_dir(root).glob("*.log"))
    for old in logs[:-VERIFY_LOGS_KEPT]:
        old.unlink(missing_ok=True)


def advance_record(root: Path) -> Path:
    """Written just before the checkout of main is fast-forwarded, removed just after."""
    return paths.advance_record(root)


def git_refusal(err: str) -> str:
    """Git's refusal in one line: its first error line with the files it lists (tab-indented).

    >>> git_refusal("Updating a..b\nerror: Your local changes to the following files would be "
    ...             "overwritten by merge:\n\tf.txt\n\tg.txt\nPlease commit your changes.\nAborting\n")
    'Your local changes to the following files would be overwritten by merge: f.txt, g.txt'
    """
    lines = err.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(("error:", "fatal:"))), None)
    if first is None:
        return lines[0].strip() if lines else "git refused"
    head = lines[first].split(":", 1)[1].strip().rstrip(":")
    files = []
    for line in lines[first + 1:]:
        if not line.startswith("\t"):
            break
        files.append(line.strip())
    if not files:
        return head
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    return f"{head}: {shown}"


def _kill_leftover_verify(root: Path) -> None:
    """A verify left running by a killed queue would race the next checkout of .kanban/verify."""
    import signal

    from kanban.procs import signal_group

    record = paths.verify_pid_record(root)
    try:
        pid, start = (int(x) for x in record.read_text().split())
    except (OSError, ValueError):
        return
    signal_group(pid, start, signal.SIGKILL)
    record.unlink(missing_ok=True)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime()) + " UTC"


def drain(engine, *, batch: bool | None = None, dry_run: bool = False, wait: bool = True) -> QueueReport:
    """Merge what is ready, in the configured mode unless `batch` says otherwise. WAIT=False:
    start verifications and land those that ended, never waiting for one (kanban run)."""
    mode_batch = engine.config.merge.mode == "batch" if batch is None else batch
    return MergeQueue(engine).drain(batch=mode_batch, dry_run=dry_run, wait=wait)
