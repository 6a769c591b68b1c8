"""Real-speech benchmark: train "computer" on synthetic voices, measure on real Picovoice recordings.

Usage::

    .venv/bin/python benchmarks/real_speech.py /work/shared/data/wake-words --out runs/bench-real [--config configs/bench-real.json] [--quick]

Writes ``<out>/<config name>/report.json``, ``report.md``, ``det.png``,
``accent_frr.png`` and ``voice_frr.png`` (see ``deploy.benchmark_real`` for what is measured and why).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout without installing

from deploy.benchmark_real import BenchConfig, calibration_background, check_wake_words, run_benchmark  # noqa: E402
from features.errors import KwsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; a bad argument, config or folder is one line on stderr (exit 2), not a traceback."""
    try:
        return _main(argv)
    except KwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wake_words", help="folder with computer/ jarvis/ smart_mirror/ snowboy/ view_glass/ (FLAC)")
    p.add_argument("--out", default="runs/bench-real", help="output root (synthetic data is cached under <out>/cache)")
    p.add_argument("--config", help="benchmark config JSON (default: the built-in baseline)")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test scale; figures are not meaningful")
    p.add_argument("--jobs", type=int, default=2, help="rotations run in parallel processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="reuse a rotation's earlier first-round training in the output folder when its config and data digest match")
    p.add_argument("--tune-decision", action="store_true",
                   help="afterwards, choose the score smoothing on each rotation's validation stream and replay the test scores with it")
    p.add_argument("--decision-only", action="store_true", help="only the --tune-decision step, on an existing output folder")
    p.add_argument("--voices-only", action="store_true",
                   help="only add the FRR by pitch and spoken length to an existing output folder's report, from its saved test scores")
    p.add_argument("--accents-only", action="store_true",
                   help="only measure an existing output folder's per-accent stream again, adding the split by engine to its report")
    p.add_argument("--intervals-only", action="store_true",
                   help="only add the bootstrap interval of each FRR to an existing output folder's report, from its saved test scores")
    p.add_argument("--ensemble", nargs="+", metavar="CONFIG",
                   help="only measure the averaged model of this config's finished run and these configs' runs (deploy/ensemble.py), "
                        "written to <out>/<name>+<other names>")
    p.add_argument("--domain-probe", action="store_true",
                   help="only measure how well each training of an existing output folder tells recorded from synthetic negatives "
                        "(train/domain_probe.py)")
    p.add_argument("--clip-probe", action="store_true",
                   help="only stream each real keyword clip alone through an existing output folder's models (deploy/clip_probe.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = BenchConfig.from_file(args.config) if args.config else BenchConfig()
    out = Path(args.out) / (cfg.name + ("-quick" if args.quick else ""))
    if args.voices_only:
        from deploy.benchmark_real import add_voice_bands

        add_voice_bands(out, args.wake_words)
        print((out / "report.md").read_text())
        return 0
    if args.accents_only:
        from deploy.benchmark_real import add_accent_engines

        add_accent_engines(out, progress=not args.quiet)
        print((out / "report.md").read_text())
        return 0
    if args.intervals_only:
        from deploy.benchmark_real import add_intervals

        add_intervals(out)
        print((out / "report.md").read_text())
        return 0
    if args.ensemble:
        from deploy.benchmark_real import ensemble_benchmark

        others = [BenchConfig.from_file(c).name for c in args.ensemble]
        ensemble_out = Path(args.out) / "+".join([cfg.name, *others])
        ensemble_benchmark(args.wake_words, [out, *(Path(args.out) / n for n in others)], ensemble_out, progress=not args.quiet)
        print((ensemble_out / "report.md").read_text())
        return 0
    if args.domain_probe:
        from train.domain_probe import probe_run

        for name, result in probe_run(out).items():
            print(f"{name}: probe balanced accuracy {result['probe_balanced_accuracy']:.3f}; mean keyword probability of "
                  f"recorded / synthetic validation negatives {result['mean_keyword_probability']['recorded']:.4f} / "
                  f"{result['mean_keyword_probability']['synthetic']:.4f}")
        return 0
    if args.clip_probe:
        from deploy.clip_probe import probe_run

        probe_run(out, args.wake_words, progress=not args.quiet)
        print((out / "clip_probe.md").read_text())
        return 0
    if not args.decision_only:
        report = run_benchmark(args.wake_words, args.out, config=cfg, quick=args.quick, jobs=args.jobs, progress=not args.quiet,
                               resume=args.resume)
        print(Path(report["files"]["markdown"]).read_text())
    if args.tune_decision or args.decision_only:
        from deploy.benchmark_levers import tune_decision
        from deploy.modelfile import KwsModel

        finished = out / "report.json"
        if not finished.is_file():
            raise SystemExit(f"{finished}: no finished benchmark run here to tune the decision of (run without --decision-only first)")
        data, real_files = json.loads(finished.read_text())["data"], check_wake_words(args.wake_words)
        for rot in sorted(out.glob("rotation-*")):
            cal = cfg.calibration
            real, read = calibration_background(rot.name.removeprefix("rotation-"), cfg, data, real_files, KwsModel(rot / "model.onnx").info)
            d = tune_decision(rot, target_fa_per_hour=cal["target_fa_per_hour"], background_minutes=cal["background_minutes"],
                              snr_db=cfg.snr_db, seed=cfg.seed, extra_background=real + read, progress=not args.quiet)
            print(f"{rot.name}: chosen on validation: smoothing {d['chosen_smoothing']}, refractory {d['chosen_refractory_s']:g} s "
                  f"(model: {d['model_smoothing']}, {d['model_refractory_s']:g} s)")
            for r in d["table"]:
                ops = {o["target_fa_per_hour"]: o["frr"] for o in r["test_operating_points"]}
                t = r["test_at_val_threshold"]
                print(f"  smoothing {r['smoothing']}, refractory {r['refractory_s']:g} s: val thr {r['val_threshold']:.6g} FRR {r['val_frr']:.3f} "
                      f"| test at it: FRR {t['frr']:.3f}, {t['fa_per_hour']:.2f} FA/h | test FRR @0.1 / 0.5 / 1 / 5 FA/h "
                      + " / ".join(f"{ops[b]:.3f}" if ops[b] is not None else "-" for b in (0.1, 0.5, 1.0, 5.0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
