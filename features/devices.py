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
from typing import Any, Callable

from features.errors import DeviceError


START_S = 10.0  # PortAudio's start (it lists the devices, asking the sound server) may take this long
OPEN_S = 10.0  # checking a device's settings, or opening and starting a stream, may take this long
CLOSE_S = 5.0  # closing a stream may take this long before its device is given up as hung
_started: dict = {}  # "module": sounddevice once PortAudio started; "hung": the error of a start that did not finish


def hung_server(doing: str, timeout_s: float) -> str:
    """The message for a PortAudio call that did not return: the sound server is the likely cause, and what to do."""
    return (f"the sound system did not answer within {timeout_s:g} s while {doing} (is the sound server, such as "
            "PulseAudio or PipeWire, hung? restart it and try again)")


def on_helper_thread(call: Callable[[], Any], timeout_s: float, name: str,
                     on_late: Callable[[Any], None] | None = None) -> tuple[bool, Any]:
    """Run ``call`` on a daemon thread; ``(True, its result)`` if it returned within ``timeout_s``, else ``(False, None)``.

    Why: a PortAudio call into a sound server that stops answering blocks
    inside the ALSA plugin until libpulse's own timeouts (30 s to open a
    stream, 120 s to list the devices), or for good (closing a stream), and
    then often fails with a message that does not name the server. Bounded,
    the caller can name the hung server at once. An exception ``call`` raises
    in time is raised here. What ``call`` returns after the caller gave up (or
    after a Ctrl-C during the wait) goes to ``on_late`` on the helper thread,
    so that a stream opened too late is closed rather than left running; the
    thread itself stays blocked as long as PortAudio does.
    """
    done = threading.Event()
    lock = threading.Lock()
    state: dict = {"waiting": True}

    def run() -> None:
        try:
            value, error = call(), None
        except BaseException as exc:  # handed to the caller's thread below
            value, error = None, exc
        with lock:
            state.update(value=value, error=error)
            late = not state["waiting"]
        done.set()
        if late and on_late is not None and error is None:
            on_late(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    interrupted = True
    try:
        done.wait(timeout_s)
        interrupted = False
    finally:
        with lock:
            finished = "error" in state
            state["waiting"] = False
        if interrupted and finished and state["error"] is None and on_late is not None:  # Ctrl-C as it returned
            on_late(state["value"])
    if not finished:
        return False, None
    if state["error"] is not None:
        raise state["error"]
    return True, state["value"]


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

    def start():
        import sounddevice as sd

        return sd

    stderr = os.dup(2)  # sounddevice points file descriptor 2 at /dev/null while PortAudio starts
    try:
        finished, sd = on_helper_thread(start, START_S, "kws-start-portaudio")
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(f"cannot use audio devices: PortAudio is not available ({exc})") from None
    finally:
        os.dup2(stderr, 2)  # a start that failed or hung may not have given it back (after a good one this changes nothing)
        os.close(stderr)
    if not finished:
        _started["hung"] = hung_server("PortAudio listed the audio devices", START_S)
        raise DeviceError(_started["hung"])
    _started["module"] = sd
    return sd


def bounded(call: Callable[[], Any], doing: str, timeout_s: float | None = None,
            on_late: Callable[[Any], None] | None = None) -> Any:
    """``call()`` (a PortAudio call that asks the sound server), or a ``DeviceError`` naming a hung server after ``timeout_s``.

    For checking a device's settings and opening a stream: with a frozen
    PulseAudio server, opening took 30 s and then failed with PortAudio's
    "Illegal combination of I/O devices", and the listener tried up to four
    settings that way before blaming the device. Once given up on, PortAudio
    is left with a blocked call, so its exit handler is unregistered as
    ``close_stream`` does. ``timeout_s`` defaults to ``OPEN_S``, read at the
    call (a test of a frozen server sets it lower).
    """
    timeout_s = OPEN_S if timeout_s is None else timeout_s
    finished, value = on_helper_thread(call, timeout_s, "kws-portaudio-call", on_late)
    if not finished:
        _forget_portaudio_at_exit()
        raise DeviceError(hung_server(doing, timeout_s))
    return value


def open_stream(make: Callable[[], Any], doing: str, timeout_s: float | None = None) -> Any:
    """Make a sounddevice stream with ``make()`` and start it, bounded by ``timeout_s`` (``bounded``); the started stream.

    A stream whose start fails is closed before the error is raised; one
    that opens after the caller gave up is closed when it does.
    """
    def open_and_start():
        stream = make()
        try:
            stream.start()
        except BaseException:
            stream.close(ignore_errors=True)
            raise
        return stream

    return bounded(open_and_start, doing, timeout_s, on_late=close_stream)


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
    def close() -> None:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)

    try:
        finished, _ = on_helper_thread(close, timeout_s, "kws-close-stream")
    except KeyboardInterrupt:  # a second Ctrl-C while closing: give the stream up as if it had hung
        _forget_portaudio_at_exit()
        raise
    if not finished:
        _forget_portaudio_at_exit()
    return finished


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
