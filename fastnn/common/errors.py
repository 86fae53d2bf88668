"""The base of every error that is the user's to fix: ``fastnn.common.cli.run_main`` prints its
message as one line and exits with status 2, never a traceback."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix; the message names it and what to do."""
