"""Where a result came from: the commit of the code that made it (metrics.json, the experiments'
rows, the pretrained models' records)."""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]


def git_commit() -> str:
    """The current commit of the project, ``+changes`` appended when tracked files differ from it
    (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=here)
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, timeout=10, cwd=here)
        return commit + ("+changes" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
