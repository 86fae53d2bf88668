"""Small file helpers: every file fastnn writes goes through ``atomic_write``."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash or Ctrl-C mid-write leaves the old file (or none), never half a file. The file
    gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_safe(obj):
    """NaN and inf become null, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(obj, path) -> None:
    """Write ``obj`` as indented strict JSON (NaN -> null), atomically."""
    with atomic_write(path, "w") as f:
        json.dump(_json_safe(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def write_csv_rows(rows: list[dict], path) -> None:
    """Write dict rows (keys of the first row as header) as CSV, atomically."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss")


def read_history(path) -> list[dict]:
    """The rows of a run's ``history.csv`` (``python -m fastnn.train``), each value a float and
    ``epoch`` an int; [] for a file with a header and no rows.

    Raises:
        ValueError: the file is not a history.csv (not UTF-8 text, not CSV, no
            epoch / train_loss / val_loss columns, a value that is not a finite number).
        OSError: it cannot be read.
    """
    with open(path, newline="", encoding="utf-8") as f:
        try:
            rows = [{k: float(v) for k, v in r.items() if k is not None and v not in ("", None)}
                    for r in csv.DictReader(f)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"{path}: not a CSV text file ({exc})") from None
    for r in rows:
        if not set(HISTORY_COLUMNS) <= set(r):
            raise ValueError(f"{path}: no {' / '.join(HISTORY_COLUMNS)} columns")
        if not all(math.isfinite(v) for v in r.values()) or r["epoch"] != int(r["epoch"]):
            raise ValueError(f"{path}: epoch {r['epoch']}: a value that is not a finite number")
        r["epoch"] = int(r["epoch"])
    return rows
