"""Static int8 quantisation: the int8 model detects what the float one detects, and says so in its metadata and card.

Tolerance (stated in ``deploy.quantize``): at the float model's threshold, the
int8 model's detections match the float model's one for one within
``MATCH_TOLERANCE_S`` (0.25 s), with at most 10% of them (at least one)
unmatched either way.
"""

import shutil

import numpy as np
import pytest

from deploy.modelfile import KwsModel
from deploy.quantize import MATCH_TOLERANCE_S, add_int8, int8_path, int8_summary, quantize_model
from features.errors import ModelError

UNMATCHED = 0.10  # share of detections allowed to differ


@pytest.fixture(scope="module")
def quantised(keyword_model, tmp_path_factory):
    """A copy of the model (quantising writes the comparison into the float file too) and its int8 twin."""
    d = tmp_path_factory.mktemp("int8")
    model = d / "model.onnx"
    shutil.copyfile(keyword_model, model)
    out, result = add_int8(model)
    return model, out, result


@pytest.fixture(scope="module")
def front_end_quantised(tiny_run, tmp_path_factory):
    """The tiny model's weights behind both in-network front ends (``denoise`` then ``cmn``), exported and quantised.

    Neither front end has weights, so the trained network can be put behind
    them without a second training (a minute of the suite): its scores are
    worse than the tiny model's own, but int8 is judged against this same
    graph in float. The front ends add ops static quantisation must leave
    in float (power, top-k, log, the window mean) between quantised ones.
    """
    from deploy.export import export_model
    from features.config import FeatureConfig
    from train.checkpoint import load_checkpoint, save_checkpoint
    from train.models import build_model

    _, ckpt = load_checkpoint(tiny_run.checkpoint)
    n_mels = FeatureConfig.from_dict(ckpt["feature_config"]).n_mels
    args = {**ckpt["model_args"], "denoise": True, "cmn": True, "n_mels": n_mels}
    model = build_model(ckpt["model_name"], **args)
    model.load_state_dict(ckpt["model_state"])
    d = tmp_path_factory.mktemp("int8-front-ends")
    fields = {k: v for k, v in ckpt.items() if k != "model_state"}
    checkpoint = save_checkpoint(d / "best.pt", model.eval(), **{**fields, "model_args": args})
    float_model = export_model(checkpoint, d / "model.onnx", threshold=0.5)
    return (float_model, *add_int8(float_model))


@pytest.mark.parametrize("which", ["quantised", "front_end_quantised"])
def test_int8_detections_agree_with_float(which, request):
    _, _, r = request.getfixturevalue(which)
    allowed = max(1, int(np.ceil(UNMATCHED * max(r["detections_float"], r["detections_int8"]))))
    assert r["keywords"] > 0 and r["detections_float"] > 0
    assert abs(r["detections_int8"] - r["detections_float"]) <= allowed
    assert r["detections_float"] - r["detections_shared"] <= allowed
    assert r["match_tolerance_s"] == MATCH_TOLERANCE_S
    assert r["score_max_abs_diff"] < 0.5  # a broken quantisation (wrong ranges) scrambles scores far more
    # FRR and FA/h of both on the same evaluation, and the decision they lead to.
    for key in ("float", "int8_same_threshold", "float_same_fa", "int8_same_fa"):
        assert 0.0 <= r[key]["frr"] <= 1.0 and r[key]["fa_per_hour"] >= 0
    assert r["int8_same_fa"]["false_accepts"] <= r["float"]["false_accepts"]
    assert r["int8_default"] == (r["frr_loss_at_same_fa"] < 0.01)


def test_int8_file_is_a_complete_quantised_model(quantised):
    import onnx

    model, out, r = quantised
    assert out == int8_path(model) and out.name == "model.int8.onnx"
    f, q = KwsModel(model).info, KwsModel(out).info
    assert (q.labels, q.feature_config, q.window_frames, q.hop_frames, q.threshold) == (f.labels, f.feature_config, f.window_frames, f.hop_frames, f.threshold)
    assert q.metadata["quantization"] == "int8"
    assert q.metadata["int8_eval"]["detections_shared"] == r["detections_shared"]
    assert f.metadata["int8_model"] == out.name
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [i for i in onnx.load(str(out)).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weights in the quantised graph"
    # Both cards carry the comparison, and the float card names the file to deploy.
    for card in (model.with_suffix(".md"), out.with_suffix(".md")):
        text = card.read_text()
        assert "## int8 against float" in text and "deploy `" in text
    assert "detections shared" in int8_summary(model)


def test_bad_input(quantised, tmp_path):
    import onnx

    _, out, _ = quantised
    with pytest.raises(ModelError, match="already quantised"):
        quantize_model(out)
    # A model whose training dataset is gone, without clips given: a clear error, nothing written.
    proto = onnx.load(str(quantised[0]))
    for p in proto.metadata_props:
        if p.key == "dataset":
            p.value = '"/nonexistent/dataset"'
    lonely = tmp_path / "lonely.onnx"
    onnx.save(proto, str(lonely))
    with pytest.raises(ModelError, match="--check-audio"):
        quantize_model(lonely)
    assert not int8_path(lonely).exists()


def test_export_int8_option(request, tmp_path):
    """``export_model(..., int8=True)`` (what ``kws export --int8`` calls) writes both files."""
    try:
        run = request.getfixturevalue("tiny_run")
    except pytest.FixtureLookupError:
        pytest.skip("no training-run fixture in this conftest")
    from deploy.export import export_model

    path = export_model(run.checkpoint, tmp_path / "m.onnx", threshold=0.5, int8=True)
    assert path == tmp_path / "m.onnx"
    assert KwsModel(tmp_path / "m.int8.onnx").info.metadata["quantization"] == "int8"
    assert "int8_eval" in KwsModel(path).info.metadata
