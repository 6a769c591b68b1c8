"""Training: a real (tiny) run on espeak-ng speech writes a complete run folder and an exportable model."""

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from collect.manifest import NEGATIVE, NOISE, data_digest, load_rows
from features.errors import ConfigError, ManifestError
from rows import clip_row
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.dataset import Clip, babble_sources, window_geometry
from train.loop import DomainAdversary, GroupWeights, train, weight_average

REPO = Path(__file__).resolve().parent.parent
ACCENTS = ["en-US", "en-GB", "en-GB-scotland", "en-x-es", "en-x-de"]
TINY = REPO / "configs" / "tiny.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Five accents, three voices each: 150 clips of keywords, confusables, sentences and noise."""
    from collect.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("train_ds")
    synthesize_dataset(root, "computer", accents=ACCENTS, n_voices_per_accent=3, takes_per_voice=4, n_confusables=3,
                       n_sentences=2, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    return train(dataset, TrainConfig.from_file(TINY), tmp_path_factory.mktemp("run") / "train", progress=False)


def quick(**changes) -> TrainConfig:
    """The tiny config cut to a few seconds: for behaviour, not quality."""
    return TrainConfig.from_file(TINY).replace(**{"epochs": 1, "windows_per_epoch": 64, **changes})


def copy_dataset(dataset: Path, dest: Path, keep=lambda row: True) -> Path:
    """A copy of the dataset whose manifest keeps only the rows ``keep`` accepts."""
    shutil.copytree(dataset, dest)
    manifest = next(dest.glob("*/manifest.jsonl"))
    lines = [line for line in manifest.read_text().splitlines() if keep(json.loads(line))]
    manifest.write_text("\n".join(lines) + "\n")
    return dest


def test_run_writes_a_complete_self_describing_folder(run, dataset):
    d = run.run_dir
    for name in ("config.json", "data.json", "metrics.jsonl", "best.pt", "curve.png", "summary.json"):
        assert (d / name).is_file(), name
    assert (d / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((d / "config.json").read_text())
    assert TrainConfig.from_dict(config["train"]) == TrainConfig.from_file(TINY)
    assert config["seed"] == 0 and config["labels"] == ["negative", "computer"]
    assert (config["window_samples"], config["window_frames"]) == window_geometry(TrainConfig().feature_config(), 1.0)

    data = json.loads((d / "data.json").read_text())
    rows = load_rows(dataset)
    assert data["digest"] == run.data_digest == data_digest(rows)
    assert data["n_clips"] == len(rows) == sum(sum(c.values()) for c in data["counts"]["by_split"].values())
    splits = {k: set(v) for k, v in data["splits"].items()}
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])
    for accent in ACCENTS:  # three speakers per accent: one in each split
        assert set(data["counts"]["by_accent"][accent]) == {"train", "val", "test"}
    assert "noise" in splits["train"]

    history = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert history == run.history and [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert run.best_epoch == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert run.val_metrics["per_accent"].keys() == set(ACCENTS)
    assert run.test_metrics["n"] > 0


def test_loss_goes_down(run):
    train_losses = [h["train_loss"] for h in run.history]
    val_losses = [h["val_loss"] for h in run.history]
    assert min(train_losses[-3:]) < 0.5 * train_losses[0]
    assert min(val_losses) < val_losses[0]
    assert run.val_metrics["accuracy"] > 0.6


def test_checkpoint_loads_exports_and_detects_a_clear_keyword(run, tmp_path):
    from collect.synth import synthesize
    from deploy.export import export_model
    from deploy.modelfile import KwsModel
    from features.audio import center_in_window
    from features.mfcc import Mfcc

    model, ckpt = load_checkpoint(run.checkpoint)
    assert ckpt["labels"] == ["negative", "computer"] and ckpt["epoch"] == run.best_epoch
    assert ckpt["data_digest"] == run.data_digest and Path(ckpt["dataset"]).is_dir()
    path = export_model(run.checkpoint, tmp_path / "model.onnx", threshold=0.5)
    kws = KwsModel(path)
    assert kws.info.labels == ("negative", "computer")

    cfg = TrainConfig.from_file(TINY).feature_config()
    clips = [synthesize("computer", "en-us"), synthesize("computer", "en"), synthesize("the weather is nice today", "en-us")]
    windows = Mfcc(cfg)(np.stack([center_in_window(c * 0.3 / np.abs(c).max(), ckpt["window_samples"]) for c in clips]))
    p = kws.predict(windows)[:, 1]
    assert p[0] > 0.5 and p[1] > 0.5, p
    assert p[2] < 0.5, p


def test_same_seed_same_run(dataset, tmp_path):
    cfg = quick(epochs=2)
    a = train(dataset, cfg, tmp_path / "a", progress=False)
    b = train(dataset, cfg, tmp_path / "b", progress=False)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    wa, wb = torch.load(a.checkpoint, weights_only=True), torch.load(b.checkpoint, weights_only=True)
    assert all(torch.equal(wa["model_state"][k], wb["model_state"][k]) for k in wa["model_state"])
    c = train(dataset, cfg.replace(seed=1), tmp_path / "c", progress=False)
    assert strip(c.history) != strip(a.history)


def test_weight_average_is_an_ema_with_warm_up_of_weights_and_batch_norm_statistics():
    assert weight_average(torch.nn.Linear(2, 1), 0.0) is None
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = weight_average(model, 0.5)
    expected_weight, expected_mean = None, None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0, 0.5]):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(10 * value)
        model[1].num_batches_tracked.fill_(n + 7)
        average.update_parameters(model)
        d = min(0.5, (1.0 + n) / (10.0 + n))  # n updates before this one
        expected_weight = value if expected_weight is None else d * expected_weight + (1 - d) * value
        expected_mean = 10 * value if expected_mean is None else d * expected_mean + (1 - d) * 10 * value
    kept = average.module
    assert torch.allclose(kept[0].weight, torch.full((2, 2), expected_weight))
    assert torch.allclose(kept[1].running_mean, torch.full((2,), expected_mean))
    assert int(kept[1].num_batches_tracked) == 11
    assert not torch.allclose(kept[0].weight, model[0].weight)


