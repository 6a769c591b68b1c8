"""``kws demo``: the whole pipeline on the built-in default, in one call.

Synthesises a multi-accent dataset for the wake phrase, checks it, trains,
exports to ONNX, evaluates the exported model per accent, then streams a demo
WAV through the same detector the microphone listener uses. Each stage is the
library function its own ``kws`` subcommand calls, so the demo is nothing a
user could not do step by step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from collect.datacheck import check_dataset
from collect.synth import synthesize_dataset, slug
from deploy.detector import Detector
from deploy.evaluate import evaluate
from deploy.export import export_model
from deploy.modelcard import card_path
from deploy.modelfile import KwsModel
from deploy.streams import make_demo_stream
from features.audio import load_audio
from train.config import TrainConfig
from train.loop import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TARGET_FA_PER_HOUR = 1.0  # the operating point the demo model is calibrated for, on validation speakers

# How much data each scale synthesises: (voices per accent, keyword takes, confusables, sentences).
SCALES = {
    "default": dict(n_voices_per_accent=10, takes_per_voice=6, n_confusables=6, n_sentences=4, background_minutes=20.0, config="default.json"),
    "tiny": dict(n_voices_per_accent=3, takes_per_voice=4, n_confusables=3, n_sentences=2, background_minutes=1.0, config="tiny.json"),
}


@dataclass
class DemoResult:
    dataset: Path
    run_dir: Path
    model: Path
    card: Path
    eval_dir: Path
    demo_wav: Path
    report: dict
    detections: list = field(default_factory=list)
    true_times: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def _stage(name: str, echo) -> float:
    echo(f"\n== {name} ==")
    return time.perf_counter()


def run_demo(
    phrase: str = "computer",
    *,
    recordings: Path = Path("recordings"),
    runs: Path = Path("runs"),
    scale: str = "default",
    seed: int = 0,
    echo=print,
) -> DemoResult:
    """Run every stage for ``phrase``; return where everything went and the headline figures."""
    sizes = dict(SCALES[scale])
    background_minutes = sizes.pop("background_minutes")
    config = TrainConfig.from_file(CONFIGS / sizes.pop("config"))
    name = slug(phrase)
    dataset = Path(recordings) / name
    run_dir = Path(runs) / f"demo-{name}"
    seconds = {}
    start = time.perf_counter()

    t = _stage(f"1/6 synthesising a multi-accent dataset for {phrase!r} into {dataset}", echo)
    synthesize_dataset(dataset, phrase=phrase, seed=seed, overwrite=True, **sizes)
    seconds["synth"] = time.perf_counter() - t

    t = _stage("2/6 checking the dataset", echo)
    data_report = check_dataset(dataset)
    echo(data_report.to_text())
    seconds["data"] = time.perf_counter() - t

    t = _stage("3/6 training", echo)
    result = train(dataset, config, run_dir / "train")
    seconds["train"] = time.perf_counter() - t

    t = _stage("4/6 exporting to ONNX", echo)
    model_path = export_model(result.checkpoint, run_dir / "model.onnx", target_fa_per_hour=TARGET_FA_PER_HOUR)
    echo(f"model: {model_path}")
    seconds["export"] = time.perf_counter() - t

    t = _stage("5/6 evaluating the exported model per accent", echo)
    eval_dir = run_dir / "eval"
    report = evaluate(model_path, dataset, eval_dir, background_minutes=background_minutes, seed=seed)
    seconds["eval"] = time.perf_counter() - t

    t = _stage("6/6 streaming a demo recording through the detector", echo)
    model = KwsModel(model_path)
    demo_wav, events = make_demo_stream(dataset, model.info, run_dir / "demo_stream.wav", seed=seed)
    echo(f"{demo_wav}: keyword spoken at " + ", ".join(f"{e.end_s:.1f} s" for e in events) + " (end of word)")
    detections = Detector(model).process(load_audio(demo_wav), chunk_size=1600)
    for d in detections:
        echo(f"  detected {d.keyword!r} at {d.time_s:6.2f} s  score {d.score:.2f}")
    seconds["stream"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start

    demo = DemoResult(
        dataset=dataset,
        run_dir=run_dir,
        model=model_path,
        card=card_path(model_path),
        eval_dir=eval_dir,
        demo_wav=demo_wav,
        report=report,
        detections=detections,
        true_times=[e.end_s for e in events],
        seconds=seconds,
    )
    (run_dir / "demo.json").write_text(
        json.dumps({"phrase": phrase, "scale": scale, "seed": seed, "seconds": seconds, "detections": [d.__dict__ for d in detections]}, indent=2)
    )
    return demo
