"""Writing an evaluation report: JSON for machines, Markdown for people, PNG plots to look at.

``deploy.evaluate`` computes the report dict; this module only presents it,
so a report.json from an earlier run can be re-rendered without re-running
the model. Plots use matplotlib's Agg backend (no display needed, works over
SSH and on a headless Raspberry Pi).

Files written into the output folder:

- ``report.json``: the whole report dict;
- ``report.md``: headline, per-accent and per-speaker tables, the speakers
  each accent still needs, confusion matrix, DET operating points, the worst
  misses and false accepts (with links to their audio under ``errors/``),
  skipped files, and, last, what to record next;
- ``det.png``: DET curve, FRR against false accepts per hour (log axis);
- ``accent_frr.png``: FRR per accent with 95% confidence intervals;
- ``confusion.png``: the clip-level confusion matrix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from deploy.advice import KIND_WORDS

FILES = {"json": "report.json", "markdown": "report.md", "det": "det.png", "accent_frr": "accent_frr.png", "confusion": "confusion.png"}


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write every report file into ``out_dir``; record their paths in ``report["files"]`` and return them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / v for k, v in FILES.items()}
    report.setdefault("files", {}).update({k: str(v) for k, v in paths.items()})
    plot_det(report, paths["det"])
    plot_accent_frr(report, paths["accent_frr"])
    plot_confusion(report, paths["confusion"])
    _write_text(paths["markdown"], markdown(report))
    _write_text(paths["json"], json.dumps(report, indent=2, sort_keys=False) + "\n")
    return paths


def _write_text(path: Path, text: str) -> None:
    """Atomic write: a reader never sees half a report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- Markdown


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pct_ci(x: float, ci, n: int) -> str:
    return "n/a" if n == 0 else f"{100 * x:.1f}% ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def headline(report: dict) -> str:
    """One sentence a person can quote: FRR at the false-accept rate, on how much background, and clip F1."""
    s, c = report["stream"], report["clips"]
    lo, hi = s["fa_per_hour_ci"]
    return (
        f"FRR {_pct_ci(s['frr'], s['frr_ci'], s['n_keywords'])} on {s['n_keywords']} keywords at "
        f"{s['fa_per_hour']:.2f} false accepts/hour (95% CI {lo:.2f}-{hi:.2f}; {s['false_accepts']} in "
        f"{s['background_hours'] * 60:.1f} min of background, SNR {s['snr_db']:g} dB), threshold {s['threshold']:.3f}; "
        f"clip F1 {c['f1']:.3f}, accuracy {c['accuracy']:.3f} on {c['n']} clips."
    )


def accent_rows(report: dict) -> list[list]:
    rows = []
    for accent, r in sorted(report.get("per_accent", {}).items()):
        rows.append([accent, r["n_speakers"], r["n_keyword"], _pct_ci(r["frr"], r["frr_ci"], r["n_keyword"]),
                     r["n_negative"], _pct_ci(r["far"], r["far_ci"], r["n_negative"]), r.get("stream_false_accepts", 0)])
    return rows


ACCENT_HEADER = ["accent", "speakers", "keywords in stream", "FRR (95% CI)", "other clips", "clip false accepts (95% CI)", "stream FAs during it"]


