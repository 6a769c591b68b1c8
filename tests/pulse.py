"""A private PulseAudio server for tests of the microphone path, with a null sink as the "room".

The tests play a WAV into the null sink ``kws_test`` with ``paplay`` and record
its monitor through sounddevice's ALSA device ``pulse`` (libasound2-plugins),
so the listener runs on real PortAudio streams, real blocks and real timing,
with no microphone and no mocks.

Why the details matter:

- Running as root in a container there is no session bus and no
  ``XDG_RUNTIME_DIR``; the server gets a temporary one, and clients (paplay,
  the ALSA plugin inside PortAudio) find it through ``PULSE_SERVER``.
- PortAudio enumerates devices once, when sounddevice is imported; it is
  re-initialised after the server is up (and after it is stopped), otherwise
  the ``pulse`` device is missing or points at a dead server.
- The null sink is fixed at 48 kHz: when an idle sink switches its rate for
  a new stream (44.1 <-> 48 kHz), its monitor restarts and the recording
  loses the start of the playback. 16 kHz WAVs play into a 48 kHz sink
  without a switch.

``pulse_server`` (session fixture) skips the tests, with the reason, when
``pulseaudio``/``paplay`` are not installed or the server does not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SINK = "kws_test"
ALSA_DEVICE = "pulse"  # the ALSA PCM of libasound2-plugins, as PortAudio names it


@dataclass
class PulseServer:
    """A running private server: where it listens and how to play into its sink."""

    runtime_dir: Path
    socket: Path
    process: subprocess.Popen
    sink: str = SINK
    device: str = ALSA_DEVICE

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": str(self.runtime_dir), "PULSE_SERVER": f"unix:{self.socket}"}

    def play(self, wav: str | Path) -> subprocess.Popen:
        """Start playing ``wav`` into the null sink; returns the running ``paplay``."""
        return subprocess.Popen(
            ["paplay", f"--device={self.sink}", str(wav)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def pactl(self, *args: str) -> str:
        out = subprocess.run(["pactl", *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=10)
        if out.returncode:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout


def kws_command(*modules: str) -> list[str]:
    """The ``kws`` command as a subprocess, importing the CLI ``modules``, with Ctrl-C live in it.

    A test runner started in the background by a non-interactive shell
    (``make test &``, ``nohup``) ignores SIGINT, and a child inherits an ignored
    signal across exec: Python would then never raise KeyboardInterrupt, and a
    Ctrl-C test would hang or see the session finish normally. Restoring the
    default handler first makes the child behave like ``kws`` typed in a
    terminal, whatever the runner's own disposition. ``kws`` itself keeps an
    inherited "ignore", as ``nohup kws listen`` users expect.
    """
    imports = ", ".join(f"deploy.cli.{m}" for m in modules)
    code = f"import signal; signal.signal(signal.SIGINT, signal.default_int_handler); import {imports}; from deploy.cli import main; main()"
    return [sys.executable, "-c", code]


def reinit_portaudio() -> None:
    """Make PortAudio enumerate devices again (sounddevice does it only at import)."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()


def missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "paplay", "pactl") if shutil.which(tool) is None]


def start_server(timeout_s: float = 10.0) -> PulseServer:
    """Start ``pulseaudio`` in the foreground (a child we can stop) with only the modules the tests need."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="kws-pulse-"))
    socket = runtime_dir / "pulse" / "native"
    log = open(runtime_dir / "pulseaudio.log", "wb")
    process = subprocess.Popen(
        [
            "pulseaudio", "--daemonize=no", "--system=false", "--exit-idle-time=-1", "--disallow-exit",
            "--use-pid-file=false", "--log-target=stderr", "-n",
            "-L", f"module-native-protocol-unix auth-anonymous=1 socket={socket}",
            "-L", f"module-null-sink sink_name={SINK} rate=48000 channels=1 format=s16le",
        ],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "HOME": str(runtime_dir)},
        stdout=log,
        stderr=log,
    )
    server = PulseServer(runtime_dir=runtime_dir, socket=socket, process=process)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            log.close()
            text = (runtime_dir / "pulseaudio.log").read_text(errors="replace").strip().splitlines()
            shutil.rmtree(runtime_dir, ignore_errors=True)
            raise RuntimeError(f"pulseaudio exited with status {process.returncode}: {text[-1] if text else 'no output'}")
        try:
            server.pactl("info")
            break
        except (RuntimeError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                stop_server(server)
                raise RuntimeError(f"pulseaudio did not answer within {timeout_s:.0f} s")
            time.sleep(0.1)
    server.pactl("set-default-sink", SINK)
    server.pactl("set-default-source", f"{SINK}.monitor")
    return server


def stop_server(server: PulseServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.runtime_dir, ignore_errors=True)


@contextmanager
def using(server: PulseServer):
    """Point this process (environment and PortAudio) at ``server``; restore the previous state after."""
    saved = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    reinit_portaudio()
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reinit_portaudio()


def scene(parts: list[tuple[str, object]], peak: float = 0.5):
    """A test recording from ``(kind, what)`` parts: ``("silence", seconds)``, ``("say", (text, voice))``.

    Returns ``(audio, segments)``: 16 kHz float32 normalised to ``peak``, and
    ``(kind, text, start_s, end_s)`` for each part, so a test knows where the
    keyword is.
    """
    import numpy as np

    from collect.synth import synthesize

    rate = 16000
    pieces, segments, t = [], [], 0
    for kind, what in parts:
        if kind == "silence":
            piece, text = np.zeros(int(round(float(what) * rate)), np.float32), ""
        else:
            text, voice = what
            piece = synthesize(text, voice)
        pieces.append(piece)
        segments.append((kind, text, t / rate, (t + len(piece)) / rate))
        t += len(piece)
    audio = np.concatenate(pieces)
    return (peak * audio / np.max(np.abs(audio))).astype(np.float32), segments


@contextmanager
def private_server():
    """Start a private PulseAudio server with the null sink ``kws_test``; PortAudio sees it as device ``pulse``.

    Skips (with the reason) when the tools are missing or the server cannot
    start. Sets ``XDG_RUNTIME_DIR`` and ``PULSE_SERVER`` while it runs and
    restores them afterwards.
    """
    missing = missing_tools()
    if missing:
        pytest.skip(f"PulseAudio not installed (missing {', '.join(missing)}); microphone-path tests need it")
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        pytest.skip(f"PortAudio not available: {exc}")
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.skip(f"cannot start a PulseAudio server: {exc}")
    try:
        with using(server):
            import sounddevice as sd

            names = [d["name"] for d in sd.query_devices()]
            if ALSA_DEVICE not in names:
                pytest.skip(f"PortAudio has no ALSA device {ALSA_DEVICE!r} (is libasound2-plugins installed?); devices: {names}")
            yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def pulse_server():
    """One private server for the whole test session (see ``private_server``)."""
    with private_server() as server:
        yield server
