"""A full ``evaluate()`` of a tiny real model on its tiny dataset, the demo stream, and ``kws eval``."""

import json
import shutil
from collections import defaultdict

import numpy as np
import pytest

from collect.manifest import ClipRow, load_rows
from deploy.evaluate import evaluate
from deploy.modelfile import KwsModel
from features.errors import ConfigError, ManifestError

REQUIRED = {
    "clips": {"n", "accuracy", "precision", "recall", "f1", "confusion"},
    "stream": {"background_hours", "false_accepts", "fa_per_hour", "fa_per_hour_ci", "frr", "frr_ci", "n_keywords", "threshold", "snr_db"},
}
ACCENT_KEYS = {"n_speakers", "n_keyword", "frr", "frr_ci", "n_negative", "far", "far_ci"}
FILES = ["report.json", "report.md", "det.png", "accent_frr.png", "confusion.png"]


@pytest.fixture(scope="module")
def evaluated(keyword_model, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    report = evaluate(keyword_model, tiny_dataset, out, background_minutes=1.0, snr_db=10.0, seed=0, progress=False)
    return report, out


def _test_rows(model, dataset):
    speakers = set(KwsModel(model).info.metadata["splits"]["test"])
    return [r for r in load_rows(dataset) if r.speaker in speakers]


def test_files_written_and_card_refreshed(evaluated, keyword_model):
    report, out = evaluated
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text())["stream"] == json.loads(json.dumps(report["stream"]))
    md = (out / "report.md").read_text()
    assert "FRR" in md and "| accent |" in md and "confusion matrix" in md
    card = keyword_model.with_suffix(".md").read_text()
    assert "Evaluation per accent" in card


def test_required_keys(evaluated, tiny_dataset, keyword_model):
    report, _ = evaluated
    for section, keys in REQUIRED.items():
        assert keys <= set(report[section]), section
    assert set(report["clips"]["confusion"]) == {"labels", "matrix"}
    assert report["clips"]["confusion"]["labels"] == ["negative", "computer"]
    assert report["dataset"] == str(tiny_dataset)
    assert report["model"]["path"] == str(keyword_model) and "data_digest" in report["model"] and "threshold" in report["model"]
    assert report["seed"] == 0 and report["skipped"] == []
    assert report["det"] and {"threshold", "frr", "fa_per_hour"} <= set(report["det"][0])
    for r in report["per_accent"].values():
        assert ACCENT_KEYS <= set(r)


def test_counts_match_the_manifest(evaluated, keyword_model, tiny_dataset):
    report, _ = evaluated
    rows = _test_rows(keyword_model, tiny_dataset)
    per = defaultdict(lambda: {"speakers": set(), "keyword": 0, "negative": 0})
    for r in rows:
        per[r.accent]["speakers"].add(r.speaker)
        per[r.accent]["keyword" if r.label == "computer" else "negative"] += 1
    assert set(report["per_accent"]) == set(per)
    assert len(per) >= 4  # the test split has speakers of several accents
    for accent, expected in per.items():
        got = report["per_accent"][accent]
        assert got["n_speakers"] == len(expected["speakers"])
        assert got["n_keyword"] == expected["keyword"]
        assert got["n_negative"] == expected["negative"]
    matrix = np.array(report["clips"]["confusion"]["matrix"])
    assert report["clips"]["n"] == len(rows) == matrix.sum()
    assert matrix[1].sum() == report["stream"]["n_keywords"] == sum(r["keyword"] for r in per.values())
    assert sum(r["misses"] for r in report["per_speaker"].values()) == report["stream"]["misses"]


def test_values_in_range(evaluated):
    report, _ = evaluated
    c, s = report["clips"], report["stream"]
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= c[key] <= 1.0
    assert 0.0 <= s["frr"] <= 1.0 and s["frr_ci"][0] <= s["frr"] <= s["frr_ci"][1]
    assert s["fa_per_hour"] >= 0 and s["fa_per_hour_ci"][0] <= s["fa_per_hour"] <= s["fa_per_hour_ci"][1]
    # at least what was asked for; more when spacing 3 s between many keywords outgrows a short background
    assert 0.9 <= s["background_hours"] * 60 <= 2.0
    assert s["fa_per_hour"] == pytest.approx(s["false_accepts"] / s["background_hours"])
    for r in report["per_accent"].values():
        assert 0.0 <= r["frr_ci"][0] <= r["frr"] <= r["frr_ci"][1] <= 1.0
        assert 0.0 <= r["far_ci"][0] <= r["far"] <= r["far_ci"][1] <= 1.0
    det = report["det"]
    assert [p["threshold"] for p in det] == sorted(p["threshold"] for p in det)
    assert det[0]["fa_per_hour"] >= det[-1]["fa_per_hour"] and det[0]["frr"] <= det[-1]["frr"]
    # a clip is predicted a keyword exactly when its peak smoothed score reaches the threshold (the first detection
    # is never blocked by the refractory period), and recall is the share of keyword clips so predicted
    for r in report["clip_results"]:
        assert (r["predicted"] == "computer") == (r["max_score"] >= s["threshold"] - 1e-4), r
    kw = [r for r in report["clip_results"] if r["truth"] == "computer"]
    assert c["recall"] == pytest.approx(sum(r["predicted"] == "computer" for r in kw) / len(kw))


