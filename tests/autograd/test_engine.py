"""The scalar autograd engine against torch autograd (float64) and central differences."""
from __future__ import annotations

import math
import random

import pytest

from fastnn.autograd import MLP, Layer, Neuron, Value, dot, softmax_cross_entropy, value_sum

# Each expression takes a list of 2 inputs and works for any object with Value's operators
# (a Value, or a torch float64 scalar tensor with the names mapped below).
EXPRESSIONS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow_int": lambda a, b: a ** 3,
    "pow_float": lambda a, b: (a * a + 1) ** 0.5,
    "pow_negative": lambda a, b: b ** -2,
    "neg": lambda a, b: -a,
    "radd": lambda a, b: 1 + a,
    "rsub": lambda a, b: 2 - b,
    "rmul": lambda a, b: 2 * a,
    "rdiv": lambda a, b: 10.0 / b,
    "relu": lambda a, b: a.relu() * b,
    "tanh": lambda a, b: (a * b).tanh(),
    "sigmoid": lambda a, b: (a - b).sigmoid(),
    "exp": lambda a, b: (a * 0.5).exp(),
    "log": lambda a, b: (a * a + b * b).log(),
    "reuse": lambda a, b: a * a * a + a * b + b,
    "mixed": lambda a, b: ((a * b + b ** 2).tanh() * 3 - a.relu() / (1 + b.sigmoid())).exp(),
}


class T:
    """Wraps a torch scalar so relu/tanh/sigmoid/exp/log read like Value's methods."""

    def __init__(self, t):
        self.t = t

    def _w(self, other):
        return other.t if isinstance(other, T) else other

    def __add__(self, o): return T(self.t + self._w(o))
    def __radd__(self, o): return T(self._w(o) + self.t)
    def __sub__(self, o): return T(self.t - self._w(o))
    def __rsub__(self, o): return T(self._w(o) - self.t)
    def __mul__(self, o): return T(self.t * self._w(o))
    def __rmul__(self, o): return T(self._w(o) * self.t)
    def __truediv__(self, o): return T(self.t / self._w(o))
    def __rtruediv__(self, o): return T(self._w(o) / self.t)
    def __pow__(self, k): return T(self.t ** k)
    def __neg__(self): return T(-self.t)
    def relu(self): return T(self.t.relu())
    def tanh(self): return T(self.t.tanh())
    def sigmoid(self): return T(self.t.sigmoid())
    def exp(self): return T(self.t.exp())
    def log(self): return T(self.t.log())


def inputs(seed):
    rng = random.Random(seed)
    a = rng.choice([rng.uniform(-3, 3), -1.5, 0.7])       # negative bases included
    b = rng.uniform(0.3, 2.5) * rng.choice([-1, 1])
    return a, b


def numeric_grad(f, xs, i, eps=1e-6):
    up, down = list(xs), list(xs)
    up[i] += eps
    down[i] -= eps
    return (f(*[Value(v) for v in up]).data - f(*[Value(v) for v in down]).data) / (2 * eps)


