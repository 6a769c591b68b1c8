"""The model registry and TC-ResNet: shapes, cost against the DS-CNN, ONNX parity, and the whole pipeline on it.

The cost checks are the contract of ``configs/tcresnet.json``: it is meant to
be compared with ``configs/default.json`` at similar cost, so its parameters
and its multiply-accumulates per window (counted from the exported graph, the
figure ``kws bench`` reports) are held to stated ranges around the DS-CNN's.
"""

import json

import numpy as np
import pytest
import torch

from deploy.export import AGREEMENT_TOLERANCE, _WithSoftmax, _write_onnx, check_windows, export_model
from deploy.macs import count_macs
from deploy.modelfile import KwsModel
from features.errors import ConfigError
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.models import MODELS, POOLS, TCResNet, build_model, count_parameters

from conftest import REPO

FRAMES, N_MFCC = 97, 20  # the default 1 s window of 20 MFCC (25 ms frames every 10 ms)
# configs/tcresnet.json against configs/default.json: parameters within these bounds, MACs per window within this ratio.
TCRESNET_PARAMS = (40_000, 55_000)
MAC_RATIO = (0.75, 1.05)


def config_args(name: str) -> tuple[str, dict]:
    cfg = TrainConfig.from_file(REPO / "configs" / f"{name}.json")
    return cfg.model, cfg.model_args


def graph_macs(model: torch.nn.Module, path) -> int:
    """Export ``model`` (with its softmax, as ``kws export`` does) and count one window's MACs from the graph."""
    _write_onnx(_WithSoftmax(model).eval(), FRAMES, N_MFCC, {}, path)
    count = count_macs(path, {"mfcc": [1, FRAMES, N_MFCC]})
    assert count.unresolved == []
    return count.total


def settle_batch_norm(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Give an untrained model real batch-norm statistics (one pass in train mode, cumulative average), then eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_registry_and_config():
    assert {"dscnn", "tcresnet"} <= set(MODELS)
    name, args = config_args("tcresnet")
    assert name == "tcresnet" and args["pool"] in POOLS
    default = json.loads((REPO / "configs" / "default.json").read_text())
    tcres = json.loads((REPO / "configs" / "tcresnet.json").read_text())
    # The same training recipe; only the model differs.
    assert {k: v for k, v in default.items() if k not in ("model", "model_args")} == \
           {k: v for k, v in tcres.items() if k not in ("model", "model_args")}
    with pytest.raises(ConfigError, match="not an argument of 'tcresnet'"):
        TrainConfig.from_dict({**tcres, "model_args": {"n_blocks": 4}})


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("frames", [FRAMES, 49, 150])
@pytest.mark.parametrize("name", ["dscnn", "tcresnet"])
def test_shapes(name, pool, frames):
    model = build_model(name, n_mfcc=N_MFCC, n_labels=3, channels=[8, 12, 16] if name == "tcresnet" else 16, pool=pool).eval()
    out = model(torch.randn(5, frames, N_MFCC))
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    assert model.head.out_features == 3  # the training loop sizes empty predictions from it


def test_tcresnet_is_tc_resnet8_by_default():
    """Default widths (16, 24, 32, 48): the paper's TC-ResNet8 at width 1, three strided residual blocks."""
    model = TCResNet(n_mfcc=N_MFCC, n_labels=2)
    assert len(model.blocks) == 3
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.out_channels for c in convs] == [16, 24, 24, 24, 32, 32, 32, 48, 48, 48]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 2, 1, 2, 2, 1, 2]
    # Conv weights (first 3-frame conv, per block 2 x kernel-9 convs + 1x1 shortcut) and batch norms and the head.
    convs_params = 20 * 16 * 3 + sum(a * b * 9 + b * b * 9 + a * b for a, b in [(16, 24), (24, 32), (32, 48)])
    norms = 2 * (20 + 16 + 3 * 24 + 3 * 32 + 3 * 48)
    assert count_parameters(model) == convs_params + norms + 48 * 2 + 2


def test_bad_arguments_are_refused():
    for bad in ({"channels": [16]}, {"channels": [16, 0]}, {"kernel": 8}, {"first_kernel": 0}, {"pool": "mean"}):
        with pytest.raises(ConfigError):
            build_model("tcresnet", n_mfcc=N_MFCC, n_labels=2, **bad)
    with pytest.raises(ConfigError, match="pool"):
        build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, pool="mean")
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("bcresnet", n_mfcc=N_MFCC, n_labels=2)


