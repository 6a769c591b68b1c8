"""Volunteer recording sessions: prompts, consent, the take loop, and saving takes so none is ever lost.

A session lives in ``<dataset>/<session>/``:

- ``session.json``   the plan, written once (atomically) when the session starts: keyword,
                     prompt list, speaker pseudonym, accent, optional gender and age band,
                     device, settings. ``--resume`` reads it back.
- ``consent.jsonl``  one line per speaker before their first take: time, speaker id, consent
                     text version and its sha256. Never a real name. ``kws data forget``
                     appends the withdrawal.
- ``manifest.jsonl`` one ``ClipRow`` per kept take (``collect.manifest``), appended and
                     fsynced right after the take's WAV is complete.
- ``events.jsonl``   skipped prompts and takes marked bad, so a resumed session knows them.
- ``rejected/``      takes marked bad, moved out of the dataset (not deleted: the organiser
                     may want to listen) and not listed in any manifest.

Why takes cannot be lost or mislabelled:

- A take's WAV is written to a temp file, fsynced, then *linked* to a name that
  did not exist before (``os.link`` fails rather than overwrite), so a crash
  leaves at most a ``.tmp`` file no reader picks up, and no take ever replaces
  another. Its manifest row is appended only after that, and Ctrl-C is held
  back while the two happen, so a row never points at a missing file and a
  file never loses its row to a Ctrl-C.
- A failed manifest append (disk full) truncates the half-written line away.
- Resume removes stale temp files and moves any WAV without a row (a SIGKILL
  between the rename and the append) to ``rejected/``.

The file writing itself (new names, fsync, atomic replace, Ctrl-C held back)
is ``collect.durable``'s.

The take loop (``run_session``) talks to a ``Frontend``: ``ScriptedFrontend``
records every prompt without a keyboard (the tests, batch use); the terminal
UI (``collect.tui``) asks the organiser's keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np

from collect import phrases
from collect.durable import Appender, append_line, move_aside, read_jsonl, rewrite_jsonl_atomic, sigint_deferred, write_json_atomic, write_new_wav
from collect.manifest import HUMAN, MANIFEST_NAME, NEGATIVE, ClipRow, now_iso, read_dataset, read_manifest
from collect.quality import QualityLimits, TakeReport, check_take, level_dbfs, trim
from features.audio import SAMPLE_RATE, sha256_file
from features.errors import ConfigError, DeviceError, ManifestError

SESSION_FILE = "session.json"
CONSENT_FILE = "consent.jsonl"
EVENTS_FILE = "events.jsonl"
REJECTED_DIR = "rejected"
SPEAKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
AGE_BANDS = ("under-18", "18-29", "30-44", "45-59", "60-74", "75+")

CONSENT_VERSION = "kws-consent-1"
CONSENT_TEXT = """\
We are recording your voice saying a wake word and some other words and sentences,
to train and test a wake-word detector, and to check that it works equally well
for every accent.

- Your recordings are stored under a made-up speaker id, never your name.
- We keep your accent (in your own words) and, only if you want, a gender and an age band.
- The recordings may be shared with the people building and testing the detector.
- You can stop at any time, and withdraw later: give the organiser your speaker id
  and all your recordings are deleted.

Do you agree to be recorded on these terms?"""


def consent_sha256() -> str:
    return hashlib.sha256(CONSENT_TEXT.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Prompt:
    """One thing to say: its position in the plan, the text shown, the label and kind its take gets."""

    index: int
    text: str
    label: str  # the keyword, or NEGATIVE
    kind: str  # "keyword", "confusable" or "sentence"


@dataclass(frozen=True)
class Speaker:
    """A volunteer, pseudonymously: the id is made up (``spk-007``), the accent is their own words."""

    speaker: str
    accent: str
    gender: str | None = None
    age_band: str | None = None


# ---------------------------------------------------------------- prompts, speakers, accents

def load_prompt_file(path: str | Path) -> list[tuple[str, str]]:
    """``(kind, text)`` negative prompts from a file: one a line, ``#`` comments, optional ``confusable:``/``sentence:`` prefix.

    Lines without a prefix are sentences if they have three words or more,
    confusables otherwise.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the prompt file ({exc.strerror})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(confusable|sentence)\s*:\s*(.+)$", line, re.I)
        if m:
            out.append((m.group(1).lower(), m.group(2).strip()))
        else:
            out.append(("sentence" if len(line.split()) >= 3 else "confusable", line))
    if not out:
        raise ConfigError(f"{path}: the prompt file has no prompts")
    return out


