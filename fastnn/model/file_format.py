"""The model file: a NumPy ``.npz`` of plain arrays (weights, biases, settings), never a pickle.

Written atomically by ``save_model``; read by ``read_model_arrays``, which checks everything it
can before anything large is read or allocated (the zip, each array's header against the
architecture, settings' sizes), and by ``load_model``, which builds the network from them.

Arrays: ``format_version`` () int (``MODEL_FORMAT_VERSION``); ``layer_sizes`` (L+1,) int64;
``activation``, ``init``, ``dtype`` () str; ``dropout`` () float; optional ``class_names`` (C,)
str, ``dataset`` () str, ``pixel_inputs`` () bool, optional ``input_norm`` () str ("background";
absent: "none"); ``W{l}`` (sizes[l], sizes[l+1]) and ``b{l}``
(sizes[l+1],) float for each layer l.
"""
from __future__ import annotations

import numpy as np

from fastnn.common.errors import UserError
from fastnn.common.io import atomic_write, open_regular
from fastnn.data.normalize import INPUT_NORMS
from fastnn.model.initializers import INITIALIZERS

__all__ = ["MODEL_FORMAT_VERSION", "ModelFileError", "class_name", "load_model", "read_model_arrays", "save_model"]

MODEL_FORMAT_VERSION = 1


class ModelFileError(UserError, ValueError):
    """A model file that is corrupt, of another format, or of another architecture."""


def save_model(model, path) -> None:
    """Write ``model`` (a ``NeuralNetwork``) to ``path`` atomically; see the module docstring."""
    arrays = {
        "format_version": np.array(MODEL_FORMAT_VERSION),
        "layer_sizes": np.array(model.layer_sizes, dtype=np.int64),
        "activation": np.array(model.activation),
        "init": np.array(model.init),
        "dtype": np.array(model.dtype.name),
        "dropout": np.array(model.dropout),
    }
    if model.class_names is not None:
        arrays["class_names"] = np.array([class_name(n) for n in model.class_names])    # fixed-width unicode
    arrays["pixel_inputs"] = np.array(bool(model.pixel_inputs))
    if model.input_norm != "none":                      # absent: "none" (files before it, and most models)
        arrays["input_norm"] = np.array(str(model.input_norm))
    if model.dataset is not None:
        arrays["dataset"] = np.array(str(model.dataset))
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_model(network_class, path, backend="numpy", layer_sizes=None):
    """A ``network_class`` (``NeuralNetwork``) built from the file at ``path``; see
    ``NeuralNetwork.load`` for the arguments and errors."""
    data = read_model_arrays(path)
    sizes = data["layer_sizes"]
    if layer_sizes is not None and list(map(int, layer_sizes)) != sizes:
        raise ModelFileError(f"{path}: architecture {sizes} does not match the expected {list(layer_sizes)}")
    try:
        model = network_class(sizes, activation=str(data["activation"]), init="zeros", backend=backend,
                              dtype=np.dtype(str(data["dtype"])), seed=None,
                              dropout=float(data.get("dropout", np.array(0.0))))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid model settings: {exc}") from exc
    if str(data["init"]) not in INITIALIZERS:
        raise ModelFileError(f"{path}: unknown init {str(data['init'])!r}")
    model.init = str(data["init"])
    for i in range(model.num_layers):
        for name, target in ((f"W{i}", model.weights), (f"b{i}", model.biases)):
            with np.errstate(over="ignore"):              # checked after the cast: 1e300 is inf in float32
                arr = data[name].astype(model.dtype)
            if not np.all(np.isfinite(arr)):
                raise ModelFileError(f"{path}: array {name} holds NaN or inf (as {model.dtype})")
            target[i][...] = arr                          # into the model's aligned array (shape checked)
    if "class_names" in data:
        names = [str(n) for n in data["class_names"]]           # 1-D unicode: checked on reading
        if len(names) != sizes[-1]:
            raise ModelFileError(f"{path}: {len(names)} class names for {sizes[-1]} output classes")
        model.class_names = names
    if "dataset" in data:
        model.dataset = str(data["dataset"])
    # files written before pixel_inputs was saved: a model of MNIST or Fashion-MNIST takes pixels
    model.pixel_inputs = (bool(data["pixel_inputs"]) if "pixel_inputs" in data
                          else model.dataset in ("mnist", "fashion-mnist"))
    if "input_norm" in data:
        norm = str(data["input_norm"])
        if norm not in INPUT_NORMS:
            raise ModelFileError(f"{path}: unknown input_norm {norm!r} (this fastnn knows {', '.join(INPUT_NORMS)})")
        if norm != "none" and not model.pixel_inputs:
            raise ModelFileError(f"{path}: input_norm {norm!r} is for models of pixels; pixel_inputs is false")
        model.input_norm = norm
    return model


