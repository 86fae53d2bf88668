"""The model's API, its files, its initializers and its optimizers."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import NeuralNetwork
from fastnn.model.file_format import ModelFileError
from fastnn.training.optim import SGD, Adam, make_optimizer


def test_shapes_and_dtypes():
    net = NeuralNetwork([784, 128, 64, 10])
    assert [W.shape for W in net.weights] == [(784, 128), (128, 64), (64, 10)]
    assert [b.shape for b in net.biases] == [(128,), (64,), (10,)]
    assert all(p.dtype == np.float32 for p in net.parameters())
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    probs = net.forward(X)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert net.predict(X).shape == (5,)
    loss = net.backward(X, np.arange(5))
    assert isinstance(loss, float)
    assert [g.shape for g in net.grad_weights] == [W.shape for W in net.weights]
    assert [g.shape for g in net.grad_biases] == [b.shape for b in net.biases]
    assert "784-128-64-10" in repr(net)


def test_images_are_flattened_and_batch_of_one_works():
    net = NeuralNetwork([784, 16, 10])
    img = np.zeros((1, 28, 28), np.float32)
    assert net.forward(img).shape == (1, 10)
    assert np.isfinite(net.backward(img, np.array([3])))


def test_bad_input_raises_clear_errors():
    net = NeuralNetwork([784, 16, 10])
    with pytest.raises(ValueError, match=r"\(4, 100\).*784"):
        net.forward(np.zeros((4, 100), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        net.forward(np.zeros((4, 784), np.uint8))
    with pytest.raises(ValueError, match=r"labels shape \(3,\).*\(4, 784\)"):
        net.backward(np.zeros((4, 784), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="activation"):
        NeuralNetwork([4, 2], activation="gelu")
    with pytest.raises(ValueError, match="init"):
        NeuralNetwork([4, 2], init="orthogonal")
    with pytest.raises(ValueError, match="layer_sizes"):
        NeuralNetwork([4])


@pytest.mark.parametrize("init,std", [("he", np.sqrt(2 / 400)), ("lecun", np.sqrt(1 / 400)),
                                      ("xavier", np.sqrt(2 / (400 + 300))), ("normal", 0.01), ("zeros", 0.0)])
def test_initializer_scales(init, std):
    W = NeuralNetwork([400, 300], init=init, seed=0).weights[0]
    assert W.shape == (400, 300)
    np.testing.assert_allclose(W.std(), std, rtol=0.02, atol=1e-12)
    assert abs(W.mean()) < 0.01 * max(std, 1e-3) + 1e-12 or init == "zeros"


def test_same_seed_same_model_and_float64():
    a, b = NeuralNetwork(seed=7, dtype=np.float64), NeuralNetwork(seed=7, dtype=np.float64)
    assert all(np.array_equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.weights[0].dtype == np.float64


def test_dropout_only_while_training():
    net = NeuralNetwork([20, 50, 3], dropout=0.5, seed=0)
    X = np.random.default_rng(1).random((8, 20), dtype=np.float32)
    np.testing.assert_array_equal(net.forward(X), net.forward(X))  # deterministic at evaluation
    y = np.zeros(8, np.int64)
    assert net.backward(X, y) != net.backward(X, y)                 # masks differ between steps


# ---------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    net = NeuralNetwork([12, 7, 3], activation="tanh", init="xavier", dtype=np.float64, seed=2, dropout=0.1)
    path = tmp_path / "m.npz"
    net.save(path)
    back = NeuralNetwork.load(path)
    assert back.layer_sizes == [12, 7, 3] and back.activation == "tanh" and back.dtype == np.float64
    assert back.dropout == 0.1
    for p, q in zip(net.parameters(), back.parameters()):
        assert p.dtype == q.dtype
        np.testing.assert_array_equal(p, q)
    X = np.random.default_rng(0).random((4, 12))
    np.testing.assert_array_equal(net.forward(X), back.forward(X))
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file"


def test_load_refuses_other_architecture(tmp_path):
    path = tmp_path / "m.npz"
    NeuralNetwork([12, 7, 3]).save(path)
    with pytest.raises(ModelFileError, match=r"\[12, 7, 3\].*\[12, 8, 3\]"):
        NeuralNetwork.load(path, layer_sizes=[12, 8, 3])


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, format_version=np.array(1), layer_sizes=np.array([2, 2]), activation=np.array("relu"),
             init=np.array("he"), dtype=np.array("float32"),
             W0=np.array([{"payload": 1}], dtype=object), b0=np.zeros(2))
    with pytest.raises(ModelFileError, match="pickle"):
        NeuralNetwork.load(path)


def test_load_refuses_inconsistent_shapes(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, format_version=np.array(1), layer_sizes=np.array([4, 3]), activation=np.array("relu"),
             init=np.array("he"), dtype=np.array("float32"), W0=np.zeros((3, 4)), b0=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"W0 has shape \(3, 4\).*\(4, 3\)"):
        NeuralNetwork.load(path)


def test_load_refuses_corrupt_and_foreign_files(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="corrupt.npz"):
        NeuralNetwork.load(corrupt)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a fastnn model"):
        NeuralNetwork.load(foreign)
    NeuralNetwork([4, 2]).save(tmp_path / "ok.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated.npz"):
        NeuralNetwork.load(truncated)
    with pytest.raises(FileNotFoundError):
        NeuralNetwork.load(tmp_path / "missing.npz")


def _model_file(path, **members):
    """A model file of [4, 3] with the given members replaced or added."""
    arrays = dict(format_version=np.array(1), layer_sizes=np.array([4, 3]), activation=np.array("relu"),
                  init=np.array("he"), dtype=np.array("float32"), W0=np.zeros((4, 3), np.float32),
                  b0=np.zeros(3, np.float32))
    arrays.update(members)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def test_load_refuses_a_huge_setting_before_reading_it(tmp_path):
    """A 0-d string member whose header declares 400 MB (and whose data is not even there):
    refused from its header, before anything is allocated or read."""
    import io
    import time
    import zipfile

    path = _model_file(tmp_path / "bomb.npz")
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<U100000000", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("dataset.npy", member.getvalue())
    t0 = time.perf_counter()
    with pytest.raises(ModelFileError, match="dataset declares 400,000,000 bytes"):
        NeuralNetwork.load(path)
    assert time.perf_counter() - t0 < 1


def test_load_checks_weights_after_the_cast(tmp_path):
    """A float64 1e300 is finite but inf in a float32 model: refused, not loaded as inf."""
    W0 = np.zeros((4, 3))
    W0[1, 2] = 1e300
    with pytest.raises(ModelFileError, match=r"W0 holds NaN or inf \(as float32\)"):
        NeuralNetwork.load(_model_file(tmp_path / "big.npz", W0=W0))


def test_class_names_must_be_a_list_of_strings(tmp_path):
    with pytest.raises(ModelFileError, match="class_names must be a list of strings, got a 0-d"):
        NeuralNetwork.load(_model_file(tmp_path / "zero_d.npz", class_names=np.array("abc")))
    model = NeuralNetwork([4, 3])
    model.class_names = [b"cat", b"d\xc3\xb6g", "bird"]                # bytes are decoded, not printed as b'...'
    model.save(tmp_path / "bytes.npz")
    assert NeuralNetwork.load(tmp_path / "bytes.npz").class_names == ["cat", "dög", "bird"]


def test_pixel_inputs_round_trip_and_old_files(tmp_path):
    model = NeuralNetwork([4, 3])
    assert not model.pixel_inputs
    model.pixel_inputs = True
    model.save(tmp_path / "m.npz")
    assert NeuralNetwork.load(tmp_path / "m.npz").pixel_inputs
    old = _model_file(tmp_path / "old.npz", dataset=np.array("mnist"))          # written before the field
    assert NeuralNetwork.load(old).pixel_inputs
    assert not NeuralNetwork.load(_model_file(tmp_path / "other.npz")).pixel_inputs


# ---------------------------------------------------------------- optimizers against torch.optim
def _torch_step(torch, net, X, y, make_opt, steps, weight_decay):
    params = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in net.parameters()]
    opt = make_opt(params)
    L = len(net.weights)
    for _ in range(steps):
        opt.zero_grad()
        a = torch.tensor(X)
        for i in range(L):
            a = a @ params[i] + params[L + i]
            if i < L - 1:
                a = torch.relu(a)
        loss = torch.nn.functional.cross_entropy(a, torch.tensor(y))
        # fastnn decays weights only; add the same L2 term by hand
        loss = loss + 0.5 * weight_decay * sum((W * W).sum() for W in params[:L])
        loss.backward()
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_optimizers_match_torch(kind, weight_decay, torch):
    net = NeuralNetwork([6, 5, 3], dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    start = [p.copy() for p in net.parameters()]
    lr = 0.01 if kind == "adam" else 0.1
    opt = make_optimizer(kind, net, lr, weight_decay=weight_decay, momentum=0.9)
    for _ in range(5):
        net.backward(X, y)
        opt.step()
    ref = NeuralNetwork([6, 5, 3], dtype=np.float64, seed=0)
    for p, s in zip(ref.parameters(), start):
        p[:] = s
    make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=lr),
            "momentum": lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9),
            "adam": lambda ps: torch.optim.Adam(ps, lr=lr)}[kind]
    expected = _torch_step(torch, ref, X, y, make, 5, weight_decay)
    for p, e in zip(net.parameters(), expected):
        np.testing.assert_allclose(p, e, rtol=1e-9, atol=1e-12)


def test_update_weights_is_plain_gradient_descent():
    net = NeuralNetwork([4, 3], dtype=np.float64)
    X, y = np.ones((2, 4)), np.array([0, 2])
    net.backward(X, y)
    before = net.weights[0].copy()
    net.update_weights(0.5)
    np.testing.assert_allclose(net.weights[0], before - 0.5 * net.grad_weights[0])


def test_optimizer_errors():
    net = NeuralNetwork([4, 3])
    with pytest.raises(RuntimeError, match="backward"):
        SGD(net, 0.1).step()
    with pytest.raises(ValueError, match="learning rate"):
        Adam(net, lr=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", net, 0.1)


def test_input_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    model = NeuralNetwork([6, 5, 4, 3], activation="tanh", dtype=np.float64, seed=1)
    X = rng.standard_normal((2, 6))
    g = rng.standard_normal((2, 3))
    grad = model.input_gradient(X, g)
    assert grad.shape == X.shape and grad.dtype == np.float64

    def score(X_):
        return float(np.sum(g * model.logits(X_)))

    h = 1e-6
    num = np.zeros_like(X)
    for idx in np.ndindex(X.shape):
        Xp, Xm = X.copy(), X.copy()
        Xp[idx] += h
        Xm[idx] -= h
        num[idx] = (score(Xp) - score(Xm)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="grad_logits shape"):
        model.input_gradient(X, g[:, :2])


def test_hidden_outputs_and_class_names_round_trip(tmp_path):
    model = NeuralNetwork([6, 5, 4, 3], seed=1)
    outs = model.hidden_outputs(np.ones((7, 6), np.float32))
    assert [o.shape for o in outs] == [(7, 5), (7, 4)] and all((o >= 0).all() for o in outs)
    model.class_names = ["cat", "dog", "eel"]
    model.save(tmp_path / "m.npz")
    assert NeuralNetwork.load(tmp_path / "m.npz").class_names == ["cat", "dog", "eel"]