def plan_prompts(keyword: str, takes: int, negatives: int, seed: int, prompts_file: str | Path | None = None) -> list[Prompt]:
    """The session's prompts: ``takes`` of the keyword and ``negatives`` others, shuffled (seeded).

    Negatives are half confusables (parts and sound-alikes of the keyword,
    ``collect.phrases``) and half ordinary sentences from the shipped list, or
    all drawn from ``prompts_file`` when one is given; prompts containing a word
    of the keyword are never used as negatives. Shuffling keeps a volunteer from
    saying the keyword twenty times in a row, which makes every take sound the same.
    """
    if not keyword.strip():
        raise ConfigError("the keyword is empty; give --keyword")
    rng = np.random.default_rng(seed)
    items = [(keyword, keyword, "keyword")] * takes
    if negatives:
        if prompts_file:
            banned = set(phrases.words_of(keyword))
            pool = [(k, t) for k, t in load_prompt_file(prompts_file) if not banned & set(phrases.words_of(t))]
            if not pool:
                raise ConfigError(f"{prompts_file}: every prompt contains a word of {keyword!r}")
            picks = [pool[i] for i in rng.choice(len(pool), size=negatives, replace=negatives > len(pool))]
            items += [(text, NEGATIVE, kind) for kind, text in picks]
        else:
            n_conf = negatives // 2
            items += [(t, NEGATIVE, "confusable") for t in phrases.confusables(keyword, n_conf, rng)]
            items += [(t, NEGATIVE, "sentence") for t in phrases.sentences(keyword, negatives - n_conf, rng)]
    order = rng.permutation(len(items))
    return [Prompt(i, *items[j]) for i, j in enumerate(order)]


def check_speaker_id(speaker: str) -> str:
    """A speaker id must be a short token (letters, digits, ``.-_``): a pseudonym, never a full name."""
    speaker = speaker.strip()
    if not SPEAKER_RE.match(speaker):
        raise ConfigError(f"speaker id {speaker!r} is not a short pseudonym (letters, digits, '.', '-', '_'; no spaces), e.g. spk-007")
    return speaker


def _session_plans(dataset: Path) -> list[dict]:
    plans = []
    for path in sorted(dataset.glob(f"*/{SESSION_FILE}")):
        try:
            plans.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return plans


def known_speakers(dataset: str | Path) -> set[str]:
    """Speaker ids used by any row or any session plan (a speaker with no take yet still holds an id)."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        return set()
    rows, _ = read_dataset(dataset)
    return {r.speaker for r in rows} | {p.get("speaker", {}).get("speaker", "") for p in _session_plans(dataset)} - {""}


def next_speaker_id(dataset: str | Path) -> str:
    """The next free ``spk-NNN`` after the highest one in the dataset."""
    numbers = [int(m.group(1)) for s in known_speakers(dataset) if (m := re.fullmatch(r"spk-(\d+)", s))]
    return f"spk-{max(numbers, default=0) + 1:03d}"


def known_accents(dataset: str | Path) -> list[str]:
    """Accent tags already in the dataset, most used first, to offer for consistency."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        return []
    rows, _ = read_dataset(dataset)
    return [a for a, _ in Counter(r.accent for r in rows).most_common()]


# ---------------------------------------------------------------- the session on disk

def new_session_id(speaker: str) -> str:
    return f"rec-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{speaker}"


