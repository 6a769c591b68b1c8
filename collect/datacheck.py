"""``kws data``: validate every manifest row against its file, and count what the dataset holds.

Every problem is collected with its reason (missing file, unreadable audio,
wrong duration or sample rate, changed bytes, corrupt manifest line, the same
file listed twice) and reported together; one bad row never hides the others
or stops the listing. Counts are over the rows that passed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from collect.manifest import ClipRow, read_dataset
from features.audio import sha256_file

DURATION_TOLERANCE_S = 0.01


@dataclass
class Problem:
    where: str  # the clip path, or "manifest:line"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class DataReport:
    dataset: Path
    good: list[ClipRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def counts(self, key: str) -> Counter:
        return Counter(getattr(row, key) for row in self.good)

    @property
    def hours(self) -> float:
        return sum(r.duration_s for r in self.good) / 3600

    def to_text(self, per_speaker: bool = False) -> str:
        """Counts per label, a per-accent table (speakers and clips per label), optionally per speaker, then problems."""
        lines = [f"{self.dataset}: {len(self.good)} good clips ({self.hours * 60:.1f} min), {len(self.problems)} problems"]
        labels = sorted(self.counts("label"))
        lines.append("\nper label: " + ", ".join(f"{k} {n}" for k, n in sorted(self.counts("label").items())))
        lines.append("per session: " + ", ".join(f"{k} {n}" for k, n in sorted(self.counts("session").items())))
        lines.append(f"\n{'accent':<20} {'speakers':>8} " + " ".join(f"{lab[:10]:>10}" for lab in labels))
        for accent in sorted(self.counts("accent")):
            rows = [r for r in self.good if r.accent == accent]
            per_label = Counter(r.label for r in rows)
            lines.append(f"{accent:<20} {len({r.speaker for r in rows}):>8} " + " ".join(f"{per_label[lab]:>10}" for lab in labels))
        lines.append(f"{'all':<20} {len(self.counts('speaker')):>8} " + " ".join(f"{self.counts('label')[lab]:>10}" for lab in labels))
        if per_speaker:
            lines.append("\nper speaker:")
            lines += [f"  {name:<28} {n:>6}" for name, n in sorted(self.counts("speaker").items())]
        if self.problems:
            lines.append(f"\nproblems ({len(self.problems)}):")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "dataset": str(self.dataset),
            "good": len(self.good),
            "minutes": round(self.hours * 60, 2),
            "per_label": dict(self.counts("label")),
            "per_accent": dict(self.counts("accent")),
            "per_speaker": dict(self.counts("speaker")),
            "problems": [{"where": p.where, "reason": p.reason} for p in self.problems],
        }


def check_row(dataset: Path, row: ClipRow, verify_sha256: bool = True) -> str | None:
    """The reason this row is bad, or None if its file matches it."""
    path = dataset / row.path
    if not path.is_file():
        return "file not found"
    try:
        info = sf.info(str(path))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f"cannot read audio ({reason})"
    if info.frames == 0:
        return "contains no samples"
    if info.samplerate != row.sample_rate:
        return f"sample rate is {info.samplerate} Hz, manifest says {row.sample_rate}"
    duration = info.frames / info.samplerate
    if abs(duration - row.duration_s) > DURATION_TOLERANCE_S:
        return f"duration is {duration:.3f} s, manifest says {row.duration_s:.3f}"
    if verify_sha256 and sha256_file(path) != row.sha256:
        return "sha256 differs from the manifest (file changed after it was recorded)"
    return None


def check_dataset(dataset: str | Path, verify_sha256: bool = True, progress: bool = False) -> DataReport:
    """Read all session manifests of ``dataset`` and check every row against its file."""
    from tqdm import tqdm

    dataset = Path(dataset)
    rows, bad_lines = read_dataset(dataset)
    report = DataReport(dataset)
    report.problems += [Problem(f"{b.manifest.relative_to(dataset)}:{b.line_no}", b.reason) for b in bad_lines]
    seen: set[str] = set()
    for row in tqdm(rows, desc="checking", unit="clip", disable=not progress):
        if row.path in seen:
            report.problems.append(Problem(row.path, "listed more than once"))
            continue
        seen.add(row.path)
        reason = check_row(dataset, row, verify_sha256)
        if reason:
            report.problems.append(Problem(row.path, reason))
        else:
            report.good.append(row)
    return report