@pytest.fixture(scope="module")
def config_graphs(tmp_path_factory) -> dict:
    """The untrained models of configs/default.json and configs/tcresnet.json, exported; name -> (model, one window's MACs)."""
    out, d = {}, tmp_path_factory.mktemp("graphs")
    for cfg in ("default", "tcresnet"):
        name, args = config_args(cfg)
        model = build_model(name, n_mfcc=N_MFCC, n_labels=2, **args).eval()
        out[cfg] = (model, graph_macs(model, d / f"{cfg}.onnx"))
    return out


def test_config_cost_is_similar_to_the_dscnn(config_graphs):
    """configs/tcresnet.json is within the stated parameter range and MAC ratio of configs/default.json's DS-CNN."""
    assert count_parameters(config_graphs["default"][0]) == 25_898
    n = count_parameters(config_graphs["tcresnet"][0])
    assert TCRESNET_PARAMS[0] <= n <= TCRESNET_PARAMS[1], n
    ratio = config_graphs["tcresnet"][1] / config_graphs["default"][1]
    assert MAC_RATIO[0] <= ratio <= MAC_RATIO[1], ratio


def test_macs_counted_from_the_graph_match_the_shapes(config_graphs):
    """TC-ResNet's MACs by hand (every conv: output length x out x in x kernel) equal the ONNX graph count."""
    model, counted = config_graphs["tcresnet"]
    channels, kernel, labels = [16, 20, 28, 40], 9, 2
    assert config_args("tcresnet")[1]["channels"] == channels and model.head.out_features == labels
    t = FRAMES
    expected = t * channels[0] * N_MFCC * 3
    for a, b in zip(channels[:-1], channels[1:]):
        t = (t + 2 * (kernel // 2) - kernel) // 2 + 1  # strided conv, same padding
        expected += t * b * a * kernel + t * b * b * kernel + t * b * a  # two convs and the 1x1 shortcut
    expected += channels[-1] * labels
    assert counted == expected


def test_dscnn_default_is_the_original_max_pooling():
    """Checkpoints from before ``pool`` existed rebuild with feature max pooling, as they were trained."""
    torch.manual_seed(0)
    model = build_model("dscnn", n_mfcc=N_MFCC, n_labels=2).eval()
    assert model.pool == "max"
    x = torch.randn(3, FRAMES, N_MFCC)
    with torch.no_grad():
        features = model.blocks(model.stem(model.input_norm(x.transpose(1, 2))))
        assert torch.equal(model(x), model.head(features.amax(dim=2)))


@pytest.mark.parametrize("name,positions", [("dscnn", 49), ("tcresnet", 13)])  # 97 frames after one / three stride-2 layers
def test_logit_max_takes_the_most_keyword_like_position(name, positions):
    """With one keyword, the window's keyword probability is the largest of the time positions' probabilities."""
    torch.manual_seed(0)
    model = settle_batch_norm(build_model(name, n_mfcc=N_MFCC, n_labels=2, pool="logit_max"), torch.randn(16, FRAMES, N_MFCC))
    x = torch.randn(4, FRAMES, N_MFCC)
    with torch.no_grad():
        per_position = torch.softmax(model.head(model.blocks(model.stem(model.input_norm(x.transpose(1, 2)))).transpose(1, 2)), -1)
        window = torch.softmax(model(x), -1)
    assert per_position.shape[1] == positions
    assert torch.allclose(window[:, 1], per_position[:, :, 1].amax(1), atol=1e-6)
    assert not torch.allclose(window[:, 1], per_position[:, :, 1].mean(1), atol=1e-3)  # it is not averaging


@pytest.mark.parametrize("name", ["dscnn", "tcresnet"])
def test_cmn_removes_a_fixed_channel(name):
    """With ``cmn``, a constant added to every frame's MFCC (what a fixed filter or gain does) leaves the scores unchanged; without it, it does not."""
    torch.manual_seed(0)
    x = 30 * torch.randn(4, FRAMES, N_MFCC)
    channel = 40 * torch.randn(1, 1, N_MFCC)
    for cmn in (True, False):
        model = settle_batch_norm(build_model(name, n_mfcc=N_MFCC, n_labels=2, cmn=cmn), 30 * torch.randn(16, FRAMES, N_MFCC))
        with torch.no_grad():
            a, b = torch.softmax(model(x), -1), torch.softmax(model(x + channel), -1)
        assert torch.allclose(a, b, atol=1e-5) == cmn, (cmn, (a - b).abs().max())
    for bad in ({"cmn": 1}, {"cmn": "yes"}, {"cmn": True, "padding": "valid"}):
        with pytest.raises(ConfigError, match="cmn"):
            build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, **bad)


def test_denoise_subtracts_the_windows_steady_noise():
    """A steady noise in every mel band ends 10 dB lower (the floor); a burst 30 dB above it keeps its level; the MFCC stays the features' DCT."""
    from features.mfcc import dct_matrix
    from train.models import NOISE_FLOOR, WindowNoiseSubtraction, model_args_for

    basis = torch.from_numpy(dct_matrix(N_MFCC, 40)).float()  # (n_mfcc, n_mels)
    log_mel = torch.zeros(1, FRAMES, 40)  # 0 dB of noise in every band and frame
    log_mel[:, 30:60] = 30.0  # a burst, 30 dB above it, in 30 of the frames
    out = WindowNoiseSubtraction(N_MFCC, 40)(log_mel @ basis.T) @ basis  # back to mel bands, dB
    assert torch.allclose(out[:, :30], torch.full_like(out[:, :30], 10 * np.log10(NOISE_FLOOR)), atol=1e-3)
    assert torch.allclose(out[:, 30:60], torch.full_like(out[:, 30:60], 10 * np.log10(1000 - 1)), atol=1e-3)
    model = build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, denoise=True, n_mels=40).eval()
    plain = build_model("dscnn", n_mfcc=N_MFCC, n_labels=2).eval()
    assert model.state_dict().keys() == plain.state_dict().keys()  # no weights of its own: checkpoints keep their layout
    assert model_args_for({"denoise": True, "n_mels": 64}, N_MFCC, 40, 2) == {"n_mfcc": N_MFCC, "n_labels": 2, "denoise": True, "n_mels": 40}
    assert model_args_for({"cmn": True}, N_MFCC, 40, 2) == {"n_mfcc": N_MFCC, "n_labels": 2, "cmn": True}
    for bad, match in (({"denoise": 1, "n_mels": 40}, "denoise must be true or false"),
                       ({"denoise": True, "n_mels": 40, "padding": "valid"}, "cannot use denoise"),
                       ({"denoise": True}, "denoise needs 0 < n_mfcc <= n_mels")):
        with pytest.raises(ConfigError, match=match):
            build_model("dscnn", n_mfcc=N_MFCC, n_labels=2, **bad)