def test_replayed_threshold_agrees_with_the_live_detector(evaluated):
    """The DET curve comes from recorded scores; at the model's threshold it must match what the detector did."""
    report, _ = evaluated
    s = report["stream"]
    (point,) = [p for p in report["det"] if p["threshold"] == pytest.approx(s["threshold"], abs=1e-9)]
    assert point["frr"] == s["frr"] and point["false_accepts"] == s["false_accepts"]


def test_derived_dataset_skips_unreadable_clips(keyword_model, tiny_dataset, tmp_path):
    """A copy with only the test speakers and one corrupt file: evaluated with a note, the bad file listed and skipped."""
    rows = _test_rows(keyword_model, tiny_dataset)
    session = tmp_path / "ds" / "copy"
    session.mkdir(parents=True)
    lines = []
    for r in rows:
        (tmp_path / "ds" / r.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dataset / r.path, tmp_path / "ds" / r.path)
        lines.append(r.to_json())
    bad = ClipRow(**{**rows[0].__dict__, "path": "copy/broken.wav"})
    (tmp_path / "ds" / "copy" / "broken.wav").write_bytes(b"RIFF not really")
    lines.append(bad.to_json())
    (session / "manifest.jsonl").write_text("\n".join(lines) + "\n{not json\n")
    report = evaluate(keyword_model, tmp_path / "ds", tmp_path / "out", background_minutes=0.3, progress=False)
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "copy/broken.wav" in skipped and "cannot read audio" in skipped["copy/broken.wav"]
    assert any("manifest.jsonl:" in p for p in skipped)  # the corrupt manifest line
    assert report["clips"]["n"] == len(rows)
    assert any("differs from the model's training data" in n for n in report["selection"]["notes"])


def test_bad_input(keyword_model, tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate(keyword_model, tiny_dataset, tmp_path, split="holdout", progress=False)
    with pytest.raises(ConfigError, match="background_minutes"):
        evaluate(keyword_model, tiny_dataset, tmp_path, background_minutes=0, progress=False)
    # a dataset none of whose speakers the model held out
    session = tmp_path / "other" / "s1"
    session.mkdir(parents=True)
    row = next(r for r in load_rows(tiny_dataset) if r.speaker == "noise")
    (session / "manifest.jsonl").write_text(row.to_json() + "\n")
    with pytest.raises(ManifestError, match="split 'all'"):
        evaluate(keyword_model, tmp_path / "other", tmp_path / "out", progress=False)


def test_demo_stream(keyword_model, tiny_dataset, tmp_path):
    from deploy.streams import make_demo_stream
    from features.audio import load_audio

    info = KwsModel(keyword_model).info
    path, events = make_demo_stream(tiny_dataset, info, tmp_path / "demo.wav", seed=0)
    audio = load_audio(path)
    assert 40.0 <= len(audio) / 16000 <= 62.0
    assert len(events) == 6 and all(e.label == "computer" for e in events)
    assert len({e.accent for e in events}) >= 3
    assert {e.speaker for e in events} <= set(info.metadata["splits"]["test"])


def test_cli_eval(keyword_model, tiny_dataset, tmp_path):
    from typer.testing import CliRunner

    import deploy.cli.evaluate  # noqa: F401  (registers "eval")
    from deploy.cli.app import app

    result = CliRunner().invoke(app, ["eval", str(keyword_model), str(tiny_dataset), "--out", str(tmp_path / "e"),
                                      "--background-minutes", "0.3", "--seed", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "FRR" in result.output and "false accepts/hour" in result.output and "en-GB" in result.output
    assert str(tmp_path / "e" / "report.md") in result.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["seed"] == 2