def markdown(report: dict) -> str:
    s, c, m = report["stream"], report["clips"], report["model"]
    sel = report.get("selection", {})
    lines = [
        f"# Evaluation: {', '.join(m['labels'][1:])}",
        "",
        f"Model `{m['path']}` on `{report['dataset']}` (split: {sel.get('split', '?')}, "
        f"{len(sel.get('speakers', []))} speakers, seed {report['seed']}).",
        "",
        f"**{headline(report)}**",
        "",
    ]
    for note in sel.get("notes", []):
        lines.append(f"> Note: {note}")
    if sel.get("notes"):
        lines.append("")
    lines += ["## Per accent", "",
              "FRR from the keyword clips in the stream; clip false accepts are the accent's other clips (sentences, "
              "confusable words) that fired when streamed alone.", ""]
    lines += _table(ACCENT_HEADER, accent_rows(report)) + [""]
    worst = sorted(((a, r) for a, r in report["per_accent"].items() if r["n_keyword"]), key=lambda x: -x[1]["frr"])
    if worst and worst[0][1]["frr"] > 0:
        a, r = worst[0]
        lines += [f"Highest FRR: **{a}** ({_pct(r['frr'])} of {r['n_keyword']} keywords); with "
                  f"{r['n_speakers']} speaker(s), the interval says how much that can be trusted.", ""]
    lines += _collection_section(report)
    lines += _voice_section(report)
    speakers = report.get("per_speaker", {})
    if speakers:
        lines += ["## Per speaker", ""]
        lines += _table(["speaker", "accent", "keywords", "missed", "FRR", "other clips", "false accepts"],
                        [[k, r["accent"], r["n_keyword"], r["misses"], _pct(r["frr"]) if r["n_keyword"] else "n/a",
                          r["n_negative"], r["false_fires"]] for k, r in speakers.items()]) + [""]
    labels, matrix = c["confusion"]["labels"], c["confusion"]["matrix"]
    lines += ["## Clips: confusion matrix", "", f"Rows: true label; columns: predicted. Precision {c['precision']:.3f}, recall {c['recall']:.3f}, F1 {c['f1']:.3f}.", ""]
    lines += _table(["true \\ predicted"] + labels, [[labels[i]] + row for i, row in enumerate(matrix)]) + [""]
    lines += ["## Stream: DET operating points", "",
              f"Thresholds replayed over the recorded scores (smoothing {m['smoothing']} hops, refractory {m['refractory_s']:g} s). "
              f"{s['n_keywords']} keywords in {s['duration_s'] / 60:.1f} min of audio; the detector ran at "
              f"{s['realtime_factor'] or 0:.0f}x real time.", ""]
    rows = [[f"<= {p['target_fa_per_hour']:g}", "none" if p["threshold"] is None else f"{p['threshold']:.3f}",
             _pct(p["frr"]), "n/a" if p["fa_per_hour"] is None else f"{p['fa_per_hour']:.2f}"] for p in report.get("operating_points", [])]
    rows.append([f"model's ({s['fa_per_hour']:.2f})", f"{s['threshold']:.3f}", _pct(s["frr"]), f"{s['fa_per_hour']:.2f}"])
    lines += _table(["FA/h budget", "threshold", "FRR", "FA/h"], rows) + [""]
    if s.get("missed"):
        lines += ["## Missed keywords", ""] + [f"- `{p}`" for p in s["missed"]] + [""]
    if s.get("false_accept_times"):
        lines += ["## Stream false accepts", ""]
        lines += [f"- {fa['time_s']:.2f} s during {fa['accent']}" + (f" (`{fa['path']}`)" if fa["path"] else "") for fa in s["false_accept_times"][:50]]
        lines.append("")
    lines += _errors_section(report)
    if report.get("skipped"):
        lines += ["## Skipped", ""] + [f"- `{x['path']}`: {x['reason']}" for x in report["skipped"]] + [""]
    lines += ["## Files", ""] + [f"- {k}: `{v}`" for k, v in report.get("files", {}).items()] + [""]
    if "advice" in report:
        lines += ["## What to record next", ""]
        lines += [f"- {a['text']}" for a in report["advice"]] or ["- Nothing stands out: no accent, background or condition is worse than the others beyond chance, and every interval is within the target."]
        lines.append("")
    return "\n".join(lines)


def _voice_section(report: dict) -> list[str]:
    """FRR by the speaker's pitch and the keyword's spoken length, measured from the audio (``deploy.voice_bands``)."""
    v = report.get("per_voice")
    if not v or not v.get("keywords"):
        return []
    from deploy.voice_bands import VOICE_KINDS

    lines = ["## Per voice", "", "FRR of the stream's keywords by the speaker's median pitch, by the spoken length of the "
             "clip and by the clip's own SNR in the stream (its recorded level against the noise bed), all measured from "
             "the audio (labels cannot say what a voice is like).", ""]
    lines += _table(["band", "keywords", "FRR (95% CI)"],
                    [[f"{kind}: {band}", t["n"], _pct_ci(t["frr"], t["frr_ci"], t["n"])]
                     for kind in VOICE_KINDS if kind in v for band, t in v[kind].items()])
    return lines + [""]


