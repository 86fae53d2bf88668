"""``Value``: a scalar that remembers how it was made, and backpropagates through that graph.

The design follows A. Karpathy's micrograd engine (MIT license), so its users feel at home:
every operation builds a new ``Value`` whose ``_backward`` closure, defined right next to
the forward computation, adds the local derivative times the output's ``grad`` into the
inputs' ``grad``. ``backward()`` runs those closures in reverse topological order.

Plain numbers mixed into an expression (``2 * x``, ``x + 1``) are constants: they take part
in the arithmetic but get no node of their own and no gradient.
"""
from __future__ import annotations

import math
from typing import Iterable

Number = (int, float)


class Value:
    """A scalar ``data`` with its gradient ``grad`` (d output / d this, set by ``backward``)."""

    __slots__ = ("data", "grad", "_backward", "_prev", "_op", "label")

    def __init__(self, data: float, _children: tuple = (), _op: str = "", label: str = ""):
        if isinstance(data, Value):
            raise TypeError("Value(data) takes a number, not a Value")
        self.data = float(data)
        self.grad = 0.0
        self._backward = _no_backward
        self._prev = _children
        self._op = _op
        self.label = label

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        if isinstance(other, Value):
            out = Value(self.data + other.data, (self, other), "+")

            def _backward():
                self.grad += out.grad
                other.grad += out.grad
        else:
            out = Value(self.data + _number(other), (self,), "+")

            def _backward():
                self.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        if isinstance(other, Value):
            out = Value(self.data * other.data, (self, other), "*")

            def _backward():
                self.grad += other.data * out.grad
                other.grad += self.data * out.grad
        else:
            c = _number(other)
            out = Value(self.data * c, (self,), "*")

            def _backward():
                self.grad += c * out.grad
        out._backward = _backward
        return out

    def __pow__(self, exponent):
        """self ** exponent for a constant int or float exponent: d/dx x^k = k x^(k-1)."""
        if isinstance(exponent, Value) or not isinstance(exponent, Number):
            raise TypeError(f"Value ** exponent takes an int or float exponent, got {type(exponent).__name__}")
        k = float(exponent)
        try:
            raw = self.data ** k
        except ZeroDivisionError:
            raise ZeroDivisionError(f"0.0 ** {exponent} is undefined") from None
        if isinstance(raw, complex):
            raise ValueError(f"{self.data} ** {exponent} is not a real number")
        out = Value(raw, (self,), f"**{exponent:g}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1 if isinstance(other, Value) else self * (1.0 / _number(other))

    def __radd__(self, other):          # other + self
        return self + other

    def __rmul__(self, other):          # other * self
        return self * other

    def __rsub__(self, other):          # other - self
        return (-self) + other

    def __rtruediv__(self, other):      # other / self
        return self ** -1 * other

    # ``x += y`` rebinds x to the new node x + y (Python falls back to __add__), so a Value
    # used before the += keeps its place in the graph.

    # ------------------------------------------------------------------ nonlinearities
    def relu(self):
        """max(0, x); its derivative at 0 is taken as 0."""
        out = Value(self.data if self.data > 0 else 0.0, (self,), "relu")

        def _backward():
            self.grad += (out.data > 0) * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")

        def _backward():
            self.grad += (1.0 - t * t) * out.grad
        out._backward = _backward
        return out

    def sigmoid(self):
        x = self.data
        s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        out = Value(s, (self,), "sigmoid")

        def _backward():
            self.grad += s * (1.0 - s) * out.grad
        out._backward = _backward
        return out

    def exp(self):
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise OverflowError(f"exp({self.data}) overflows a float; subtract the max first "
                                "(see fastnn.autograd.nn.softmax_cross_entropy)") from None
        out = Value(e, (self,), "exp")

        def _backward():
            self.grad += e * out.grad
        out._backward = _backward
        return out

    def log(self):
        if self.data <= 0:
            raise ValueError(f"log of a non-positive value ({self.data})")
        out = Value(math.log(self.data), (self,), "log")

        def _backward():
            self.grad += out.grad / self.data
        out._backward = _backward
        return out

    # ------------------------------------------------------------------ backpropagation
    def topological_order(self) -> list["Value"]:
        """Every node of the graph below ``self``, each after all of its inputs.

        Iterative depth-first search, so a chain of any length stays off Python's call stack.
        """
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for child in node._prev:
                if id(child) not in visited:
                    stack.append((child, False))
        return order

    def backward(self) -> None:
        """Set ``grad`` of every node in the graph to d self / d node (self.grad = 1).

        Gradients accumulate (a node used twice receives both contributions); call
        ``zero_grad`` on the parameters (or rebuild the graph) between backward passes.
        """
        order = self.topological_order()
        self.grad = 1.0
        for node in reversed(order):
            node._backward()

    # ------------------------------------------------------------------ display
    def __repr__(self):
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{label})"

    def to_dot(self) -> str:
        """Graphviz DOT text of the graph below ``self``: each value with its data and grad,
        each operation as its own small node. Render with ``dot -Tsvg graph.dot -o graph.svg``."""
        lines = ["digraph G {", "  rankdir=LR;", '  node [shape=record, fontname="Helvetica"];']
        for node in self.topological_order():
            nid = f"v{id(node)}"
            label = f"{node.label} | " if node.label else ""
            lines.append(f'  {nid} [label="{{ {label}data {node.data:.4g} | grad {node.grad:.4g} }}"];')
            if node._op:
                lines.append(f'  {nid}_op [label="{node._op}", shape=circle];')
                lines.append(f"  {nid}_op -> {nid};")
                for child in node._prev:
                    lines.append(f"  v{id(child)} -> {nid}_op;")
        lines.append("}")
        return "\n".join(lines)


def _no_backward():
    pass


def _number(x) -> float:
    if isinstance(x, bool) or not isinstance(x, Number):
        raise TypeError(f"Value arithmetic takes Values, ints or floats, got {type(x).__name__}")
    return float(x)


def value_sum(values: Iterable[Value]) -> Value:
    """Sum of Values as a single node with many inputs (shallower than chained ``+``)."""
    values = list(values)
    out = Value(math.fsum(v.data for v in values), tuple(values), "sum")

    def _backward():
        for v in values:
            v.grad += out.grad
    out._backward = _backward
    return out


def dot(weights: list[Value], inputs) -> Value:
    """sum_i weights[i] * inputs[i] as one node; ``inputs`` may be Values or plain numbers.

    Equivalent to ``value_sum(w * x for ...)`` with one node instead of 2n, which is what makes
    training a scalar network on MNIST take minutes instead of hours.
    """
    if len(weights) != len(inputs):
        raise ValueError(f"dot: {len(weights)} weights but {len(inputs)} inputs")
    xs = [x.data if isinstance(x, Value) else float(x) for x in inputs]
    out_data = math.fsum(w.data * x for w, x in zip(weights, xs))
    value_inputs = [(i, x) for i, x in enumerate(inputs) if isinstance(x, Value)]
    out = Value(out_data, tuple(weights) + tuple(x for _, x in value_inputs), "dot")

    def _backward():
        g = out.grad
        for w, x in zip(weights, xs):
            w.grad += x * g
        for i, x in value_inputs:
            x.grad += weights[i].data * g
    out._backward = _backward
    return out
