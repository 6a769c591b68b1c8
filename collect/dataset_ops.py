"""Changing a dataset as a whole: forget a speaker (withdrawn consent), import clips recorded elsewhere.

``forget_speaker`` rewrites each session manifest without the speaker's rows
(temp file, fsync, rename: a crash leaves the old or the new manifest, never
half of one), then deletes their clip files, their set-aside takes in
``rejected/``, and a session folder that held only them. Lines of a manifest
that cannot be parsed are kept verbatim and reported: they might belong to
the speaker, and the organiser has to look.

``import_folder`` brings clips from another tool into a new session of the
dataset: each is converted to the house format (16 kHz mono PCM-16) and gets a
manifest row like a recorded take. Labels come from the CSV or from the
sub-folder a file is in; speaker and accent from the CSV (or one value for
all). A file that cannot be imported is listed with the reason; the others
are imported anyway.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from collect.manifest import HUMAN, MANIFEST_NAME, NEGATIVE, NOISE, ClipRow, manifest_paths, now_iso, read_dataset
from collect.durable import Appender, check_writable, rewrite_jsonl_atomic, write_new_wav
from collect.record import CONSENT_FILE, REJECTED_DIR, SESSION_FILE, check_speaker_id
from features.audio import SAMPLE_RATE, load_audio, sha256_file
from features.errors import AudioError, ConfigError, KwsError, ManifestError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".opus"}


# ---------------------------------------------------------------- forget

@dataclass
class ForgetReport:
    speaker: str
    rows: list[ClipRow] = field(default_factory=list)  # rows removed
    files: list[str] = field(default_factory=list)  # files deleted, relative to the dataset
    sessions_removed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # manifest lines that could not be checked

    def to_text(self) -> str:
        sessions = sorted({r.session for r in self.rows})
        lines = [f"removed speaker {self.speaker}: {len(self.rows)} rows from {len(sessions)} sessions "
                 f"({', '.join(sessions) or '-'}), {len(self.files)} files deleted"]
        if self.sessions_removed:
            lines.append("session folders removed (they held only this speaker): " + ", ".join(self.sessions_removed))
        if self.unreadable:
            lines.append(f"could not check {len(self.unreadable)} unreadable manifest lines (kept; look at them):")
            lines += [f"  {u}" for u in self.unreadable]
        return "\n".join(lines)


def forget_speaker(dataset: str | Path, speaker: str, dry_run: bool = False) -> ForgetReport:
    """Remove every clip and row of ``speaker`` from ``dataset``; say what was removed."""
    dataset = Path(dataset)
    report = ForgetReport(speaker)
    rows, _ = read_dataset(dataset)  # raises ManifestError if the folder is missing
    plans = {p.parent.name: p for p in dataset.glob(f"*/{SESSION_FILE}")}
    owned_sessions = set()
    for name, path in plans.items():
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("speaker", {}).get("speaker") == speaker:
                owned_sessions.add(name)
        except (OSError, json.JSONDecodeError):
            pass
    if not any(r.speaker == speaker for r in rows) and not owned_sessions:
        known = sorted({r.speaker for r in rows})
        shown = ", ".join(known[:15]) + (" ..." if len(known) > 15 else "")
        raise ManifestError(f"{dataset}: no clips of speaker {speaker!r}; speakers here: {shown or 'none'}")
    for manifest in manifest_paths(dataset):
        keep, removed = [], []
        for line_no, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(keepends=True), 1):
            if not line.strip():
                continue
            try:
                row = ClipRow.from_dict(json.loads(line))
            except (json.JSONDecodeError, KwsError, TypeError) as exc:
                report.unreadable.append(f"{manifest.relative_to(dataset)}:{line_no}: {exc}")
                keep.append(line)
                continue
            if row.speaker == speaker:
                removed.append(row)
            else:
                keep.append(line)  # verbatim: forgetting one speaker never rewrites another's rows
        if not removed:
            continue
        report.rows += removed
        if not dry_run:
            rewrite_jsonl_atomic(manifest, keep)  # rows first: a crash now leaves files without rows, never rows without files
        for row in removed:
            path = dataset / row.path
            if path.exists():
                report.files.append(row.path)
                if not dry_run:
                    path.unlink()
    for session_dir in sorted({p.parent for p in manifest_paths(dataset)} | {dataset / s for s in owned_sessions}):
        for wav in sorted((session_dir / REJECTED_DIR).glob(f"{speaker}-*")):
            report.files.append(wav.relative_to(dataset).as_posix())
            if not dry_run:
                wav.unlink()
        manifest = session_dir / MANIFEST_NAME
        empty = not manifest.exists() or not manifest.read_text(encoding="utf-8").strip()
        if session_dir.name in owned_sessions and empty:
            report.sessions_removed.append(session_dir.name)
            if not dry_run:
                shutil.rmtree(session_dir)
        elif (session_dir / CONSENT_FILE).exists() and not dry_run:
            _append_consent_withdrawal(session_dir / CONSENT_FILE, speaker)
    return report


def _append_consent_withdrawal(path: Path, speaker: str) -> None:
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip().startswith("{")]
    if any(e.get("speaker") == speaker for e in entries):
        a = Appender(path)
        try:
            a.append({"time": now_iso(), "speaker": speaker, "consent": False, "withdrawn": True, "data_removed": True})
        finally:
            a.close()


# ---------------------------------------------------------------- import

@dataclass
class ImportReport:
    session: str
    imported: list[ClipRow] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (source file or CSV line, reason)
    manifest: Path | None = None

    def to_text(self) -> str:
        per_label: dict[str, int] = {}
        for r in self.imported:
            per_label[r.label] = per_label.get(r.label, 0) + 1
        lines = [f"imported {len(self.imported)} clips into session {self.session}"
                 + (f" ({', '.join(f'{k} {n}' for k, n in sorted(per_label.items()))})" if per_label else "")]
        if self.refused:
            lines.append(f"not imported ({len(self.refused)}):")
            lines += [f"  {where}: {why}" for where, why in self.refused]
        return "\n".join(lines)


def _kind_of(label: str, keyword_labels: set[str]) -> str:
    if label == NOISE:
        return "noise"
    if label == NEGATIVE:
        return "other"
    return "keyword"


def _clean_label(label: str) -> str:
    label = label.strip()
    low = label.lower()
    if low in ("negative", "negatives", "unknown", "other", "_unknown_"):
        return NEGATIVE
    if low in ("noise", "_background_noise_", "background", "silence"):
        return NOISE
    return low


def _read_metadata(folder: Path, metadata: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """CSV rows with a ``path`` column (relative to ``folder``); other columns: label, speaker, accent, text, gender, age_band, kind."""
    try:
        with open(metadata, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in [c.strip().lower() for c in reader.fieldnames]:
                raise ConfigError(f"{metadata}: the CSV needs a 'path' column (and label, speaker, accent...); columns: {reader.fieldnames}")
            out = []
            for line_no, raw in enumerate(reader, 2):
                out.append({"_where": f"{metadata.name}:{line_no}", **{(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}})
            return out, []
    except OSError as exc:
        raise ConfigError(f"{metadata}: cannot read the metadata file ({exc.strerror})") from None
    except csv.Error as exc:
        raise ConfigError(f"{metadata}: not a readable CSV ({exc})") from None


def import_folder(dataset: str | Path, folder: str | Path, metadata: str | Path | None = None, speaker: str | None = None,
                  accent: str | None = None, session: str | None = None, source: str = HUMAN) -> ImportReport:
    """Convert and add the clips of ``folder`` to ``dataset`` as a new session; list what could not be imported.

    Without ``metadata``, every audio file under ``folder/<label>/`` is imported
    with that label (``negative``/``unknown`` and ``noise``/``_background_noise_``
    are recognised); speaker and accent are ``speaker``/``accent``, or for the
    Speech Commands naming ``<speaker>_nohash_<n>.wav`` the speaker is the prefix.
    With ``metadata`` (CSV), only its rows are imported, and its columns win.
    A file whose bytes are already in the dataset (same source sha256) is skipped.
    """
    dataset, folder = Path(dataset), Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: folder to import not found")
    check_writable(dataset)
    session = session or f"import-{re.sub(r'[^A-Za-z0-9._-]+', '-', folder.resolve().name)}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    report = ImportReport(session)
    if metadata:
        entries, _ = _read_metadata(folder, Path(metadata))
        listed = {(folder / e.get("path", "")).resolve() for e in entries}
        for f in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            if f.resolve() not in listed:
                report.refused.append((f.relative_to(folder).as_posix(), f"not listed in {Path(metadata).name}"))
    else:
        entries = []
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = f.relative_to(folder)
            if f.suffix.lower() not in AUDIO_SUFFIXES:
                if not f.name.startswith(".") and f.suffix.lower() not in (".txt", ".md", ".csv", ".json"):
                    report.refused.append((rel.as_posix(), "not an audio file"))
                continue
            if len(rel.parts) < 2:
                report.refused.append((rel.as_posix(), "no label: put it in a folder named after its label, or give --metadata"))
                continue
            entries.append({"_where": rel.as_posix(), "path": rel.as_posix(), "label": rel.parts[0]})
    existing, _ = read_dataset(dataset) if dataset.is_dir() else ([], [])
    seen_sources = {r.extra.get("source_sha256") for r in existing} - {None}
    session_dir = dataset / session
    appender = None
    try:
        for e in entries:
            where = e["_where"]
            src = folder / e.get("path", "")
            label = _clean_label(e.get("label", ""))
            spk = e.get("speaker") or speaker
            if not spk:
                m = re.match(r"^([0-9a-f]{6,})_nohash_", src.name)
                spk = m.group(1) if m else None
            acc = e.get("accent") or accent
            if not e.get("path"):
                report.refused.append((where, "empty path"))
                continue
            if not src.is_file():
                report.refused.append((where, f"file not found: {e['path']}"))
                continue
            if not label:
                report.refused.append((where, "no label"))
                continue
            if not spk:
                report.refused.append((where, "no speaker id (give a speaker column in --metadata, or --speaker)"))
                continue
            try:
                spk = check_speaker_id(spk)
            except ConfigError as exc:
                report.refused.append((where, str(exc)))
                continue
            if not acc:
                report.refused.append((where, "no accent (give an accent column in --metadata, or --accent)"))
                continue
            source_sha = sha256_file(src)
            if source_sha in seen_sources:
                report.refused.append((where, "already in the dataset (same file imported before)"))
                continue
            try:
                audio = load_audio(src)
            except AudioError as exc:
                report.refused.append((where, str(exc).replace(str(src), "").lstrip(": ") or str(exc)))
                continue
            if appender is None:
                session_dir.mkdir(parents=True, exist_ok=True)
                appender = Appender(session_dir / MANIFEST_NAME)
            sub = session_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", label)
            sub.mkdir(exist_ok=True)
            stem = f"{spk}-{re.sub(r'[^A-Za-z0-9._-]+', '_', src.stem)}"
            try:
                out = write_new_wav(sub, stem, audio)
            except OSError as exc:
                raise ManifestError(f"{sub}: cannot write ({exc.strerror or exc}); {len(report.imported)} clips imported so far") from None
            row = ClipRow(
                path=out.relative_to(dataset).as_posix(), label=label,
                text=e.get("text") or (label if label not in (NEGATIVE, NOISE) else ""),
                speaker=spk, accent=acc, source=e.get("source") or source, session=session, device=e.get("device") or "import",
                sample_rate=SAMPLE_RATE, duration_s=round(len(audio) / SAMPLE_RATE, 4), sha256=sha256_file(out),
                created=now_iso(), kind=e.get("kind") or _kind_of(label, set()), gender=e.get("gender") or None,
                age_band=e.get("age_band") or None,
                extra={"imported_from": src.relative_to(folder).as_posix() if src.is_relative_to(folder) else str(src),
                       "source_sha256": source_sha},
            )
            try:
                appender.append(row.to_json())
            except OSError as exc:
                out.unlink(missing_ok=True)
                raise ManifestError(f"{session_dir / MANIFEST_NAME}: cannot append ({exc.strerror or exc}); "
                                    f"{len(report.imported)} clips imported so far") from None
            seen_sources.add(source_sha)
            report.imported.append(row)
    finally:
        if appender is not None:
            appender.close()
            report.manifest = session_dir / MANIFEST_NAME
    return report