def test_ema_run_trains_the_same_steps_and_keeps_the_averaged_weights(dataset, tmp_path):
    plain = train(dataset, quick(epochs=2), tmp_path / "plain", progress=False)
    averaged = train(dataset, quick(epochs=2, ema_decay=0.99), tmp_path / "ema", progress=False)
    assert [h["train_loss"] for h in averaged.history] == [h["train_loss"] for h in plain.history]  # the average only watches
    assert [h["val_loss"] for h in averaged.history] != [h["val_loss"] for h in plain.history]  # it is what is validated
    saved = torch.load(averaged.checkpoint, weights_only=True)
    assert saved["train_config"]["ema_decay"] == 0.99
    other = torch.load(plain.checkpoint, weights_only=True)["model_state"]
    assert any(not torch.equal(saved["model_state"][k], other[k]) for k in other)


def _clip(accent: str, label: int, source: str = "espeak:test", row_label: str = "", kind: str = "") -> Clip:
    row = clip_row(path=f"{accent}-{label}.wav", label=row_label or ("computer" if label else NEGATIVE), accent=accent, source=source,
                   kind=kind)
    return Clip(row, np.zeros(10, np.float32), label, (0, 10))


def test_babble_is_made_of_speech_negatives_only():
    kinds = ["keyword", "confusable", "sentence", "noise", "mined", "real-other-wake-word", "other"]
    clips = [Clip(clip_row(path=f"{k}.wav", label="computer" if k == "keyword" else NOISE if k == "noise" else NEGATIVE, kind=k),
                  np.full(10, i + 1, np.float32), int(k == "keyword"), (0, 10)) for i, k in enumerate(kinds)]
    assert [float(a[0]) for a in babble_sources(clips)] == [3.0, 6.0, 7.0]  # sentence, recorded other word, imported speech


