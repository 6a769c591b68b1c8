"""``kws tune``: search spaces, speaker folds, a real (tiny) search, its outputs, resuming, and bad input."""

import csv
import itertools
import json
from collections import defaultdict
from pathlib import Path

import pytest

from collect.manifest import load_rows
from features.errors import ConfigError
from train.config import TrainConfig
from train.splits import assign_splits
from train.tune import candidates, load_space, parse_space, speaker_folds, tune

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.json"
QUICK = {"epochs": [1], "windows_per_epoch": [64]}  # a fold in a few seconds: behaviour, not quality


def space(params, base="tiny.json"):
    return parse_space({"base": base, "params": params}, REPO / "configs")


def test_example_space_loads_and_every_draw_is_a_valid_config():
    s = load_space(REPO / "configs" / "tune-space.json")
    assert s.base == TrainConfig.from_file(TINY) and s.distributions()
    for params in candidates(s, "random", n_trials=5, seed=0):
        assert set(params) == set(s.params)


def test_grid_enumerates_exactly_the_combinations():
    params = {"lr": [0.001, 0.003, 0.01], "model_args.channels": [16, 32], "augment.p_background": [0.0, 0.5],
              "model": ["dscnn"]}
    got = candidates(space(params), "grid")
    keys = sorted(params)
    expected = [dict(zip(keys, values)) for values in itertools.product(*(params[k] for k in keys))]
    assert len(got) == 3 * 2 * 2 * 1
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, expected))


def test_random_is_reproducible_and_stays_in_the_declared_space():
    s = space({"lr": {"loguniform": [1e-4, 1e-2]}, "augment.p_background": {"uniform": [0.1, 0.4]},
               "model_args.channels": {"int": [8, 12]}, "model_args.dropout": [0.0, 0.2]})
    a, b = candidates(s, "random", n_trials=6, seed=7), candidates(s, "random", n_trials=6, seed=7)
    assert a == b and len(a) == 6
    assert a != candidates(s, "random", n_trials=6, seed=8)
    for p in a:
        assert 1e-4 <= p["lr"] <= 1e-2 and 0.1 <= p["augment.p_background"] <= 0.4
        assert type(p["model_args.channels"]) is int and 8 <= p["model_args.channels"] <= 12
        assert p["model_args.dropout"] in (0.0, 0.2)


@pytest.mark.parametrize("params, mode, needles", [
    ({"lrr": [0.1]}, "grid", ["unknown key 'lrr'", "known:", "lr", "model_args"]),
    ({"augment.p_noise": [0.1]}, "grid", ["unknown key 'augment.p_noise'", "p_background"]),
    ({"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": [1]}, "grid", ["grid mode", "lr is a distribution", "--mode random"]),
    ({"lr": []}, "grid", ["'lr' has an empty list of choices"]),
    ({"lr": [0.01, 0.001, 0.01]}, "grid", ["'lr' lists 0.01 more than once"]),
    ({"lr": {"loguniform": [0, 1]}}, "random", ["loguniform needs low > 0"]),
    ({"lr": {"normal": [0, 1]}}, "random", ["a distribution is one of loguniform, uniform, int"]),
    ({"epochs": {"int": [3, 1]}}, "random", ["int needs [low, high] with low < high"]),
    ({"seed": [0, 1]}, "grid", ["'seed' cannot be tuned", "test speakers"]),
    ({"lr.peak": [0.1]}, "grid", ["lr is a single setting"]),
    ({"model_args.widht": [8]}, "grid", ["model_args.widht: not an argument of 'dscnn'", "channels"]),
    ({"epochs": [0]}, "grid", ["epochs must be positive"]),
])
def test_bad_space_is_refused_before_any_training(params, mode, needles, tmp_path, monkeypatch):
    import train.loop

    monkeypatch.setattr(train.loop, "train", lambda *a, **k: pytest.fail("trained despite a bad space"))
    with pytest.raises(ConfigError) as info:  # the dataset is not even read
        tune(tmp_path / "no-dataset-needed", space(params), tmp_path / "out", mode=mode, n_trials=2)
    for needle in needles:
        assert needle in str(info.value)


