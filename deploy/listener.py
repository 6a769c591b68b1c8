"""The microphone listener: ``deploy.detector.Detector`` on a live input device.

Part of the runtime: imports only numpy, onnxruntime (through
``deploy.modelfile``) and sounddevice, so a Raspberry Pi listens without torch,
librosa or scipy.

How it runs:

- PortAudio calls ``_callback`` on its own audio thread with each block. The
  callback only copies the block into a queue: anything slow there (inference,
  printing, a lock held by the main thread) would make PortAudio drop input.
  If the queue is full (the main thread has fallen seconds behind) the block is
  dropped and counted, rather than blocking the audio thread.
- The calling thread takes blocks from the queue, downmixes and, if the device
  would not record at the model's rate, resamples them (``StreamResampler``,
  numpy only), and feeds them to the detector.
- It stops when ``duration_s`` seconds of audio have been processed, when
  ``stop_event`` is set, or on Ctrl-C (``KeyboardInterrupt`` is a request to
  stop, not an error: the stream is closed and the detections are returned).

Device problems (unknown name or index, a device that refuses every setting,
a device that stops delivering audio because it was unplugged, any PortAudio
error) raise ``features.errors.DeviceError`` with a message that names the
device.

Checking the device's settings, opening and closing the stream are bounded
(``features.devices.bounded``, ``open_stream``, ``close_stream``): a sound
server that stops answering would otherwise hang the listener for 30 s per
setting tried, and in the close for good. If the close does not finish in time the listener raises a
``DeviceError``, so a ``kws listen`` left running for weeks exits and can be
restarted by its supervisor rather than hanging.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deploy.detector import Detection, Detector
from deploy.modelfile import KwsModel
from features.devices import CLOSE_S, bounded, close_stream, find_device, open_stream, sounddevice
from features.errors import DeviceError

STALL_S = 3.0  # no audio for this long (beyond one block) while listening: the device is gone
QUEUE_S = 10.0  # audio the queue may hold before the callback starts dropping blocks


class StreamResampler:
    """Streaming band-limited resampler in numpy (windowed-sinc interpolation).

    Output sample ``n`` sits at input position ``n * rate_in / rate_out``
    (exact integer arithmetic, so no drift over hours); it is the sum of the
    neighbouring input samples weighted by a Hann-windowed sinc whose cutoff
    is just below the lower of the two Nyquist frequencies. This is what a
    polyphase filter computes, without a table of phases for awkward ratios
    like 44100 -> 16000. The output over any sequence of chunks is the same as
    over their concatenation; it lags the input by ``half_width`` input
    samples at most (about 1 ms at 48 kHz).
    """

    def __init__(self, rate_in: int, rate_out: int, zero_crossings: int = 16, rolloff: float = 0.94):
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError("sample rates must be positive")
        g = int(np.gcd(int(rate_in), int(rate_out)))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g  # output n at input n * down / up
        self.cutoff = rolloff * min(1.0, self.up / self.down)  # fraction of the input Nyquist
        self.half_width = int(np.ceil(zero_crossings / self.cutoff))  # input samples each side
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self.half_width, np.float32)  # zeros before the stream starts
        self._base = -self.half_width  # input index of _buf[0]
        self._next = 0  # next output index

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add input samples; return the output samples they complete."""
        if self.up == self.down:
            return np.asarray(chunk, np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, np.asarray(chunk, np.float32).reshape(-1)])
        available = self._base + len(self._buf)  # input index one past the last sample
        # output n is ready when floor(n * down / up) + half_width < available
        last = ((available - self.half_width) * self.up - 1) // self.down  # largest ready n
        n = np.arange(self._next, last + 1, dtype=np.int64)
        if len(n) == 0:
            return np.zeros(0, np.float32)
        centre = (n * self.down) // self.up
        frac = (n * self.down - centre * self.up) / self.up
        offsets = np.arange(-self.half_width + 1, self.half_width + 1)
        idx = centre[:, None] + offsets[None, :] - self._base
        x = offsets[None, :] - frac[:, None]  # distance from the output position, in input samples
        window = 0.5 + 0.5 * np.cos(np.pi * x / (self.half_width + 1))
        taps = self.cutoff * np.sinc(self.cutoff * x) * window
        out = np.einsum("ij,ij->i", self._buf[idx], taps).astype(np.float32)
        self._next = int(n[-1]) + 1
        keep_from = (self._next * self.down) // self.up - self.half_width + 1 - self._base
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._base += keep_from
        return out