def test_babble_run_records_its_sources_and_trains_on_other_windows(dataset, tmp_path):
    plain = train(dataset, quick(), tmp_path / "plain", progress=False)
    babble = train(dataset, quick(augment=dataclasses.replace(quick().augment, p_babble=1.0)), tmp_path / "babble", progress=False)
    config = json.loads((babble.run_dir / "config.json").read_text())
    rows = load_rows(dataset)
    train_speakers = set(json.loads((babble.run_dir / "data.json").read_text())["splits"]["train"])
    expected = sum(r.label == NEGATIVE and r.kind == "sentence" and r.speaker in train_speakers for r in rows)
    assert config["babble_clips"] == expected > 0
    assert json.loads((plain.run_dir / "config.json").read_text())["babble_clips"] == 0
    assert babble.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_babble_without_sources_says_so(dataset, tmp_path, caplog):
    no_sentences = copy_dataset(dataset, tmp_path / "ds", keep=lambda r: r.get("kind") != "sentence")
    with caplog.at_level(logging.WARNING, logger="kws"):
        result = train(no_sentences, quick(augment=dataclasses.replace(quick().augment, p_babble=0.5)), tmp_path / "run", progress=False)
    assert "augment.p_babble is 0.5" in caplog.text and "training without babble" in caplog.text
    assert json.loads((result.run_dir / "config.json").read_text())["babble_clips"] == 0


def test_group_weights_follow_the_worst_group_and_weight_its_loss():
    clips = [_clip("en-GB", 1), _clip("en-GB", 0), _clip("en-x-es", 1), _clip("en-x-es", 0)]
    groups = GroupWeights(clips, step=0.5)
    assert groups.names == ["en-GB/keyword", "en-GB/negative", "en-x-es/keyword", "en-x-es/negative"]
    assert groups.weights() == {name: 0.25 for name in groups.names}
    # A batch of three groups (en-GB negatives absent): en-x-es keywords lose most.
    per_window = torch.tensor([0.2, 0.4, 2.0, 1.0, 0.5])
    group = groups.of_clips[[0, 0, 2, 2, 3]]
    loss = groups.loss(per_window, group)
    q = np.array([0.25 * np.exp(0.5 * 0.3), 0.25, 0.25 * np.exp(0.5 * 1.5), 0.25 * np.exp(0.5 * 0.5)])
    q /= q.sum()
    assert np.allclose(list(groups.weights().values()), q, atol=1e-6)
    present = q[[0, 2, 3]]
    assert float(loss) == pytest.approx(float(present @ np.array([0.3, 1.5, 0.5]) / present.sum()), rel=1e-5)
    assert float(loss) > float(per_window.mean())  # the worst group weighs more than its share of windows
    for _ in range(50):
        groups.loss(per_window, group)
    assert max(groups.weights(), key=groups.weights().get) == "en-x-es/keyword"
    assert groups.weights()["en-GB/negative"] < 0.01  # never seen, so never raised: the present groups outgrow it


def test_domain_adversary_reverses_its_gradient_into_the_features_of_negative_speech_only():
    clips = [_clip("en-GB", 1), _clip("en-GB", 0), _clip("en-GB", 0, source="human"), _clip("en-GB", 0, source="human:corpus"),
             _clip("en-GB", 0, source="mined:a.wav@3s:score0.4", kind="mined"), _clip("none", 0, source="generated", row_label=NOISE)]
    model = torch.nn.Module()
    model.head = torch.nn.Linear(4, 2)
    adversary = DomainAdversary(model, clips, weight=1.0)
    assert adversary.of_clips.tolist() == [-1, 0, 1, 1, -1, -1]  # keyword, synthetic, recorded x2, mined, noise
    assert adversary.summary()["training_clips"] == {"recorded": 2, "synthetic": 1}
    features = torch.randn(6, 4, requires_grad=True)
    model.train()
    model.head(features)
    loss = adversary.loss(adversary.of_clips, progress=1.0)
    loss.backward()
    # The same loss without the reversal layer, by hand: BCE on the three speech negatives, recorded weighed by 1/2.
    plain = features.detach().clone().requires_grad_(True)
    logits = adversary.head(plain[1:4]).squeeze(1)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 1.0]), pos_weight=torch.tensor(0.5))
    by_hand.backward()
    scale = 2.0 / (1.0 + np.exp(-10.0)) - 1.0
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert torch.allclose(features.grad, -scale * plain.grad, atol=1e-7)  # the features are pushed the other way
    assert not features.grad[[0, 4, 5]].any()  # keyword, mined and noise windows take no part
    predicted = (logits > 0).long().tolist()  # the head's calls on synthetic, recorded, recorded
    recalls = [predicted[0] == 0, (predicted[1] + predicted[2]) / 2]
    assert adversary.epoch_balanced_accuracy() == pytest.approx(sum(recalls) / 2, abs=1e-4)
    assert adversary.epoch_balanced_accuracy() == 0.0  # counted anew after each call: nothing seen since
    with pytest.raises(ConfigError, match="domain_adversarial needs both recorded .* it has 0 recorded and 1 synthetic"):
        DomainAdversary(model, clips[:2], weight=1.0)


