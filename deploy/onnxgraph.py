"""Reading and rewriting an ONNX file without the ``onnx`` package: the runtime's graph tools.

Why this exists: the listener must not depend on ``onnx`` (a Raspberry Pi
installs numpy, onnxruntime and sounddevice only, and importing ``onnx`` and
protobuf would add megabytes to a process that listens for weeks), yet two
load-time rewrites of the exported graph pay for themselves many times over:

- ``conv1d_as_conv2d``: ONNX Runtime's CPU kernels for 1-D ``Conv`` are its
  generic path (a depthwise 1-D conv loops over 64 groups of tiny GEMMs),
  while a 2-D ``Conv`` over a ``(N, C, 1, T)`` tensor gets the NCHWc layout
  transformer and MLAS's blocked kernels. The same arithmetic, rewritten as
  2-D convolutions of height 1, runs in well under half the time for our
  DS-CNN (``kws bench`` measures it). The outputs agree to float rounding
  (the tests hold them to 1e-6 against the original graph).
- ``merge_models``: several models that read the same input become one graph
  with one output per model, so one ``InferenceSession.run`` per hop scores
  them all (``deploy.multi``); ``average_models`` adds a mean of their
  outputs, which makes an ensemble read like one model (``deploy.ensemble``).

An ONNX file is a protobuf ``ModelProto``. This module decodes the protobuf
wire format into ``Message`` objects (ordered lists of fields, the bytes of
every field kept as they were) and encodes them back, touching only the
fields a rewrite changes. Field numbers are those of ``onnx.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Field numbers from onnx/onnx.proto.
MODEL_GRAPH, MODEL_OPSET, MODEL_METADATA = 7, 8, 14
OPSET_DOMAIN, OPSET_VERSION = 1, 2
GRAPH_NODE, GRAPH_NAME, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 2, 5, 11, 12, 13
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7
ATTR_NAME, ATTR_I, ATTR_S, ATTR_INTS, ATTR_TYPE = 1, 3, 4, 8, 20
ATTR_TYPE_INT, ATTR_TYPE_INTS = 2, 7
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW = 1, 2, 8, 9
TENSOR_INT64 = 7
VALUE_NAME = 1
ENTRY_KEY, ENTRY_VALUE = 1, 2

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class GraphError(ValueError):
    """The bytes are not an ONNX model this module can read, or a rewrite does not apply."""


# --------------------------------------------------------------------------- wire format


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise GraphError("varint too long")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 in two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class Message:
    """A protobuf message as its fields in file order: ``[number, wire type, int or bytes]``."""

    fields: list[list] = field(default_factory=list)

    @classmethod
    def parse(cls, buf: bytes) -> "Message":
        fields, pos, n = [], 0, len(buf)
        while pos < n:
            key, pos = _read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if wire == VARINT:
                value, pos = _read_varint(buf, pos)
            elif wire == LEN:
                size, pos = _read_varint(buf, pos)
                value, pos = buf[pos : pos + size], pos + size
                if pos > n:
                    raise GraphError("truncated field")
            elif wire == I64:
                value, pos = buf[pos : pos + 8], pos + 8
            elif wire == I32:
                value, pos = buf[pos : pos + 4], pos + 4
            else:
                raise GraphError(f"unsupported wire type {wire}")
            fields.append([number, wire, value])
        return cls(fields)

    def encode(self) -> bytes:
        out = []
        for number, wire, value in self.fields:
            if isinstance(value, Message):
                value = value.encode()
            out.append(_varint(number << 3 | wire))
            if wire == VARINT:
                out.append(_varint(value))
            elif wire == LEN:
                out += [_varint(len(value)), value]
            else:
                out.append(value)
        return b"".join(out)

    # Accessors. A field that holds a sub-message is parsed on first access and kept parsed.
    def messages(self, number: int) -> list["Message"]:
        out = []
        for f in self.fields:
            if f[0] == number:
                if not isinstance(f[2], Message):
                    f[2] = Message.parse(f[2])
                out.append(f[2])
        return out

    def strings(self, number: int) -> list[str]:
        return [bytes(f[2]).decode("utf-8") for f in self.fields if f[0] == number]

    def string(self, number: int, default: str = "") -> str:
        found = self.strings(number)
        return found[-1] if found else default

    def ints(self, number: int) -> list[int]:
        """A repeated integer field, packed or not."""
        out = []
        for f in self.fields:
            if f[0] != number:
                continue
            if f[1] == VARINT:
                out.append(_signed(f[2]))
            elif f[1] == LEN:
                buf, pos = bytes(f[2]), 0
                while pos < len(buf):
                    v, pos = _read_varint(buf, pos)
                    out.append(_signed(v))
        return out

    def int(self, number: int, default: int = 0) -> int:
        found = self.ints(number)
        return found[-1] if found else default

    def remove(self, number: int) -> None:
        self.fields = [f for f in self.fields if f[0] != number]

    def set_strings(self, number: int, values: list[str]) -> None:
        """Replace a repeated string field, keeping its place among the other fields."""
        self._replace(number, [[number, LEN, v.encode("utf-8")] for v in values])

    def set_ints(self, number: int, values: list[int]) -> None:
        """Replace a repeated integer field (written unpacked, as onnx's proto2 schema does)."""
        self._replace(number, [[number, VARINT, v] for v in values])

    def _replace(self, number: int, new: list[list]) -> None:
        first = next((i for i, f in enumerate(self.fields) if f[0] == number), len(self.fields))
        self.fields = self.fields[:first] + new + [f for f in self.fields[first:] if f[0] != number]

    def add(self, number: int, value: "Message | bytes | str | int") -> None:
        if isinstance(value, int):
            self.fields.append([number, VARINT, value])
        else:
            self.fields.append([number, LEN, value.encode("utf-8") if isinstance(value, str) else value])


def metadata(model: Message) -> dict[str, str]:
    """``metadata_props`` of a ``ModelProto`` as a dict."""
    return {e.string(ENTRY_KEY): e.string(ENTRY_VALUE) for e in model.messages(MODEL_METADATA)}


def default_opset(model: Message) -> int:
    """The opset version of the default ("" / "ai.onnx") domain."""
    for op in model.messages(MODEL_OPSET):
        if op.string(OPSET_DOMAIN) in ("", "ai.onnx"):
            return op.int(OPSET_VERSION)
    raise GraphError("no default-domain opset")


def _node(op: str, inputs: list[str], outputs: list[str], name: str, ints: dict[str, list[int]] | None = None) -> Message:
    n = Message()
    for i in inputs:
        n.add(NODE_INPUT, i)
    for o in outputs:
        n.add(NODE_OUTPUT, o)
    n.add(NODE_NAME, name)
    n.add(NODE_OP, op)
    for key, values in (ints or {}).items():
        a = Message()
        a.add(ATTR_NAME, key)
        for v in values:
            a.add(ATTR_INTS, v)
        a.add(ATTR_TYPE, ATTR_TYPE_INTS)
        n.add(NODE_ATTRIBUTE, a)
    return n


def _int_attr(name: str, value: int) -> Message:
    a = Message()
    a.add(ATTR_NAME, name)
    a.add(ATTR_I, value)
    a.add(ATTR_TYPE, ATTR_TYPE_INT)
    return a


def _int64_tensor(name: str, values: list[int]) -> Message:
    t = Message()
    t.add(TENSOR_DIMS, len(values))
    t.add(TENSOR_DATA_TYPE, TENSOR_INT64)
    t.add(TENSOR_NAME, name)
    t.add(TENSOR_RAW, b"".join(int(v).to_bytes(8, "little", signed=True) for v in values))
    return t


# --------------------------------------------------------------------------- rewrites

# Ops that act element by element (or per channel on axis 1) and so accept a (N, C, 1, T) tensor unchanged.
_SHAPE_AGNOSTIC = {"Relu", "Add", "Sub", "Mul", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSwish", "Identity"}
_CONV_ATTRS_1D_TO_2D = {
    "kernel_shape": lambda v: [1, *v],
    "strides": lambda v: [1, *v],
    "dilations": lambda v: [1, *v],
    "pads": lambda v: [0, v[0], 0, v[1]],
}
_SUFFIX = "__kws_h1"  # names of the (N, C, 1, T) versions of tensors


def conv1d_as_conv2d(model_bytes: bytes) -> bytes:
    """The same model with every 1-D ``Conv`` run as a 2-D ``Conv`` of height 1 (see the module docstring).

    Tensors stay 4-D ``(N, C, 1, T)`` from the first convolution on through
    convolutions and element-wise ops; an ``Unsqueeze`` enters that region and
    a ``Squeeze`` leaves it where any other op (here ``ReduceMax``) or a
    graph output needs the 3-D tensor. Raises ``GraphError`` where the rewrite
    does not apply (no 1-D convolution, a weight that is not an initializer,
    padding modes other than explicit pads); the caller then runs the graph
    as it is.
    """
    model = Message.parse(model_bytes)
    graph = model.messages(MODEL_GRAPH)[0]
    opset = default_opset(model)
    inits = {t.string(TENSOR_NAME): t for t in graph.messages(GRAPH_INITIALIZER)}
    nodes = graph.messages(GRAPH_NODE)
    convs = [n for n in nodes if n.string(NODE_OP) == "Conv" and n.string(NODE_DOMAIN) in ("", "ai.onnx")]
    if not convs:
        raise GraphError("no Conv")
    for n in convs:
        inputs = n.strings(NODE_INPUT)
        weight = inits.get(inputs[1]) if len(inputs) > 1 else None
        if weight is None or len(weight.ints(TENSOR_DIMS)) != 3:
            raise GraphError("a Conv whose weight is not a 3-D initializer")
        for a in n.messages(NODE_ATTRIBUTE):
            name = a.string(ATTR_NAME)
            if name == "auto_pad" and a.string(ATTR_S, "NOTSET") != "NOTSET":
                raise GraphError("auto_pad")
            if name in _CONV_ATTRS_1D_TO_2D and len(a.ints(ATTR_INTS)) != (2 if name == "pads" else 1):
                raise GraphError(f"a Conv with {name} of another rank")

    axes_name = "kws_axes_h"
    if opset >= 13:
        graph.add(GRAPH_INITIALIZER, _int64_tensor(axes_name, [2]))

    def reshape_node(op: str, src: str, dst: str) -> Message:
        if opset >= 13:
            return _node(op, [src, axes_name], [dst], f"{dst}__{op}")
        return _node(op, [src], [dst], f"{dst}__{op}", {"axes": [2]})

    conv_ids = {id(n) for n in convs}
    four_d: set[str] = set()  # original names of tensors that now exist as (N, C, 1, T) under name + _SUFFIX
    squeezed: set[str] = set()  # tensors of four_d whose 3-D version exists (original, or Squeezed back)
    out_nodes: list[Message] = []
    for n in nodes:
        op = n.string(NODE_OP)
        inputs, outputs = n.strings(NODE_INPUT), n.strings(NODE_OUTPUT)
        is_conv = id(n) in conv_ids
        # Only where every input is already (N, C, 1, T): a parameter or another 3-D tensor would broadcast
        # differently against the 4-D one, so such a node gets the 3-D tensors back instead.
        agnostic = op in _SHAPE_AGNOSTIC and n.string(NODE_DOMAIN) in ("", "ai.onnx") and bool(inputs) and all(i in four_d for i in inputs)
        if is_conv or agnostic:
            new_inputs = list(inputs)
            for k, name in enumerate(inputs):
                if is_conv and k > 0:
                    continue  # weight and bias
                if name and name not in four_d:
                    out_nodes.append(reshape_node("Unsqueeze", name, name + _SUFFIX))
                    four_d.add(name)
                    squeezed.add(name)  # its 3-D original exists already: never Squeeze it back
                new_inputs[k] = name + _SUFFIX
            n.set_strings(NODE_INPUT, new_inputs)
            n.set_strings(NODE_OUTPUT, [o + _SUFFIX for o in outputs])
            four_d.update(outputs)
            if is_conv:
                w = inits[inputs[1]]
                dims = w.ints(TENSOR_DIMS)
                w.set_ints(TENSOR_DIMS, [dims[0], dims[1], 1, dims[2]])
                for a in n.messages(NODE_ATTRIBUTE):
                    name = a.string(ATTR_NAME)
                    if name in _CONV_ATTRS_1D_TO_2D:
                        a.set_ints(ATTR_INTS, _CONV_ATTRS_1D_TO_2D[name](a.ints(ATTR_INTS)))
        else:
            for name in inputs:
                if name in four_d and name not in squeezed:
                    out_nodes.append(reshape_node("Squeeze", name + _SUFFIX, name))
                    squeezed.add(name)
        out_nodes.append(n)
    for name in graph.messages(GRAPH_OUTPUT):
        out = name.string(VALUE_NAME)
        if out in four_d and out not in squeezed:
            out_nodes.append(reshape_node("Squeeze", out + _SUFFIX, out))
            squeezed.add(out)
    graph.remove(GRAPH_VALUE_INFO)  # intermediate shapes changed; ONNX Runtime infers them again
    graph.remove(GRAPH_NODE)
    graph.fields += [[GRAPH_NODE, LEN, n] for n in out_nodes]
    return model.encode()


def merge_models(models: list[bytes], shared_input: str, prefixes: list[str], own_inputs: bool = False) -> bytes:
    """One graph that runs every model on one shared input; model ``i``'s outputs are named ``prefixes[i] + name``.

    All names inside each graph (tensors, initializers, nodes) get the model's
    prefix, except the shared input, so graphs that use the same names do not
    collide. The models must share the default opset (an op's meaning depends
    on it) and declare the shared input; the first model's header (IR version,
    opsets, metadata) is kept. A model's other inputs (a streaming graph's
    state) are refused, or with ``own_inputs`` kept as inputs of the merged
    graph under their prefixed names.
    """
    if len(models) != len(prefixes) or len(set(prefixes)) != len(prefixes):
        raise GraphError("one distinct prefix per model")
    parsed = [Message.parse(b) for b in models]
    opsets = {default_opset(m) for m in parsed}
    if len(opsets) != 1:
        raise GraphError(f"models of different opsets {sorted(opsets)}")
    merged = parsed[0]
    graph0 = merged.messages(MODEL_GRAPH)[0]
    shared_value = None
    nodes, inits, outputs, own = [], [], [], []
    for prefix, m in zip(prefixes, parsed):
        g = m.messages(MODEL_GRAPH)[0]
        inputs = {v.string(VALUE_NAME): v for v in g.messages(GRAPH_INPUT)}
        if shared_input not in inputs:
            raise GraphError(f"a model without the input {shared_input!r}")
        shared_value = shared_value or inputs[shared_input]
        own_inits = {t.string(TENSOR_NAME) for t in g.messages(GRAPH_INITIALIZER)}
        if set(inputs) - own_inits - {shared_input} and not own_inputs:
            raise GraphError(f"a model with inputs besides {shared_input!r}")
        rename = lambda name: name if name in ("", shared_input) else prefix + name  # noqa: E731
        for n in g.messages(GRAPH_NODE):
            n.set_strings(NODE_INPUT, [rename(i) for i in n.strings(NODE_INPUT)])
            n.set_strings(NODE_OUTPUT, [rename(o) for o in n.strings(NODE_OUTPUT)])
            n.set_strings(NODE_NAME, [rename(n.string(NODE_NAME))])
            if any(a.messages(6) or a.messages(11) for a in n.messages(NODE_ATTRIBUTE)):  # graph attributes (If, Loop, Scan)
                raise GraphError("a model with subgraphs")
            nodes.append(n)
        for t in g.messages(GRAPH_INITIALIZER):
            t.set_strings(TENSOR_NAME, [rename(t.string(TENSOR_NAME))])
            inits.append(t)
        for v in g.messages(GRAPH_OUTPUT):
            v.set_strings(VALUE_NAME, [rename(v.string(VALUE_NAME))])
            outputs.append(v)
        for name, v in inputs.items():
            if name not in own_inits and name != shared_input:
                v.set_strings(VALUE_NAME, [rename(name)])
                own.append(v)
    for number in (GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO):
        graph0.remove(number)
    graph0.fields += [[GRAPH_NODE, LEN, n] for n in nodes] + [[GRAPH_INITIALIZER, LEN, t] for t in inits]
    graph0.fields += [[GRAPH_INPUT, LEN, v] for v in [shared_value] + own] + [[GRAPH_OUTPUT, LEN, v] for v in outputs]
    return merged.encode()


def average_models(models: list[bytes], shared_input: str) -> bytes:
    """One graph whose outputs are the element-wise means of the models' same-named outputs: an ensemble.

    The models run side by side on the shared input (``merge_models``) and a
    ``Mean`` node per output averages them under the output's own name, so
    the file reads exactly like one model of the members (same input, same
    output names and shapes); the first model's header and metadata are kept.
    The models must have the same outputs.
    """
    names = [[v.string(VALUE_NAME) for v in Message.parse(b).messages(MODEL_GRAPH)[0].messages(GRAPH_OUTPUT)] for b in models]
    if len(models) < 2 or any(n != names[0] for n in names):
        raise GraphError(f"an ensemble needs two or more models with the same outputs, got {names}")
    prefixes = [f"member{i}/" for i in range(len(models))]
    merged = Message.parse(merge_models(models, shared_input, prefixes))
    graph = merged.messages(MODEL_GRAPH)[0]
    first_outputs = Message.parse(models[0]).messages(MODEL_GRAPH)[0].messages(GRAPH_OUTPUT)
    graph.remove(GRAPH_OUTPUT)
    graph.fields += [[GRAPH_NODE, LEN, _node("Mean", [p + name for p in prefixes], [name], f"ensemble_mean/{name}")] for name in names[0]]
    graph.fields += [[GRAPH_OUTPUT, LEN, v] for v in first_outputs]
    return merged.encode()


# --------------------------------------------------------------------------- stacking streaming models

ATTR_F = 2
TENSOR_FLOAT = 1
_STACK_OPS = {"BatchNormalization", "Concat", "Slice", "Conv", "Relu", "Add", "ReduceMax", "Gemm", "Softmax"}


def _raw(t: Message) -> bytes:
    raw = [bytes(f[2]) for f in t.fields if f[0] == TENSOR_RAW]
    if not raw:
        raise GraphError("an initializer without raw data")
    return raw[-1]


def _float_array(t: Message):
    import numpy as np

    if t.int(TENSOR_DATA_TYPE) != TENSOR_FLOAT:
        raise GraphError("an initializer that is not float32")
    return np.frombuffer(_raw(t), "<f4").reshape(t.ints(TENSOR_DIMS))


def _float_tensor(name: str, array) -> Message:
    import numpy as np

    t = Message()
    for d in array.shape:
        t.add(TENSOR_DIMS, int(d))
    t.add(TENSOR_DATA_TYPE, TENSOR_FLOAT)
    t.add(TENSOR_NAME, name)
    t.add(TENSOR_RAW, np.ascontiguousarray(array, "<f4").tobytes())
    return t


def _value_info(name: str, dims: list[int]) -> Message:
    shape = Message()
    for d in dims:
        dim = Message()
        dim.add(1, int(d))
        shape.add(1, dim)
    tensor = Message()
    tensor.add(1, TENSOR_FLOAT)
    tensor.add(2, shape)
    typ = Message()
    typ.add(1, tensor)
    v = Message()
    v.add(VALUE_NAME, name)
    v.add(2, typ)
    return v


def _value_dims(v: Message) -> list[int]:
    return [d.int(1) for d in v.messages(2)[0].messages(1)[0].messages(2)[0].messages(1)]


def _attr(node: Message, name: str) -> Message | None:
    return next((a for a in node.messages(NODE_ATTRIBUTE) if a.string(ATTR_NAME) == name), None)


def stack_stream_models(models: list[bytes], shared_input: str) -> bytes:
    """N streaming graphs of one architecture as ONE graph of the same nodes, N times as many channels.

    Why: per hop a streaming DS-CNN does little arithmetic, and ONNX
    Runtime's cost is mostly per node, so N graphs side by side
    (``merge_models``) cost N times the nodes. Stacked, model ``i`` is the
    ``i``-th group of channels of every tensor: the shared input is repeated
    N times along the channels, every convolution's weights are concatenated
    along the output channels with N times the groups (a group never sees
    another model's channels), batch-norm parameters are concatenated, the
    classifier's weights form a block-diagonal matrix, and the softmax runs
    on the logits reshaped to ``(N, labels)``. Each state input and output
    keeps its name with N times the channels (model ``i``'s part is channels
    ``i * C`` to ``(i + 1) * C``); the probabilities output is ``(N, labels)``.

    Only the ops a streaming DS-CNN export makes are accepted (``_STACK_OPS``,
    concatenation and slicing along time, reductions not over channels); the
    graphs must have the same nodes, names, attributes and shapes, and their
    other constants must be equal. Anything else is a ``GraphError`` (the
    caller then merges them side by side instead).
    """
    import numpy as np

    n = len(models)
    parsed = [Message.parse(b) for b in models]
    graphs = [m.messages(MODEL_GRAPH)[0] for m in parsed]
    node_lists = [g.messages(GRAPH_NODE) for g in graphs]
    if len({len(x) for x in node_lists}) != 1 or len({default_opset(m) for m in parsed}) != 1:
        raise GraphError("graphs of different structure")
    for nodes in zip(*node_lists):
        if len({nd.encode() for nd in nodes}) != 1:  # same op, names and attributes
            raise GraphError("graphs of different structure")
    inits = [{t.string(TENSOR_NAME): t for t in g.messages(GRAPH_INITIALIZER)} for g in graphs]
    roles: dict[str, str] = {}
    nodes = node_lists[0]
    for nd in nodes:
        op, ins = nd.string(NODE_OP), nd.strings(NODE_INPUT)
        if op not in _STACK_OPS or nd.string(NODE_DOMAIN) not in ("", "ai.onnx"):
            raise GraphError(f"an op stacking does not handle ({op})")
        stacked = {"Conv": ins[1:3], "BatchNormalization": ins[1:5], "Gemm": ins[2:3]}.get(op, [])
        for name in stacked:
            roles[name] = "concat"
        if op == "Gemm":
            trans_b = _attr(nd, "transB")
            if trans_b is None or trans_b.int(ATTR_I) != 1 or len(ins) < 3:
                raise GraphError("a Gemm other than x @ W.T + b")
            roles[ins[1]] = "block"
    for name, t in inits[0].items():
        if name not in roles and any(other[name].encode() != t.encode() for other in inits[1:] if name in other):
            raise GraphError(f"constant {name!r} differs between the graphs")
    if any(set(i) != set(inits[0]) for i in inits[1:]):
        raise GraphError("graphs of different constants")
    for name, t in inits[0].items():
        if any(other[name].ints(TENSOR_DIMS) != t.ints(TENSOR_DIMS) for other in inits[1:]):
            raise GraphError(f"constant {name!r} has different shapes in the graphs")
    for number in (GRAPH_INPUT, GRAPH_OUTPUT):
        if len({tuple((v.string(VALUE_NAME), *_value_dims(v)) for v in g.messages(number)) for g in graphs}) != 1:
            raise GraphError("graphs with different inputs or outputs")

    def along_time(nd: Message) -> None:
        op = nd.string(NODE_OP)
        if op == "Concat" and _attr(nd, "axis").int(ATTR_I) not in (3, -1):
            raise GraphError("a Concat not along time")
        if op in ("Slice", "ReduceMax"):
            axes_name = nd.strings(NODE_INPUT)[3 if op == "Slice" else 1]
            axes = np.frombuffer(_raw(inits[0][axes_name]), "<i8")
            if 1 in axes or -3 in axes:
                raise GraphError(f"a {op} over channels")

    out_nodes: list[Message] = []
    tiled = shared_input + "__kws_stacked"
    out_nodes.append(_node("Concat", [shared_input] * n, [tiled], tiled + "__Concat"))
    out_nodes[-1].add(NODE_ATTRIBUTE, _int_attr("axis", 1))
    reshape_shape = "kws_stacked_logits_shape"
    for nd in nodes:
        along_time(nd)
        op = nd.string(NODE_OP)
        nd.set_strings(NODE_INPUT, [tiled if i == shared_input else i for i in nd.strings(NODE_INPUT)])
        if op == "Conv":
            group = _attr(nd, "group")
            if group is None:
                group = _int_attr("group", 1)
                nd.add(NODE_ATTRIBUTE, group)
            group._replace(ATTR_I, [[ATTR_I, VARINT, group.int(ATTR_I, 1) * n]])
        if op == "Softmax":
            src = nd.strings(NODE_INPUT)[0]
            out_nodes.append(_node("Reshape", [src, reshape_shape], [src + "__kws_per_model"], src + "__Reshape"))
            nd.set_strings(NODE_INPUT, [src + "__kws_per_model"])
            ax = _attr(nd, "axis")
            if ax is not None:
                ax._replace(ATTR_I, [[ATTR_I, VARINT, _varint_signed(-1)]])
        out_nodes.append(nd)

    new_inits = []
    for name, t in inits[0].items():
        role = roles.get(name)
        if role is None:
            new_inits.append(t)
            continue
        arrays = [_float_array(i[name]) for i in inits]
        if role == "concat":
            new_inits.append(_float_tensor(name, np.concatenate(arrays, axis=0)))
        else:
            rows, cols = arrays[0].shape
            block = np.zeros((n * rows, n * cols), np.float32)
            for k, a in enumerate(arrays):
                block[k * rows : (k + 1) * rows, k * cols : (k + 1) * cols] = a
            new_inits.append(_float_tensor(name, block))
    new_inits.append(_int64_tensor(reshape_shape, [n, -1]))

    graph = graphs[0]
    inputs, outputs = graph.messages(GRAPH_INPUT), graph.messages(GRAPH_OUTPUT)
    new_inputs = []
    for v in inputs:
        name, dims = v.string(VALUE_NAME), _value_dims(v)
        new_inputs.append(v if name == shared_input or name in inits[0] else _value_info(name, [dims[0], dims[1] * n, *dims[2:]]))
    softmax_out = {nd.strings(NODE_OUTPUT)[0] for nd in nodes if nd.string(NODE_OP) == "Softmax"}
    new_outputs = []
    for v in outputs:
        name, dims = v.string(VALUE_NAME), _value_dims(v)
        new_outputs.append(_value_info(name, [n, dims[-1]] if name in softmax_out else [dims[0], dims[1] * n, *dims[2:]]))
    for number in (GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO):
        graph.remove(number)
    graph.fields += [[GRAPH_NODE, LEN, x] for x in out_nodes] + [[GRAPH_INITIALIZER, LEN, t] for t in new_inits]
    graph.fields += [[GRAPH_INPUT, LEN, v] for v in new_inputs] + [[GRAPH_OUTPUT, LEN, v] for v in new_outputs]
    return parsed[0].encode()


def _varint_signed(v: int) -> int:
    return v + (1 << 64) if v < 0 else v
