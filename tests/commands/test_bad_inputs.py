"""Bad input through the real command lines, in subprocesses: each case must end with the expected
exit status, one message on stderr naming the problem, no Python traceback, and nothing half
written. The cases are the classes of failure a hostile-user probe found (issue 13): options
out of range, contradicting options, output places that are files, full or not writable,
non-empty run folders, model files that lie about their size or are not model files at all,
images that are pipes, bombs or zero-length requests. Cases that need the real data skip
without it (``FASTNN_DATA_DIR``)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import NeuralNetwork
from tests.conftest import real_data_dir

DATA = real_data_dir()


def run(module: str, *args, cwd=None, timeout: float = 60):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if DATA:
        env["FASTNN_DATA_DIR"] = str(DATA)
    return subprocess.run([sys.executable, "-m", f"fastnn.{module}", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small valid model, a non-empty folder, a file, a fake model file, a FIFO."""
    root = tmp_path_factory.mktemp("bad")
    model = NeuralNetwork([784, 8, 10], seed=0)
    model.save(root / "model.npz")
    (root / "full").mkdir()
    (root / "full" / "metrics.json").write_text("{}")
    (root / "a_file").write_text("x")
    (root / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    np.savez(root / "huge_layers.npz", format_version=np.array(1), layer_sizes=np.array([784, 10 ** 9, 10]),
             activation=np.array("relu"), init=np.array("he"), dtype=np.array("float32"),
             W0=np.zeros((784, 2), np.float32), b0=np.zeros(2, np.float32), W1=np.zeros((2, 10), np.float32),
             b1=np.zeros(10, np.float32))
    np.savez(root / "matrix_layers.npz", format_version=np.array(1), layer_sizes=np.array([[784, 8], [8, 10]]),
             activation=np.array("relu"), init=np.array("he"), dtype=np.array("float32"))
    np.savez(root / "text_version.npz", format_version=np.array("abc"), layer_sizes=np.array([784, 8, 10]),
             activation=np.array("relu"), init=np.array("he"), dtype=np.array("float32"))
    (root / "with_history").mkdir()
    model.save(root / "with_history" / "model.npz")
    (root / "with_history" / "history.csv").write_bytes(b"\x00\xff garbage \x01\n1,2,3\n")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.png")
    for name, content in (("garbage", b"\x00\xff\xfe binary \x01\x02"), ("headerless", b"1,2,3\n4,5,6\n")):
        (root / name).mkdir()
        (root / name / "experiments.csv").write_bytes(content)
    (root / "folder_csv" / "experiments.csv").mkdir(parents=True)
    (root / "damaged_run").mkdir()
    mnist_model = NeuralNetwork([784, 8, 10], seed=0)
    mnist_model.dataset = "mnist"
    mnist_model.save(root / "damaged_run" / "best_model.npz")
    (root / "damaged_run" / "metrics.json").write_text("{bad json")
    from PIL import Image

    Image.new("1", (9000, 9000)).save(root / "bomb.png")      # 81 M pixels in a few kB: refused before decoding
    return root


# (command, arguments, exit status, text the message must contain, needs the real data)
CASES = [
    ("train", ["--seed", "-1"], 2, "argument --seed: must be >= 0", False),
    ("train", ["--momentum", "-5"], 2, "argument --momentum: must be >= 0", False),
    ("train", ["--weight-decay", "-10"], 2, "argument --weight-decay", False),
    ("train", ["--lr", "inf"], 2, "must be a finite number", False),
    ("train", ["--lr", "nan"], 2, "must be a finite number", False),
    ("train", ["--target-accuracy", "101"], 2, "must be <= 100", False),
    ("train", ["--test-limit", "0"], 2, "argument --test-limit: must be >= 1", False),
    ("train", ["--test-limit", "-1"], 2, "argument --test-limit: must be >= 1", False),
    ("train", ["--val-split", "-0.1"], 2, "argument --val-split: must be >= 0", False),
    ("train", ["--number-pieces", "0"], 2, "argument --number-pieces: must be >= 1", False),
    ("train", ["--number-pieces", "10", "--dataset", "fashion-mnist"], 2, "cuts its pieces from MNIST digits",
     False),
    ("train", ["--hidden", "0"], 2, "argument --hidden: must be >= 1", False),
    ("train", ["--augment", "rotate=5"], 2, "--augment: cannot read 'rotate=5'", False),
    ("train", ["--augment", "shift=40"], 2, "--augment: shift=40 is more than 8 pixels", False),
    ("train", ["--optimizer", "sgd", "--momentum", "0.5"], 2, "--momentum applies to --optimizer momentum", False),
    ("train", ["--out", "{work}/a_file", "--epochs", "1"], 2, "is a file", False),
    ("train", ["--out", "{work}/full", "--epochs", "1"], 2, "is not empty", False),
    ("train", ["--out", "/proc/fastnn-run", "--epochs", "1"], 2, "cannot write into --out", False),
    ("train", ["--limit", "10", "--val-split", "0.9", "--out", "{work}/split"], 2, "leaves", True),
    ("predict", ["--model", "{work}/model.npz", "--top", "0", "x.png"], 2, "argument --top: must be >= 1", False),
    ("predict", ["--model", "{work}/random.npz", "x.png"], 2, "not a fastnn model file", False),
    ("predict", ["--model", "{work}/missing.npz", "x.png"], 2, "no such model file", False),
    ("predict", ["--model", "{work}/huge_layers.npz", "x.png"], 2, "layer_sizes must be", False),
    ("predict", ["--model", "{work}/matrix_layers.npz", "x.png"], 2, "layer_sizes must be", False),
    ("predict", ["--model", "{work}/text_version.npz", "x.png"], 2, "model format version", False),
    ("predict", ["--model", "{work}/model.npz", "{work}/pipe.png"], 1, "not a regular file", False),
    ("predict", ["--model", "{work}/model.npz", "{work}/bomb.png"], 1, "scale it down first", False),
    ("predict", ["--model", "{work}/model.npz", "{work}/full"], 2, "holds no image files", False),
    ("evaluate", ["--model", "{work}/random.npz"], 2, "not a fastnn model file", False),
    ("evaluate", ["--model", "{work}/model.npz", "--out", "/proc/fastnn-eval"], 2, "cannot write into --out", False),
    ("evaluate", ["--model", "{work}/model.npz", "--out", "{work}/full"], 2, "is not empty", False),
    ("autograd.train", ["--batch-size", "0"], 2, "argument --batch-size: must be >= 1", False),
    ("autograd.train", ["--limit", "0"], 2, "argument --limit: must be >= 1", False),
    ("autograd.train", ["--limit", "59500", "--val-limit", "1000"], 2, "is more than the 60000 training samples", True),
    ("autograd.train", ["--hidden", "0"], 2, "argument --hidden: must be >= 1", False),
    ("autograd.train", ["--lr", "nan"], 2, "must be a finite number", False),
    ("autograd.train", ["--out", "{work}/a_file"], 2, "is a file", False),
    ("profile", ["--backend", "numpy", "--epochs", "0"], 2, "argument --epochs: must be >= 1", False),
    ("experiments", ["depth", "--backend", "bogus"], 2, "argument --backend: invalid choice", False),
    ("experiments", ["depth", "--results", "{work}/garbage"], 2, "is not a text CSV file", False),
    ("experiments", ["depth", "--results", "{work}/headerless"], 2, "is not an experiments CSV", False),
    ("experiments", ["depth", "--results", "{work}/folder_csv"], 2, "is a folder, not the experiments CSV", False),
    ("demo", ["--web", "--port", "70000"], 2, "is not a port number", False),
    ("demo", ["--web", "--host", "no.such.host.invalid"], 2, "cannot listen on no.such.host.invalid", False),
    ("demo", ["--web", "--model", "{work}/garbage"], 2, "is a folder", False),
    ("demo", [], 2, "which has no window", False),
    ("predict", ["--dataset", "cifar", "x.png"], 2, "argument --dataset: invalid choice", False),
    ("pretrained", ["--from", "{work}"], 2, "--from needs --out", False),
    ("pretrained", ["--from", "{work}/damaged_run", "--out", "{work}/packaged"], 2, "is not a metrics.json", False),
    ("scaling", ["--backends", "numpy", "--data-dir", "{work}/nowhere"], 2, "nowhere (given with --data-dir)", False),
    ("scaling", ["--worker", "bogus"], 2, "--worker 'bogus': not a backend", False),
    ("demo", ["--seed", "-1"], 2, "argument --seed: must be >= 0", False),
    ("benchmarks_report", ["{work}/a_file"], 2, "cannot read a JSON file", False),
]


@pytest.mark.parametrize("module, args, status, message, needs_data", CASES,
                         ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_bad_input_is_one_clear_line(work, module, args, status, message, needs_data):
    if needs_data and not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    if "pipe.png" in " ".join(args) and not (work / "pipe.png").exists():
        pytest.skip("no FIFOs on this system")
    args = [a.replace("{work}", str(work)) for a in args]
    res = run(module, *args, cwd=work)
    assert res.returncode == status, res.stderr[-800:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert message in res.stderr, res.stderr[-800:]


def test_no_partial_output_after_a_refused_start(work):
    """A refused run leaves no empty run folder behind (runs/ under the working directory)."""
    res = run("train", "--limit", "10", "--val-split", "0.9", cwd=work) if DATA else None
    if res is not None:
        assert res.returncode == 2
        runs = work / "runs"
        assert not runs.exists() or not any(p.is_dir() and not any(p.iterdir()) for p in runs.iterdir())


def test_unreadable_history_is_a_note_not_a_failure(work):
    if not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    res = run("evaluate", "--model", work / "with_history" / "model.npz", "--out", work / "eval_out", cwd=work)
    assert res.returncode == 0, res.stderr[-800:]
    assert "Traceback" not in res.stderr and "not a readable history.csv" in res.stderr


def test_predict_reads_images_as_shown(tmp_path):
    """EXIF orientation applied, transparency composited on white, 16-bit scaled by its range: each
    variant of one drawn digit is prepared like the plain 8-bit original."""
    from PIL import Image

    from fastnn.data.images import load_image

    canvas = np.zeros((56, 56), np.uint8)
    canvas[10:46, 26:31] = 255                                   # a "1": a vertical bar, ink bright on black
    Image.fromarray(255 - canvas).save(tmp_path / "plain.png")    # dark ink on white
    reference = load_image(tmp_path / "plain.png")
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = canvas                                         # black ink on a transparent background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray((255 - canvas).astype(np.uint16) * 257).save(tmp_path / "sixteen.png")   # 16-bit gray
    rotated = Image.fromarray(255 - canvas.T)                     # stored lying down, EXIF says rotate back
    exif = rotated.getexif()
    exif[0x0112] = 6                                              # orientation: rotate 90 CW to display
    rotated.save(tmp_path / "exif.jpg", exif=exif, quality=100)
    for name in ("alpha.png", "sixteen.png", "exif.jpg"):
        x = load_image(tmp_path / name)
        assert np.abs(x - reference).max() < 0.2, name
    assert np.corrcoef(load_image(tmp_path / "exif.jpg"), reference)[0, 1] > 0.95


def test_class_names_cannot_fake_output(tmp_path, work):
    """Control characters in a model file's class names are shown escaped, not obeyed."""
    from PIL import Image

    model = NeuralNetwork([784, 8, 2], seed=0)
    model.class_names = ["ok\nFAKE LINE", "\x1b[31mred"]
    model.save(tmp_path / "m.npz")
    img = np.full((28, 28), 255, np.uint8)
    img[5:20, 12:15] = 0
    Image.fromarray(img).save(tmp_path / "d.png")
    res = run("predict", "--model", tmp_path / "m.npz", tmp_path / "d.png")
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\nFAKE LINE" not in res.stdout


def test_sigterm_keeps_the_best_model_and_every_output(tmp_path):
    """SIGTERM during training is handled as Ctrl-C: status 130, the best model and every file written."""
    import signal
    import time

    if not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    out = tmp_path / "run"
    env = {**os.environ, "FASTNN_DATA_DIR": str(DATA)}
    proc = subprocess.Popen([sys.executable, "-m", "fastnn.train", "--backend", "numpy", "--limit", "3000",
                             "--test-limit", "500", "--epochs", "200", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-800:]
    assert "Traceback" not in stderr and "interrupted" in stdout
    for name in ("best_model.npz", "history.csv", "learning_curves.png", "metrics.json"):
        assert (out / name).exists(), name


def test_experiments_csv_damage_and_keys(tmp_path):
    """A row cut mid-number (no newline after it) is left out, not taken as complete; a --limit
    run is a different run from a full one; rows are appended, never rewritten."""
    from fastnn.training import sweep_results as results
    from fastnn.training import sweeps as ex

    path = tmp_path / "experiments.csv"
    full = {k: "" for k in results.FIELDS} | {k: 0.5 for k in results.NUMERIC} | {
        "experiment": "depth", "dataset": "mnist", "config": "a", "seed": 0, "epochs": 10, "status": "completed"}
    quick = full | {"limit": 1000, "test_accuracy": 0.9}
    results.append_rows([full, quick], path)
    rows = results.read_rows(path)
    assert len(rows) == 2 and ex._key(rows[0]) != ex._key(rows[1])
    path.write_text(path.read_text()[:-4])                           # the last row cut inside its number
    warnings = []
    assert len(results.read_rows(path, warn=warnings.append)) == 1 and "damaged" in warnings[0]


def test_experiments_csv_of_an_older_format_is_migrated(tmp_path):
    """Rows appended to a CSV written before the ``limit`` column keep every old row readable."""
    import csv

    from fastnn.training import sweep_results as results

    path = tmp_path / "experiments.csv"
    old_fields = [f for f in results.FIELDS if f != "limit"]
    row = {k: "" for k in old_fields} | {k: 0.5 for k in results.NUMERIC} | {
        "experiment": "depth", "dataset": "mnist", "config": "a", "seed": 0, "epochs": 10, "status": "completed"}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_fields)
        writer.writeheader()
        writer.writerow(row)
    results.append_rows([row | {"limit": 100, "seed": 1}], path)
    rows = results.read_rows(path)
    assert len(rows) == 2 and rows[0]["limit"] == "" and rows[1]["limit"] == "100"


# ---------------------------------------------------------------- nothing hangs on a pipe
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_where_a_file_is_read_never_blocks(work, tmp_path):
    """Every file fastnn reads is opened only if it is a regular file (fastnn.common.io.open_regular):
    a FIFO named like a history.csv, an IDX file or an experiments CSV is reported, not waited on."""
    import shutil

    if not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(work / "model.npz", run_dir / "model.npz")
    os.mkfifo(run_dir / "history.csv")
    res = run("evaluate", "--model", run_dir / "model.npz", "--out", tmp_path / "eval", cwd=tmp_path)
    assert res.returncode == 0 and "is a pipe (FIFO), not a regular file" in res.stderr, res.stderr[-800:]

    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DATA / "mnist" / name, data / name)
    os.mkfifo(data / "train-images-idx3-ubyte.gz")
    res = run("train", "--data-dir", tmp_path / "data", "--epochs", "1", cwd=tmp_path)
    assert res.returncode == 2 and "train-images-idx3-ubyte.gz is a pipe (FIFO)" in res.stderr, res.stderr[-800:]

    (tmp_path / "results").mkdir()
    os.mkfifo(tmp_path / "results" / "experiments.csv")
    res = run("experiments", "--markdown", "--results", tmp_path / "results", cwd=tmp_path)
    assert res.returncode == 2 and "is a pipe (FIFO)" in res.stderr, res.stderr[-800:]


def test_a_console_that_cannot_show_unicode_gets_replacements_not_a_traceback(work, tmp_path):
    """evaluate prints arrows (7 → 2); under a cp1252 stdout (a Windows redirect) they become '?'."""
    if not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "FASTNN_DATA_DIR": str(DATA), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "fastnn.evaluate", "--model", str(work / "model.npz"), "--out",
                          str(tmp_path / "eval")], capture_output=True, env=env, timeout=120)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr[-800:]


