"""The exit codes every `switchyard` command shares (documented in the README).

0 done; 1 the command ran and failed (or a role crashed); 2 a usage or configuration error,
nothing started; 3 no database to use, or the server could not start. `switchyard check` adds
its own meanings for 1 and 3 (`server.db.check_report`).
"""

from __future__ import annotations

from typing import Final

EXIT_USAGE: Final = 2
EXIT_NO_DATABASE: Final = 3
EXIT_STARTUP_FAILED: Final = 3