def test_bad_space_files_name_the_file(tmp_path):
    for text, needle in [("{not json", "not valid JSON"), ('{"base": "tiny.json", "param": {}}', "unknown search space key(s): param"),
                         ('{"params": {}}', "base: give a training config file"),
                         ('{"base": "missing.json"}', "missing.json: training config file not found")]:
        path = tmp_path / "space.json"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_space(path)
        assert str(info.value).startswith(str(path)) and needle in str(info.value)
    with pytest.raises(ConfigError, match="search space file not found"):
        load_space(tmp_path / "nope.json")


def test_folds_are_speaker_disjoint_accent_spread_and_never_hold_test_speakers(tiny_dataset):
    rows = load_rows(tiny_dataset)
    config = TrainConfig.from_file(TINY)
    split = speaker_folds(rows, config, n_folds=3, seed=0)
    test = {s for s, name in assign_splits(rows, config.seed, config.val_fraction, config.test_fraction).items() if name == "test"}
    assert set(split["test"]) == test and test
    assert split["always_train"] == ["noise"]
    folds = [set(f) for f in split["folds"]]
    assert all(folds) and sum(map(len, folds)) == len(set().union(*folds))  # disjoint
    assert set().union(*folds) == {r.speaker for r in rows} - test - {"noise"}
    accent = {r.speaker: r.accent for r in rows}
    per_accent = defaultdict(set)
    for k, fold in enumerate(folds):
        for s in fold:
            per_accent[accent[s]].add(k)
    assert all(len(ks) == 3 for ks in per_accent.values())  # 3 non-test speakers per accent: one in each fold
    assert speaker_folds(rows, config, n_folds=3, seed=0) == split


@pytest.fixture(scope="module")
def searched(tiny_dataset, tmp_path_factory):
    """A real grid search: 2 trials x 2 folds of one short epoch each."""
    out = tmp_path_factory.mktemp("tune") / "out"
    return tune(tiny_dataset, space({**QUICK, "lr": [0.003, 0.01]}), out, mode="grid", n_folds=2, seed=0, progress=False)


def test_search_writes_results_and_each_fold_trains_on_the_right_speakers(searched, tiny_dataset):
    out = searched.out_dir
    for name in ("results.json", "results.md", "results.csv", "results.png", "best_config.json"):
        assert (out / name).is_file(), name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["mode"] == "grid" and results["n_folds"] == 2
    assert results["data_digest"] and {"torch", "scikit-learn", "scipy", "numpy"} <= set(results["versions"])
    assert results["space"]["params"]["lr"] == [0.003, 0.01]
    trials = results["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [0.003, 0.01]
    test = set(results["splits"]["test"])
    for t in trials:
        assert len(t["folds"]) == 2 and len(t["per_fold"]) == 2 and t["epochs"] == 1
        for k, fold in enumerate(t["folds"]):
            data = json.loads((Path(fold["run_dir"]) / "data.json").read_text())
            assert data["splits"]["val"] == results["splits"]["folds"][k]
            assert data["splits"]["test"] == []
            assert not test & (set(data["splits"]["train"]) | set(data["splits"]["val"]))
            assert "noise" in data["splits"]["train"]
    ranked = [t["trial"] for t in searched.trials]
    assert results["ranking"] == ranked and results["best"]["trial"] == ranked[0]
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in table] == ranked and "fold_2" in table[0] and "lr" in table[0]
    md = (out / "results.md").read_text()
    assert "| rank | trial |" in md and "recall_at_far mean ± std" in md