def test_markdown_of_a_csv_without_the_optional_columns(tmp_path):
    """A hand-made or older experiments CSV with only the required and numeric columns."""
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "experiments.csv").write_text(
        "experiment,dataset,config,seed,epochs,status,test_accuracy,train_accuracy,val_accuracy,test_loss,"
        "train_loss,val_loss,epoch_time_s,wall_time_s\ndepth,mnist,784-128-10,0,1,completed,0.5,0.5,0.5,1,1,1,0.1,1\n")
    res = run("experiments", "--markdown", "--results", tmp_path / "res", cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr and "| 784-128-10 | 50.00" in res.stdout


def test_a_history_with_a_nan_epoch_is_a_note(work, tmp_path):
    import shutil

    if not DATA:
        pytest.skip("needs the real MNIST files (FASTNN_DATA_DIR)")
    (tmp_path / "run").mkdir()
    shutil.copy(work / "model.npz", tmp_path / "run" / "model.npz")
    for bad in ("nan", "1e999"):
        (tmp_path / "run" / "history.csv").write_text(f"epoch,train_loss,val_loss\n{bad},1,1\n")
        res = run("evaluate", "--model", tmp_path / "run" / "model.npz", "--out", tmp_path / f"eval-{bad}",
                  cwd=tmp_path)
        assert res.returncode == 0 and "a value that is not a finite number" in res.stderr, res.stderr[-500:]


def test_an_image_folder_is_read_as_predict_reads_it(tmp_path):
    """Transparency on white and the EXIF orientation, as predict: a folder image of black ink on
    a transparent background reads as black ink on white, not as a black square."""
    from PIL import Image

    from fastnn.data.folders import load_image_folder

    (tmp_path / "train" / "a").mkdir(parents=True)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[5:20, 12:15, 3] = 255                                   # opaque black ink, the rest transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "train" / "a" / "ink.png")
    image = load_image_folder(tmp_path, "train").images[0]
    assert image[0, 0] == 255 and image[10, 13] == 0             # white background, black ink
    gray = Image.fromarray(np.tile(np.arange(28, dtype=np.uint8)[None, :] * 9, (28, 1)))  # dark left, light right
    exif = gray.getexif()
    exif[0x0112] = 3                                             # orientation: rotated 180 degrees
    gray.save(tmp_path / "train" / "a" / "rotated.jpg", exif=exif, quality=100)
    rotated = load_image_folder(tmp_path, "train").images[1]
    assert rotated[14, 0] > rotated[14, 27]                      # shown as displayed: light on the left now


def test_predict_refuses_a_batch_size_below_one():
    model = NeuralNetwork([784, 8, 10])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(np.zeros((3, 784), np.float32), batch_size=-1)
    assert model.predict(np.zeros((0, 28, 28), np.float32)).shape == (0,)
