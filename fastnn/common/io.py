"""Small file helpers: every file fastnn writes goes through ``atomic_write``."""
from __future__ import annotations

import contextlib
import csv
import errno
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


class NotARegularFile(OSError):
    """A write aimed at something that is not a regular file (a device, a FIFO, a folder...)."""


def _kind(mode: int) -> str:
    import stat

    return ("a folder" if stat.S_ISDIR(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def open_regular(path, mode: str = "rb", **kwargs):
    """``open(path, mode)`` for reading, only if ``path`` is a regular file (after links): a FIFO
    would block the reader forever, a device would stream without end. Opened without blocking,
    then checked on the open file itself (no gap between check and open).

    Raises:
        NotARegularFile: a folder, FIFO, device or socket. FileNotFoundError, PermissionError: as open().
    """
    import stat

    if "r" not in mode or "+" in mode:
        raise ValueError(f"open_regular reads; mode {mode!r}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"is {_kind(st.st_mode)}, not a regular file; fastnn reads only "
                                                f"regular files", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def writable_target(path) -> Path:
    """Where a write to ``path`` goes: ``path``, or the file a symbolic link names (the link
    stays a link and its file gets the new content). Raises NotARegularFile when that is
    something other than a regular file or nothing: fastnn replaces only regular files."""
    import stat

    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    except OSError:
        return target                                    # let the write itself report it
    if not stat.S_ISREG(mode):
        raise NotARegularFile(errno.EEXIST, f"is {_kind(mode)}, not a regular file; fastnn replaces only regular "
                                            f"files: choose another path", str(path))
    return target


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A crash or Ctrl-C mid-write leaves the old file (or none), never half a file. The file
    gets the usual permissions (0666 less the umask), not mkstemp's private 0600. Through a
    symbolic link the linked file is replaced; anything but a regular file is refused
    (``writable_target``).
    """
    path = writable_target(path)
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
VAL_COLUMNS = ("val_loss", "val_accuracy")      # NaN in a run without a validation split (--val-split 0)


def read_history(path) -> list[dict]:
    """The rows of a run's ``history.csv`` (``python -m fastnn.train``), each value a float and
    ``epoch`` an int; [] for a file with a header and no rows. The validation columns are NaN
    in a run trained without a validation split.

    Raises:
        ValueError: the file is not a history.csv (not UTF-8 text, not CSV, no
            epoch / train_loss / val_loss columns, a value that is not a finite number outside
            the validation columns); the message says which, not where (the caller names the file).
        OSError: it cannot be read.
    """
    with open_regular(path, "r", newline="", encoding="utf-8") as f:
        try:
            rows = [{k: float(v) for k, v in r.items() if k is not None and v not in ("", None)}
                    for r in csv.DictReader(f)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"not a CSV text file ({exc})") from None
    for r in rows:
        if not set(HISTORY_COLUMNS) <= set(r):
            raise ValueError(f"no {' / '.join(HISTORY_COLUMNS)} columns")
        if not all(math.isfinite(v) or (k in VAL_COLUMNS and math.isnan(v)) for k, v in r.items()) \
                or r["epoch"] != int(r["epoch"]):
            raise ValueError(f"epoch {r['epoch']}: a value that is not a finite number")
        r["epoch"] = int(r["epoch"])
    return rows
