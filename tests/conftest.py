"""Shared fixtures: a small real dataset (espeak-ng speech, generated noise) and a model trained on it.

Both are made once per test session in a temporary folder; no test needs
anything outside the repository (``../shared/data`` is for benchmarks only).
"""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_ACCENTS = ["en-US", "en-GB", "en-GB-scotland", "en-029", "en-x-es", "en-x-de"]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Six accents, four voices each: "computer" takes, confusables, sentences and noise (about 250 clips)."""
    from collect.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("tiny_dataset")
    synthesize_dataset(root, "computer", accents=TINY_ACCENTS, n_voices_per_accent=4, takes_per_voice=6,
                       n_confusables=4, n_sentences=2, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A training run of configs/tiny.json on ``tiny_dataset`` (its RunResult)."""
    from train.config import TrainConfig
    from train.loop import train

    out = tmp_path_factory.mktemp("tiny_run")
    return train(tiny_dataset, TrainConfig.from_file(REPO / "configs" / "tiny.json"), out / "train", progress=False)


@pytest.fixture(scope="session")
def keyword_model(tiny_run) -> Path:
    """The tiny run exported to ONNX (checked against PyTorch at export), at a fixed threshold of 0.8.

    Fixed, not calibrated: the tiny model's validation set is too small to
    calibrate on reliably, and the microphone and detection tests need a
    known operating point. Its keyword scores sit near 1 for the length of
    the word while other speech stays below about 0.6, hence 0.8.
    Calibration has tests of its own.
    """
    from deploy.export import export_model

    return export_model(tiny_run.checkpoint, Path(tiny_run.checkpoint).parent.parent / "model.onnx", threshold=0.8)


# The streaming DS-CNN at the tiny scale: configs/tiny.json's widths with configs/dscnn-stream.json's valid padding
# (kernel 5; dilations 1, 2, 2: a receptive field of 45 frames, 27 positions over the 97-frame window).
TINY_STREAM_ARGS = {"channels": 32, "n_blocks": 3, "kernel": 5, "dilations": [1, 2, 2], "padding": "valid", "dropout": 0.2}


@pytest.fixture(scope="session")
def stream_run(tiny_dataset, tmp_path_factory):
    """configs/tiny.json with the streaming DS-CNN (``TINY_STREAM_ARGS``) on ``tiny_dataset`` (its RunResult)."""
    import json

    from train.config import TrainConfig
    from train.loop import train

    tiny = json.loads((REPO / "configs" / "tiny.json").read_text())
    cfg = TrainConfig.from_dict({**tiny, "model_args": TINY_STREAM_ARGS})
    return train(tiny_dataset, cfg, tmp_path_factory.mktemp("stream_run") / "train", progress=False)


@pytest.fixture(scope="session")
def pcen_model(tiny_dataset, tmp_path_factory) -> Path:
    """configs/tiny.json with PCEN instead of the log (``features.pcen_s`` 0.4 s), trained and exported at 0.5."""
    import json

    from deploy.export import export_model
    from train.config import TrainConfig
    from train.loop import train

    tiny = json.loads((REPO / "configs" / "tiny.json").read_text())
    run = train(tiny_dataset, TrainConfig.from_dict({**tiny, "features": {"pcen_s": 0.4}}),
                tmp_path_factory.mktemp("pcen_run") / "train", progress=False)
    return export_model(run.checkpoint, Path(run.checkpoint).parent.parent / "model.onnx", threshold=0.5)


@pytest.fixture(scope="session")
def stream_model(stream_run) -> Path:
    """The streaming run exported (window graph, streaming graph, both checks) at a fixed threshold of 0.5."""
    from deploy.export import export_model

    return export_model(stream_run.checkpoint, Path(stream_run.checkpoint).parent.parent / "model.onnx", threshold=0.5)
