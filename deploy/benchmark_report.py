"""Presenting the real-speech benchmark (``deploy.benchmark_real``): JSON, Markdown, DET and per-accent plots.

Kept apart from the computation so a ``report.json`` can be re-rendered (or
several lever runs compared) without re-running any model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deploy.voice_bands import VOICE_KINDS


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ratio(x) -> str:
    return "n/a" if x is None else f"{x:.1f}x"


def _thr(x) -> str:
    return "none" if x is None else f"{x:.6g}"


def _interval(point: dict) -> str:
    """An operating point's bootstrap interval as " [a-b]" (nothing for reports made before intervals)."""
    ci = point.get("frr_ci95")
    return f" [{100 * ci[0]:.1f}-{100 * ci[1]:.1f}]" if ci else ""


# How each benchmark setting of real_negatives used the other wake words' real clips, for the report's first line.
REAL_NEGATIVES = {True: " (+ real other-word negatives per rotation)", False: " (no real speech in training or calibration)",
                  "validation": " (one model for every rotation; each calibrates on its training-side real other-word clips)"}


def _negatives(rotation: dict) -> str:
    """The real folders a rotation's model met: as training negatives, or only in its calibration stream."""
    if rotation["train_negative_folders"]:
        return "+".join(rotation["train_negative_folders"])
    val = rotation.get("validation_negative_folders")
    return f"(none; calibration: {'+'.join(val)})" if val else "(none)"


def summary_rows(report: dict) -> list[list[str]]:
    """One row per rotation: FRR at 0.5 and 0.1 FA/h, the calibrated threshold and what it gives on the test stream."""
    rows = []
    for r in report["rotations"]:
        ops = {p["target_fa_per_hour"]: p for p in r["test"]["operating_points"]}
        cal, at = r["calibration"], r["test"]["at_calibrated"]
        acc = r["accents"].get("calibrated", {})
        ratio = acc.get("worst_over_best")
        rows.append([
            r["rotation"], _negatives(r), "+".join(r["test_background_folders"]),
            f"{r['test']['background_hours']:.2f}",
            f"{_pct(ops[0.5]['frr'])}{_interval(ops[0.5])} (thr {_thr(ops[0.5]['threshold'])})",
            f"{_pct(ops[0.1]['frr'])}{_interval(ops[0.1])} (thr {_thr(ops[0.1]['threshold'])})",
            f"{_thr(cal['threshold'])} (val: FRR {_pct(cal['frr'])}, {cal['fa_per_hour']:.2f} FA/h)",
            f"FRR {_pct(at['frr'])}, {at['fa_per_hour']:.2f} FA/h ({at['false_accepts']} FA)",
            f"{_pct(acc.get('best'))} / {_pct(acc.get('worst'))} ({_ratio(ratio)})",
        ])
    return rows


