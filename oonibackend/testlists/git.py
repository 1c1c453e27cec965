"""git as subprocesses: never a shell, bounded in time, never prompting, credentials never on
disk or on a command line.

Every command runs with a clean environment (no system or user git config, no hooks, no
automatic gc: worktree commits of several users share one object store, and a background gc
racing them is exactly what must not happen). Push credentials go in an `http.<url>.extraHeader`
given through the environment (GIT_CONFIG_COUNT), which only this user can read; legacy wrote
`https://user:token@...` into the clone's .git/config, readable by anyone who can read the
work directory.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"(://)[^/@\s]*@")
# Passed to every command (GIT_CONFIG_COUNT), so a repository's own config cannot turn them on.
_CONFIG = {
    "gc.auto": "0",
    "maintenance.auto": "false",
    "core.hooksPath": os.devnull,
    "commit.gpgSign": "false",
    "credential.helper": "",
    "advice.detachedHead": "false",
    "init.defaultBranch": "master",
}
_INHERITED = ("PATH", "TMPDIR", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


class GitError(Exception):
    """A git command failed or timed out; the message is safe to log (no credentials)."""


def redact(text: str) -> str:
    """Text without URL credentials (`https://user:token@host` → `https://***@host`)."""
    return _USERINFO.sub(r"\1***@", text)


def basic_auth_header(user: str, token: str) -> str:
    cred = base64.b64encode(f"{user}:{token}".encode()).decode()
    return f"Authorization: Basic {cred}"


class Git:
    """Runs git for the editor; `timeout` bounds each command (clones get `clone_timeout`)."""

    def __init__(self, timeout: float, author_name: str, author_email: str,
                 clone_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.clone_timeout = clone_timeout or timeout * 10
        self._env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        self._env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        self._env.update({
            "LC_ALL": "C",
            "HOME": os.devnull,  # no ~/.gitconfig, ~/.git-credentials, ~/.netrc
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        })

    def _environ(self, config: dict[str, str] | None) -> dict[str, str]:
        env = dict(self._env)
        items = list({**_CONFIG, **(config or {})}.items())
        env["GIT_CONFIG_COUNT"] = str(len(items))
        for i, (k, v) in enumerate(items):
            env[f"GIT_CONFIG_KEY_{i}"] = k
            env[f"GIT_CONFIG_VALUE_{i}"] = v
        return env

    async def run(self, cwd: Path, *args: str, config: dict[str, str] | None = None,
                  stdin: bytes | None = None, timeout: float | None = None,
                  quiet: bool = False) -> str:
        """stdout of `git <args>` run in `cwd`; GitError when it fails or times out (the
        process group is killed: git forks helpers such as git-remote-https). Failures are
        logged unless `quiet` (an expected answer, such as "no such branch")."""
        timeout = timeout or self.timeout
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                "git", *args, cwd=str(cwd), env=self._environ(config),
                stdin=asyncio.subprocess.PIPE if stdin is not None
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as e:  # git not installed, cwd missing
            log.error("cannot run git", extra={"git": args[0], "cwd": str(cwd),
                                               "error": str(e)})
            raise GitError(f"cannot run git {args[0]}: {e.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except BaseException as e:  # timeout or cancellation: never leave git running
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            if isinstance(e, TimeoutError):
                raise GitError(f"git {args[0]} timed out after {timeout:g} s") from None
            raise
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            msg = redact(err.decode(errors="replace").strip())[-500:]
            if not quiet:
                log.warning("git command failed", extra={"git": args[0], "cwd": str(cwd),
                                                         "rc": proc.returncode, "stderr": msg,
                                                         "seconds": round(seconds, 3)})
            raise GitError(f"git {args[0]} failed: {msg}")
        log.debug("git command", extra={"git": args[0], "cwd": str(cwd),
                                        "seconds": round(seconds, 3)})
        return out.decode(errors="replace")

    async def clone(self, url: str, dest: Path, branch: str) -> None:
        await self.run(dest.parent, "clone", "--quiet", "--branch", branch, "--", url,
                       str(dest), timeout=self.clone_timeout)

    async def pull(self, repo: Path, branch: str) -> None:
        await self.run(repo, "pull", "--ff-only", "--quiet", "origin", branch)

    async def worktree_add(self, repo: Path, path: Path, branch: str, base: str) -> None:
        """A worktree at `path` on `branch`, (re)created from `base`."""
        await self.run(repo, "worktree", "add", "--quiet", "-B", branch, str(path), base)

    async def worktree_remove(self, repo: Path, path: Path, branch: str) -> None:
        """Remove a user's worktree and branch, whatever is left of them."""
        if path.exists():
            try:
                await self.run(repo, "worktree", "remove", "--force", "--force", str(path))
            except GitError:
                await asyncio.to_thread(shutil.rmtree, path, True)
        await self.run(repo, "worktree", "prune")
        try:
            await self.run(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                           quiet=True)
        except GitError:
            return
        await self.run(repo, "branch", "-D", "--", branch)

    async def commit(self, worktree: Path, paths: list[str], message: str) -> None:
        await self.run(worktree, "add", "--", *paths)
        await self.run(worktree, "commit", "--quiet", "--no-verify", "--cleanup=whitespace",
                       "-F", "-", stdin=message.encode())

    async def reset_hard(self, worktree: Path) -> None:
        await self.run(worktree, "reset", "--quiet", "--hard", "HEAD")

    async def push(self, worktree: Path, url: str, branch: str,
                   auth_header: str | None) -> None:
        """Force-push HEAD to `branch` at `url`; the header is sent to that URL only."""
        config = {f"http.{url}.extraHeader": auth_header} if auth_header else None
        await self.run(worktree, "push", "--force", "--quiet", "--", url,
                       f"HEAD:refs/heads/{branch}", config=config)

