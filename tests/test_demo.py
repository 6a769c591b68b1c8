"""End to end: ``kws demo --scale tiny`` runs every stage and leaves everything where it says."""

import json
import subprocess
import sys
from pathlib import Path

KWS = str(Path(sys.executable).with_name("kws"))


def test_tiny_demo_end_to_end(tmp_path):
    result = subprocess.run(
        [KWS, "demo", "computer", "--scale", "tiny", "--recordings", tmp_path / "rec", "--runs", tmp_path / "runs"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    run = tmp_path / "runs" / "demo-computer"
    for path in ["model.onnx", "model.md", "train/best.pt", "train/curve.png", "train/metrics.jsonl", "train/config.json",
                 "eval/report.json", "eval/report.md", "eval/det.png", "eval/accent_frr.png", "eval/confusion.png",
                 "demo_stream.wav", "demo.json"]:
        assert (run / path).is_file(), path
        assert str(run / path).split("demo-computer/")[-1].split("/")[-1] in out or path.startswith("train/") or path == "demo.json"
    report = json.loads((run / "eval" / "report.json").read_text())
    assert len(report["per_accent"]) >= 8
    assert 0.0 <= report["stream"]["frr"] <= 1.0 and report["stream"]["background_hours"] > 0
    assert "per accent FRR" in out and "time taken" in out
    demo = json.loads((run / "demo.json").read_text())
    assert demo["phrase"] == "computer" and demo["scale"] == "tiny"
    assert "Model card: computer" in (run / "model.md").read_text()
    # the model card was refreshed with the evaluation
    assert "Evaluation per accent" in (run / "model.md").read_text()
