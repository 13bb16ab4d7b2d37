"""What kanban checks in the shared repository after every agent run.

Without the sandbox an agent can write the shared git directory's config and
hooks (code that runs in the person's next git command) and move main itself
(`git update-ref refs/heads/main HEAD`). After each run: the first is put back
(gitguard), the second is undone when that is safe (main moved onto the task's
own commits, nothing of anyone else's on top) and reported either way. Each
finding escalates the task; the note says what was found and where it was put.
"""

from __future__ import annotations

from pathlib import Path

from kanban import git, paths
from kanban.atomic import write_text_atomic
from kanban.gitguard import GitGuard
from kanban.ids import branch_name

MAIN_RECORD = "main"  # the last main the checks accepted, in .kanban/gitguard/


class AfterCheck:
    def __init__(self, root: Path, main: str, history) -> None:
        self.root = root
        self.main = main
        self.history = history
        self.guard = GitGuard(root, git.common_dir(root))
        self.record = paths.gitguard_dir(root) / MAIN_RECORD
        self._landings: set[str] = set()  # commits the merge queue landed on main, as seen so far

    def accept_current(self) -> None:
        """Nothing in flight: what the shared git directory holds now is the person's."""
        self.guard.take_baseline()
        before = self._recorded_main()
        now = git.branch_sha(self.root, self.main)
        if now != before:
            self._remember_main(now)

    def after_run(self, task_id: str, worktree: Path | None = None) -> str | None:
        """Check and repair after TASK_ID's run ended; a note for the person, or None."""
        lines = []
        findings, aside = self.guard.check_and_restore()
        if findings:
            shown = ", ".join(str(f) for f in findings[:8]) + (f" and {len(findings) - 8} more"
                                                               if len(findings) > 8 else "")
            kept = f"; what was found is kept in {aside.relative_to(self.root)}" if aside else ""
            lines.append(f"the shared git directory changed during this run ({shown}): kanban put it back{kept}. "
                         "Hooks, config and aliases there would run in your next git command.")
        lines += self._branch_check(task_id, worktree)
        moved = self._main_check(task_id)
        if moved:
            lines.append(moved)
        if not lines:
            return None
        return "\n".join(lines) + "\nRun agents with `[agent] sandbox = \"bwrap\"` to make this impossible."

    def _branch_check(self, task_id: str, worktree: Path | None) -> list[str]:
        """The task's branch must be a plain ref and its worktree's HEAD must name it: a branch
        turned into a link to main (or a HEAD moved onto main) would let kanban's own next commit
        in the worktree move main."""
        branch = branch_name(task_id)
        found = []
        status, target = 1, ""  # a loose ref file holding a commit id is no link: no git process
        if git.loose_ref(self.guard.gitdir, f"refs/heads/{branch}") is None:
            status, target, _ = git.run_status(self.root, "symbolic-ref", "-q", f"refs/heads/{branch}")
        if status == 0:
            git.run(self.root, "update-ref", "--no-deref", "-d", f"refs/heads/{branch}")
            found.append(f"the agent turned its branch {branch} into a link to {target.strip()}; kanban deleted "
                         f"the link, so that no commit of kanban's in the worktree can move {target.strip()}.")
        if worktree is not None and worktree.exists() and not found:
            head = git.worktree_branch(worktree)
            if head is not None and head != branch:
                found.append(f"the agent switched its worktree from {branch} to {head}; kanban will not commit "
                             f"there. Check the worktree {worktree.relative_to(self.root)}.")
        return found

    def _remember_main(self, sha: str) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.record, sha + "\n")

    def _recorded_main(self) -> str | None:
        try:
            return self.record.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _moved_onto(self, branch: str, now: str, before: str) -> bool:
        """Whether main moved to one of the branch's own commits, or past them."""
        def anc(a: str, b: str) -> bool:
            return git.is_ancestor(self.root, a, b)

        if anc(now, before) or anc(branch, before):
            return False  # main went back, or the branch has nothing of its own
        return anc(now, branch) or anc(branch, now)

    def _landed(self, sha: str) -> bool:
        """Whether the merge queue landed SHA on main (asked once per commit that it did)."""
        if sha in self._landings:
            return True
        if self.history.landed(sha):
            self._landings.add(sha)
            return True
        return False

    def _main_check(self, task_id: str) -> str | None:
        before = self._recorded_main()
        now = git.branch_sha(self.root, self.main)
        if before is None or now == before or self._landed(now):
            if now != before:
                self._remember_main(now)
            return None
        branch = git.branch_shas(self.root, f"refs/heads/{branch_name(task_id)}").get(branch_name(task_id))
        if branch is None or not self._moved_onto(branch, now, before):
            self._remember_main(now)  # a person's commit or reset: theirs to make
            return None
        # main now points into the task's own commits: the agent moved it
        undone = (git.is_ancestor(self.root, now, branch) and git.is_ancestor(self.root, before, now)
                  and git.update_ref(self.root, f"refs/heads/{self.main}", before, now))
        if undone:
            return (f"the agent moved {self.main} to its own commit {now[:10]} (unverified); kanban moved it back "
                    f"to {before[:10]}. Only the merge queue moves {self.main}, after verification.")
        self._remember_main(now)
        return (f"WARNING: {self.main} now holds this task's commits ({now[:10]}), moved there without the "
                f"merge queue and without verification; kanban could not safely move it back from {now[:10]} "
                f"to {before[:10]}. Check `git log {self.main}`.")
