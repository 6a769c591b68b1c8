"""The microphone path for real: PortAudio streams from a PulseAudio null sink that a WAV is played into.

No mocks: ``paplay`` plays a scene (other speech, silence, the wake word) into
the null sink, and ``listen()`` records its monitor through sounddevice's ALSA
``pulse`` device, with the same blocks, queue and threads as on a laptop. The
playback starts when the first block arrives (``on_audio``), and the recorded
audio is kept, so where the keyword landed in the stream is measured from the
recording itself rather than assumed from wall-clock timing.
"""

import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from deploy.detector import Detector
from deploy.listener import Listener, StreamResampler, listen
from features.devices import START_S, find_device, list_devices
from deploy.modelfile import KwsModel
from features.audio import write_wav
from features.errors import DeviceError
from pulse import ALSA_DEVICE, kws_command, pulse_server, scene, start_server, stop_server  # noqa: F401 (fixture)

RATE = 16000


# --- the resampler (numpy only) used when a device will not record at 16 kHz ---------------------


@pytest.mark.parametrize("rate_in", [44100, 48000, 22050, 8000])
def test_resampler_is_accurate_and_chunk_independent(rate_in):
    t = np.arange(2 * rate_in) / rate_in
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    whole = StreamResampler(rate_in, RATE).push(x)
    r = StreamResampler(rate_in, RATE)
    sizes = np.random.default_rng(0).integers(1, 3000, size=len(x))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = np.concatenate([r.push(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if a < len(x)])
    np.testing.assert_array_equal(parts, whole)
    assert 0 <= 2 * RATE - len(whole) <= r.half_width * RATE / rate_in + 1  # only the filter look-ahead is held back
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(whole)) / RATE)
    assert np.max(np.abs(whole - expected)[100:]) < 1e-3  # no time shift, no gain error


def test_resampler_removes_what_16k_cannot_hold():
    x = np.sin(2 * np.pi * 10000 * np.arange(48000) / 48000).astype(np.float32)  # would alias to 6 kHz
    assert np.max(np.abs(StreamResampler(48000, RATE).push(x)[100:])) < 1e-3


