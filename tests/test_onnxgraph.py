"""The runtime's ONNX graph tools: a lossless protobuf codec, the 2-D convolution rewrite, the model merge.

Checked against the ``onnx`` package and against ONNX Runtime running the
graph exactly as exported: the rewrites must change the speed, never the scores.
"""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from deploy.modelfile import INPUT_NAME, OUTPUT_NAME, KwsModel, open_session, runtime_graph
from deploy.onnxgraph import GraphError, Message, conv1d_as_conv2d, merge_models, metadata
from features.mfcc import Mfcc


@pytest.fixture(scope="module")
def windows(keyword_model) -> np.ndarray:
    """Real MFCC windows: the keyword and a sentence from two voices, with noise between."""
    from collect.synth import synthesize

    info = KwsModel(keyword_model).info
    rng = np.random.default_rng(2)
    parts = []
    for voice in ["en-us+m3", "en+f2"]:
        parts += [synthesize("computer", voice) * 0.3, rng.standard_normal(6000).astype(np.float32) * 0.01]
        parts += [synthesize("the window is open", voice) * 0.3]
    feats = Mfcc(info.feature_config)(np.concatenate(parts))
    ends = range(info.window_frames, len(feats) + 1, 4)
    return np.stack([feats[e - info.window_frames : e] for e in ends])


def test_codec_reencodes_the_file_byte_for_byte(keyword_model):
    raw = keyword_model.read_bytes()
    model = Message.parse(raw)
    assert model.encode() == raw
    model.messages(7)[0].messages(1)  # parse the graph and its nodes: still the same bytes
    assert model.encode() == raw
    assert metadata(model) == {p.key: p.value for p in onnx.load(str(keyword_model)).metadata_props}


def test_conv2d_rewrite_scores_like_the_exported_graph(keyword_model, windows):
    fast, stored = KwsModel(keyword_model), KwsModel(keyword_model, optimize=False)
    assert fast.optimized and not stored.optimized
    graph = onnx.load_from_string(fast.runtime_graph())
    onnx.checker.check_model(graph)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert convs and all(len(helper.get_attribute_value(a)) == 2 for n in convs for a in n.attribute if a.name == "kernel_shape")
    got, want = fast.predict(windows), stored.predict(windows)
    assert want[:, 1].max() > 0.9 and want[:, 1].min() < 0.1  # the windows hold keywords and other speech
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert fast.info == stored.info


def test_rewrite_refuses_graphs_it_does_not_handle(keyword_model):
    # No convolution at all: refused, and the runtime then runs the file as it is.
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", 1, [1, 4])], [helper.make_tensor_value_info("y", 1, [1, 4])])
    plain = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(GraphError):
        conv1d_as_conv2d(plain)
    assert runtime_graph(plain) is plain
    # A convolution whose weight is computed (as in a quantised graph) rather than stored: refused.
    m = onnx.load(str(keyword_model))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.input[1] = "computed_weight"
    m.graph.node.insert(0, helper.make_node("Identity", [next(i.name for i in m.graph.initializer if i.name.endswith("stem.0.weight"))], ["computed_weight"]))
    with pytest.raises(GraphError):
        conv1d_as_conv2d(m.SerializeToString())


def test_merged_graph_gives_each_model_its_own_scores(keyword_model, windows, tmp_path):
    """Two models with the same tensor names (one with other weights) in one graph: each output is its model's."""
    other = onnx.load(str(keyword_model))
    for init in other.graph.initializer:
        if init.name.endswith("head.bias"):  # the keyword's logit up: another softmax, the same graph
            bias = numpy_helper.to_array(init).copy()
            bias[-1] += np.float32(1.5)
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    other_path = tmp_path / "other.onnx"
    onnx.save(other, str(other_path))
    models = [KwsModel(keyword_model), KwsModel(other_path)]
    merged = open_session(merge_models([m.runtime_graph() for m in models], INPUT_NAME, ["a/", "b/"]))
    assert [o.name for o in merged.get_outputs()] == ["a/" + OUTPUT_NAME, "b/" + OUTPUT_NAME]
    a, b = merged.run(None, {INPUT_NAME: windows})
    np.testing.assert_array_equal(a, models[0].predict(windows))
    np.testing.assert_array_equal(b, models[1].predict(windows))
    assert np.abs(a - b).max() > 0.01  # the two models really differ
    with pytest.raises(GraphError):
        merge_models([models[0].runtime_graph()], "no_such_input", ["a/"])


def test_rewrite_keeps_any_graph_shape_right():
    """A tensor read by a convolution and by a 3-D op, a residual, a convolution's output as a graph output."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 4, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 1, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["c1"], pads=[1, 1]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[1], keepdims=1),  # r also read as 3-D
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=6, pads=[4, 4], dilations=[2]),
        helper.make_node("Add", ["c1", "c2"], ["sum"]),
        helper.make_node("Tile", ["m", "reps"], ["m6"]),
        helper.make_node("Mul", ["sum", "m6"], ["scaled"]),  # a 3-D tensor from outside the 4-D region
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.array([1, 1, 1], np.int64), "reps")]
    value = lambda name, shape: helper.make_tensor_value_info(name, 1, shape)  # noqa: E731
    g = helper.make_graph(nodes, "g", [value("x", [2, 4, 11])], [value("scaled", [2, 6, 11]), value("c2", [2, 6, 11]), value("m", [2, 1, 11])], initializer=inits)
    original = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    original.ir_version = 8
    raw = original.SerializeToString()
    rewritten = conv1d_as_conv2d(raw)
    onnx.checker.check_model(onnx.load_from_string(rewritten))
    x = rng.standard_normal((2, 4, 11)).astype(np.float32)
    want = open_session(raw).run(None, {"x": x})
    got = open_session(rewritten).run(None, {"x": x})
    assert [a.shape for a in got] == [a.shape for a in want]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
