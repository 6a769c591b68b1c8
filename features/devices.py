"""Audio input devices through sounddevice (PortAudio): list them, and find the one a user named.

One module for the recorder (``collect.mic``) and the listener
(``deploy.listener``), so both accept the same device names and say the same
thing about a device they cannot find. sounddevice is imported only when a
device is needed: ``kws detect`` on files works without PortAudio, and tests
can start a sound server first.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass

from features.errors import DeviceError


START_S = 10.0  # PortAudio's start (it lists the devices, asking the sound server) may take this long
_started: dict = {}  # "module": sounddevice once PortAudio started; "hung": the error of a start that did not finish


def sounddevice():
    """Import sounddevice, which starts PortAudio, on a helper thread; a ``DeviceError`` if that fails or hangs.

    Why a helper thread: starting PortAudio lists the devices, and its ALSA
    ``pulse`` device asks the sound server. With a server that has stopped
    answering, that took 120 s here (libpulse's request timeouts) and then
    reported no devices at all, so ``kws listen`` or ``kws record`` said
    "no audio input device found" two minutes later. Bounded, they name the
    hung server within ``START_S`` (normally the start takes 0.2 s). The
    thread left behind stays blocked; it is a daemon, and sounddevice's exit
    handler is never registered because its import never finished; the
    standard error it silences while PortAudio starts is given back. Later
    calls get the same error at once: the half-imported module left in
    ``sys.modules`` must never be used.
    """
    if "hung" in _started:
        raise DeviceError(_started["hung"])
    if "module" in _started:
        return _started["module"]
    done = threading.Event()
    result: dict = {}

    def start() -> None:
        try:
            import sounddevice as sd

            result["module"] = sd
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc
        finally:
            done.set()

    stderr = os.dup(2)  # sounddevice points file descriptor 2 at /dev/null while PortAudio starts
    try:
        threading.Thread(target=start, name="kws-start-portaudio", daemon=True).start()
        if not done.wait(START_S):
            os.dup2(stderr, 2)  # or the error below would never be seen
            _started["hung"] = (f"the sound system did not answer within {START_S:g} s while PortAudio listed the audio "
                                "devices (is the sound server, such as PulseAudio or PipeWire, hung? restart it and try again)")
            raise DeviceError(_started["hung"])
    finally:
        os.close(stderr)
    error = result.get("error")
    if isinstance(error, OSError):  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(f"cannot use audio devices: PortAudio is not available ({error})") from None
    if error is not None:
        raise error
    _started["module"] = result["module"]
    return result["module"]


CLOSE_S = 5.0  # closing a stream may take this long before its device is given up as hung


def close_stream(stream, timeout_s: float = CLOSE_S) -> bool:
    """Abort and close a sounddevice ``stream`` on a helper thread; False if that did not finish within ``timeout_s``.

    Why: PortAudio's stop, abort and close all join its audio thread, and a
    sound server that stops answering (frozen, or dying mid-call) leaves that
    thread blocked inside the ALSA plugin: with a frozen PulseAudio server,
    stopping the listener's stream never returned, and aborting the
    recorder's took about a minute (until libpulse's request timeouts), when
    both should report the device error at once. A stream given up on stays open, and
    sounddevice's exit handler (``Pa_Terminate``) would block on it too, so
    that handler is unregistered; the operating system releases the device
    when the process ends.
    """
    done = threading.Event()

    def close() -> None:
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        finally:
            done.set()

    threading.Thread(target=close, name="kws-close-stream", daemon=True).start()
    try:
        if done.wait(timeout_s):
            return True
    except KeyboardInterrupt:  # a second Ctrl-C while closing: give the stream up as if it had hung
        _forget_portaudio_at_exit()
        raise
    _forget_portaudio_at_exit()
    return False


def _forget_portaudio_at_exit() -> None:
    exit_handler = getattr(sounddevice(), "_exit_handler", None)
    if exit_handler is not None:
        atexit.unregister(exit_handler)


@dataclass(frozen=True)
class InputDevice:
    """An audio input device as PortAudio reports it."""

    index: int
    name: str
    hostapi: str
    channels: int  # maximum input channels
    default_rate: float  # Hz
    is_default: bool  # PortAudio's default input device

    def __str__(self) -> str:
        return f"[{self.index}] {self.name}"


def list_devices() -> list[InputDevice]:
    """Every device with at least one input channel, in PortAudio's order."""
    sd = sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices ({exc})") from None
    if default_in is None or default_in < 0:
        default_in = -1
    out = []
    for d in devices:
        if d["max_input_channels"] < 1:
            continue
        out.append(
            InputDevice(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(hostapis[d["hostapi"]]["name"]),
                channels=int(d["max_input_channels"]),
                default_rate=float(d["default_samplerate"]),
                is_default=int(d["index"]) == int(default_in),
            )
        )
    return out


def find_device(device: int | str | None = None) -> InputDevice:
    """The input device for ``device``: ``None`` (the default input), an index, or a name.

    A name matches exactly first, then as a case-insensitive substring; a
    substring that matches several devices is refused with their names, so a
    listener never opens a device the user did not mean.
    """
    devices = list_devices()
    if not devices:
        raise DeviceError("no audio input device found (is a microphone connected, or a sound server running?)")
    if device is None or (isinstance(device, str) and not device.strip()):
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int):
        for d in devices:
            if d.index == device:
                return d
        known = ", ".join(str(d) for d in devices)
        raise DeviceError(f"no input device with index {device}; input devices: {known}")
    exact = [d for d in devices if d.name == device]
    if exact:
        return exact[0]
    wanted = device.lower()
    matches = [d for d in devices if wanted in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DeviceError(f"input device {device!r} is ambiguous: it matches " + ", ".join(str(d) for d in matches))
    known = ", ".join(str(d) for d in devices)
    raise DeviceError(f"no input device matches {device!r}; input devices: {known}")