def test_the_runtime_needs_neither_torch_nor_librosa(keyword_model):
    """What a Raspberry Pi runs (model, detector, listener) imports only numpy, onnxruntime and sounddevice."""
    code = (
        "import sys, numpy as np\n"
        "from deploy.listener import Listener\nfrom features.devices import list_devices\n"
        "from deploy.detector import Detector\n"
        "from deploy.modelfile import KwsModel\n"
        f"Detector(KwsModel({str(keyword_model)!r})).process(np.zeros(32000, np.float32))\n"
        "print(sorted(m for m in ('torch', 'librosa', 'scipy', 'soundfile', 'typer', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- a real stream through PulseAudio --------------------------------------------------------------


@pytest.fixture(scope="module")
def room_scene(tmp_path_factory):
    audio, segments = scene([
        ("silence", 1.0), ("say", ("the weather is nice today and I like to walk", "en-us+m3")), ("silence", 1.0),
        ("say", ("computer", "en-us+m1")), ("silence", 1.5), ("say", ("please open the window", "en+f2")), ("silence", 1.5),
    ])
    return write_wav(tmp_path_factory.mktemp("room") / "scene.wav", audio), audio, segments


def listen_to(server, wav, model, **kwargs):
    """Listen on the pulse device while ``wav`` plays; return detections, recording, and where the scene starts in it."""
    recorded, player = [], []

    def on_audio(block):
        if not player:  # the stream is running: start the playback
            player.append(server.play(wav))
        recorded.append(block)

    duration = sf_duration(wav) + 3.0  # room for the player's start-up latency
    detections = listen(model, ALSA_DEVICE, on_audio=on_audio, duration_s=duration, **kwargs)
    player[0].wait(timeout=30)
    recording = np.concatenate(recorded)
    loud = np.flatnonzero(np.abs(recording) > 0.01)
    assert len(loud), "nothing of the playback reached the recording"
    return detections, recording, loud[0] / RATE


def sf_duration(wav) -> float:
    import soundfile as sf

    return sf.info(str(wav)).duration


def check_detections(detections, recording, model, segments, onset_s):
    """The spoken keyword is detected where it was said, and live listening lost nothing.

    Exactly one detection falls during (or one window after) the keyword, and
    the live detections are exactly those of the offline detector on the
    recorded audio: the callback, queue and resampling path dropped or
    reordered no sample. Whether the other sentences of the scene stay quiet
    is a matter of model quality (``kws eval`` measures it), not of the
    microphone path, so it is not asserted with the tests' tiny model.
    """
    first_sound = next(s for s in segments if s[0] == "say")[2]
    shift = onset_s - first_sound  # scene time -> stream time
    _, _, start, end = next(s for s in segments if s[1] == "computer")
    window_s = KwsModel(model).info.window_s
    during = [d for d in detections if start < d.time_s - shift <= end + window_s + 0.1]
    assert [d.keyword for d in during] == ["computer"], detections
    offline = Detector(KwsModel(model)).process(recording, chunk_size=4000)
    assert [(d.keyword, round(d.time_s, 3)) for d in detections] == [(d.keyword, round(d.time_s, 3)) for d in offline]


@pytest.mark.audio
def test_listen_detects_the_keyword_played_into_the_room(pulse_server, keyword_model, room_scene):
    wav, audio, segments = room_scene
    detections, recording, onset = listen_to(pulse_server, wav, keyword_model)
    check_detections(detections, recording, keyword_model, segments, onset)
    # What was recorded is what was played (the room is a null sink: no noise, no gain change).
    assert 0.3 < np.max(np.abs(recording)) < 0.7


@pytest.mark.audio
def test_listen_resamples_a_device_opened_at_44k(pulse_server, keyword_model, room_scene):
    wav, audio, segments = room_scene
    detections, recording, onset = listen_to(pulse_server, wav, keyword_model, sample_rate=44100)
    check_detections(detections, recording, keyword_model, segments, onset)


@pytest.mark.audio
def test_stop_event_ends_listening(pulse_server, keyword_model):
    stop = threading.Event()
    listener = Listener(keyword_model, ALSA_DEVICE)
    seen = []

    def on_audio(block):
        seen.append(len(block))
        if sum(seen) >= RATE // 2:
            stop.set()

    listener.run(stop_event=stop, duration_s=600, on_audio=on_audio)
    assert stop.is_set() and RATE // 2 <= sum(seen) < 600 * RATE
    assert listener.seconds == pytest.approx(sum(seen) / RATE)


@pytest.mark.audio
def test_devices_are_listed_and_found(pulse_server):
    devices = list_devices()
    pulse = [d for d in devices if d.name == ALSA_DEVICE]
    assert len(pulse) == 1 and pulse[0].channels >= 1 and pulse[0].default_rate > 0
    assert find_device(ALSA_DEVICE) == pulse[0]
    assert find_device(pulse[0].index) == pulse[0]
    assert find_device(str(pulse[0].index)) == pulse[0]
    assert find_device("PULS") == pulse[0]  # a unique part of the name, any case


@pytest.mark.audio
def test_unknown_device_is_a_device_error_naming_it(pulse_server, keyword_model):
    with pytest.raises(DeviceError, match="no input device matches 'no-such-microphone'"):
        listen(keyword_model, "no-such-microphone", duration_s=1)
    with pytest.raises(DeviceError, match="no input device with index 999"):
        find_device(999)


def _listen_while_the_server(fails, keyword_model) -> tuple[int, str]:
    """Run ``kws listen`` on a private server, let it hear 2 s of audio, call ``fails(server_process)``; (exit code, stderr).

    A subprocess, not ``Listener.run`` in this one: should PortAudio be left
    with a stream it could not close, terminating PortAudio in the test process
    could block on it too. The generous timeout bounds a hang; it is not a
    timing assertion.
    """
    import signal
    import time

    other = start_server()
    proc = subprocess.Popen(kws_command("listen") + ["listen", str(keyword_model), "--device", ALSA_DEVICE],
                            env={**os.environ, **other.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # printed just before the stream opens
        assert "Ctrl-C to stop" in first, proc.stderr.read() if proc.poll() is not None else first
        time.sleep(2.0)  # let it listen to some audio first
        fails(other.process)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if other.process.poll() is None:
            other.process.send_signal(signal.SIGCONT)
        stop_server(other)
    assert "Traceback" not in err
    return proc.returncode, err.strip().splitlines()[-1]


@pytest.mark.audio
def test_a_vanished_device_is_a_device_error(pulse_server, keyword_model):
    """The sound server dies mid-stream (as when a USB microphone is pulled): a device error, not a hang."""
    code, last = _listen_while_the_server(lambda process: process.kill(), keyword_model)
    assert code == 2 and re.match(r"kws: error: input device \[\d+\] pulse .*(stopped|no audio|failed|did not close)", last), last


@pytest.mark.audio
def test_kws_listen_exits_when_the_sound_server_freezes(pulse_server, keyword_model):
    """A sound server that stops answering (SIGSTOP) ends ``kws listen`` with a device error, not a hang.

    PortAudio's audio thread then blocks inside the ALSA pulse plugin, and
    stopping the stream waits for that thread: before the bounded close
    (``features.devices.close_stream``) the listener raised its "no audio" error and
    then hung in the stream's exit forever.
    """
    import signal

    code, last = _listen_while_the_server(lambda process: process.send_signal(signal.SIGSTOP), keyword_model)
    assert code == 2 and re.match(r"kws: error: input device \[\d+\] pulse delivered no audio", last), last


@pytest.mark.audio
def test_kws_listen_on_a_sound_server_frozen_before_it_starts(pulse_server, keyword_model):
    """A server that had already stopped answering: ``kws listen`` names it and exits 2, instead of a wrong reason late.

    Starting PortAudio asks the server for its devices; unbounded, that took
    120 s and then found none, so the listener blamed a missing microphone.
    The subprocess timeout bounds a hang; it is not a timing assertion.
    """
    import signal

    other = start_server()
    other.process.send_signal(signal.SIGSTOP)
    try:
        out = subprocess.run(kws_command("listen") + ["listen", str(keyword_model), "--device", ALSA_DEVICE],
                             env={**os.environ, **other.env}, capture_output=True, text=True, timeout=90)
    finally:
        other.process.send_signal(signal.SIGCONT)
        stop_server(other)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    last = (out.stderr.strip().splitlines() or ["(no error message)"])[-1]
    assert last.startswith(f"kws: error: the sound system did not answer within {START_S:g} s") and "hung" in last, last


_FROZEN_AFTER_START = """
import os, signal, sys
import features.devices
from collect.mic import Microphone
from deploy.listener import Listener
from features.errors import DeviceError

features.devices.OPEN_S = 2.0  # the bound under test, shortened so the four attempts take seconds, not 40
listener = Listener(sys.argv[2], "pulse")  # PortAudio started and the settings checked while the server answers
os.kill(int(sys.argv[1]), signal.SIGSTOP)
attempts = {
    "open": lambda: listener.run(duration_s=1),
    "check": lambda: Listener(sys.argv[2], "pulse"),
    "record-check": lambda: Microphone("pulse"),
    "record-open": lambda: Microphone("pulse", rate=16000).open(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "no error", flush=True)
    except DeviceError as exc:
        print(name, exc, flush=True)
os._exit(0)  # PortAudio's helper threads stay blocked on the frozen server
"""


@pytest.mark.audio
def test_a_server_that_freezes_after_portaudio_started_is_named_when_opening(pulse_server, keyword_model):
    """Settings checks and stream opens on a frozen server end in a device error naming the server, within the bound.

    Unbounded, each took 30 s (libpulse's connect timeout) and then failed
    with PortAudio's "Illegal combination of I/O devices", and the listener
    tried up to four settings before blaming the device. A subprocess: the
    calls given up on stay blocked in PortAudio. The subprocess timeout
    bounds a hang; it is not a timing assertion.
    """
    import signal

    other = start_server()
    try:
        out = subprocess.run([sys.executable, "-c", _FROZEN_AFTER_START, str(other.process.pid), str(keyword_model)],
                             env={**os.environ, **other.env}, capture_output=True, text=True, timeout=100)
    finally:
        other.process.send_signal(signal.SIGCONT)
        stop_server(other)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert list(lines) == ["open", "check", "record-check", "record-open"], out.stdout
    for name, doing in [("open", "opening input device ["), ("check", "checking input device ["),
                        ("record-check", "checking input device 'pulse'"), ("record-open", "opening input device 'pulse'")]:
        assert lines[name].startswith(f"the sound system did not answer within 2 s while {doing}"), lines[name]
        assert "hung" in lines[name], lines[name]


@pytest.mark.audio
def test_kws_devices_lists_the_pulse_device(pulse_server):
    cmd = [sys.executable, "-c", "import deploy.cli.devices; from deploy.cli import main; main()", "devices"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert any(ALSA_DEVICE in row and "Hz" in row for row in rows), out.stdout
    assert "default rate" in out.stdout.splitlines()[0]


@pytest.mark.audio
def test_kws_listen_prints_detections_and_a_summary(pulse_server, keyword_model):
    cmd = kws_command("listen")
    out = subprocess.run(cmd + ["listen", str(keyword_model), "--device", ALSA_DEVICE, "--duration", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("listening on [") and ALSA_DEVICE in lines[0] and "Ctrl-C to stop" in lines[0]
    assert lines[-1] == "stopped after 1.0 s of audio: 0 detections"


@pytest.mark.audio
def test_kws_listen_stops_cleanly_on_ctrl_c(pulse_server, keyword_model):
    """Ctrl-C is how a user stops listening: a summary and exit status 0, no traceback."""
    import signal
    import time

    cmd = kws_command("listen")
    proc = subprocess.Popen(cmd + ["listen", str(keyword_model), "--device", ALSA_DEVICE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # printed just before the stream opens
        assert "Ctrl-C to stop" in first, proc.stderr.read() if proc.poll() is not None else first
        time.sleep(2.0)  # let it listen to some audio (not a timing assertion)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.strip().splitlines()[-1].startswith("stopped (Ctrl-C) after ")