def test_best_config_round_trips_and_kws_train_accepts_it(searched, tiny_dataset, monkeypatch):
    from typer.testing import CliRunner

    import train.loop
    from deploy.cli.app import app
    import deploy.cli.train  # noqa: F401  (registers the command)

    path = searched.out_dir / "best_config.json"
    config = TrainConfig.from_file(path)
    best = searched.trials[0]
    assert config == searched.best_config == TrainConfig.from_dict(best["config"])
    assert config.lr == best["params"]["lr"] and config.epochs == 1
    assert json.loads(path.read_text()) == config.to_dict()

    seen = {}

    class Stop(Exception):
        pass

    def fake_train(dataset, cfg, out, progress=True):
        seen["config"] = cfg
        raise Stop

    monkeypatch.setattr(train.loop, "train", fake_train)
    result = CliRunner().invoke(app, ["train", str(tiny_dataset), "--config", str(path), "--no-progress"])
    assert isinstance(result.exception, Stop), result.output
    assert seen["config"] == config


def test_rerun_reuses_finished_trials(searched, tiny_dataset, monkeypatch):
    import train.loop

    before = json.loads((searched.out_dir / "results.json").read_text())
    monkeypatch.setattr(train.loop, "train", lambda *a, **k: pytest.fail("a finished trial was trained again"))
    again = tune(tiny_dataset, space({**QUICK, "lr": [0.003, 0.01]}), searched.out_dir, mode="grid", n_folds=2, seed=0,
                 progress=False)
    assert all(t["reused"] for t in again.trials)
    assert [t["mean"] for t in again.trials] == [t["mean"] for t in searched.trials]
    assert {t["key"] for t in again.results["trials"]} == {t["key"] for t in before["trials"]}

    by_loss = tune(tiny_dataset, space({**QUICK, "lr": [0.003, 0.01]}), searched.out_dir, mode="grid", n_folds=2, seed=0,
                   metric="loss", progress=False)  # another metric re-ranks the same folds
    assert all(t["reused"] for t in by_loss.trials)
    assert [t["mean"] for t in by_loss.trials] == sorted(t["val_loss_mean"] for t in searched.trials)
    assert "loss mean ± std" in (searched.out_dir / "results.md").read_text()


def test_cli_bad_space_is_one_line_without_traceback(tiny_dataset, tmp_path):
    from test_cli_errors import assert_clean_error, run

    bad = tmp_path / "space.json"
    bad.write_text(json.dumps({"base": str(TINY), "params": {"learning_rate": [0.1]}}))
    assert_clean_error(run("tune", tiny_dataset, "--space", bad, "--out", tmp_path / "o"),
                       "space.json", "unknown key 'learning_rate'", "known:")


def test_a_fold_with_an_undefined_metric_is_left_out_not_nan():
    """A fold whose recall is NaN (no keyword among its validation clips) does not poison the mean or results.json."""
    import math

    from train.tune import _summarise, rank, results_markdown

    config = TrainConfig()
    fold = lambda k, recall, loss: {"fold": k, "recall_at_far": recall, "loss": loss, "accuracy": 0.9, "f1": 0.8, "epochs_run": 3}
    partly = _summarise(1, {"lr": 0.01}, config, "k1", [fold(1, 0.5, 0.3), fold(2, math.nan, 0.2), fold(3, 0.7, 0.3)],
                        "recall_at_far", 10.0)
    never = _summarise(2, {"lr": 0.02}, config, "k2", [fold(1, math.nan, 0.1), fold(2, math.nan, 0.1)], "recall_at_far", 10.0)
    assert partly["per_fold"] == [0.5, None, 0.7] and partly["mean"] == pytest.approx(0.6) and partly["std"] > 0
    assert never["mean"] is None and never["std"] is None
    assert [t["trial"] for t in rank([never, partly], "recall_at_far")] == [1, 2]  # undefined last, despite its lower loss
    json.dumps([partly, never], allow_nan=False)  # strict JSON: no NaN anywhere
    results = {"metric": "recall_at_far", "n_folds": 3, "splits": {"folds": [["a"], ["b"], ["c"]], "test": ["d"]},
               "dataset": "ds", "data_digest": "0" * 64, "mode": "grid", "seed": 0, "space": {"source": "s.json"},
               "higher_is_better": True}
    md = results_markdown(results, rank([never, partly], "recall_at_far"), ["lr"])
    assert "0.500 / n/a / 0.700" in md and "n/a ± n/a" in md
