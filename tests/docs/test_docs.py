"""README.md and docs/*.md run as written: every ```bash and ```python block is executed here,
and every relative link and anchor resolves (so none drifts from the code).

How a page runs: its blocks in order, in one fresh working folder (so that ``train --out
runs/mnist`` makes the model the next block evaluates), with ``FASTNN_DATA_DIR`` set and the
files the pages name as the user's own made from real test images (``digit.png``, ``shoe.png``,
``my_digits/``). ``/path/to/folder`` stands for the data folder. Each bash line is one command:

- ``pip install ...`` is not run here: CI runs the installs (``.ci/run``: the README's two
  commands verbatim in a fresh venv, then every extra); it is checked to name real extras;
- ``python -m fastnn.<command>`` (or ``fastnn <command>``) runs with ``BUDGET``'s options
  appended where the documented run would take minutes (argparse: a later option wins), so the
  command line, its parsing and its outputs are the documented ones on less data;
- ``python -m fastnn.demo --web`` starts the server on a free port and leaves it running for the
  page's ``curl`` commands; the window demo runs with ``--screenshot`` (there is no screen);
- ``python -m pytest benchmarks ...`` runs the selection in ``PYTEST_BUDGET`` (a cheap benchmark);
- a command needing an extra that is not installed is passed over, and the page's test then
  skips naming the extra (the full CI stage has them all).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
PLACEHOLDER = "/path/to/folder"

# Appended to a documented command (argparse keeps the last value of an option).
BUDGET = {
    "train": ["--epochs", "1", "--limit", "3000", "--test-limit", "1000", "--quiet"],
    "autograd.train": ["--limit", "300", "--val-limit", "100", "--test-limit", "100", "--epochs", "1", "--quiet"],
    "experiments": ["--seeds", "1", "--epochs", "1", "--limit", "1000"],
    "profile": ["--limit", "2000"],
    "scaling": ["--samples", "640", "--repeats", "1", "--threads", "1"],
}
# For `python -m pytest <target> --benchmark-only`: one cheap selection per documented target.
PYTEST_BUDGET = {
    "benchmarks": ["-k", "test_relu and numpy-64x128", "-p", "no:cacheprovider"],
    "tests": ["-p", "no:cacheprovider"],          # docs/layout.md's one kernel's tests: run as documented
    "benchmarks/test_inference.py": ["-k", "latency and not fashion", "-p", "no:cacheprovider"],   # one model
    "benchmarks/test_training.py": ["-k", "test_step and numpy", "-p", "no:cacheprovider"],
}
# Commands that need an optional package: (module to look for, the extra that installs it).
NEEDS = {"export": ("onnx", "onnx")}
EXTRAS_IN_PYPROJECT = set(re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text().split(
    "[project.optional-dependencies]")[1].split("\n[")[0], re.M))


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, line number) of every fenced block of ``page``."""
    text = page.read_text()
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(line)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def user_files(mnist_dir, tmp_path_factory):
    """digit.png, shoe.png (real test images, dark ink on white, as a photo or a scan would be)
    and my_digits/<digit>/*.png (20 test images per class) in a folder the pages' runs copy."""
    import numpy as np
    from PIL import Image

    from fastnn.data.datasets import load_dataset

    folder = tmp_path_factory.mktemp("user-files")
    mnist, fashion = load_dataset("mnist", "test"), load_dataset("fashion-mnist", "test")
    Image.fromarray(255 - mnist.images[0]).resize((140, 140)).save(folder / "digit.png")         # a 7
    Image.fromarray(255 - fashion.images[0]).resize((140, 140)).save(folder / "shoe.png")        # an ankle boot
    for digit in range(10):
        (folder / "my_digits" / str(digit)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(mnist.labels == digit)[:20]):
            Image.fromarray(mnist.images[i]).save(folder / "my_digits" / str(digit) / f"{k}.png")
    return folder


