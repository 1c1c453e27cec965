"""The Test List Editor's backend (docs/api.md §2.9): per-user edits of the CitizenLab
test lists in git worktrees, proposed upstream as GitHub pull requests.

* entries.py  - pure: entry validation, `lists/<cc>.csv` parsing/rendering, the changes log
* git.py      - git as bounded subprocesses (no shell, no prompts, no credentials on disk)
* github.py   - the three pull-request calls of the GitHub REST API
* workflow.py - the per-user state machine CLEAN -> IN_PROGRESS -> PR_OPEN, and its locks
"""