MAX_UNITS = 1 << 24          # a layer wider than this is not a model file of ours
MAX_META_BYTES = 1 << 20     # a setting or the class names: larger is not a model file of ours


def class_name(name) -> str:
    """A class name as text: bytes decoded (UTF-8, else Latin-1), anything else through str()."""
    if isinstance(name, (bytes, np.bytes_)):
        try:
            return bytes(name).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(name).decode("latin-1")
    return str(name)


def read_model_arrays(path) -> dict:
    """The arrays of a fastnn model file, checked before anything large is read or allocated:
    the file is a zip (.npz); the scalars and ``layer_sizes`` are read first and validated; each
    weight array's shape is read from its header and compared with the architecture before the
    array itself is read; arrays the format does not know are not read at all. Never unpickles.

    Raises:
        FileNotFoundError: no such file. ModelFileError: anything else wrong with it.
    """
    import zipfile

    path = str(path)
    with open_regular(path, "rb") as fh:                  # FileNotFoundError passes through
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        raise ModelFileError(f"{path}: not a fastnn model file (an .npz written by python -m fastnn.train)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable .npz model file ({exc})") from exc
    with archive:
        members = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}

        def header(key):
            with archive.open(members[key]) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
            return shape, dtype

        def read(key):
            shape, dtype = header(key)
            if dtype.hasobject:
                raise ModelFileError(f"{path}: refused to load {key}: it holds Python objects "
                                     f"(fastnn model files never do)")
            declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if not key.startswith(("W", "b")) and declared > MAX_META_BYTES:   # checked before it is read
                raise ModelFileError(f"{path}: {key} declares {declared:,} bytes; a fastnn model's settings take "
                                     f"at most {MAX_META_BYTES:,}")
            with archive.open(members[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)

        try:
            required = ("format_version", "layer_sizes", "activation", "init", "dtype")
            missing = [k for k in required if k not in members]
            if missing:
                raise ModelFileError(f"{path}: not a fastnn model file (missing {', '.join(missing)})")
            data = {k: read(k) for k in (*required, "dropout", "class_names", "dataset", "pixel_inputs", "input_norm")
                    if k in members}
            version = data["format_version"]
            if version.shape != () or version.dtype.kind not in "iu" or int(version) != MODEL_FORMAT_VERSION:
                raise ModelFileError(f"{path}: model format version {version!r:.40}, this fastnn reads version "
                                     f"{MODEL_FORMAT_VERSION}")
            sizes = data["layer_sizes"]
            if (sizes.ndim != 1 or sizes.dtype.kind not in "iu" or len(sizes) < 2 or sizes.min() < 1
                    or sizes.max() > MAX_UNITS):
                raise ModelFileError(f"{path}: layer_sizes must be a list of 2 or more sizes in 1..{MAX_UNITS}, "
                                     f"got {np.array2string(sizes, threshold=8)[:80]}")
            sizes = [int(v) for v in sizes]
            for key in ("activation", "init", "dtype", "dataset", "input_norm"):
                if key in data and (data[key].shape != () or data[key].dtype.kind != "U"):
                    raise ModelFileError(f"{path}: {key} must be a string")
            if "class_names" in data and (data["class_names"].ndim != 1 or data["class_names"].dtype.kind != "U"):
                raise ModelFileError(f"{path}: class_names must be a list of strings, got a "
                                     f"{data['class_names'].ndim}-d {data['class_names'].dtype} array")
            if "pixel_inputs" in data and (data["pixel_inputs"].shape != () or data["pixel_inputs"].dtype != bool):
                raise ModelFileError(f"{path}: pixel_inputs must be true or false")
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                for name, shape in ((f"W{i}", (n_in, n_out)), (f"b{i}", (n_out,))):
                    if name not in members:
                        raise ModelFileError(f"{path}: missing array {name} for architecture {sizes}")
                    found, dtype = header(name)
                    if tuple(found) != shape or dtype.kind != "f":
                        raise ModelFileError(f"{path}: array {name} has shape {found} ({dtype}), architecture "
                                             f"{sizes} needs {shape} floats")
                    data[name] = read(name)
        except ModelFileError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ModelFileError(f"{path}: corrupt model file ({type(exc).__name__}: {exc})") from exc
    data["layer_sizes"] = sizes
    return data