def test_domain_adversarial_run_leaves_the_first_step_alone_and_reports_the_head(dataset, tmp_path):
    recorded = copy_dataset(dataset, tmp_path / "ds", keep=lambda row: True)
    manifest = next(recorded.glob("*/manifest.jsonl"))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:  # every voice's sentences "recorded", its confusables synthetic: both domains in every split
        if row["kind"] == "sentence":
            row["source"] = "human"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = train(recorded, quick(epochs=2, batch_size=512), tmp_path / "plain", progress=False)
    dann = train(recorded, quick(epochs=2, batch_size=512, domain_adversarial=0.5), tmp_path / "dann", progress=False)
    # The reversal starts at strength 0 and the head has its own random start: the first step is the plain one.
    assert dann.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], abs=1e-5)
    assert [h["val_loss"] for h in dann.history] != [h["val_loss"] for h in plain.history]
    assert all(0.0 <= h["domain_balanced_acc"] <= 1.0 for h in dann.history)
    assert "domain_balanced_acc" not in plain.history[0]
    summary = json.loads((tmp_path / "dann" / "summary.json").read_text())["domain_adversary"]
    assert summary["weight"] == 0.5 and min(summary["training_clips"].values()) > 0
    with pytest.raises(ConfigError, match="domain_adversarial needs both recorded"):
        train(dataset, quick(domain_adversarial=0.5), tmp_path / "synthetic-only", progress=False)

    # The probe of what the features know of the domain: fitted on training speakers, scored on the validation ones.
    from train.domain_probe import domain_probe, probe_run

    val = set(torch.load(dann.checkpoint, weights_only=True)["splits"]["val"])
    expected = {"recorded": sum(r["kind"] == "sentence" and r["speaker"] in val for r in rows),
                "synthetic": sum(r["kind"] == "confusable" and r["speaker"] in val for r in rows)}
    probe = domain_probe(dann.checkpoint)
    assert probe["val_negatives"] == expected and min(expected.values()) > 0
    # "Recorded" sentences against "synthetic" confusables differ in length and words, which the features carry: above chance.
    assert 0.5 < probe["probe_balanced_accuracy"] <= 1.0
    assert all(0.0 <= p <= 1.0 for p in probe["mean_keyword_probability"].values())
    with pytest.raises(ConfigError, match="the train split needs both recorded and synthetic negatives to probe"):
        domain_probe(plain.checkpoint, dataset)  # the all-synthetic dataset
    run = tmp_path / "bench-run"
    (run / "rotation-A" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no trainings"):
        probe_run(run)
    shutil.copy(dann.checkpoint, run / "rotation-A" / "train" / "best.pt")
    assert probe_run(run) == {"rotation-A/train": probe}
    assert json.loads((run / "domain_probe.json").read_text()) == {"rotation-A/train": probe}


def test_group_dro_run_trains_on_the_weighted_loss_and_reports_the_weights(dataset, tmp_path):
    plain = train(dataset, quick(epochs=2, batch_size=512), tmp_path / "plain", progress=False)
    dro = train(dataset, quick(epochs=2, batch_size=512, group_dro=0.05), tmp_path / "dro", progress=False)
    # One step per epoch (every window in one batch): the first step starts from the same weights on the same windows,
    # and is reported as the plain mean loss in both; after it the models differ.
    assert dro.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], abs=1e-4)
    assert dro.history[1]["train_loss"] != plain.history[1]["train_loss"]
    assert [h["val_loss"] for h in dro.history] != [h["val_loss"] for h in plain.history]  # other gradients, other model
    weights = json.loads((tmp_path / "dro" / "summary.json").read_text())["group_weights"]
    accents = {f"{a}/{c}" for a in ACCENTS for c in ("keyword", "negative")}
    assert set(weights) == accents | {"none/negative"}  # generated noise clips have the accent "none"
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-4) and len(set(weights.values())) > 1
    assert "group_weights" not in json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert torch.load(dro.checkpoint, weights_only=True)["train_config"]["group_dro"] == 0.05


