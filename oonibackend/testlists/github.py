"""The three pull-request calls of the GitHub REST API the editor needs.

The token is sent only to pull-request URLs of the origin repository under the configured API
base: a PR URL read back from a user's state file is checked before it is fetched (legacy
fetched whatever URL was stored, with basic auth).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from oonibackend import jsonutil

_MAX_RESPONSE = 1024 * 1024


class GitHubError(Exception):
    """A GitHub call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class GitHub:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, origin_repo: str,
                 token: str, timeout: float) -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self.origin_repo = origin_repo
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "oonibackend-test-list-editor",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pulls = f"{self.api_url}/repos/{origin_repo}/pulls"
        self._pr_url = re.compile(re.escape(self._pulls) + r"/[0-9]{1,12}")

    def is_pr_url(self, url: object) -> bool:
        return isinstance(url, str) and self._pr_url.fullmatch(url) is not None

    def html_url(self, pr_url: str) -> str:
        """The web page of a PR of the origin repository (when GitHub's answer lacks it)."""
        return f"https://github.com/{self.origin_repo}/pull/{pr_url.rsplit('/', 1)[1]}"

    async def _call(self, method: str, url: str, body: dict[str, Any] | None,
                    ok: tuple[int, ...]) -> dict[str, Any]:
        headers = self._headers
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            async with self.session.request(
                    method, url, headers=headers, timeout=self._timeout,
                    data=jsonutil.dumps(body) if body is not None else None,
                    allow_redirects=False) as resp:
                raw = await resp.content.read(_MAX_RESPONSE)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise GitHubError(f"GitHub {method} failed: {type(e).__name__}") from None
        try:
            data = jsonutil.loads(raw) if raw else {}
        except jsonutil.JSONDecodeError:
            data = {}
        if status not in ok:
            msg = data.get("message") if isinstance(data, dict) else None
            detail = f": {str(msg)[:200]}" if msg else ""
            raise GitHubError(f"GitHub answered {status}{detail}", status)
        if not isinstance(data, dict):
            raise GitHubError("GitHub answered with unexpected JSON", status)
        return data

    async def create_pr(self, head: str, base: str, title: str,
                        body: str) -> tuple[str, str]:
        """Open a PR on the origin repository: (API URL, web URL)."""
        data = await self._call("POST", self._pulls,
                                {"head": head, "base": base, "title": title, "body": body},
                                (200, 201))
        url = data.get("url")
        if not self.is_pr_url(url):
            raise GitHubError("GitHub answered without a pull request URL", 201)
        html = data.get("html_url")
        if not isinstance(html, str) or not html.startswith(("https://", "http://")):
            html = self.html_url(url)
        return url, html

    async def pr_state(self, pr_url: str) -> str:
        """`open` or `closed` (merged PRs are closed)."""
        if not self.is_pr_url(pr_url):
            raise GitHubError("not a pull request of the origin repository")
        state = (await self._call("GET", pr_url, None, (200,))).get("state")
        if not isinstance(state, str):
            raise GitHubError("GitHub answered without a pull request state", 200)
        return state

    async def close_pr(self, pr_url: str) -> None:
        if not self.is_pr_url(pr_url):
            raise GitHubError("not a pull request of the origin repository")
        await self._call("PATCH", pr_url, {"state": "closed"}, (200,))
