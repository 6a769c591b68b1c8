"""Writing files so that nothing already saved is ever lost: new names only, fsync, atomic replace.

Volunteer takes cannot be recorded again, so every write of a recording
session (``collect.record``) and of ``kws data forget`` / ``import``
(``collect.dataset_ops``) goes through here:

- a new clip is written to a temp file, fsynced, then hard-linked to a name
  that did not exist (``os.link`` fails rather than overwrite);
- a JSON-lines file is only appended to, each line fsynced, and a failed
  append is cut off again so the next line does not glue onto half a line;
- a file that must change is replaced whole: temp file, fsync, rename, fsync
  of the folder;
- Ctrl-C is held back (``sigint_deferred``) while a clip and its row are
  written, so the two never part.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from features.audio import SAMPLE_RATE
from features.errors import ManifestError


def check_writable(dataset: str | Path) -> None:
    """Fail before any question is asked if takes could not be saved under ``dataset``.

    Creates the dataset folder if needed (an empty folder is not a recording)
    and writes then removes a probe file, so a read-only mount, a path under a
    file or a full disk is found now, not after the volunteer's first take.
    """
    dataset = Path(dataset)
    try:
        dataset.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=dataset, prefix=".kws-probe-", suffix=".tmp")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ManifestError(f"{dataset}: dataset folder is not writable ({exc.strerror or exc})") from None


@contextmanager
def sigint_deferred():
    """Hold SIGINT/SIGTERM back while a take's file and its row are written, so Ctrl-C never splits them."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, ValueError, OSError):  # not the main thread, or no pthread_sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _default_mode(fd: int) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the mode a plain ``open`` would: clips are shared data."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.fchmod(fd, 0o666 & ~mask)
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_new_wav(folder: Path, stem: str, audio: np.ndarray) -> Path:
    """Write a 16 kHz PCM-16 WAV under a name that does not exist yet; never overwrites.

    The bytes are encoded in memory, written to a temp file and fsynced, then
    hard-linked to ``stem.wav`` (or ``stem-2.wav``, ...: the first free name)
    and the temp removed. A full disk raises ``OSError`` with nothing left behind.
    """
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, np.float32).reshape(-1), -1, 1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    data = buf.getvalue()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}-", suffix=".tmp")
    try:
        try:
            _default_mode(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        for k in range(1, 1000):
            path = folder / (f"{stem}.wav" if k == 1 else f"{stem}-{k}.wav")
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            _fsync_dir(folder)
            return path
        raise ManifestError(f"{folder}: no free file name for {stem}")
    finally:
        Path(tmp).unlink(missing_ok=True)


def move_aside(src: Path, folder: Path) -> Path:
    """Move ``src`` into ``folder`` under its name or the first free ``-2``, ``-3``... variant; never overwrites."""
    folder.mkdir(exist_ok=True)
    for k in range(1, 1000):
        dst = folder / (src.name if k == 1 else f"{src.stem}-{k}{src.suffix}")
        try:
            os.link(src, dst)
        except FileExistsError:
            continue
        src.unlink()
        _fsync_dir(folder)
        return dst
    raise ManifestError(f"{folder}: no free file name for {src.name}")


class Appender:
    """An append-only JSON-lines file: each line flushed and fsynced; a failed write is cut off again."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def append(self, obj: dict | str) -> None:
        line = (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, sort_keys=True)) + "\n"
        pos = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            try:  # leave no half line behind: the next append would glue onto it
                self._file.close()
                os.truncate(self.path, pos)
            except OSError:
                pass
            self._file = open(self.path, "a", encoding="utf-8")
            raise

    def close(self) -> None:
        self._file.close()


def append_line(path: Path, obj: dict) -> None:
    a = Appender(path)
    try:
        a.append(obj)
    finally:
        a.close()


def read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: ignored, the rest still counts
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: a temp file in the same folder, fsync, rename, fsync the folder."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    _default_mode(fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json_atomic(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def rewrite_jsonl_atomic(path: Path, lines: list[str]) -> None:
    """Replace a JSON-lines file by ``lines`` (raw text, kept verbatim)."""
    write_text_atomic(path, "".join(line if line.endswith("\n") else line + "\n" for line in lines))
