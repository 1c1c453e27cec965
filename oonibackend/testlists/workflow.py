"""The per-user editing workflow: CLEAN -> IN_PROGRESS -> PR_OPEN (docs/api.md §2.9).

Layout under the work directory:

    test-lists/                 shared clone of the origin repository (branch `base_branch`)
    clone.lock, last_pull       lock of the shared clone; mtime = last `git pull`
    users/<account_id>/state.lock
    users/<account_id>/state    IN_PROGRESS or PR_OPEN (absent: CLEAN)
    users/<account_id>/pr_id    API URL of the open PR (pr_url: its web page)
    users/<account_id>/changes.json   {cc: [entry + {"action": "add" | "delete"}]}
    users/<account_id>/test-lists/    worktree on branch user-contribution/<account_id>

Locking: one user's requests are serialised by an asyncio.Lock (this process) and a flock on
state.lock (other API processes), both waited for at most `lock_wait` seconds (then 503). The
shared clone (clone, pull, worktree add/remove, reading its files) is serialised the same way
by a process lock plus a flock on clone.lock. Users' worktree commits run in parallel: each
writes only its own branch ref and index, and automatic gc is off.

Freshness: the shared clone is pulled before reads and edits at most every `pull_interval`
seconds (stamp file mtime, shared by the API processes), not on every request as legacy did,
which put a GitHub round trip and a clone-wide lock in front of every page view. A PR found
closed (merged) forces a pull, so the merged change shows at once.

The account id comes from a verified session token and is re-checked to be 32 hex chars before
it names a directory; the country code is `global` or two letters, checked before it names a
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oonibackend import jsonutil
from oonibackend.accounts.ids import is_account_id
from oonibackend.config import Config
from oonibackend.errors import DomainError, Failed, Forbidden, Invalid, Unavailable, UpstreamFailed
from oonibackend.fileutil import release_flock, try_flock, write_atomic
from oonibackend.testlists import entries as E
from oonibackend.testlists.git import Git, GitError, basic_auth_header
from oonibackend.testlists.github import GitHub, GitHubError

log = logging.getLogger(__name__)

CLEAN, IN_PROGRESS, PR_OPEN = "CLEAN", "IN_PROGRESS", "PR_OPEN"
PR_TITLE = "Contribution from test-lists.ooni.org"
BRANCH_PREFIX = "user-contribution/"
_MAX_PR_BODY_LINES = 100


def busy(what: str) -> Unavailable:
    return Unavailable(f"{what} is busy with another request, retry shortly", retry_after=2,
                       err_str="err_busy")


def _unavailable() -> Unavailable:
    return Unavailable("The test lists repository is not available yet, retry shortly",
                       retry_after=10, err_str="err_repository_unavailable")


# --- file helpers (run in threads) -----------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    """Atomic replace: a crash leaves the old or the new content, never half of it."""
    write_atomic(path, text.encode())


def _unlink(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _parse(root: Path, name: str) -> E.ListFile | None:
    text = _read(root / "lists" / f"{name}.csv")
    if text is None:
        return None
    try:
        return E.parse_list(text)
    except E.ListFileError as e:
        log.error("malformed test list", extra={"file": f"lists/{name}.csv", "error": str(e)})
        raise Failed(f"lists/{name}.csv is not in the expected format",
                     err_str="err_bad_list_file") from None


def _read_lists(root: Path, cc: str) -> tuple[E.ListFile | None, E.ListFile | None]:
    """The cc list and the global list (the same object for cc = global)."""
    lf = _parse(root, cc)
    return lf, (lf if cc == E.GLOBAL else _parse(root, E.GLOBAL))


@dataclass
class _UserFiles:
    state: str
    pr_id: str | None
    pr_url: str | None
    changes: E.Changes


def _load_user(udir: Path) -> _UserFiles:
    state = (_read(udir / "state") or CLEAN).strip()
    if state not in (IN_PROGRESS, PR_OPEN):
        state = CLEAN
    pr_id = (_read(udir / "pr_id") or "").strip() or None
    pr_url = (_read(udir / "pr_url") or "").strip() or None
    changes: E.Changes = {}
    raw = _read(udir / "changes.json")
    if raw:
        try:
            changes = E.parse_changes(jsonutil.loads(raw))
        except (ValueError, jsonutil.JSONDecodeError) as e:
            log.error("unreadable changes log, ignored", extra={"dir": str(udir), "error": str(e)})
    return _UserFiles(state, pr_id, pr_url, changes)


def _release_if_taken(attempt: asyncio.Future) -> None:
    if not attempt.cancelled() and attempt.exception() is None and attempt.result() is not None:
        release_flock(attempt.result())


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Editor:
    """The test-list editor of one API process (app-scoped; see routes/url_submission.py)."""

    def __init__(self, cfg: Config, token: str, github: GitHub) -> None:
        g = cfg.github
        self.base_branch = g.base_branch
        self.origin_url = g.origin_url or f"https://github.com/{g.origin_repo}.git"
        self.push_url = g.push_url or f"https://github.com/{g.push_repo}.git"
        self.push_owner = g.push_repo.split("/", 1)[0]
        user = g.user or self.push_owner
        self.auth_header = (basic_auth_header(user, token)
                            if self.push_url.startswith(("https://", "http://")) else None)
        self.pull_interval = g.pull_interval
        self.lock_wait = 2 * g.timeout
        self.workdir = cfg.path(g.workdir)
        self.clone_dir = self.workdir / "test-lists"
        self.users_dir = self.workdir / "users"
        self.git = Git(g.timeout, user, f"{user}@users.noreply.github.com")
        self.github = github
        self._clone_lock = asyncio.Lock()
        self._users: dict[str, _Slot] = {}

    # --- locks ---------------------------------------------------------------------------------

    async def _flock(self, path: Path, deadline: float, what: str) -> int:
        loop = asyncio.get_running_loop()
        while True:
            attempt = asyncio.ensure_future(asyncio.to_thread(try_flock, path))
            try:
                fd = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                # The thread may still take the lock: release it then, or it would be held
                # until the process exits.
                attempt.add_done_callback(_release_if_taken)
                raise
            if fd is not None:
                return fd
            if loop.time() >= deadline:
                raise busy(what)
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def _locked(self, lock: asyncio.Lock, path: Path, wait: float,
                      what: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            async with asyncio.timeout(wait):
                await lock.acquire()
        except TimeoutError:
            raise busy(what) from None
        try:
            fd = await self._flock(path, deadline, what)
            try:
                yield
            finally:
                await asyncio.to_thread(release_flock, fd)
        finally:
            lock.release()

    def _clone_locked(self, wait: float | None = None) -> contextlib.AbstractAsyncContextManager:
        return self._locked(self._clone_lock, self.workdir / "clone.lock",
                            wait or self.lock_wait, "The test lists repository")

    @contextlib.asynccontextmanager
    async def _user_locked(self, account_id: str) -> AsyncIterator[Path]:
        """The user's directory, with the user's locks held."""
        if not is_account_id(account_id):  # names a directory: never trust it unchecked
            raise Forbidden("Invalid account")
        udir = self.users_dir / account_id
        await asyncio.to_thread(udir.mkdir, parents=True, exist_ok=True)
        slot = self._users.setdefault(account_id, _Slot())
        slot.users += 1
        try:
            async with self._locked(slot.lock, udir / "state.lock", self.lock_wait,
                                    "Your test list"):
                yield udir
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._users[account_id]

    # --- the shared clone ----------------------------------------------------------------------

    async def ensure_clone(self, wait: float | None = None) -> None:
        """Clone the origin repository on first use (into a temporary directory renamed into
        place, so a crash never leaves a half clone where the editor looks)."""
        if await asyncio.to_thread((self.clone_dir / ".git").is_dir):
            return
        await asyncio.to_thread(self.users_dir.mkdir, parents=True, exist_ok=True)
        try:
            async with self._clone_locked(wait):
                if await asyncio.to_thread((self.clone_dir / ".git").is_dir):
                    return
                tmp = self.workdir / f"test-lists.tmp{os.getpid()}"
                if await asyncio.to_thread(tmp.exists):
                    await asyncio.to_thread(shutil.rmtree, tmp, True)
                log.info("cloning the test lists repository", extra={"dest": str(self.clone_dir)})
                await self.git.clone(self.origin_url, tmp, self.base_branch)
                await asyncio.to_thread(os.replace, tmp, self.clone_dir)
                await asyncio.to_thread(_write, self.workdir / "last_pull", "")
        except GitError as e:
            log.error("cannot clone the test lists repository", extra={"error": str(e)})
            raise _unavailable() from None
        except Unavailable:
            raise _unavailable() from None

    async def maybe_pull(self, force: bool = False) -> None:
        """`git pull --ff-only` of the shared clone, unless done less than pull_interval ago
        (by any process). A failed pull is logged and the editor goes on with what it has."""
        stamp = self.workdir / "last_pull"

        def stale() -> bool:
            try:
                return time.time() - stamp.stat().st_mtime >= self.pull_interval
            except FileNotFoundError:
                return True

        if not force and not await asyncio.to_thread(stale):
            return
        async with self._clone_locked():
            if not force and not await asyncio.to_thread(stale):
                return  # another request pulled while we waited
            await asyncio.to_thread(_write, stamp, "")
            try:
                await self.git.pull(self.clone_dir, self.base_branch)
            except GitError as e:
                log.warning("git pull of the test lists failed", extra={"error": str(e)})

    async def warm_up(self) -> None:
        """Startup: clone in the background, so the first user does not wait for it."""
        try:
            await self.ensure_clone(wait=self.git.clone_timeout + 10)
        except DomainError:
            pass  # logged; requests retry

    # --- per-user state ------------------------------------------------------------------------

    def _branch(self, account_id: str) -> str:
        return BRANCH_PREFIX + account_id

    async def _reset(self, account_id: str, udir: Path) -> None:
        """Back to CLEAN: forget the state first (a crash after that leaves only leftovers,
        which the next edit removes), then the worktree, branch and files."""
        await asyncio.to_thread(_unlink, udir / "state")
        async with self._clone_locked():
            await self.git.worktree_remove(self.clone_dir, udir / "test-lists",
                                           self._branch(account_id))
        await asyncio.to_thread(_unlink, udir / "changes.json", udir / "pr_id",
                                udir / "pr_url")

    async def _sync_state(self, account_id: str, udir: Path) -> _UserFiles:
        """The user's files, after asking GitHub whether an open PR is still open."""
        uf = await asyncio.to_thread(_load_user, udir)
        has_worktree = await asyncio.to_thread((udir / "test-lists" / ".git").exists)
        if uf.state != CLEAN and not has_worktree:
            log.error("user state without worktree, reset", extra={"account_id": account_id})
            await self._reset(account_id, udir)
            return _UserFiles(CLEAN, None, None, {})
        if uf.state == PR_OPEN and not self.github.is_pr_url(uf.pr_id):
            log.error("PR_OPEN without a valid pr_id", extra={"account_id": account_id})
            await asyncio.to_thread(_write, udir / "state", IN_PROGRESS)
            uf.state = IN_PROGRESS
        if uf.state == PR_OPEN:
            assert uf.pr_id is not None
            try:
                pr_state = await self.github.pr_state(uf.pr_id)
            except GitHubError as e:
                log.warning("cannot read the PR state", extra={"error": str(e)})
                return uf
            if pr_state != "open":
                log.info("pull request closed upstream", extra={"account_id": account_id,
                                                                "pr": uf.pr_id})
                await self._reset(account_id, udir)
                await self.maybe_pull(force=True)
                return _UserFiles(CLEAN, None, None, {})
        return uf

    # --- the three operations ------------------------------------------------------------------

    async def get_list(self, account_id: str, cc: str) -> dict[str, Any]:
        await self.ensure_clone()
        await self.maybe_pull()
        async with self._user_locked(account_id) as udir:
            uf = await self._sync_state(account_id, udir)
            if uf.state == CLEAN:
                async with self._clone_locked():
                    lf = await asyncio.to_thread(_parse, self.clone_dir, cc)
            else:
                lf = await asyncio.to_thread(_parse, udir / "test-lists", cc)
        pr_url = None
        if uf.state == PR_OPEN and uf.pr_id:
            pr_url = uf.pr_url or self.github.html_url(uf.pr_id)
        return {"test_list": lf.entries() if lf is not None else None, "changes": uf.changes,
                "state": uf.state, "pr_url": pr_url}

    async def update(self, account_id: str, cc: str, old: E.Entry | None, new: E.Entry | None,
                     comment: str) -> None:
        """Apply one edit (validated entries, old != new) to the user's branch. The edit is
        checked against the lists before anything changes: legacy closed an open PR first, so
        a refused edit (duplicate URL, stale old entry) still lost the user's PR."""
        await self.ensure_clone()
        await self.maybe_pull()
        async with self._user_locked(account_id) as udir:
            uf = await self._sync_state(account_id, udir)
            wt = udir / "test-lists"
            branch = self._branch(account_id)
            if uf.state == CLEAN:
                # Read, check and branch off under one hold of the clone lock, so the worktree
                # starts from exactly the files the edit was computed on.
                async with self._clone_locked():
                    result = await asyncio.to_thread(self._edit, self.clone_dir, cc, old, new)
                    await self.git.worktree_remove(self.clone_dir, wt, branch)  # leftovers
                    await self.git.worktree_add(self.clone_dir, wt, branch, self.base_branch)
            else:
                result = await asyncio.to_thread(self._edit, wt, cc, old, new)
            if uf.state == PR_OPEN:
                assert uf.pr_id is not None
                try:
                    await self.github.close_pr(uf.pr_id)
                except GitHubError as e:
                    log.warning("cannot close PR", extra={"pr": uf.pr_id, "error": str(e)})
                    raise UpstreamFailed("Cannot close the open pull request on GitHub, "
                                         "retry later", err_str="err_cannot_close_pr") from None
                await asyncio.to_thread(_write, udir / "state", IN_PROGRESS)
                await asyncio.to_thread(_unlink, udir / "pr_id", udir / "pr_url")
                log.info("pull request closed for a new edit", extra={"pr": uf.pr_id})
            message = comment.strip() or f"Update lists/{cc}.csv"
            try:
                await asyncio.to_thread(_write, wt / "lists" / f"{cc}.csv",
                                        E.render_list(result))
                await self.git.commit(wt, [f"lists/{cc}.csv"], message)
            except (GitError, OSError) as e:
                log.error("cannot commit an edit", extra={"account_id": account_id,
                                                          "error": str(e)})
                if uf.state == CLEAN:
                    await self._reset(account_id, udir)
                else:
                    with contextlib.suppress(GitError):
                        await self.git.reset_hard(wt)
                raise Failed("Cannot save the change, retry later",
                             err_str="err_cannot_update_list") from None
            changes = E.merge_changes(uf.changes if uf.state != CLEAN else {}, cc, old, new)
            if not changes:
                # Every change was undone: nothing to propose, back to the upstream list.
                await self._reset(account_id, udir)
            else:
                await asyncio.to_thread(_write, udir / "changes.json",
                                        jsonutil.dumps(changes).decode())
                await asyncio.to_thread(_write, udir / "state", IN_PROGRESS)
        log.info("test list edited", extra={"account_id": account_id, "cc": cc,
                                            "action": "edit" if old and new else
                                            "delete" if old else "add"})

    def _edit(self, root: Path, cc: str, old: E.Entry | None,
              new: E.Entry | None) -> E.ListFile:
        lf, global_lf = _read_lists(root, cc)
        if lf is None:
            raise E.EntryError("There is no test list for this country",
                               "err_country_not_supported")
        return E.edit_list(cc, lf, global_lf, old, new)

    async def submit(self, account_id: str) -> str:
        """Push the user's branch to the fork and open a PR upstream: the PR's API URL."""
        await self.ensure_clone()
        async with self._user_locked(account_id) as udir:
            uf = await self._sync_state(account_id, udir)
            if uf.state == PR_OPEN:
                # Already proposed and unchanged since (every edit closes the PR): legacy
                # pushed again and GitHub refused a second PR for the same branch.
                assert uf.pr_id is not None
                return uf.pr_id
            if uf.state == CLEAN or not uf.changes:
                raise Invalid("No proposed changes", err_str="err_no_proposed_changes")
            branch = self._branch(account_id)
            try:
                await self.git.push(udir / "test-lists", self.push_url, branch, self.auth_header)
            except GitError:
                raise UpstreamFailed("Cannot push the changes to GitHub, retry later",
                                     err_str="err_cannot_push") from None
            try:
                pr_id, pr_url = await self.github.create_pr(
                    f"{self.push_owner}:{branch}", self.base_branch, PR_TITLE,
                    pr_body(uf.changes))
            except GitHubError as e:
                log.warning("cannot open PR", extra={"account_id": account_id, "error": str(e)})
                raise UpstreamFailed(f"Cannot open the pull request on GitHub ({e}), "
                                     "retry later", err_str="err_cannot_create_pr") from None
            await asyncio.to_thread(_write, udir / "pr_id", pr_id)
            await asyncio.to_thread(_write, udir / "pr_url", pr_url)
            await asyncio.to_thread(_write, udir / "state", PR_OPEN)
        log.info("pull request opened", extra={"account_id": account_id, "pr": pr_id})
        return pr_id


def pr_body(changes: E.Changes) -> str:
    """A readable summary of the changes for reviewers."""
    lines = ["Changes proposed with the OONI Test List Editor (test-lists.ooni.org):", ""]
    for cc in sorted(changes):
        for e in changes[cc]:
            sign = "+" if e["action"] == "add" else "-"
            lines.append(f"{sign} lists/{cc}.csv: {e['url']} {e['category_code']}")
    if len(lines) > _MAX_PR_BODY_LINES:
        more = len(lines) - _MAX_PR_BODY_LINES
        lines = lines[:_MAX_PR_BODY_LINES] + [f"... and {more} more"]
    return "\n".join(lines) + "\n"

