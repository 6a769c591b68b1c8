"""Several models sharing one MFCC front end score exactly as separate detectors do."""

from pathlib import Path

import numpy as np
import pytest

from deploy.detector import Detector
from deploy.modelfile import KwsModel
from deploy.multi import MultiDetector
from features.errors import ModelError


def _variant(src: Path, dst: Path, **meta: str) -> Path:
    """A copy of a model with some metadata changed (another hop, threshold or feature config)."""
    import onnx

    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key in meta:
            p.value = meta[p.key]
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def stream(keyword_model) -> np.ndarray:
    """Keyword takes of the training voices among noise: the scores move, so equality means something."""
    from collect.synth import synthesize

    rng = np.random.default_rng(5)
    parts = [rng.standard_normal(8000).astype(np.float32) * 0.01]
    for voice in ["en-us+m3", "en+f2"]:
        parts += [synthesize("computer", voice) * 0.3, rng.standard_normal(12000).astype(np.float32) * 0.01]
        parts += [synthesize("the weather is nice today", voice) * 0.3, np.zeros(9000, np.float32)]
    return np.concatenate(parts)


def _scores(det, audio: np.ndarray, chunks: list[int]) -> None:
    det.reset()
    i, k = 0, 0
    while i < len(audio):
        n = chunks[k % len(chunks)]
        det.update(audio[i : i + n])
        i += n
        k += 1


def test_shared_features_give_identical_scores(keyword_model, stream, tmp_path):
    other = _variant(keyword_model, tmp_path / "other.onnx", hop_frames="5", threshold="0.3", smoothing="1")
    models = [KwsModel(keyword_model), KwsModel(other)]
    multi = MultiDetector(models, record_scores=True)
    chunks = [1600, 1, 333, 4096, 160, 1024]  # irregular, as a microphone may deliver
    _scores(multi, stream, chunks)
    for model, shared in zip(models, multi.detectors):
        alone = Detector(model, record_scores=True)
        _scores(alone, stream, chunks)  # the same chunks: the same frames, bit for bit
        assert len(alone.scores) > 20
        assert shared.times == alone.times
        assert np.array_equal(np.stack(shared.scores), np.stack(alone.scores))
        # Another chunking batches the MFCC differently: equal up to float rounding only.
        other_chunks = Detector(model, record_scores=True)
        _scores(other_chunks, stream, [1600])
        assert other_chunks.times == alone.times
        assert np.allclose(np.stack(other_chunks.scores), np.stack(alone.scores), atol=1e-5)
    # The two models really do score at different hops, from the same frames (so in two groups).
    assert len(multi.detectors[1].times) > len(multi.detectors[0].times)
    assert len(multi._groups) == 2


def test_detections_equal_separate_detectors(keyword_model, stream, tmp_path):
    other = _variant(keyword_model, tmp_path / "low.onnx", threshold="0.05")
    multi = MultiDetector([str(keyword_model), str(other)])
    assert [len(g.detectors) for g in multi._groups] == [2]  # same window and hop: one merged graph, one call per hop
    got = multi.process(stream, chunk_size=1024)
    want = sorted(Detector(KwsModel(keyword_model)).process(stream, 1024) + Detector(KwsModel(other)).process(stream, 1024), key=lambda d: d.time_s)
    assert [(d.keyword, d.time_s, d.score) for d in got] == [(d.keyword, d.time_s, d.score) for d in want]
    assert len(got) >= 1
    assert multi.keywords == ("computer", "computer")


def test_refuses_models_with_other_features(keyword_model, tmp_path):
    import json

    cfg = json.loads(KwsModel(keyword_model).session.get_modelmeta().custom_metadata_map["feature_config"])
    cfg["n_mels"] = 32
    other = _variant(keyword_model, tmp_path / "mels.onnx", feature_config=json.dumps(cfg))
    with pytest.raises(ModelError, match="share one feature config"):
        MultiDetector([keyword_model, other])
    with pytest.raises(ModelError, match="at least one model"):
        MultiDetector([])