SUMMARY_HEADER = ["rotation", "train negatives", "test background", "bg hours", "FRR @0.5 FA/h", "FRR @0.1 FA/h",
                  "calibrated threshold (target on val)", "test at calibrated threshold", "accent FRR best / worst (ratio)"]


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# Real-speech benchmark: {cfg['name']}{' (quick: figures not meaningful)' if report['quick'] else ''}", "",
             f"Keyword \"{report['keyword']}\": model trained on synthetic voices only{REAL_NEGATIVES[cfg.get('real_negatives', True)]}; "
             f"test = every real \"{report['keyword']}\" clip in {cfg['test_background_minutes']:g} min of background, "
             f"pink noise at {cfg['snr_db']:g} dB SNR. Threshold calibrated on validation streams for "
             f"{cfg['calibration']['target_fa_per_hour']:g} FA/h.", ""]
    lines += _table(SUMMARY_HEADER, summary_rows(report))
    for r in report["rotations"]:
        lines += ["", f"## Rotation {r['rotation']}", "",
                  f"- keywords in the test stream: {r['test']['n_keywords']}, background {r['test']['background_hours']:.2f} h "
                  f"({r['test']['n_background_clips']} clips), detector {r['test']['realtime_factor']:.0f}x real time",
                  (f"- training: best epoch {r['train']['best_epoch']} of {r['train']['epochs_run']}, {r['train']['seconds']:.0f} s" if "train" in r
                   else f"- ensemble (scores averaged) of: {', '.join(r['ensemble_of'])}"),
                  f"- calibration on validation: {json.dumps({k: r['calibration'][k] for k in ('threshold', 'frr', 'fa_per_hour', 'background_hours', 'n_keywords', 'met', 'extra_background_clips', 'read_aloud_clips') if k in r['calibration']})}"]
        if r.get("mining"):
            m = r["mining"]
            for k in m.get("rounds_run") or [{**m, "round": 1}]:  # reports from before rounds had one round's fields at the top
                under = "the first model" if k["round"] == 1 else "the previous round's model"
                noisy = "" if m.get("noise_snr_db") is None else f", each clean and under pink noise at {m['noise_snr_db']:g} dB SNR"
                kept_noisy = "" if m.get("noise_snr_db") is None else f", {k.get('kept_in_noise')} of them in noise"
                lines += [f"- mining round {k['round']}: {k['found']} windows of {m['searched_hours']:.2f} h of training-side negatives{noisy} "
                          f"scored >= {m['threshold']:g} under {under}; kept {k['kept']} ({json.dumps(k['kept_by_session'])}{kept_noisy}), "
                          f"then fine-tuned {m['epochs']} epochs at lr {m['lr']:g}"]
            lines += ["  (the training line above is the last fine-tuning run)"]
        lines += [""]
        lines += _table(["FA/h budget", "threshold", "FRR [95% bootstrap interval]", "FA/h"],
                        [[p["target_fa_per_hour"], _thr(p["threshold"]), _pct(p["frr"]) + _interval(p),
                          "n/a" if p["fa_per_hour"] is None else f"{p['fa_per_hour']:.2f}"]
                         for p in r["test"]["operating_points"]])
        lines += ["", "The interval is what another draw of this rotation's keywords and background (2-min blocks) could give "
                      "at the same budget (`deploy.evaluate.frr_intervals`); it does not cover another training seed."]
        src = r["test"].get("fa_sources_at_calibrated", {}).get("by_source")
        if src:
            lines += ["", f"False accepts at the calibrated threshold, by background source: {json.dumps(src)}"]
        for name, v in (r["test"].get("voices") or {}).items():
            lines += ["", f"Real \"{report['keyword']}\" clips by the speaker's pitch, the spoken length and the clip's own SNR "
                          f"in the stream (measured from the audio, `deploy/voice_bands.py`), FRR at the {name} threshold "
                          f"{_thr(v['threshold'])}:", ""]
            lines += _table(["band", "keywords", "FRR (95% CI)"],
                            [[f"{kind}: {band}", t["n"], f"{_pct(t['frr'])} ({_pct(t['frr_ci'][0])}-{_pct(t['frr_ci'][1])})"]
                             for kind in VOICE_KINDS if kind in v for band, t in v[kind].items()])
        for name, a in r["accents"].items():
            lines += ["", f"Per-accent FRR of held-out synthetic voices at the {name} threshold {_thr(a['threshold'])} "
                          f"(overall {_pct(a['frr'])}, worst/best {_ratio(a['worst_over_best'])}):", ""]
            lines += _table(["accent", "keywords", "FRR (95% CI)"],
                            [[acc, v["n"], f"{_pct(v['frr'])} ({_pct(v['frr_ci'][0])}-{_pct(v['frr_ci'][1])})"] for acc, v in a["per_accent"].items()])
            lines += _accent_engine_table(a)
    lines += ["", f"Total time {report['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _accent_engine_table(a: dict) -> list[str]:
    """Misses / keywords per accent and engine (runs made before the split have none; one engine needs no split)."""
    engines = list(a.get("per_engine") or {})
    if len(engines) < 2:
        return []
    cells = a["per_accent_engine"]
    rows = [[acc] + [f"{t[g]['misses']}/{t[g]['n']}" if g in t else "" for g in engines] for acc, t in cells.items()]
    rows.append(["all accents"] + [f"{_pct(a['per_engine'][g]['frr'])}" for g in engines])
    return ["", "The same keywords by the engine that spoke them (misses / keywords): an accent missed in one engine only "
                "is that engine's rendering of it more than the accent.", ""] + _table(["accent"] + engines, rows)


def plot_det(report: dict, path: Path) -> Path:
    """FRR against FA/h for every rotation (log x; zero false accepts drawn at half of one false accept)."""
    from deploy.report import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in report["rotations"]:
        hours = r["test"]["background_hours"]
        floor = 0.5 / hours
        fa = np.array([max(p["fa_per_hour"], floor) for p in r["det"]])
        frr = np.array([100 * p["frr"] for p in r["det"]])
        order = np.lexsort((frr, fa))
        ax.plot(fa[order], frr[order], "-", lw=1.5, label=f"rotation {r['rotation']} (test bg: {'+'.join(r['test_background_folders'])})")
        at = r["test"]["at_calibrated"]
        ax.plot([max(at["fa_per_hour"], floor)], [100 * at["frr"]], "*", ms=11, label=f"{r['rotation']}: calibrated {at['threshold']:.4g}")
    for x in (0.1, 0.5):
        ax.axvline(x, color="grey", lw=0.8, ls=":")
    ax.axhline(5, color="red", lw=0.8, ls="--", label="goal: 5% FRR")
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour (log; zero FA drawn at 0.5 / hours)")
    ax.set_ylabel("false-reject rate on real speakers (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{report['config']['name']}: real \"{report['keyword']}\", {report['config']['snr_db']:g} dB SNR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return path


def plot_accents(report: dict, path: Path) -> Path:
    """Per-accent FRR (held-out synthetic voices) at the calibrated threshold, one bar group per rotation."""
    from deploy.report import _pyplot, save_figure

    plt = _pyplot()
    rots = [r for r in report["rotations"] if "calibrated" in r["accents"]]
    accents = sorted({a for r in rots for a in r["accents"]["calibrated"]["per_accent"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(rots))
    for i, r in enumerate(rots):
        table = r["accents"]["calibrated"]["per_accent"]
        y = np.array([100 * table[a]["frr"] if a in table else np.nan for a in accents])
        lo = np.array([100 * table[a]["frr_ci"][0] if a in table else np.nan for a in accents])
        hi = np.array([100 * table[a]["frr_ci"][1] if a in table else np.nan for a in accents])
        x = np.arange(len(accents)) + i * width
        ax.bar(x, y, width, yerr=[y - lo, hi - y], capsize=2, label=f"rotation {r['rotation']}")
    ax.set_xticks(np.arange(len(accents)) + width * (len(rots) - 1) / 2)
    ax.set_xticklabels(accents, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("FRR at the calibrated threshold (%)")
    ax.set_title("Held-out synthetic voices, per accent (95% CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return path


def plot_voices(report: dict, path: Path) -> Path:
    """FRR of the real keyword clips by pitch, spoken length and own SNR band, at the 0.5 FA/h threshold, one bar per rotation."""
    from deploy.report import _pyplot, save_figure

    plt = _pyplot()
    rots = [r for r in report["rotations"] if (r["test"].get("voices") or {}).get("test_0.5_fa_per_hour")]
    kinds = [k for k in VOICE_KINDS if all(k in r["test"]["voices"]["test_0.5_fa_per_hour"] for r in rots)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), sharey=True)
    width = 0.8 / max(1, len(rots))
    for ax, kind in zip(axes, kinds):
        title = VOICE_KINDS[kind]
        bands = list(dict.fromkeys(b for r in rots for b in r["test"]["voices"]["test_0.5_fa_per_hour"][kind]))
        for i, r in enumerate(rots):
            table = r["test"]["voices"]["test_0.5_fa_per_hour"][kind]
            y = np.array([100 * table[b]["frr"] if b in table else np.nan for b in bands])
            lo = np.array([100 * table[b]["frr_ci"][0] if b in table else np.nan for b in bands])
            hi = np.array([100 * table[b]["frr_ci"][1] if b in table else np.nan for b in bands])
            ax.bar(np.arange(len(bands)) + i * width, y, width, yerr=[y - lo, hi - y], capsize=2, label=f"rotation {r['rotation']}")
        ax.set_xticks(np.arange(len(bands)) + width * (len(rots) - 1) / 2)
        ax.set_xticklabels([f"{b}\n({', '.join(str(r['test']['voices']['test_0.5_fa_per_hour'][kind].get(b, {}).get('n', 0)) for r in rots)})"
                            for b in bands], fontsize=7)
        ax.set_title(f"by {title}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("FRR at 0.5 FA/h (%, 95% CI)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['config']['name']}: which real \"{report['keyword']}\" speakers are missed (clips per band in brackets)", fontsize=9)
    save_figure(fig, path)
    return path


def write_bench_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "det": out_dir / "det.png", "accents": out_dir / "accent_frr.png"}
    if any(r["test"].get("voices") for r in report["rotations"]):  # reports from before the voice bands have none
        files["voices"] = out_dir / "voice_frr.png"
    report["files"] = {k: str(v) for k, v in files.items()}
    files["json"].write_text(json.dumps(report, indent=1, default=str))
    files["markdown"].write_text(markdown(report))
    plot_det(report, files["det"])
    plot_accents(report, files["accents"])
    if "voices" in files:
        plot_voices(report, files["voices"])
    return files