def test_denoise_in_a_train_config_gets_the_features_mel_bands():
    """``model_args: {"denoise": true}`` passes the config check: the feature config supplies n_mels."""
    cfg = TrainConfig.from_dict({"model": "dscnn", "model_args": {"denoise": True, "channels": 8, "n_blocks": 1}})
    assert cfg.model_args == {"denoise": True, "channels": 8, "n_blocks": 1}


@pytest.mark.parametrize("pool,cmn,denoise", [("max", False, False), ("logit_max", False, False), ("avg", True, False), ("max", False, True)])
def test_checkpoint_and_onnx_parity(pool, cmn, denoise, tiny_dataset, tmp_path):
    """The other pooling variants, ``cmn`` and ``denoise`` survive the checkpoint round trip and ONNX export within the export tolerance on real MFCC windows."""
    import onnxruntime as ort

    from features.config import FeatureConfig

    cfg = FeatureConfig()
    window_samples = cfg.samples_for_frames(FRAMES)
    windows = torch.from_numpy(check_windows({"feature_config": cfg.to_dict(), "dataset": str(tiny_dataset),
                                              "window_samples": window_samples}, None, limit=32))
    assert windows.shape[1:] == (FRAMES, N_MFCC)
    torch.manual_seed(1)
    args = {"n_mfcc": N_MFCC, "n_labels": 2, "channels": [16, 20, 28, 40], "pool": pool, "cmn": cmn,
            **({"denoise": True, "n_mels": cfg.n_mels} if denoise else {})}
    model = settle_batch_norm(build_model("tcresnet", **args), windows)
    save_checkpoint(tmp_path / "best.pt", model, model_name="tcresnet", model_args=args, labels=["negative", "computer"],
                    feature_config=cfg, window_samples=window_samples, window_frames=FRAMES, train_config={}, data_digest="0" * 64,
                    dataset=tiny_dataset, seed=1, epoch=1, val_metrics={}, splits={})
    loaded, ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["model_args"]["channels"] == [16, 20, 28, 40]
    with torch.no_grad():
        expected = torch.softmax(model(windows), -1).numpy()
        assert np.array_equal(torch.softmax(loaded(windows), -1).numpy(), expected)
    assert expected[:, 1].std() > 1e-3  # the check compares varied scores, not saturated ones
    _write_onnx(_WithSoftmax(loaded).eval(), FRAMES, N_MFCC, {}, tmp_path / "m.onnx")
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"mfcc": windows.numpy()})[0]
    assert np.max(np.abs(got - expected)) <= AGREEMENT_TOLERANCE


