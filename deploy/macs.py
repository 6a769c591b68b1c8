"""Multiply-accumulates of one run of an ONNX graph, counted from the graph itself.

The MAC count is the hardware-independent part of a model's cost: it lets the
benchmark say what a Raspberry Pi would need without one at hand, and compare
engines whose runtimes differ. It is counted, not guessed: the graph's input
shapes are fixed (dynamic dimensions to the given sizes, else 1), ONNX shape
inference gives every intermediate shape, and each operator that multiplies and
adds contributes:

- ``Conv`` / ``QLinearConv`` / ``ConvInteger``: output elements x (input channels / groups) x kernel size;
- ``ConvTranspose``: input elements x (output channels / groups) x kernel size;
- ``Gemm`` and ``MatMul`` (and their quantised forms): batch x M x N x K;
- ``LSTM`` / ``GRU``: the gate matrix products per time step.

Element-wise operators (add, activation, normalisation, softmax, pooling) are
not counted: they are a few percent of these networks' work, and counting them
would mix operations of very different costs. Operators whose shapes cannot be
inferred are listed in ``MacCount.unresolved`` rather than silently skipped.

Needs the ``onnx`` package (a training-side dependency; the Pi runtime does
not need this module, and ``kws bench`` reports the count as unknown without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.errors import ModelError

CONV_OPS = {"Conv", "QLinearConv", "ConvInteger"}
MATMUL_OPS = {"MatMul", "QLinearMatMul", "MatMulInteger", "FusedMatMul"}


@dataclass
class MacCount:
    """MACs of one run of a graph, with the per-operator-type breakdown."""

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # nodes whose shapes were unknown
    input_shapes: dict[str, list[int]] = field(default_factory=dict)


def _load(model):
    import onnx

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            return onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and others
            raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    return model


def _fix_inputs(model, input_shapes: dict[str, list[int]] | None) -> dict[str, list[int]]:
    """Set every graph input's dimensions to concrete sizes (given, else the static size, else 1)."""
    input_shapes = input_shapes or {}
    initializers = {i.name for i in model.graph.initializer}
    fixed = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        wanted = input_shapes.get(inp.name)
        if wanted is not None and len(wanted) != len(dims):
            raise ModelError(f"input {inp.name!r} has {len(dims)} dimensions, shape given: {wanted}")
        shape = []
        for i, d in enumerate(dims):
            size = wanted[i] if wanted is not None else (d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1)
            d.Clear()
            d.dim_value = int(size)
            shape.append(int(size))
        fixed[inp.name] = shape
    return fixed


def _shapes(model) -> dict[str, list[int]]:
    """Name -> concrete shape for every tensor ONNX shape inference can resolve."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(d is not None and d > 0 for d in dims) or dims == []:
            shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node, shapes: dict[str, list[int]]) -> int | None:
    """MACs of one node, or None if a needed shape is unknown; 0 for operators not counted."""
    op = node.op_type

    def shape(i: int):
        return shapes.get(node.input[i]) if i < len(node.input) and node.input[i] else None

    out = shapes.get(node.output[0]) if node.output else None
    if op in CONV_OPS:
        w = shape(3 if op == "QLinearConv" else 1)
        if w is None or out is None:
            return None
        # weight (C_out, C_in / group, *kernel): its second dimension already divides by the groups
        kernel = int(np.prod(w[2:])) if len(w) > 2 else 1
        return int(np.prod(out)) * w[1] * kernel
    if op == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x is None or w is None:
            return None
        # weight (C_in, C_out / group, *kernel): each input element feeds C_out/group x kernel outputs
        return int(np.prod(x)) * w[1] * int(np.prod(w[2:]))
    if op == "Gemm":
        a, b = shape(0), shape(1)
        if a is None or b is None:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    if op in MATMUL_OPS:
        b_index = 3 if op == "QLinearMatMul" else 1
        a, b = shape(0), shape(b_index)
        if a is None or b is None or out is None:
            return None
        k = a[-1]
        return int(np.prod(out)) * k
    if op in ("LSTM", "GRU"):
        x, w, r = shape(0), shape(1), shape(2)
        if x is None or w is None or r is None:
            return None
        seq, batch = (x[0], x[1]) if not _attr(node, "layout", 0) else (x[1], x[0])
        dirs, gates_h, inp = w
        hidden = r[2]
        return seq * batch * dirs * gates_h * (inp + hidden)
    return 0


def count_macs(model, input_shapes: dict[str, list[int]] | None = None) -> MacCount:
    """MACs of one run of ``model`` (a path or an ``onnx.ModelProto``) at ``input_shapes``.

    ``input_shapes`` maps input names to full shapes; inputs not named get
    their static sizes, with any dynamic dimension set to 1 (one window).
    """
    import onnx

    model = _load(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never change the caller's graph
    fixed = _fix_inputs(model, input_shapes)
    shapes = _shapes(model)
    total, by_op, unresolved = 0, {}, []
    nodes = list(model.graph.node)
    for node in nodes:
        if any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            unresolved.append(f"{node.op_type}:{node.name} (subgraph not counted)")
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            unresolved.append(f"{node.op_type}:{node.name}")
            continue
        if macs:
            total += macs
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    for fn in model.functions:  # dynamo exports can keep modules as local functions
        unresolved.append(f"function {fn.name} not inlined")
    return MacCount(total=int(total), by_op=by_op, unresolved=unresolved, input_shapes=fixed)
