"""The decision lever of the real-speech benchmark: score smoothing tuned on validation, replayed on the test scores.

Training-data levers (engines, room and microphone augmentation, mining) are
keys of the benchmark config itself (``deploy.benchmark_real.BenchConfig``)
and of the training config (``features.augment``).
"""

from __future__ import annotations

import json
from pathlib import Path


# ----------------------------------------------------------------------------- decision lever: smoothing tuned on validation

SMOOTHING_CHOICES = (1, 2, 3, 5, 8)


def tune_decision(rotation_dir: str | Path, *, target_fa_per_hour: float = 0.5, background_minutes: float = 60.0,
                  snr_db: float = 10.0, seed: int = 0, choices=SMOOTHING_CHOICES, progress: bool = True) -> dict:
    """Choose the score smoothing on the validation stream, then read the recorded test stream with it.

    The validation stream is the one ``deploy.calibrate`` builds (same rows,
    same seed offset), run once; each smoothing is replayed over its recorded
    scores and calibrated to ``target_fa_per_hour`` there. The smoothing with
    the lowest validation FRR (ties: the smaller, which reacts sooner) is then
    applied, with its validation threshold, to the test stream scores the
    benchmark saved (``test_scores.npz``): no test data takes part in the choice.
    """
    from deploy.benchmark_real import REPORT_TARGETS, det_thresholds, saved_test_run
    from deploy.calibrate import CANDIDATES, choose_threshold
    from deploy.evaluate import det_curve, load_eval_clips, operating_points, select_rows, stream_pass
    from deploy.modelfile import KwsModel

    rotation_dir = Path(rotation_dir)
    model = KwsModel(rotation_dir / "model.onnx")
    info = model.info
    refractory = int(round(info.refractory_s / info.hop_s))
    rows, _, _ = select_rows(rotation_dir / "dataset", info, "val")
    clips, _ = load_eval_clips(rotation_dir / "dataset", rows, info)
    val = stream_pass(model, clips, background_minutes=background_minutes, snr_db=snr_db, seed=seed + 7919, progress=progress)
    test = saved_test_run(rotation_dir)
    table = []
    for s in choices:
        point = choose_threshold(det_curve(val, info, refractory, s, thresholds=CANDIDATES), target_fa_per_hour)
        curve = det_curve(test, info, refractory, s, thresholds=det_thresholds([point["threshold"]]))
        at = next(p for p in curve if abs(p["threshold"] - round(point["threshold"], 7)) < 1e-9)
        table.append({"smoothing": s, "val_threshold": point["threshold"], "val_frr": point["frr"], "val_fa_per_hour": point["fa_per_hour"],
                      "test_at_val_threshold": at, "test_operating_points": operating_points(curve, REPORT_TARGETS)})
    best = min(table, key=lambda r: (r["val_frr"], r["smoothing"]))
    result = {"chosen_smoothing": best["smoothing"], "model_smoothing": info.smoothing, "table": table}
    (rotation_dir / "decision.json").write_text(json.dumps(result, indent=1))
    return result