# ----------------------------------------------------------------------------- the whole pipeline on TC-ResNet


@pytest.fixture(scope="module")
def tcresnet_run(tiny_dataset, tmp_path_factory):
    """configs/tiny.json with the model of configs/tcresnet.json, four epochs (enough to show it learns), on the tiny dataset."""
    from train.loop import train

    tiny = json.loads((REPO / "configs" / "tiny.json").read_text())
    name, args = config_args("tcresnet")
    cfg = TrainConfig.from_dict({**tiny, "model": name, "model_args": args, "epochs": 4})
    return train(tiny_dataset, cfg, tmp_path_factory.mktemp("tcresnet") / "train", progress=False)


@pytest.fixture(scope="module")
def tcresnet_model(tcresnet_run):
    """Exported float and int8 (threshold fixed: the tiny validation set is too small to calibrate on)."""
    return export_model(tcresnet_run.checkpoint, tcresnet_run.run_dir.parent / "model.onnx", threshold=0.5, int8=True)


def test_pipeline_train_and_export(tcresnet_run, tcresnet_model):
    import onnx

    from deploy.quantize import int8_path

    model, ckpt = load_checkpoint(tcresnet_run.checkpoint)
    assert ckpt["model_name"] == "tcresnet" and ckpt["model_args"]["channels"] == [16, 20, 28, 40]
    history = tcresnet_run.history
    assert len(history) == 4
    # The network trains, not just runs: the training loss falls below the first epoch's. (Validation loss on the
    # tiny validation set can rise for an epoch or two while the one-cycle learning rate peaks.)
    assert min(h["train_loss"] for h in history[1:]) < history[0]["train_loss"]
    windows = check_windows(ckpt, None, limit=64)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(windows)), dim=-1).numpy()
    assert np.max(np.abs(KwsModel(tcresnet_model).predict(windows) - expected)) <= AGREEMENT_TOLERANCE
    info = KwsModel(tcresnet_model).info
    assert info.metadata["model_name"] == "tcresnet"
    assert info.metadata["n_parameters"] == count_parameters(model)
    q = int8_path(tcresnet_model)
    assert KwsModel(q).info.metadata["quantization"] == "int8"
    assert any(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(q)).graph.initializer)
    r = info.metadata["int8_eval"]
    assert r["keywords"] > 0 and 0.0 <= r["int8_same_threshold"]["frr"] <= 1.0
    assert r["score_max_abs_diff"] < 0.5  # broken quantisation ranges scramble the scores far more


