"""The decision lever of the real-speech benchmark: smoothing and refractory period tuned on validation, replayed on the test scores.

Training-data levers (engines, room and microphone augmentation, mining) are
keys of the benchmark config itself (``deploy.benchmark_real.BenchConfig``)
and of the training config (``features.augment``).
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy.calibrate import CANDIDATES, LOW_FA_SMOOTHINGS, choose_smoothing, choose_threshold, validation_stream


# ----------------------------------------------------------------------------- decision lever: smoothing and refractory tuned on validation

REFRACTORY_CHOICES_S = (0.5, 1.0, 2.0)  # the benchmark puts keywords at least 3 s apart, so none of these can hide one behind another


def most_margin(point: dict) -> tuple:
    """The lever's preference among choices within the noise: the most smoothing, then the longest refractory period."""
    return point["smoothing"], point["refractory_s"]


def tune_decision(rotation_dir: str | Path, *, target_fa_per_hour: float = 0.5, background_minutes: float = 60.0,
                  snr_db: float = 10.0, seed: int = 0, choices=LOW_FA_SMOOTHINGS, refractories_s=REFRACTORY_CHOICES_S,
                  extra_background=(), progress: bool = True) -> dict:
    """Choose the score smoothing and refractory period on the validation stream, then read the recorded test stream with them.

    The validation stream is the one calibration builds
    (``deploy.calibrate.validation_stream``: same rows, same seed, and the
    same ``extra_background``, which the benchmark fills with
    ``calibration_background``), run once; each smoothing and refractory
    period is replayed over its recorded scores and calibrated to
    ``target_fa_per_hour`` there. The detector fires whenever the smoothed
    score is above the threshold and the refractory period has passed, so a
    false accept that stays high fires again after each period; a longer
    period counts it once and lets a lower threshold meet the budget. The
    pick follows calibration's rule (``deploy.calibrate.choose_smoothing``):
    within the noise of the lowest validation FRR, the most smoothing, then
    the longest refractory period: the most margin against false accepts,
    as for smoothing. (Preferring the shortest, as this lever first did,
    picked 0.5 s, which with 8 hops of smoothing let one long false accept
    fire two or three times: 11 more on one real-speech test stream.) The
    pick, with its validation threshold, is then applied to the test stream
    scores the benchmark saved (``test_scores.npz``): no test data takes
    part in the choice.
    """
    from deploy.benchmark_real import REPORT_TARGETS, det_thresholds, saved_test_run
    from deploy.evaluate import det_curve, operating_points
    from deploy.modelfile import KwsModel

    rotation_dir = Path(rotation_dir)
    model = KwsModel(rotation_dir / "model.onnx")
    info = model.info
    val = validation_stream(model, rotation_dir / "dataset", background_minutes=background_minutes, snr_db=snr_db, seed=seed,
                            progress=progress, extra_background=extra_background)
    test = saved_test_run(rotation_dir)
    table = []
    for refractory_s in refractories_s:
        refractory = int(round(refractory_s / info.hop_s))
        for s in choices:
            point = choose_threshold(det_curve(val, info, refractory, s, thresholds=CANDIDATES), target_fa_per_hour)
            curve = det_curve(test, info, refractory, s, thresholds=det_thresholds([point["threshold"]]))
            at = next(p for p in curve if abs(p["threshold"] - round(point["threshold"], 7)) < 1e-9)
            table.append({"smoothing": s, "refractory_s": refractory_s, "val_threshold": point["threshold"], "val_frr": point["frr"],
                          "val_fa_per_hour": point["fa_per_hour"], "test_at_val_threshold": at,
                          "test_operating_points": operating_points(curve, REPORT_TARGETS)})
    n_keywords = sum(e.is_keyword for e in val.events)
    best = choose_smoothing([{**r, "threshold": r["val_threshold"], "frr": r["val_frr"], "fa_per_hour": r["val_fa_per_hour"]} for r in table],
                            target_fa_per_hour, n_keywords, prefer=most_margin)
    result = {"chosen_smoothing": best["smoothing"], "chosen_refractory_s": best["refractory_s"], "model_smoothing": info.smoothing,
              "model_refractory_s": info.refractory_s, "extra_background_clips": len(extra_background), "table": table}
    (rotation_dir / "decision.json").write_text(json.dumps(result, indent=1))
    return result
