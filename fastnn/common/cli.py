"""What every ``python -m fastnn.<command>`` shares: one error path, option checks, output folders.

- ``run_main(body)``: runs a command's body and turns a user's mistake into one line on stderr
  and exit status 2, never a traceback: ``UserError`` and the package's own errors (a bad model
  or data file, a missing backend), files that cannot be read or written (with disk full named
  as such), memory a setting asks for that the machine does not have. Ctrl-C and SIGTERM end
  the command with status 130 after the body has kept what it could (``stop_signals``).
- argparse ``type=`` checks: ``int_at_least``, ``finite_float`` (NaN and inf refused, bounds).
- ``output_folder``: a run folder that is new or empty (``--overwrite`` to reuse one), never a
  file, checked writable before any work starts; ``remove_if_empty`` after a failed start.
- ``regular_file``: an input path that is a regular file (a FIFO would block forever).
- ``printable``: text from a file (class names) with control characters escaped.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from fastnn.common.errors import UserError

__all__ = ["run_main", "add_data_dir_option", "add_backend_option", "int_at_least", "finite_float",
           "output_folder", "release_folder", "remove_if_empty", "regular_file", "printable", "stop_signals",
           "HelpFormatter", "new_run_folder"]


def add_data_dir_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--data-dir DIR``, the same in every command that reads MNIST or Fashion-MNIST."""
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help=help or "folder holding mnist/ and fashion-mnist/ (default: $FASTNN_DATA_DIR, else the "
                                     "user cache folder, where missing files are downloaded)")


def add_backend_option(parser: argparse.ArgumentParser, help: str, names) -> None:
    """``--backend``, default ``auto`` (the fastest here: cython, else numba, else numpy;
    ``fastnn.inference.forward.inference_backend`` resolves it), the same in every command;
    ``names``: ``fastnn.backends.backend_names()``."""
    parser.add_argument("--backend", default="auto", choices=["auto", *names],
                        help=f"{help}; auto: the fastest here (cython, else numba, else numpy)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with "(default: X)" only where there is a default worth showing (not None, not
    the True of a ``--no-...`` switch)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class FolderBusy(UserError):
    """Another process holds the run folder (``output_folder``)."""


def _message(exc: BaseException) -> str | None:
    """The one-line message for an exception that is the user's to fix, else None."""
    if isinstance(exc, UserError):                  # the package's own errors derive from it
        return str(exc)
    if isinstance(exc, MemoryError):
        return ("not enough memory for these settings (a layer, batch or file too large for this machine); "
                "try smaller --hidden or --batch-size")
    from fastnn.common.io import NotARegularFile

    if isinstance(exc, NotARegularFile):
        return f"{exc.filename} {exc.strerror}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on the device writing{where}; files written before are intact"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"cannot write or read{where}: {exc.strerror}; choose another place (e.g. --out)"
        return f"{exc.strerror or exc}{':' if where else ''}{where}"
    return None


def run_main(body, argv=None) -> int:
    """Run ``body(argv) -> int`` with the commands' one error path (see the module docstring)."""
    for stream in (sys.stdout, sys.stderr):          # a cp1252 console or redirect: "?" for "→", never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        status = int(body(argv) or 0)
        sys.stdout.flush()                              # a closed pipe shows here, not as a warning at exit
        return status
    except BrokenPipeError:                             # `... | head` stopped reading: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)      # Python's recipe: no second error at exit
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only the user's mistakes are caught; the rest re-raise
        message = _message(exc)
        if message is None:
            raise
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2