def test_missing_and_corrupt_files_are_skipped_with_a_warning(dataset, tmp_path, caplog):
    ds = copy_dataset(dataset, tmp_path / "ds")
    rows = load_rows(ds)
    missing = next(r for r in rows if r.label == "computer")
    corrupt = next(r for r in rows if r.label == NEGATIVE)
    (ds / missing.path).unlink()
    (ds / corrupt.path).write_bytes(b"not a wav file")
    with open(next(ds.glob("*/manifest.jsonl")), "a") as f:
        f.write("{broken json\n")
    with caplog.at_level(logging.WARNING, logger="kws"):
        result = train(ds, quick(), tmp_path / "run", progress=False)
    text = caplog.text
    assert missing.path.split("/")[-1] in text and corrupt.path.split("/")[-1] in text and "manifest line" in text
    data = json.loads((result.run_dir / "data.json").read_text())
    assert len(data["skipped"]) == 2 and len(data["bad_manifest_lines"]) == 1
    assert data["n_clips"] == len(rows) - 2


def test_no_keywords_or_no_negatives_is_a_clear_error(dataset, tmp_path):
    only_negatives = copy_dataset(dataset, tmp_path / "neg", keep=lambda r: r["label"] in (NEGATIVE, NOISE))
    with pytest.raises(ManifestError, match="no usable keyword clips"):
        train(only_negatives, quick(), tmp_path / "r1", progress=False)
    only_keywords = copy_dataset(dataset, tmp_path / "kw", keep=lambda r: r["label"] == "computer")
    with pytest.raises(ManifestError, match="no usable negative clips"):
        train(only_keywords, quick(), tmp_path / "r2", progress=False)
    with pytest.raises(ManifestError, match="not found"):
        train(tmp_path / "nowhere", quick(), tmp_path / "r3", progress=False)


def test_too_few_speakers_for_validation_is_a_clear_error(dataset, tmp_path):
    two = copy_dataset(dataset, tmp_path / "two", keep=lambda r: r["speaker"] in ("tts-en-US-00", "tts-en-GB-00"))
    with pytest.raises(ConfigError, match="no validation speakers"):
        train(two, quick(), tmp_path / "r", progress=False)


def test_config_round_trips_and_refuses_bad_input(tmp_path):
    for name in ("default.json", "tiny.json"):
        cfg = TrainConfig.from_file(REPO / "configs" / name)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    cases = {
        '{"epoch": 5}': "epoch",
        '{"lr": -1}': "lr",
        '{"batch_size": "64"}': "batch_size",
        '{"class_balance": "oversample"}': "class_balance",
        '{"model": "resnet"}': "resnet",
        '{"model_args": {"chanels": 8}}': "model_args.chanels",
        '{"model_args": {"n_labels": 3}}': "model_args.n_labels",
        '{"model_args": {"channels": -5}}': "model_args",
        '{"model_args": {"dropout": 2.0}}': "dropout",
        '{"model_args": {"kernel": "9"}}': "model_args",
        '{"features": {"n_mfcc": 99}}': "features",
        '{"features": {"pcen_s": -1}}': "pcen_s",
        '{"features": {"pcen_s": 0.4}, "model_args": {"denoise": true}}': "denoise",
        '{"augment": {"p_gain": 2}}': "augment.p_gain",
        '{"val_fraction": 0}': "val_fraction",
        '{"ema_decay": 1.0}': "ema_decay",
        '{"group_dro": -0.1}': "group_dro",
        '{"group_dro": "yes"}': "group_dro",
        '{"domain_adversarial": -1}': "domain_adversarial",
        "[1, 2]": "JSON object",
        "{not json": "not valid JSON",
    }
    for text, needle in cases.items():
        path = tmp_path / "c.json"
        path.write_text(text)
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as info:
            TrainConfig.from_file(path)
        assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file(tmp_path / "missing.json")


def test_cli_trains_and_reports(dataset, tmp_path):
    from typer.testing import CliRunner

    from deploy.cli.app import app
    import deploy.cli.train  # noqa: F401  (registers the command)

    cfg = tmp_path / "quick.json"
    cfg.write_text(json.dumps(quick().to_dict()))
    out = tmp_path / "cli_run"
    result = CliRunner().invoke(app, ["train", str(dataset), "--config", str(cfg), "--out", str(out), "--seed", "3",
                                      "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"run: {out}" in result.output and "keyword recall" in result.output
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["seed"] == 3 and saved["epochs"] == 2