@pytest.mark.parametrize("name", EXPRESSIONS)
@pytest.mark.parametrize("seed", range(4))
def test_against_central_differences(name, seed):
    f = EXPRESSIONS[name]
    a0, b0 = inputs(seed)
    a, b = Value(a0), Value(b0)
    out = f(a, b)
    assert isinstance(out, Value)
    out.backward()
    for i, v in enumerate((a, b)):
        assert v.grad == pytest.approx(numeric_grad(f, [a0, b0], i), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", EXPRESSIONS)
@pytest.mark.parametrize("seed", range(4))
def test_against_torch(name, seed, torch):
    f = EXPRESSIONS[name]
    a0, b0 = inputs(seed)
    a, b = Value(a0), Value(b0)
    out = f(a, b)
    out.backward()
    ta = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    t_out = f(T(ta), T(tb)).t
    t_out.backward()
    assert out.data == pytest.approx(t_out.item(), rel=1e-12, abs=1e-12)
    for v, t in ((a, ta), (b, tb)):
        expected = 0.0 if t.grad is None else t.grad.item()
        assert v.grad == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_relu_zero_crossing():
    for x0, g in ((-1e-9, 0.0), (0.0, 0.0), (1e-9, 1.0)):
        x = Value(x0)
        x.relu().backward()
        assert x.grad == g


def test_in_place_add_and_reuse_accumulate():
    x = Value(3.0)
    y = x
    y += x            # rebinds y to x + x; x is used twice
    y += 1
    y.backward()
    assert y.data == 7.0 and x.grad == 2.0


def test_deep_chain_does_not_recurse():
    x = Value(0.5)
    y = x
    for _ in range(100_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == 1.0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="non-positive"):
        Value(-1.0).log()
    with pytest.raises(ValueError, match="not a real"):
        Value(-8.0) ** 0.5
    with pytest.raises(TypeError, match="int or float exponent"):
        Value(2.0) ** Value(2.0)
    with pytest.raises(TypeError, match="str"):
        Value(2.0) * "3"
    with pytest.raises(OverflowError, match="subtract the max"):
        Value(1000.0).exp()


def test_repr_and_dot_graph():
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    c = a * b
    c.label = "c"
    c.backward()
    assert repr(a) == "Value(data=2, grad=-3, label='a')"
    dot_text = c.to_dot()
    assert dot_text.startswith("digraph") and dot_text.rstrip().endswith("}")
    assert "data 2" in dot_text and "grad -3" in dot_text and 'label="*"' in dot_text


def test_dot_and_sum_nodes_match_chained_ops(torch):
    rng = random.Random(1)
    ws = [Value(rng.gauss(0, 1)) for _ in range(5)]
    xs = [Value(rng.gauss(0, 1)) for _ in range(3)] + [0.5, -2.0]
    y = dot(ws, xs) + value_sum(ws[:2])
    y.backward()
    tw = torch.tensor([w.data for w in ws], dtype=torch.float64, requires_grad=True)
    tx = torch.tensor([x.data if isinstance(x, Value) else x for x in xs], dtype=torch.float64,
                      requires_grad=True)
    ty = (tw * tx).sum() + tw[:2].sum()
    ty.backward()
    assert y.data == pytest.approx(ty.item(), rel=1e-12)
    assert [w.grad for w in ws] == pytest.approx(tw.grad.tolist(), rel=1e-12)
    assert [x.grad for x in xs[:3]] == pytest.approx(tx.grad[:3].tolist(), rel=1e-12)


def test_mlp_loss_and_gradients_match_torch(torch):
    model = MLP(4, [5, 3], seed=0)
    x, label = [0.1, -0.4, 2.0, 0.0], 2
    loss = softmax_cross_entropy(model(x), label)
    model.zero_grad()
    loss.backward()
    params = model.parameters()
    assert len(params) == 4 * 5 + 5 + 5 * 3 + 3
    # the same network in torch, from the same numbers
    W1 = torch.tensor([[n.w[i].data for n in model.layers[0].neurons] for i in range(4)], dtype=torch.float64,
                      requires_grad=True)
    b1 = torch.tensor([n.b.data for n in model.layers[0].neurons], dtype=torch.float64, requires_grad=True)
    W2 = torch.tensor([[n.w[i].data for n in model.layers[1].neurons] for i in range(5)], dtype=torch.float64,
                      requires_grad=True)
    b2 = torch.tensor([n.b.data for n in model.layers[1].neurons], dtype=torch.float64, requires_grad=True)
    h = torch.relu(torch.tensor([x], dtype=torch.float64) @ W1 + b1)
    t_loss = torch.nn.functional.cross_entropy(h @ W2 + b2, torch.tensor([label]))
    t_loss.backward()
    assert loss.data == pytest.approx(t_loss.item(), rel=1e-12)
    got = [[n.w[i].grad for n in model.layers[0].neurons] for i in range(4)]
    assert sum(got, []) == pytest.approx(W1.grad.flatten().tolist(), rel=1e-10, abs=1e-14)
    assert [n.b.grad for n in model.layers[1].neurons] == pytest.approx(b2.grad.tolist(), rel=1e-10, abs=1e-14)


def test_softmax_cross_entropy_is_stable():
    logits = [Value(1e4), Value(-1e4), Value(0.0)]
    loss = softmax_cross_entropy(logits, 1)
    loss.backward()
    assert math.isfinite(loss.data) and loss.data == pytest.approx(2e4)
    assert logits[1].grad == pytest.approx(-1.0) and logits[0].grad == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out of range"):
        softmax_cross_entropy(logits, 3)


def test_modules():
    n = Neuron(3, activation="tanh")
    assert len(n.parameters()) == 4 and repr(n) == "TanhNeuron(3)"
    layer = Layer(3, 2, nonlin=False)
    assert len(layer([1.0, 2.0, 3.0])) == 2
    assert isinstance(Layer(3, 1)([1.0, 2.0, 3.0]), Value)
    with pytest.raises(ValueError, match="3 inputs called on 2"):
        n([1.0, 2.0])
    model = MLP(3, [4, 2])
    for p in model.parameters():
        p.grad = 5.0
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())
    assert "MLP of" in repr(model)


@pytest.mark.slow
def test_trains_on_real_mnist(mnist_dir, tmp_path, capsys):
    import json

    from fastnn.autograd.train import main
    code = main(["--data-dir", str(mnist_dir), "--size", "7", "--hidden", "8", "--limit", "300",
                 "--test-limit", "100", "--epochs", "1", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == "value" and metrics["test_samples"] == 100
    assert metrics["train_samples"] == 300 and metrics["val_samples"] == 1000     # validation: apart from --limit
    out = capsys.readouterr().out
    assert "(first 300)" in out                                                   # what the train accuracy is of
    assert metrics["test_accuracy"] > 0.3 and metrics["train_time_per_sample_us"] > 0
    assert (tmp_path / "history.csv").exists() and (tmp_path / "learning_curves.png").exists()
    assert out.strip().splitlines()[-1].startswith("test accuracy")
