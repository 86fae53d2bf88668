"""The ``fastnn`` console script and ``python -m fastnn``: the command list and the dispatch."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fastnn.__main__ import COMMANDS, main


def test_no_command_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_one_line_and_status_2(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'trian'" in err[0]


def test_a_closed_pipe_is_not_a_traceback():
    """`python -m fastnn | head`: the reader has gone; no BrokenPipeError traceback or warning."""
    proc = subprocess.Popen([sys.executable, "-m", "fastnn"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                                  # gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_python_dash_m_fastnn_dispatches():
    res = subprocess.run([sys.executable, "-m", "fastnn", "pretrained"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("mnist: test accuracy")


def test_console_script_is_installed():
    exe = shutil.which("fastnn")
    if exe is None:
        pytest.skip("the fastnn console script is not on PATH (pip install -e . installs it)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "fastnn COMMAND" in res.stdout