class Listener:
    """A detector on an open microphone; ``run`` listens until told to stop.

    ``device`` is an index, a name (or unique part of one) or ``None`` for
    the default input. ``sample_rate`` forces the capture rate (default: the
    model's rate if the device accepts it, else the device's default rate,
    resampled). Threshold, smoothing and refractory period default to the
    model's metadata.
    """

    def __init__(
        self,
        model: KwsModel | str | Path,
        device: int | str | None = None,
        *,
        threshold: float | None = None,
        smoothing: int | None = None,
        refractory_s: float | None = None,
        block_s: float = 0.1,
        sample_rate: int | None = None,
        num_threads: int = 1,
    ):
        if block_s <= 0:
            raise DeviceError(f"block length must be positive, got {block_s} s")
        self.model = model if isinstance(model, KwsModel) else KwsModel(model, num_threads=num_threads)
        self.detector = Detector(self.model, threshold=threshold, smoothing=smoothing, refractory_s=refractory_s)
        self.model_rate = self.model.info.feature_config.sample_rate
        self.device = find_device(device)
        self.block_s = block_s
        self.stream_rate, self.channels = self._choose_settings(sample_rate)
        self.blocksize = max(1, int(round(block_s * self.stream_rate)))
        # Filled by run():
        self.detections: list[Detection] = []
        self.seconds = 0.0  # audio processed, at the model's rate
        self.overflows = 0  # blocks PortAudio reported as overflowed (input lost before we saw it)
        self.dropped = 0  # blocks dropped because the main thread fell behind
        self.interrupted = False  # stopped by Ctrl-C

    @property
    def resampling(self) -> bool:
        return self.stream_rate != self.model_rate

    def _choose_settings(self, forced_rate: int | None) -> tuple[int, int]:
        """The first (rate, channels) the device accepts: model rate mono, default rate mono, then stereo."""
        sd = sounddevice()
        rates = [int(forced_rate)] if forced_rate else [self.model_rate, int(round(self.device.default_rate))]
        channel_options = [1] + ([2] if self.device.channels >= 2 else [])
        reasons = []
        for channels in channel_options:
            for rate in dict.fromkeys(rates):
                try:
                    bounded(lambda: sd.check_input_settings(device=self.device.index, channels=channels, dtype="float32",
                                                            samplerate=rate),
                            f"checking input device {self.device}")
                    return rate, channels
                except DeviceError:  # a hung sound server: no other setting would answer either
                    raise
                except Exception as exc:  # PortAudioError or ValueError, depending on the host API
                    reasons.append(f"{rate} Hz x{channels}: {str(exc).strip() or type(exc).__name__}")
        raise DeviceError(f"input device {self.device} refuses to record ({'; '.join(reasons)})")

    def describe(self) -> str:
        """One line for the user: which device, at what rate, and whether it is resampled."""
        s = f"{self.device} at {self.stream_rate} Hz"
        if self.channels > 1:
            s += f", {self.channels} channels averaged"
        if self.resampling:
            s += f", resampled to {self.model_rate} Hz"
        return s

    def run(
        self,
        on_detection: Callable[[Detection], None] | None = None,
        stop_event: threading.Event | None = None,
        duration_s: float | None = None,
        on_audio: Callable[[np.ndarray], None] | None = None,
    ) -> list[Detection]:
        """Listen until ``duration_s`` seconds of audio are processed, ``stop_event`` is set, or Ctrl-C.

        ``on_detection`` is called on this thread with each detection as it
        fires; ``on_audio`` with each block of model-rate audio before it is
        scored (a level meter, or a test keeping the recording). Detection
        times are stream times: seconds of audio since the stream started.
        """
        sd = sounddevice()
        self.detector.reset()
        self.detections, self.seconds, self.overflows, self.dropped, self.interrupted = [], 0.0, 0, 0, False
        resampler = StreamResampler(self.stream_rate, self.model_rate) if self.resampling else None
        limit = None if duration_s is None else int(round(duration_s * self.model_rate))
        blocks: queue.Queue = queue.Queue(maxsize=max(4, int(QUEUE_S / self.block_s)))
        finished = threading.Event()

        def callback(indata, frames, time_info, status):  # PortAudio's thread: copy and return
            if status.input_overflow:
                self.overflows += 1
            try:
                blocks.put_nowait(indata.copy())
            except queue.Full:
                self.dropped += 1

        n_done = 0
        try:
            try:
                stream = open_stream(lambda: sd.InputStream(
                    device=self.device.index,
                    samplerate=self.stream_rate,
                    channels=self.channels,
                    dtype="float32",
                    blocksize=self.blocksize,
                    callback=callback,
                    finished_callback=finished.set,
                ), f"opening input device {self.device}")
            except DeviceError:
                raise
            except Exception as exc:
                raise DeviceError(f"cannot open input device {self.device}: {_reason(exc)}") from None
            try:
                last_audio = time.monotonic()
                while limit is None or n_done < limit:
                    if stop_event is not None and stop_event.is_set():
                        break
                    try:
                        block = blocks.get(timeout=0.1)
                    except queue.Empty:
                        if finished.is_set() or not stream.active:
                            raise DeviceError(f"input device {self.device} stopped delivering audio (disconnected?)") from None
                        grace = STALL_S * (2 if n_done == 0 else 1)  # opening can take a moment on slow hosts
                        if time.monotonic() - last_audio > grace + self.block_s:
                            raise DeviceError(
                                f"input device {self.device} delivered no audio for {grace:.0f} s (disconnected or in use?)"
                            )
                        continue
                    last_audio = time.monotonic()
                    audio = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                    if resampler is not None:
                        audio = resampler.push(audio)
                    if limit is not None:
                        audio = audio[: limit - n_done]
                    n_done += len(audio)
                    if on_audio is not None:
                        on_audio(audio)
                    for detection in self.detector.update(audio):
                        self.detections.append(detection)
                        if on_detection is not None:
                            on_detection(detection)
            finally:
                closed = close_stream(stream)
            if not closed:  # only reached when nothing else went wrong first: that error says more
                raise DeviceError(f"input device {self.device} did not close within {CLOSE_S:.0f} s (sound server not responding?)")
        except KeyboardInterrupt:
            self.interrupted = True
        except sd.PortAudioError as exc:
            raise DeviceError(f"input device {self.device} failed: {_reason(exc)}") from None
        finally:
            self.seconds = n_done / self.model_rate
        return self.detections


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def listen(
    model_path: str | Path | KwsModel,
    device: int | str | None = None,
    on_detection: Callable[[Detection], None] | None = None,
    stop_event: threading.Event | None = None,
    duration_s: float | None = None,
    block_s: float = 0.1,
    *,
    threshold: float | None = None,
    smoothing: int | None = None,
    refractory_s: float | None = None,
    sample_rate: int | None = None,
    on_audio: Callable[[np.ndarray], None] | None = None,
) -> list[Detection]:
    """Listen on ``device`` with the model at ``model_path``; return the detections.

    Stops after ``duration_s`` seconds of audio, when ``stop_event`` is set,
    or on Ctrl-C. See ``Listener`` for the other arguments.
    """
    listener = Listener(
        model_path, device, threshold=threshold, smoothing=smoothing, refractory_s=refractory_s,
        block_s=block_s, sample_rate=sample_rate,
    )
    return listener.run(on_detection=on_detection, stop_event=stop_event, duration_s=duration_s, on_audio=on_audio)