def _collection_section(report: dict) -> list[str]:
    """Per accent: the FRR interval allowing for speakers, and how many more speakers would narrow it to the target."""
    plan = report.get("collection")
    if not plan or not plan["accents"]:
        return []
    h = 100 * plan["target_half_width"]
    rows = [[a, r["n_speakers"], f"{r['takes_per_speaker']:g}", _pct(r["frr"]), _ci_pts(report["per_accent"][a]["frr_ci"]),
             _ci_pts(r["frr_ci_speakers"]), f"{r['design_effect']:.2f}", r["speakers_needed"], r["more_speakers"]]
            for a, r in plan["accents"].items()]
    icc = "could not be estimated" if plan["icc_estimate"] is None else f"was estimated at {plan['icc_estimate']:.2f}"
    return ["### Speakers needed per accent", "",
            f"How many speakers of each accent would bring the FRR interval within ±{h:g} points[^speakers].", ""] + _table(
        ["accent", "speakers", "takes each", "FRR", "95% CI, takes independent", "95% CI, allowing for speakers",
         "design effect", f"speakers for ±{h:g} pts", "more to record"], rows) + ["",
        f"[^speakers]: Takes of one speaker are correlated, so speakers, not takes, are the unit. The intraclass "
        f"correlation ρ of misses between takes of one speaker (one-way ANOVA estimator, speakers nested in accents, over "
        f"all test speakers) {icc}; the plan uses ρ = {plan['icc']:.2f} (never below {plan['icc_floor']:g}: a few "
        f"speakers cannot show their takes are independent). Per accent with m takes per speaker: design effect "
        f"DE = 1 + (m − 1)ρ, effective takes N / DE, and the Wilson interval on those. Speakers needed = "
        f"⌈n_h · DE / m⌉, where n_h is the effective size at which the Wilson half-width at the accent's current FRR "
        f"is {h:g} points (the larger root of h²n² + (2h²z² − z²pq)n + h²z⁴ − z⁴/4 = 0). The current FRR is the "
        f"planning value: an estimate for planning, not a guarantee.", ""]


def _ci_pts(ci) -> str:
    return f"{100 * ci[0]:.0f}-{100 * ci[1]:.0f}%"


def _link(path: str) -> str:
    return f"[{Path(path).name}]({path})"


def _errors_section(report: dict) -> list[str]:
    """The worst misses and false accepts, each with a link to its audio (relative to report.md)."""
    e = report.get("errors")
    if not e:
        return []
    lines = []
    ctx = f"{e['context_s']:g} s"
    if e["stream_misses"]:
        lines += ["## Worst misses", "",
                  f"Missed keywords of the stream, furthest below the threshold first, cut from the stream as the detector "
                  f"heard it with {ctx} either side (top {e['top']}). Peak: the keyword's highest smoothed score while a "
                  "detection would have counted.", ""]
        lines += _table(["rank", "audio", "speaker", "accent", "source clip", "peak vs threshold", "SNR"],
                        [[m["rank"], _link(m["file"]), m["speaker"], m["accent"], f"`{m['path']}`",
                          f"{m['peak_score']:.2f} / {m['threshold']:.2f}" + (" (refractory)" if m["refractory"] else ""),
                          "n/a" if m["snr_db"] is None else f"{m['snr_db']:.1f} dB"] for m in e["stream_misses"]]) + [""]
    if e["clip_misses"]:
        lines += ["## Missed clips (played alone)", "", f"Keyword clips the clip pass missed, lowest peak first (top {e['top']}).", ""]
        lines += _table(["rank", "audio", "speaker", "accent", "source clip", "peak vs threshold"],
                        [[m["rank"], _link(m["file"]), m["speaker"], m["accent"], f"`{m['path']}`",
                          f"{m['peak_score']:.2f} / {m['threshold']:.2f}"] for m in e["clip_misses"]]) + [""]
    if e["stream_false_accepts"]:
        lines += ["## Worst false accepts", "",
                  f"False detections in the stream, highest score first: the audio the smoothed score was computed from "
                  f"(one window plus the smoothing hops before the detection) with {ctx} either side (top {e['top']}).", ""]
        rows = []
        for f in e["stream_false_accepts"]:
            src = f["source"]
            during = KIND_WORDS.get(src["kind"], src["kind"]) + (f", {src['accent']} / {src['speaker']}" if src["speaker"] else "")
            what = (f"`{src['path']}`" if src["path"] else "") + (f" “{src['text']}”" if src["text"] else "")
            rows.append([f["rank"], _link(f["file"]), f"{f['time_s']:.2f} s", f"{f['score']:.2f} / {f['threshold']:.2f}", during, what or "-"])
        lines += _table(["rank", "audio", "at", "score vs threshold", "during", "background clip"], rows) + [""]
        by_kind = e["false_accept_sources"]["by_kind"]
        played = sum(v["seconds"] for v in by_kind.values()) or 1.0
        lines += _table(["background", "false accepts", "share of background time"],
                        [[KIND_WORDS.get(k, k), v["false_accepts"], "-" if k == "gap" else _pct(v["seconds"] / played)]
                         for k, v in sorted(by_kind.items(), key=lambda x: -x[1]["false_accepts"])]) + [""]
    if e["clip_false_accepts"]:
        lines += ["## Clips that fired alone", "", f"Other clips that fired when streamed alone, highest score first (top {e['top']}).", ""]
        lines += _table(["rank", "audio", "kind", "text", "speaker", "accent", "score vs threshold"],
                        [[f["rank"], _link(f["file"]), f["kind"], f["text"] or "-", f["speaker"], f["accent"],
                          f"{f['score']:.2f} / {f['threshold']:.2f}"] for f in e["clip_false_accepts"]]) + [""]
    return lines



