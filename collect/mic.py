"""The microphone: one input stream for the whole session, and takes cut out of it.

The stream stays open from the first prompt to the last, so the level meter is
always live and no audio is lost between two takes when they follow each other
without a pause (which is also what makes scripted sessions reliable). The
PortAudio callback only copies each block into a queue and counts overflows
(python-sounddevice ``rec_unlimited.py``); everything else happens in the
reading thread.

Devices are chosen by index or by part of their name. A device that cannot
record at 16 kHz is opened at its own default rate and each take is resampled
(soxr) to 16 kHz when it ends; more than one channel is averaged to mono. A
device that stops delivering audio (a pulled USB microphone, an unloaded
PulseAudio sink) raises ``DeviceError`` naming it; the take in progress is
lost, the takes already saved are not touched.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from collect.quality import EndPointer, level_dbfs
from features.audio import SAMPLE_RATE, resample
from features.devices import CLOSE_S, bounded, close_stream, find_device, open_stream, sounddevice
from features.errors import DeviceError

log = logging.getLogger(__name__)

BLOCK_S = 0.05  # 50 ms blocks: a smooth meter, little work per callback
STALL_S = 3.0  # no block for this long: the device is gone (a stopped stream is noticed at once)
FIRST_BLOCK_S = 8.0  # a stream may take a while to deliver its first block on a busy machine
QUEUE_BLOCKS = int(60 / BLOCK_S)  # a minute of audio may wait before blocks are dropped (counted as overflows)


def choose_rate(index: int, name: str, check: Callable[[int], None] | None = None, prefer: int = SAMPLE_RATE) -> int:
    """The rate to open the device at: 16 kHz if it accepts it, else its default rate.

    ``check(rate)`` raises if the device refuses ``rate`` (by default
    ``sounddevice.check_input_settings``); it is a parameter so the fallback can
    be tested without a device that refuses 16 kHz.
    """
    sd = sounddevice()
    if check is None:
        def check(rate: int) -> None:
            bounded(lambda: sd.check_input_settings(device=index, samplerate=rate, channels=1, dtype="float32"),
                    f"checking input device {name!r}")
    try:
        check(prefer)
        return prefer
    except DeviceError:  # a hung sound server: the default rate would not answer either
        raise
    except Exception:
        pass
    native = int(sd.query_devices(index)["default_samplerate"])
    try:
        check(native)
    except Exception as exc:
        raise DeviceError(f"input device {name!r} accepts neither {prefer} Hz nor its default {native} Hz ({exc})") from None
    return native


@dataclass
class Take:
    """One recording as it will be checked and written: mono float32 at 16 kHz, plus how it ended."""

    audio: np.ndarray
    sample_rate: int  # of ``audio``: 16000 after conversion
    device_rate: int  # what the device delivered
    device_channels: int
    stopped_by: str  # "speech-end", "time-limit" or "key"
    overflows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def hit_time_limit(self) -> bool:
        return self.stopped_by == "time-limit"


class Microphone:
    """An open input stream on one device; ``record_take`` cuts takes out of it.

    Use as a context manager. ``rate=None`` chooses 16 kHz or the device's
    native rate (``choose_rate``); an explicit rate forces it (and the takes are
    resampled from it).
    """

    def __init__(self, device: str | int | None = None, rate: int | None = None, channels: int = 1):
        found = find_device(device)
        self.index, self.name = found.index, found.name
        self.rate = rate or choose_rate(self.index, self.name)
        self.channels = channels
        self.overflows = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._stream = None
        self._blocks_read = 0

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy and count, nothing else.
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.overflows += 1

    def open(self) -> "Microphone":
        sd = sounddevice()
        try:
            self._stream = open_stream(lambda: sd.InputStream(
                device=self.index, samplerate=self.rate, channels=self.channels, dtype="float32",
                blocksize=int(self.rate * BLOCK_S), latency="high", callback=self._callback,
            ), f"opening input device {self.name!r}")
        except sd.PortAudioError as exc:
            self._stream = None
            raise DeviceError(f"cannot open input device {self.name!r} at {self.rate} Hz: {exc}") from None
        return self

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            if not close_stream(stream):  # the takes already saved are safe; only the process's exit is at stake
                log.warning("input device %r did not close within %.0f s (sound server not responding?)", self.name, CLOSE_S)

    def __enter__(self) -> "Microphone":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, timeout: float | None = None) -> np.ndarray:
        """The next block, shape ``(frames, channels)``; ``DeviceError`` if the device stopped."""
        if timeout is None:
            timeout = FIRST_BLOCK_S if self._blocks_read == 0 else STALL_S
        deadline = time.monotonic() + timeout
        while True:
            try:
                block = self._queue.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                self._blocks_read += 1
                return block
            except queue.Empty:
                if self._stream is None or not self._stream.active or time.monotonic() >= deadline:
                    raise DeviceError(
                        f"input device {self.name!r} stopped delivering audio (unplugged or gone?); "
                        "the take in progress was dropped, saved takes are safe") from None

    def discard_pending(self) -> None:
        """Drop blocks that arrived while nobody was recording (e.g. during a countdown)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def record_take(
        self,
        max_seconds: float,
        on_block: Callable[[float, float, bool], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        trailing_silence_s: float = 0.8,
    ) -> Take:
        """Record until the speaker stops (end-pointing), ``max_seconds`` pass, or ``should_stop()``.

        ``on_block(level_dbfs, elapsed_s, heard_speech)`` is called for every
        block (the live meter). The take is returned resampled to 16 kHz mono.
        """
        end_pointer = EndPointer(self.rate, trailing_silence_s)
        blocks, n, limit = [], 0, int(max_seconds * self.rate)
        overflows_before = self.overflows
        stopped_by, channels_seen = "time-limit", self.channels
        while n < limit:
            block = self.read()
            channels_seen = block.shape[1] if block.ndim == 2 else 1
            mono = block.mean(axis=1) if block.ndim == 2 else block
            mono = mono[: limit - n]
            blocks.append(mono)
            n += len(mono)
            done = end_pointer.push(mono)
            if on_block:
                on_block(level_dbfs(mono), n / self.rate, end_pointer.heard_speech)
            if done:
                stopped_by = "speech-end"
                break
            if should_stop and should_stop():
                stopped_by = "key"
                break
        audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        take = Take(audio=audio, sample_rate=self.rate, device_rate=self.rate, device_channels=channels_seen,
                    stopped_by=stopped_by, overflows=self.overflows - overflows_before)
        if self.rate != SAMPLE_RATE:
            take.audio = resample(audio, self.rate, SAMPLE_RATE)
            take.sample_rate = SAMPLE_RATE
            take.notes.append(f"resampled {self.rate} Hz -> {SAMPLE_RATE} Hz")
        if channels_seen > 1:
            take.notes.append(f"{channels_seen} channels averaged to mono")
        if take.overflows:
            take.notes.append(f"{take.overflows} input overflows (audio dropped by the device)")
        return take
