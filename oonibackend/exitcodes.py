"""Exit codes of every command; the systemd units and the tests rely on them.

Jobs (upload, backup, the importers, detect, rotate, ...) exit 0 when done, EXIT_FAILED when
the run failed (the next one carries on), EXIT_USAGE for bad options or configuration and
EXIT_LOCKED when another run holds their lock (oonibackend/jobs/harness.py).

The long-running commands exit with one of `FATAL` when restarting will not help:
`oonibackend run` stops (and exits non-zero) instead of restarting such a child, and the
systemd units list them in `RestartPreventExitStatus=`.
"""

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed; what the message says went wrong
EXIT_USAGE = 2  # bad options or configuration (argparse's own code for bad usage)
EXIT_CONFIG = 2  # unreadable or invalid configuration
EXIT_LOCKED = 3  # the data directory, or a job's lock, is in use by another process
EXIT_CANNOT_LISTEN = 78  # a listener could not bind its address (EX_CONFIG of sysexits.h)
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2), as a shell reports it

FATAL = frozenset({EXIT_CONFIG, EXIT_LOCKED, EXIT_CANNOT_LISTEN})