# ----------------------------------------------------------------------------- plots


def save_figure(fig, path: Path) -> None:
    """Lay out, write at the report's resolution, and free the figure (pyplot keeps every open one)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_det(report: dict, path: Path) -> Path:
    """FRR against FA/h over the threshold sweep. Zero false accepts sit at the left edge (the log axis has no 0)."""
    plt = _pyplot()
    s = report["stream"]
    det = report["det"]
    floor = 0.5 / s["background_hours"] if s["background_hours"] else 0.1  # half of "one false accept"
    fa = np.array([max(p["fa_per_hour"], floor) for p in det])
    frr = np.array([100 * p["frr"] for p in det])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    order = np.argsort(fa, kind="stable")
    ax.plot(fa[order], frr[order], "-o", ms=3, label="threshold sweep")
    ax.plot([max(s["fa_per_hour"], floor)], [100 * s["frr"]], "r*", ms=12, label=f"model threshold {s['threshold']:.2f}")
    ax.axvline(floor, color="grey", lw=0.8, ls=":")
    ax.text(floor, 100, " 0 FA", color="grey", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour (log)")
    ax.set_ylabel("false-reject rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"DET: {s['n_keywords']} keywords, {s['background_hours'] * 60:.0f} min background, SNR {s['snr_db']:g} dB")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path)
    return path


def plot_accent_frr(report: dict, path: Path) -> Path:
    """FRR per accent with Wilson 95% intervals: a gap between accents shows only if the bars clear each other's whiskers."""
    plt = _pyplot()
    items = [(a, r) for a, r in sorted(report["per_accent"].items()) if r["n_keyword"]]
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(items) + 2), 4.2))
    if items:
        x = np.arange(len(items))
        frr = np.array([100 * r["frr"] for _, r in items])
        lo = np.array([100 * r["frr_ci"][0] for _, r in items])
        hi = np.array([100 * r["frr_ci"][1] for _, r in items])
        ax.bar(x, frr, color="tab:blue", alpha=0.8)
        ax.errorbar(x, frr, yerr=[np.maximum(frr - lo, 0), np.maximum(hi - frr, 0)], fmt="none", ecolor="black", capsize=4)
        ax.set_xticks(x, [f"{a}\n(n={r['n_keyword']})" for a, r in items], rotation=45 if len(items) > 6 else 0, ha="right" if len(items) > 6 else "center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no keyword clips", ha="center", transform=ax.transAxes)
    ax.set_ylabel("false-reject rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"FRR per accent at threshold {report['stream']['threshold']:.2f} (95% CI)")
    ax.grid(True, axis="y", alpha=0.3)
    save_figure(fig, path)
    return path


def plot_confusion(report: dict, path: Path) -> Path:
    """The clip-level confusion matrix with counts in the cells (rows: truth, columns: prediction)."""
    plt = _pyplot()
    labels = report["clips"]["confusion"]["labels"]
    matrix = np.array(report["clips"]["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2.5, 1.1 * len(labels) + 2))
    ax.imshow(matrix, cmap="Blues")
    top = matrix.max() if matrix.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > top / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"clips (n={report['clips']['n']})")
    save_figure(fig, path)
    return path
