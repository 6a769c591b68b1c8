"""The streaming DS-CNN: hop by hop with carried state, it scores what the same network scores on the whole window.

Correctness only (equal scores, equal detections, clear refusals); what it
costs is for ``kws bench`` to measure.
"""

import copy

import numpy as np
import pytest
import torch

from deploy.detector import Detector
from deploy.export import export_model
from deploy.modelfile import KwsModel, StreamRun
from deploy.multi import MultiDetector
from features.errors import ConfigError, ModelError
from train.config import TrainConfig
from train.models import DSCNNStream, build_model

from conftest import REPO

N_MFCC = 20


def settled(model: torch.nn.Module) -> torch.nn.Module:
    """Real batch-norm statistics for an untrained model (one pass over MFCC-sized noise), then eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 98, N_MFCC) * 30)
    return model.eval()


def stream_config_model() -> torch.nn.Module:
    cfg = TrainConfig.from_file(REPO / "configs" / "dscnn-stream.json")
    return build_model(cfg.model, n_mfcc=N_MFCC, n_labels=3, **cfg.model_args)


@pytest.mark.parametrize("window,hop", [(97, 8), (98, 8), (97, 4), (98, 16), (61, 8)])
def test_torch_stream_equals_the_window_model(window, hop):
    """From zero state after the start padding, every hop's logits equal the window model's on the last window frames."""
    torch.manual_seed(0)
    model = settled(stream_config_model())
    stream = DSCNNStream(model, window, hop).eval()
    frames = torch.randn(1, 300, N_MFCC) * 30
    padded = torch.cat([torch.zeros(1, stream.pad_frames, N_MFCC), frames], 1)
    states = [torch.zeros(s) for s in stream.state_shapes()]
    scored = 0
    with torch.no_grad():
        for end in range(hop, padded.shape[1] + 1, hop):
            logits, *states = stream(padded[:, end - hop : end].transpose(1, 2).unsqueeze(2), *states)
            count = end - stream.pad_frames
            if count >= window:
                scored += 1
                assert torch.allclose(logits, model(frames[:, count - window : count]), atol=1e-4), count
    assert scored == (300 - window) // hop + 1


def test_geometry_of_the_stream_config():
    """configs/dscnn-stream.json: a 61-frame receptive field, 19 positions over the 1 s window; what cannot stream is refused."""
    model = stream_config_model()
    assert model.receptive_field() == 61 and model.positions(97) == 19
    assert model(torch.zeros(2, 97, N_MFCC)).shape == (2, 3)
    with pytest.raises(ConfigError, match="receptive field"):
        model(torch.zeros(1, 60, N_MFCC))
    with pytest.raises(ConfigError, match="multiple of the stem"):
        DSCNNStream(model, 97, 7)
    with pytest.raises(ConfigError, match="shorter than the model's receptive field"):
        DSCNNStream(model, 50, 8)
    with pytest.raises(ConfigError, match="padding='valid'"):
        DSCNNStream(build_model("dscnn", n_mfcc=N_MFCC, n_labels=2), 97, 8)
    with pytest.raises(ConfigError, match="padding"):
        build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, padding="causal")
    with pytest.raises(ConfigError, match="dilations"):
        build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, n_blocks=3, dilations=[1, 2])


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Keyword takes and other speech among noise (real espeak-ng audio, not a training clip): the scores move."""
    from collect.synth import synthesize

    rng = np.random.default_rng(7)
    parts = [rng.standard_normal(5000).astype(np.float32) * 0.01]
    for voice in ["en-us+m3", "en-gb-scotland+f2", "en-029+m1"]:
        parts += [synthesize("computer", voice) * 0.3, rng.standard_normal(11000).astype(np.float32) * 0.01]
        parts += [synthesize("the weather is nice today", voice) * 0.3, np.zeros(7000, np.float32)]
    return np.concatenate(parts)


def _run(model: KwsModel, audio: np.ndarray, chunk: int):
    det = Detector(model, record_scores=True)
    found = det.process(audio, chunk_size=chunk)
    return det, found


def test_streaming_scores_and_detections_equal_the_window_path(stream_model, speech):
    streaming, window = KwsModel(stream_model), KwsModel(stream_model, stream=False)
    assert streaming.stream is not None and window.stream is None
    ds, fs = _run(streaming, speech, 1000)
    dw, fw = _run(window, speech, 1000)
    assert ds.times == dw.times
    assert ds.times[0] == pytest.approx(ds.frame_end_time(streaming.info.window_frames))  # the first score: a full window
    scores = np.stack(dw.scores)
    assert scores.std() > 0.05 and scores.max() > 0.5, "the scores should move (keywords and other speech)"
    np.testing.assert_allclose(np.stack(ds.scores), scores, atol=1e-5)
    assert len(fw) >= 1
    assert [(d.keyword, d.time_s) for d in fs] == [(d.keyword, d.time_s) for d in fw]