@contextmanager
def stop_signals():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, inside the block; ``hold()`` on the
    yielded object then makes further Ctrl-C / SIGTERM only print a line, so that the outputs
    being written after the first one are finished."""
    state = {"held": False}

    def handler(signum, frame):
        if state["held"]:
            print("\n(still writing the outputs; they will be complete in a moment)", file=sys.stderr)
            return
        raise KeyboardInterrupt

    class Control:
        @staticmethod
        def hold():
            state["held"] = True
            signal.signal(signal.SIGINT, handler)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler if sig == signal.SIGTERM else signal.default_int_handler)
    except ValueError:                                  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield Control
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def int_at_least(low: int):
    """argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False):
    """argparse type: a finite float within [low, high] (open ends where asked)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {value:g}")
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} {high:g}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


RUN_LOCK = ".fastnn-run.lock"          # held, inside the folder, by the run that writes into it
# What ``--overwrite`` may delete: the files and folders fastnn's commands write into a run folder.
RUN_OUTPUT_SUFFIXES = (".npz", ".csv", ".png", ".json", ".txt", ".prof", ".onnx")
RUN_OUTPUT_NAMES = ("corruptions.md", "numbers.md")                  # the evaluations' tables
RUN_OUTPUT_FOLDERS = ("evaluation-", "corruptions-", "numbers")      # evaluations written beside a model
_claimed: dict = {}                    # resolved folder -> its FileLock, held by this process


def output_folder(path, overwrite: bool = False, option: str = "--out") -> Path:
    """Claim the run folder ``path`` for this process and return it: created if missing, locked
    (``filelock``, held until ``release_folder``; the operating system drops it if the process
    dies), and empty: a folder never mixes two runs, and two runs never share one. A folder this
    process already holds is claimed again (a sweep's run inside its own claim).

    ``overwrite`` empties a folder holding a previous run first, but only of what fastnn writes
    (files ending in ``RUN_OUTPUT_SUFFIXES`` or named in ``RUN_OUTPUT_NAMES``, folders starting with
    ``RUN_OUTPUT_FOLDERS``): anything else is refused.

    Raises:
        UserError: ``path`` is a file; another process holds it; it is not empty (without
            ``overwrite``) or holds files fastnn did not write; it cannot be created or written.
    """
    import shutil

    from filelock import FileLock, Timeout

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder name (it is created)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write into {option} {path}: {exc.strerror or exc}; choose another folder") from None
    key = path.resolve()
    lock = _claimed.get(key) or FileLock(path / RUN_LOCK, is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise FolderBusy(f"another fastnn run is writing into {option} {path} right now; wait for it to end or "
                         f"choose another folder") from None
    except OSError as exc:
        raise UserError(f"cannot write into {option} {path}: {exc.strerror or exc}; choose another folder") from None
    _claimed[key] = lock
    try:
        entries = [e for e in path.iterdir() if e.name != RUN_LOCK]
        if entries and not overwrite:
            raise UserError(f"{option} {path} is not empty (it holds another run's files); choose a new folder "
                            f"or pass --overwrite to replace them")
        foreign = [e for e in entries if e.is_symlink() or not (
            e.is_file() and (e.suffix in RUN_OUTPUT_SUFFIXES or e.name in RUN_OUTPUT_NAMES)
            or e.is_dir() and e.name.startswith(RUN_OUTPUT_FOLDERS))]
        if foreign:
            raise UserError(f"{option} {path} holds {foreign[0].name!r}, which no fastnn run writes; --overwrite "
                            f"empties only run folders: choose another folder")
        for e in entries:                                   # the previous run's files: none may survive
            shutil.rmtree(e) if e.is_dir() else e.unlink()
        probe = path / ".fastnn-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        release_folder(path)
        raise UserError(f"cannot write into {option} {path}: {exc.strerror or exc}; choose another folder") from None
    except BaseException:
        release_folder(path)
        raise
    return path


def release_folder(path) -> None:
    """Give up this process's claim on a run folder (``output_folder``); nothing if it holds none."""
    lock = _claimed.get(Path(path).resolve())
    if lock is None:
        return
    lock.release()
    if not lock.is_locked:
        _claimed.pop(Path(path).resolve(), None)


def new_run_folder(name: str) -> Path:
    """A folder name under runs/ that does not exist yet: ``runs/<time>-<name>``, suffixed to be unique
    (the default output of every command: never the repository's tracked plots/, profiles/, results/)."""
    from datetime import datetime

    base = Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{name}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def remove_if_empty(path) -> None:
    """Release the folder ``path`` and remove it if the run left nothing in it (a failed start)."""
    release_folder(path)
    try:
        (Path(path) / RUN_LOCK).unlink(missing_ok=True) if not _other_files(path) else None
        Path(path).rmdir()
    except OSError:
        pass


def _other_files(path) -> bool:
    try:
        return any(e.name != RUN_LOCK for e in Path(path).iterdir())
    except OSError:
        return True


def regular_file(path, what: str = "file") -> Path:
    """``path`` if it is an existing regular file, else UserError (missing, a folder, a FIFO...)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UserError(f"no such {what}: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a pipe or device?)"
        raise UserError(f"{what} {path} is {kind}")
    if not os.access(path, os.R_OK):
        raise UserError(f"cannot read {what} {path}: permission denied")
    return path


def printable(text) -> str:
    """``text`` with control characters (ANSI escapes, newlines) shown as escapes, not obeyed."""
    text = str(text)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