def test_pipeline_detect_eval_bench(tcresnet_model, tiny_dataset, tmp_path):
    from typer.testing import CliRunner

    import deploy.cli.bench  # noqa: F401  (registers the commands)
    import deploy.cli.detect  # noqa: F401
    import deploy.cli.evaluate  # noqa: F401
    from deploy.bench import builtin_stream, save_stream
    from deploy.cli.app import app
    from deploy.quantize import int8_path

    stream = save_stream(builtin_stream(["computer"], takes_per_phrase=2, n_sentences=1, seed=3), tmp_path / "s")
    runner = CliRunner()
    for model in (tcresnet_model, int8_path(tcresnet_model)):
        r = runner.invoke(app, ["detect", str(model), str(stream), "--scores", str(tmp_path / "scores.csv")])
        assert r.exit_code == 0, r.output
        rows = np.loadtxt(tmp_path / "scores.csv", delimiter=",", skiprows=1)
        assert len(rows) > 10 and np.all((rows[:, 1] >= 0) & (rows[:, 1] <= 1)) and rows[:, 1].std() > 0
    r = runner.invoke(app, ["eval", str(tcresnet_model), str(tiny_dataset), "--out", str(tmp_path / "e"),
                            "--background-minutes", "0.3", "--no-progress"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["clips"]["n"] > 0 and 0.0 <= report["clips"]["f1"] <= 1.0
    assert 0.0 <= report["stream"]["frr"] <= 1.0 and report["stream"]["n_keywords"] > 0
    r = runner.invoke(app, ["bench", str(tcresnet_model), str(stream), "--out", str(tmp_path / "b"), "--min-audio", "0", "--copies", "1"])
    assert r.exit_code == 0, r.output
    engine = json.loads((tmp_path / "b" / "bench.json").read_text())["engines"][0]
    window_macs = count_macs(tcresnet_model, {"mfcc": [1, FRAMES, N_MFCC]}).total
    assert engine["parameters"] == KwsModel(tcresnet_model).info.metadata["n_parameters"]
    assert engine["model_macs_per_s"] == pytest.approx(window_macs * 12.5)  # one window every 80 ms hop
    assert engine["macs_per_s"] > engine["model_macs_per_s"]  # plus the MFCC front end


# ----------------------------------------------------------------------------- an ensemble of the two architectures


def test_ensemble_of_the_two_architectures(keyword_model, tcresnet_model, stream_model, tiny_dataset, tmp_path):
    """``kws ensemble`` on the tiny DS-CNN and TC-ResNet: one file whose scores are the members' mean, calibrated, run by the detector."""
    import shutil

    from typer.testing import CliRunner

    import deploy.cli.export  # noqa: F401  (registers the command)
    from deploy.cli.app import app
    from deploy.detector import Detector
    from deploy.ensemble import make_ensemble
    from deploy.export import update_metadata
    from features.audio import load_audio
    from features.errors import ModelError

    out = tmp_path / "ens.onnx"
    r = CliRunner().invoke(app, ["ensemble", str(keyword_model), str(tcresnet_model), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "threshold" in r.output and "FRR" in r.output
    ens, members = KwsModel(out), [KwsModel(keyword_model), KwsModel(tcresnet_model)]
    recorded = ens.info.metadata["ensemble"]
    assert [m["model"] for m in recorded] == ["dscnn", "tcresnet"] and all(len(m["sha256"]) == 64 for m in recorded)
    assert ens.info.metadata["n_parameters"] == sum(m.info.metadata["n_parameters"] for m in members)
    assert ens.info.metadata["calibration"]["split"] == "val" and ens.info.threshold == ens.info.metadata["calibration"]["threshold"]
    windows = check_windows({"feature_config": ens.info.feature_config.to_dict(), "dataset": str(tiny_dataset),
                             "window_samples": ens.info.feature_config.samples_for_frames(ens.info.window_frames)}, None, limit=32)
    member_scores = [m.predict(windows) for m in members]
    assert np.max(np.abs(ens.predict(windows) - (member_scores[0] + member_scores[1]) / 2)) < 1e-6
    assert np.abs(member_scores[0] - member_scores[1]).max() > 0.05  # the members differ, so the mean is a real test
    # The detector runs it hop by hop like any model: its recorded scores are the members' mean there too.
    audio = np.concatenate([np.zeros(8000, np.float32), *[load_audio(tiny_dataset / p) for p in _keyword_paths(tiny_dataset)[:3]]])
    runs = []
    for model in (ens, *members):
        d = Detector(model, record_scores=True)
        d.process(audio)
        runs.append(np.stack(d.scores))
    assert np.max(np.abs(runs[0] - (runs[1] + runs[2]) / 2)) < 1e-5
    # Members that do not fit together are refused, naming what differs.
    odd = tmp_path / "odd.onnx"
    shutil.copy(keyword_model, odd)
    update_metadata(odd, {"window_frames": "50"})
    with pytest.raises(ModelError, match="window_frames"):
        make_ensemble([keyword_model, odd], tmp_path / "x.onnx", calibrate=False)
    with pytest.raises(ModelError, match="at least two"):
        make_ensemble([keyword_model], tmp_path / "x.onnx", calibrate=False)
    with pytest.raises(ModelError, match="streaming model"):
        make_ensemble([keyword_model, stream_model], tmp_path / "x.onnx", calibrate=False)
    homeless = tmp_path / "homeless.onnx"  # a model whose training dataset is not on this machine: nothing is written
    shutil.copy(keyword_model, homeless)
    update_metadata(homeless, {"dataset": json.dumps(str(tmp_path / "gone"))})
    with pytest.raises(ModelError, match="training dataset"):
        make_ensemble([homeless, tcresnet_model], tmp_path / "y.onnx")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def _keyword_paths(dataset) -> list[str]:
    from collect.manifest import read_dataset

    rows, _ = read_dataset(dataset)
    return [r.path for r in rows if r.label == "computer"]