class PageRun:
    """Runs one page's blocks in a working folder; servers started by a block stop with it."""

    def __init__(self, workdir: Path, data_dir: Path):
        self.workdir, self.data_dir = workdir, data_dir
        self.env = {**os.environ, "FASTNN_DATA_DIR": str(data_dir), "MPLBACKEND": "Agg"}
        self.servers: list[subprocess.Popen] = []
        self.port = None
        self.missing: list[str] = []
        for folder in ("benchmarks", "tests"):                             # `python -m pytest benchmarks ...`
            (workdir / folder).symlink_to(ROOT / folder)

    def run_bash(self, code: str, where: str) -> None:
        try:
            for line in commands(code):
                self.run_command(line, where)
        finally:
            self.stop_servers()

    def run_command(self, line: str, where: str) -> None:
        words = shlex.split(line.replace(PLACEHOLDER, str(self.data_dir)), comments=True)
        if words[0] == "pip":
            self.check_install(line, where)
            return
        env = dict(self.env)
        while "=" in words[0] and not words[0].startswith("-"):       # VAR=value prefixes
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[0] == "fastnn":
            words = ["python", "-m", "fastnn", *words[1:]]
        if words[0] == "curl":
            self.run_curl(words, where)
            return
        assert words[:2] == ["python", "-m"], f"{where}: {line!r} is not a command this test knows how to run"
        module = words[2]
        name = words[3] if module == "fastnn" and len(words) > 3 else module.removeprefix("fastnn.")
        args = words[3:] if module != "fastnn" else words[4:]
        if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
            self.missing.append(f"{NEEDS[name][0]} not installed: pip install -e '.[{NEEDS[name][1]}]'")
            return
        argv = [sys.executable, "-m", f"fastnn.{name}" if module.startswith("fastnn") else module, *args]
        argv += PYTEST_BUDGET[args[0]] if module == "pytest" else BUDGET.get(name, [])
        if name == "train" and "--average-from" in args:
            argv += ["--average-from", "1"]            # the budget's one epoch, averaged
        if name == "train" and "--number-pieces" in args:
            argv += ["--number-pieces", "100"]         # a number reader's pieces: of 100 numbers, not 40,000
        if name == "demo" and "--web" in args:
            self.start_server(argv, env, where)
            return
        if name == "demo" and "--screenshot" not in args:
            argv += ["--screenshot", f"demo-{len(self.servers)}-{time.monotonic_ns()}.png"]
        done = subprocess.run(argv, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=600)
        allowed = {0} | ({1} if "--target-accuracy" in args and "below the target" in done.stderr else set())
        assert done.returncode in allowed, (f"{where}: {line}\nexit {done.returncode}\n"
                                            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def check_install(self, line: str, where: str) -> None:
        for spec in re.findall(r'-e "?\.(?:\[([\w,]+)\])?"?', line):
            assert set(filter(None, spec.split(","))) <= EXTRAS_IN_PYPROJECT, f"{where}: {line}: no such extra"
        assert re.fullmatch(r'pip install (-e "?\.(\[[\w,]+\])?"?|torch==2\.13\.0)( && python -m (pytest|fastnn\.\w+)'
                            r'( [-\w]+)*)?( +#.*)?', line.strip()), f"{where}: unexpected install line {line!r}"

    def start_server(self, argv, env, where) -> None:
        if "--port" in argv:
            i = argv.index("--port")
            del argv[i:i + 2]
        self.port = free_port()
        server = subprocess.Popen([*argv, "--port", str(self.port)], cwd=self.workdir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5).read()
                return
            except OSError:
                assert server.poll() is None, f"{where}: the demo server stopped: {server.stderr.read()}"
                time.sleep(0.2)
        raise AssertionError(f"{where}: the demo server did not answer within 120 s")

    def run_curl(self, words, where) -> None:
        assert self.port is not None, f"{where}: curl before a demo server was started on the page"
        words = [w.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}") for w in words]
        done = subprocess.run([*words, "--silent", "--show-error", "--fail-with-body"], cwd=self.workdir,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{where}: {' '.join(words)}\n{done.stdout}\n{done.stderr}"
        assert done.stdout.startswith("{"), f"{where}: not a JSON answer: {done.stdout[:200]}"

    def run_python(self, code: str, where: str, index: int) -> None:
        script = self.workdir / f"block_{index}.py"
        script.write_text(code)
        done = subprocess.run([sys.executable, script.name], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{where}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def stop_servers(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=30)
        self.servers.clear()
        self.port = None


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_block_of_the_page_runs(page, user_files, mnist_dir, tmp_path):
    import shutil

    shutil.copytree(user_files, tmp_path, dirs_exist_ok=True)
    run = PageRun(tmp_path, mnist_dir)
    for index, (language, code, line) in enumerate(blocks(page)):
        where = f"{page.relative_to(ROOT)}:{line}"
        assert language in ("bash", "python", "text"), f"{where}: a ```{language} block; the pages hold bash, " \
                                                       f"python and text (a folder tree) only"
        if language == "text":
            check_tree(code, where)
        elif language == "bash":
            run.run_bash(code, where)
        else:
            run.run_python(code, where, index)
    if run.missing:
        pytest.skip("; ".join(sorted(set(run.missing))))


def tree_folders(code: str) -> list[str]:
    """The folders of a ``text`` block drawn as a tree (``├── name/  what it holds``), as paths."""
    folders, stack = [], []
    for line in code.splitlines():
        m = re.match(r"^([│ ]*)(?:[├└]── )?([\w./-]+/)\s", line)
        if not m:
            continue
        depth = len(m.group(1)) // 4 + (1 if "──" in line else 0)
        stack[depth:] = [m.group(2).rstrip("/")]
        folders.append("/".join(stack))
    return folders


def check_tree(code: str, where: str) -> None:
    """A folder tree in the docs names real folders, and every package of fastnn."""
    named = tree_folders(code)
    missing = [f for f in named if not (ROOT / f).is_dir()]
    assert not missing, f"{where}: the tree names folders that do not exist: {missing}"
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "fastnn").rglob("__init__.py")}
    assert packages <= set(named), f"{where}: the tree leaves out {sorted(packages - set(named))}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_resolves(page):
    text = FENCE.sub("", page.read_text())
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue                                                   # http(s): not fetched offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_a_quick_start():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; details belong in docs/"
    first_screen = "\n".join(lines[:40])
    assert "FASTNN_DATA_DIR=/path/to/folder" in first_screen
    assert 'pip install -e ".[test]" && python -m pytest' in first_screen