class Session:
    """One volunteer session's folder: its plan, consent, kept takes, skips and bad marks."""

    def __init__(self, dataset: Path, plan: dict):
        self.dataset = Path(dataset)
        self.plan = plan
        self.id: str = plan["session"]
        self.dir = self.dataset / self.id
        self.keyword: str = plan["keyword"]
        self.device: str = plan["device"]
        self.speaker = Speaker(**plan["speaker"])
        self.prompts = [Prompt(**p) for p in plan["prompts"]]
        self._manifest: Appender | None = None

    # creating and reopening

    @classmethod
    def create(cls, dataset: str | Path, keyword: str, prompts: list[Prompt], speaker: Speaker, device: str,
               settings: dict, session_id: str | None = None) -> "Session":
        """Make the session folder and its plan. Call only after consent was given."""
        dataset = Path(dataset)
        session_id = session_id or new_session_id(speaker.speaker)
        folder = dataset / session_id
        try:
            folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ConfigError(f"{folder}: session already exists; continue it with --resume {session_id}") from None
        except OSError as exc:
            raise ManifestError(f"{folder}: cannot create the session folder ({exc.strerror})") from None
        plan = {
            "session": session_id, "keyword": keyword, "device": device, "created": now_iso(),
            "speaker": asdict(speaker), "prompts": [asdict(p) for p in prompts], "settings": settings,
        }
        try:
            write_json_atomic(folder / SESSION_FILE, plan)
        except OSError as exc:
            raise ManifestError(f"{folder}: cannot write {SESSION_FILE} ({exc.strerror})") from None
        return cls(dataset, plan)

    @classmethod
    def resume(cls, dataset: str | Path, session_id: str) -> "Session":
        """Reopen a session to continue it: cleans what an interruption left behind."""
        dataset = Path(dataset)
        path = dataset / session_id / SESSION_FILE
        if not path.is_file():
            found = sorted(p.parent.name for p in dataset.glob(f"*/{SESSION_FILE}")) if dataset.is_dir() else []
            raise ConfigError(f"{path}: no such session to resume; recorded sessions here: {', '.join(found) or 'none'}")
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: corrupt session plan ({exc.msg})") from None
        session = cls(dataset, plan)
        session.cleanup_interrupted()
        return session

    def cleanup_interrupted(self) -> list[str]:
        """Remove stale temp files and set aside WAVs without a manifest row; returns what it did."""
        done = []
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            done.append(f"removed unfinished temp file {tmp.name}")
        listed = {Path(r.path).name for r in self.rows()}
        for wav in sorted(self.dir.glob("*.wav")):
            if wav.name not in listed:
                move_aside(wav, self.dir / REJECTED_DIR)
                done.append(f"moved {wav.name} (saved but never listed: interrupted) to {REJECTED_DIR}/")
        return done

    # consent

    def consents(self) -> list[dict]:
        return read_jsonl(self.dir / CONSENT_FILE)

    def has_consent(self, speaker: str) -> bool:
        state = False
        for entry in self.consents():
            if entry.get("speaker") == speaker:
                state = bool(entry.get("consent"))
        return state

    def record_consent(self, speaker: str) -> None:
        append_line(self.dir / CONSENT_FILE, {
            "time": now_iso(), "speaker": speaker, "consent": True,
            "consent_version": CONSENT_VERSION, "consent_sha256": consent_sha256(),
        })

    # state

    def rows(self) -> list[ClipRow]:
        path = self.dir / MANIFEST_NAME
        return read_manifest(path)[0] if path.exists() else []

    def events(self) -> list[dict]:
        return read_jsonl(self.dir / EVENTS_FILE)

    def remaining(self) -> list[Prompt]:
        """Prompts still to record, in plan order: neither kept nor skipped (a take marked bad frees its prompt)."""
        done = {r.extra.get("prompt") for r in self.rows()}
        skipped = {e["prompt"] for e in self.events() if e.get("type") == "skip"}
        return [p for p in self.prompts if p.index not in done and p.index not in skipped]

    # changes

    def keep(self, prompt: Prompt, audio: np.ndarray, extra: dict | None = None) -> ClipRow:
        """Save a checked, trimmed take and append its row; SIGINT waits until both are done."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        stem = f"{self.speaker.speaker}-{prompt.index:03d}-{prompt.kind}"
        if self._manifest is None:
            self._manifest = Appender(self.dir / MANIFEST_NAME)
        with sigint_deferred():
            try:
                path = write_new_wav(self.dir, stem, audio)
            except OSError as exc:
                raise ManifestError(f"{self.dir}: cannot save the take ({exc.strerror or exc}); earlier takes are safe, "
                                    f"continue later with --resume {self.id}") from None
            row = ClipRow(
                path=path.relative_to(self.dataset).as_posix(), label=prompt.label, text=prompt.text,
                speaker=self.speaker.speaker, accent=self.speaker.accent, source=HUMAN, session=self.id,
                device=self.device, sample_rate=SAMPLE_RATE, duration_s=round(len(audio) / SAMPLE_RATE, 4),
                sha256=sha256_file(path), created=now_iso(), kind=prompt.kind, gender=self.speaker.gender,
                age_band=self.speaker.age_band, extra={"prompt": prompt.index, **(extra or {})},
            )
            try:
                self._manifest.append(row.to_json())
            except OSError as exc:
                path.unlink(missing_ok=True)  # no file without its row
                raise ManifestError(f"{self.dir / MANIFEST_NAME}: cannot append the take's row ({exc.strerror or exc}); "
                                    f"earlier takes are safe, continue later with --resume {self.id}") from None
        return row

    def skip(self, prompt: Prompt, reason: str) -> None:
        append_line(self.dir / EVENTS_FILE, {"time": now_iso(), "type": "skip", "prompt": prompt.index, "reason": reason})

    def mark_bad(self, row: ClipRow, reason: str, ask_again: bool) -> None:
        """Take a kept take out of the dataset: its row leaves the manifest, its file moves to ``rejected/``.

        With ``ask_again`` its prompt is recorded again (redo); otherwise the prompt is skipped.
        """
        manifest = self.dir / MANIFEST_NAME
        with sigint_deferred():
            if self._manifest is not None:
                self._manifest.close()
                self._manifest = None
            lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
            keep = []
            for line in lines:
                try:
                    if json.loads(line).get("path") == row.path:
                        continue
                except json.JSONDecodeError:
                    pass
                keep.append(line)
            rewrite_jsonl_atomic(manifest, keep)
            src = self.dataset / row.path
            if src.exists():
                move_aside(src, self.dir / REJECTED_DIR)
            append_line(self.dir / EVENTS_FILE, {"time": now_iso(), "type": "bad", "prompt": row.extra.get("prompt"),
                                                  "path": row.path, "reason": reason})
            if not ask_again:
                prompt = next(p for p in self.prompts if p.index == row.extra.get("prompt"))
                self.skip(prompt, f"previous take marked bad: {reason}")

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None


# ---------------------------------------------------------------- the take loop

class Frontend(Protocol):
    """What the take loop needs from whoever runs it: a keyboard UI or a script."""

    def choose(self, session: Session, prompt: Prompt, failures: int, last: "LastTake | None") -> str:
        """The next action: "record", "play", "redo", "bad", "skip" or "quit"."""

    def countdown(self, seconds_left: float, level_db: float) -> None: ...

    def on_block(self, level_db: float, elapsed_s: float, heard_speech: bool) -> None: ...

    def should_stop(self) -> bool: ...

    def result(self, prompt: Prompt, report: TakeReport, row: ClipRow | None, notes: list[str]) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class LastTake:
    """The latest take, for play-back and for marking it bad: its audio, and its row if it was kept."""

    prompt: Prompt
    audio: np.ndarray
    row: ClipRow | None


@dataclass
class SessionResult:
    kept: list[ClipRow] = field(default_factory=list)
    failed: int = 0
    quit: bool = False


def limits_for(prompt: Prompt, max_seconds: float) -> QualityLimits:
    """Sentences may last the whole recording; a keyword or a confusable word may not."""
    if prompt.kind == "sentence":
        return QualityLimits(max_speech_s=max_seconds)
    return QualityLimits(max_speech_s=min(QualityLimits().max_speech_s, max_seconds))


def play(audio: np.ndarray, device: str | int | None = None) -> None:
    """Play a take back on the output device and wait for it to end."""
    from features.devices import sounddevice

    sd = sounddevice()
    try:
        sd.play(np.asarray(audio, np.float32), SAMPLE_RATE, device=device)
        sd.wait()
    except (sd.PortAudioError, ValueError) as exc:  # ValueError: sounddevice's "no device matching ..."
        raise DeviceError(f"cannot play back on output device {device or 'default'!r}: {exc}") from None


def run_session(session: Session, mic, frontend: Frontend, max_seconds: float = 4.0, countdown_s: float = 0.0,
                trailing_silence_s: float = 0.8, output_device: str | int | None = None) -> SessionResult:
    """Prompt by prompt: ask the frontend, record, check, keep or explain; until done or quit.

    ``mic`` is an open ``collect.mic.Microphone``. A take that fails a check is
    never saved; the frontend decides whether to try again or skip.
    """
    result = SessionResult()
    failures: Counter = Counter()
    last: LastTake | None = None
    while True:
        remaining = session.remaining()
        if not remaining:
            break
        prompt = remaining[0]
        action = frontend.choose(session, prompt, failures[prompt.index], last)
        if action == "quit":
            result.quit = True
            break
        if action == "skip":
            session.skip(prompt, f"skipped after {failures[prompt.index]} failed takes" if failures[prompt.index] else "skipped by the organiser")
            frontend.message(f"skipped: {prompt.text!r}")
            continue
        if action == "play":
            if last is not None:
                try:
                    play(last.audio, output_device)
                except DeviceError as exc:  # no speakers is no reason to end the session: recording still works
                    frontend.message(f"{exc} (the take is unaffected; continue recording)")
            continue
        if action in ("redo", "bad"):
            if last is not None and last.row is not None:
                session.mark_bad(last.row, "redo" if action == "redo" else "marked bad by the organiser", ask_again=action == "redo")
                result.kept = [r for r in result.kept if r.path != last.row.path]
                frontend.message(f"previous take {last.row.path} removed from the dataset ({REJECTED_DIR}/)"
                                 + ("; record it again" if action == "redo" else "; its prompt is skipped"))
                last = None
            else:
                frontend.message("no kept take to remove")
            continue
        # record
        if countdown_s > 0:
            mic.discard_pending()
            waited = 0.0
            while waited < countdown_s:
                block = mic.read()
                waited += len(block) / mic.rate
                frontend.countdown(countdown_s - waited, level_dbfs(block))
        take = mic.record_take(max_seconds, on_block=frontend.on_block, should_stop=frontend.should_stop,
                               trailing_silence_s=trailing_silence_s)
        report = check_take(take.audio, take.sample_rate, 1, limits_for(prompt, max_seconds), take.hit_time_limit)
        if not report.ok:
            failures[prompt.index] += 1
            result.failed += 1
            last = LastTake(prompt, take.audio, None)
            frontend.result(prompt, report, None, take.notes)
            continue
        clip = trim(take.audio, report)
        row = session.keep(prompt, clip, {
            "device_rate": take.device_rate, "stopped_by": take.stopped_by, "peak": round(report.peak, 4),
            **({"notes": take.notes} if take.notes else {}),
        })
        result.kept.append(row)
        last = LastTake(prompt, clip, row)
        frontend.result(prompt, report, row, take.notes)
    return result


class ScriptedFrontend:
    """Records every prompt without a keyboard; a prompt that fails ``retries + 1`` times is skipped.

    Prints one line per event (``print_fn``), which is what a scripted caller and the tests read.
    """

    def __init__(self, retries: int = 2, print_fn=print):
        self.retries = retries
        self.print = print_fn
        self._total = 0

    def choose(self, session, prompt, failures, last) -> str:
        if failures > self.retries:
            return "skip"
        done = len(session.prompts) - len(session.remaining())
        self.print(f"take {done + 1}/{len(session.prompts)} [{prompt.kind}] {prompt.text!r}: recording")
        return "record"

    def countdown(self, seconds_left, level_db) -> None:
        pass

    def on_block(self, level_db, elapsed_s, heard_speech) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def result(self, prompt, report, row, notes) -> None:
        extra = f" ({'; '.join(notes)})" if notes else ""
        if row is not None:
            self.print(f"  kept {row.path} ({row.duration_s:.2f} s){extra}")
        else:
            self.print(f"  not kept: {report.reason}{extra}")

    def message(self, text: str) -> None:
        self.print(f"  {text}")


# ---------------------------------------------------------------- the summary

def summary(session: Session, result: SessionResult | None = None) -> dict:
    """Takes kept per label and speech time in this session, and the dataset's counts per accent."""
    rows = session.rows()
    all_rows, bad = read_dataset(session.dataset)
    per_accent: dict[str, dict] = {}
    for accent in sorted({r.accent for r in all_rows}):
        these = [r for r in all_rows if r.accent == accent]
        per_accent[accent] = {"speakers": len({r.speaker for r in these}), **Counter(r.label for r in these)}
    return {
        "session": session.id,
        "speaker": session.speaker.speaker,
        "kept_per_label": dict(Counter(r.label for r in rows)),
        "speech_s": round(sum(r.duration_s for r in rows), 2),
        "remaining": len(session.remaining()),
        "skipped": len({e["prompt"] for e in session.events() if e.get("type") == "skip"}),
        "failed_takes": result.failed if result else None,
        "per_accent": per_accent,
        "unreadable_manifest_lines": len(bad),
    }


def summary_text(s: dict, keyword: str) -> str:
    lines = [
        f"session {s['session']} (speaker {s['speaker']}): kept "
        + (", ".join(f"{n} {label}" for label, n in sorted(s["kept_per_label"].items())) or "nothing")
        + f"; {s['speech_s']:.1f} s of audio; {s['skipped']} skipped; left to record: {s['remaining']}",
        "",
        f"{'accent':<24} {'speakers':>8} {keyword[:12]:>12} {NEGATIVE:>10}",
    ]
    for accent, c in sorted(s["per_accent"].items(), key=lambda kv: (kv[1].get(keyword, 0), kv[0])):
        lines.append(f"{accent[:24]:<24} {c['speakers']:>8} {c.get(keyword, 0):>12} {c.get(NEGATIVE, 0):>10}")
    if s["per_accent"]:
        lines.append("(fewest keyword clips first: those accents need more volunteers)")
    else:
        lines.append("(no clips in the dataset yet)")
    return "\n".join(lines)
