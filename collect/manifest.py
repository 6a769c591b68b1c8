"""The manifest: one JSON line per clip, one manifest file per session.

A dataset is a folder. Each session writes ``<dataset>/<session>/manifest.jsonl``
and keeps its clips under ``<dataset>/<session>/``, so two sessions on two
laptops never write the same file and their folders can simply be copied
together. The dataset is the union of all ``*/manifest.jsonl``.

Rows are self-contained (see ``ClipRow``); ``path`` is relative to the dataset
folder. A corrupt line is reported with its file and line number and skipped;
it never hides the other rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from features.errors import ManifestError

MANIFEST_NAME = "manifest.jsonl"
NEGATIVE = "negative"  # label of any speech that is not a keyword
NOISE = "noise"  # label of non-speech background clips
HUMAN = "human"  # the ``source`` of a recorded (not synthesised) clip
MINED = "mined"  # the ``kind`` of a window mined from long background audio (deploy.mine)


@dataclass(frozen=True)
class ClipRow:
    """One clip. Every field a later stage needs is here, nothing is implied by folder names."""

    path: str  # relative to the dataset folder, forward slashes
    label: str  # the keyword (e.g. "computer"), NEGATIVE or NOISE
    text: str  # the prompted text ("" for noise)
    speaker: str  # pseudonymous speaker id; a synthetic voice configuration counts as a speaker
    accent: str  # accent tag, e.g. "en-GB-scotland"
    source: str  # HUMAN, or "<engine>:<voice>" for synthetic clips
    session: str  # id of the session that made the clip
    device: str  # input device name, or the synthesis engine
    sample_rate: int  # Hz, of the file on disk
    duration_s: float
    sha256: str  # of the file's bytes
    created: str  # ISO 8601, UTC
    kind: str = ""  # finer than label: "keyword", "confusable", "sentence", "noise"
    gender: str | None = None
    age_band: str | None = None
    extra: dict = field(default_factory=dict)  # anything else a session wants to keep

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipRow":
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ManifestError(f"missing fields: {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def data_digest(rows) -> str:
    """sha256 over the sorted ``(path, sha256, label)`` of ``rows``: identifies a set of clips exactly, in any order."""
    h = hashlib.sha256()
    for path, sha, label in sorted((r.path, r.sha256, r.label) for r in rows):
        h.update(f"{path}\t{sha}\t{label}\n".encode("utf-8"))
    return h.hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class BadLine:
    """A manifest line that could not be read, with the reason."""

    manifest: Path
    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"{self.manifest}:{self.line_no}: {self.reason}"


def manifest_paths(dataset: str | Path) -> list[Path]:
    """All session manifests of a dataset, sorted (so every reader sees one order)."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise ManifestError(f"{dataset}: dataset folder not found")
    return sorted(dataset.glob(f"*/{MANIFEST_NAME}"))


def read_manifest(path: Path) -> tuple[list[ClipRow], list[BadLine]]:
    """Rows of one manifest file, and the lines that could not be parsed."""
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(ClipRow.from_dict(json.loads(line)))
            except json.JSONDecodeError as exc:
                bad.append(BadLine(path, line_no, f"not valid JSON ({exc.msg})"))
            except (ManifestError, TypeError) as exc:
                bad.append(BadLine(path, line_no, str(exc)))
    return rows, bad


def read_dataset(dataset: str | Path) -> tuple[list[ClipRow], list[BadLine]]:
    """All rows of all session manifests of a dataset, and every unreadable line."""
    rows, bad = [], []
    for path in manifest_paths(dataset):
        r, b = read_manifest(path)
        rows += r
        bad += b
    return rows, bad


def load_rows(dataset: str | Path) -> list[ClipRow]:
    """Rows of a dataset, raising ``ManifestError`` if it has none."""
    rows, bad = read_dataset(dataset)
    if not rows:
        detail = f" ({len(bad)} unreadable lines, first: {bad[0]})" if bad else ""
        raise ManifestError(f"{dataset}: no clips found in any */{MANIFEST_NAME}{detail}")
    return rows


class ManifestWriter:
    """Appends rows to one session's manifest, flushing and fsyncing each one.

    Call ``append`` only after the clip's file is complete on disk, so a row
    never points at a file that does not exist yet.
    """

    def __init__(self, dataset: str | Path, session: str):
        self.dataset = Path(dataset)
        self.session_dir = self.dataset / session
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.session_dir / MANIFEST_NAME
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: ClipRow) -> None:
        self._file.write(row.to_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