def test_no_score_before_a_full_window_and_reset_starts_again(stream_model, speech):
    model = KwsModel(stream_model)
    info = model.info
    samples = info.feature_config.samples_for_frames(info.window_frames)
    det = Detector(model, record_scores=True)
    det.update(speech[: samples - 1])
    assert det.scores == []
    det.update(speech[samples - 1 : samples])
    assert len(det.scores) == 1
    first = det.scores[0].copy()
    det.update(speech[samples : samples + 5000])
    det.reset()  # a new stream: the state starts from zero again
    det.update(speech[:samples])
    np.testing.assert_allclose(det.scores[0], first, atol=1e-6)


@pytest.mark.parametrize("stacked", [True, False])  # one stacked graph, or (when they cannot stack) the graphs side by side
def test_several_streaming_models_score_as_separate_detectors(stacked, stream_model, keyword_model, speech, monkeypatch):
    from deploy import multi as multi_module

    if not stacked:
        monkeypatch.setattr(multi_module._Group, "_stack", lambda self, detectors: False)
    paths = [stream_model, stream_model, keyword_model]
    multi = MultiDetector(paths, record_scores=True)
    streaming_groups = [g for g in multi._groups if isinstance(getattr(g, "run", None), StreamRun)]
    assert len(streaming_groups) == 1 and len(streaming_groups[0].detectors) == 2  # one session for both streaming models
    assert streaming_groups[0].stacked is stacked
    chunks = [777, 1, 4000, 160]
    found, i, k = [], 0, 0
    multi.reset()
    while i < len(speech):
        found += multi.update(speech[i : i + chunks[k % len(chunks)]])
        i += chunks[k % len(chunks)]
        k += 1
    expected = []
    for det, path in zip(multi.detectors, paths):
        alone, alone_found = _run(KwsModel(path), speech, 1600)
        assert det.times == alone.times
        # float32 sums in another order (N models' channels in one convolution): differences of ~1e-6 occur
        np.testing.assert_allclose(np.stack(det.scores), np.stack(alone.scores), atol=1e-5)
        expected += alone_found
    key = lambda d: (d.time_s, d.keyword)  # noqa: E731
    assert sorted((d.time_s, d.keyword) for d in found) == sorted(key(d) for d in expected)


def test_export_refuses_a_streaming_graph_that_disagrees(stream_run, tmp_path, monkeypatch):
    """A streaming graph whose scores leave the window graph's (here: a tampered head) fails the export; nothing is written."""
    import deploy.export as export

    original = export.stream_graph

    def tampered(model, window_frames, hop_frames):
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.head.bias[1] += 0.5
        return original(model, window_frames, hop_frames)

    monkeypatch.setattr(export, "stream_graph", tampered)
    out = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="streaming and window scores differ"):
        export_model(stream_run.checkpoint, out, threshold=0.5)
    assert list(tmp_path.iterdir()) == []


def test_int8_is_refused_for_a_streaming_model(stream_run, stream_model, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="int8"):
        export_model(stream_run.checkpoint, out, threshold=0.5, int8=True)
    assert not out.exists()
    from deploy.quantize import quantize_model

    with pytest.raises(ModelError, match="streaming model"):
        quantize_model(stream_model, tmp_path / "q.onnx")


def test_a_damaged_streaming_graph_is_a_clear_error(stream_model, tmp_path):
    import onnx

    proto = onnx.load(str(stream_model))
    for p in proto.metadata_props:
        if p.key == "stream_graph":
            p.value = p.value[: len(p.value) // 2]
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="streaming graph"):
        KwsModel(tmp_path / "m.onnx")
    assert KwsModel(tmp_path / "m.onnx", stream=False).stream is None  # the window graph still opens


def test_bench_runs_on_a_streaming_model(stream_model, tmp_path):
    from deploy.bench import builtin_stream, run_bench

    stream = builtin_stream(["computer", "hey jarvis"], takes_per_phrase=2, n_sentences=2, seed=3)
    report = run_bench(stream_model, out_dir=tmp_path, min_audio_s=0, copies=(1, 2), stream=stream)
    ours = report["engines"][0]
    assert ours["streaming"] is True
    assert ours["hops"] > 0 and ours["hop_latency_ms"]["n"] > 0
    # MACs are the streaming graph's: a few new positions per hop, far fewer than re-scoring the window.
    assert 0 < ours["model_macs_per_s"] < ours["window_model_macs_per_s"] / 3
    assert [m["models"] for m in report["multi"]] == [1, 2]
    assert (tmp_path / "bench.md").is_file()


def test_stacking_refuses_graphs_of_another_structure(stream_model, keyword_model):
    from deploy.onnxgraph import GraphError, stack_stream_models

    model = KwsModel(stream_model)
    assert stack_stream_models([model.stream_graph()] * 3, model.stream.input)  # the same architecture stacks
    with pytest.raises(GraphError):
        stack_stream_models([model.stream_graph(), KwsModel(keyword_model).runtime_graph()], model.stream.input)
