"""Exit codes of the long-running commands that mean "restarting will not help".

`oonibackend run` stops (and exits non-zero) instead of restarting a child that exits with one
of these; systemd units list them in `RestartPreventExitStatus=`.
"""

EXIT_CONFIG = 2  # unreadable or invalid configuration
EXIT_LOCKED = 3  # the data directory (chdb, spool or fastpath queue) is in use by another process
EXIT_CANNOT_LISTEN = 78  # a listener could not bind its address (EX_CONFIG of sysexits.h)

FATAL = frozenset({EXIT_CONFIG, EXIT_LOCKED, EXIT_CANNOT_LISTEN})
