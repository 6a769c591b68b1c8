"""The model card: a Markdown page beside the ONNX file, for the people who deploy it.

It is rebuilt from the model's own metadata (data per accent, operating point,
training settings) plus, when ``kws eval`` has run, its report (results per
accent), so the card and the model can never describe different things.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy.modelfile import KwsModel


def card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".md")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write_model_card(model_path: str | Path, report: dict | None = None) -> Path:
    """Write ``<model>.md``; ``report`` is the dict ``kws eval`` writes as JSON."""
    model_path = Path(model_path)
    info = KwsModel(model_path).info
    meta = info.metadata
    lines = [
        f"# Model card: {', '.join(info.keywords)}",
        "",
        f"File: `{model_path.name}` ({model_path.stat().st_size / 1024:.0f} KiB), "
        f"{meta.get('model_name')} with {meta.get('n_parameters')} parameters, seed {meta.get('seed')}.",
        f"Training data digest: `{info.data_digest}` (dataset `{meta.get('dataset')}`).",
        "",
        "## Operating point",
        "",
        f"- threshold {info.threshold:.3f} on the score averaged over {info.smoothing} hops",
        f"- window {info.window_s:.2f} s, scored every {info.hop_s * 1000:.0f} ms, "
        f"refractory period {info.refractory_s:.2f} s after a detection",
        *(["- streaming: each hop runs the streaming graph on the new frames with carried state "
           "(the same scores as the window graph, checked at export)"] if "stream" in meta else []),
        f"- features: {info.feature_config.n_mfcc} MFCC from {info.feature_config.n_mels} mel bands, "
        f"{info.feature_config.win_s * 1000:.0f} ms window, {info.feature_config.hop_s * 1000:.0f} ms hop, "
        f"{info.feature_config.sample_rate} Hz",
        "",
    ]
    counts = meta.get("data_counts") or {}
    if counts:
        lines += ["## Data per accent", "", "Clips per split (keyword / other), by accent; speakers are never shared between splits.", ""]
        rows = []
        for accent in sorted(counts):
            c = counts[accent]
            rows.append([accent] + [f"{c.get(s, {}).get('keyword', 0)} / {c.get(s, {}).get('other', 0)}" for s in ("train", "val", "test")])
        lines += _table(["accent", "train", "val", "test"], rows) + [""]
    if report:
        lines += ["## Evaluation per accent", "", f"From `kws eval` on {report.get('dataset', '?')}, at the model's threshold.", ""]
        lines += report_accent_table(report) + [""]
        stream = report.get("stream", {})
        if stream:
            lines += [
                f"On {stream.get('background_hours', 0) * 60:.1f} min of background speech and noise: "
                f"{stream.get('false_accepts', '?')} false accepts ({stream.get('fa_per_hour', 0):.2f} per hour), "
                f"FRR {100 * stream.get('frr', 0):.1f}%.",
                "",
            ]
    lines += [
        "## Known limits",
        "",
        "- Trained on the dataset above only: accents, voices, microphones and rooms it does not contain are untested.",
        "- Synthetic voices stand in for speakers where no recordings exist; real speech may score lower.",
        "- Figures come with 95% confidence intervals; with few test speakers of an accent they are wide.",
        "",
    ]
    path = card_path(model_path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def report_accent_table(report: dict) -> list[str]:
    """Per-accent rows of an evaluation report as a Markdown table."""
    rows = []
    for accent, r in sorted(report.get("per_accent", {}).items()):
        lo, hi = r["frr_ci"]
        rows.append([accent, r["n_speakers"], r["n_keyword"], f"{100 * r['frr']:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})", r["n_negative"], f"{100 * r['far']:.1f}%"])
    return _table(["accent", "speakers", "keyword clips", "FRR (95% CI)", "other clips", "false accept rate"], rows)


def load_report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
