"""``kws record`` on the real audio path: a PulseAudio null sink is the room, espeak-ng the volunteer.

Every test runs ``kws record --yes`` as a real subprocess recording through
sounddevice from the ALSA device ``pulse`` (the null sink's monitor), while
``paplay`` plays a scene into the sink: the prompts in the order the session
plans them (``plan_prompts`` is seeded, so the test knows the order), each
followed by enough silence for the end-pointer. Nothing in the audio path is
mocked. Assertions are on what lands on disk, never on timing.

The server is private to this module (``tests.pulse.private_server`` gives
it its own runtime dir), so unloading its sink in the device-vanishes test
cannot disturb anyone else's tests.

Not-writable datasets: the process runs as root, which ignores permission
bits, so "not writable" is made two ways that hold for root too: a dataset
path under a regular file (always), and a read-only tmpfs mount (when this
process may mount; skipped otherwise). Disk full is a small tmpfs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from collect.datacheck import check_dataset
from collect.manifest import read_dataset
from collect.record import EVENTS_FILE, plan_prompts
from features.audio import sha256_file, write_wav
from pulse import kws_command, private_server

pytestmark = pytest.mark.audio

KWS = kws_command("record", "data")
GAP_S = 1.2  # silence after each utterance: longer than the end-pointer's 0.8 s
COMMON = ["--device", "pulse", "--accent", "en-GB-x-test", "--yes", "--seed", "7"]


@pytest.fixture(scope="module")
def pulse():
    """A server of this module's own (see ``tests.pulse.private_server``)."""
    with private_server() as server:
        yield server


def say(text, voice="en-us", peak=0.5):
    from collect.synth import synthesize

    a = synthesize(text, voice)
    return (peak * a / np.max(np.abs(a))).astype(np.float32)


def silence(seconds):
    return np.zeros(int(seconds * 16000), np.float32)


def scene_file(path, pieces, lead=0.7):
    """A WAV of ``lead`` silence then each piece followed by ``GAP_S`` of silence."""
    parts = [silence(lead)]
    for p in pieces:
        parts += [p, silence(GAP_S)]
    return write_wav(path, np.concatenate(parts))


class Kws:
    """A running ``kws`` subprocess whose output lines are collected as they come."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([*KWS, *map(str, args)], env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = ""

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"never printed {text!r}: {self.lines} {self.finish(0)[1] if self.proc.poll() is not None else ''}")

    def finish(self, timeout=60.0):
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        self.stderr = self.proc.stderr.read()
        return rc, self.stderr

    @property
    def out(self):
        return "\n".join(self.lines)


def record_with_scene(pulse, args, pieces, tmp_path, lead=0.7):
    """Start ``kws record``, play the scene once it is recording, wait for the end."""
    wav = scene_file(tmp_path / "scene.wav", pieces, lead)
    kws = Kws(["record", *args], pulse.env)
    kws.wait_for("recording")
    player = pulse.play(wav)
    rc, err = kws.finish()
    player.kill()
    player.wait()
    return rc, kws.out, err


def rows_of(dataset):
    rows, bad = read_dataset(dataset)
    assert not bad
    return rows


def no_temp_files(dataset):
    return [p for p in Path(dataset).rglob("*") if p.name.endswith(".tmp")]


def test_session_through_the_microphone(pulse, tmp_path):
    ds = tmp_path / "ds"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("sentence: The children are playing in the garden.\n")
    plan = plan_prompts("computer", 2, 1, 7, prompts_file)
    texts = {"computer": say("computer"), "The children are playing in the garden.": say("The children are playing in the garden.", "en")}
    rc, out, err = record_with_scene(pulse, [ds, "-k", "computer", "--takes", 2, "--negatives", 1, "--prompts", prompts_file,
                                             "--speaker", "spk-042", "--gender", "f", "--age-band", "30-44", *COMMON],
                                     [texts[p.text] for p in plan], tmp_path)
    assert rc == 0, out + err
    rows = sorted(rows_of(ds), key=lambda r: r.extra["prompt"])
    assert [(r.label, r.kind, r.text) for r in rows] == [(p.label, p.kind, p.text) for p in plan]
    session = ds / rows[0].session
    assert {r.speaker for r in rows} == {"spk-042"} and {r.source for r in rows} == {"human"}
    assert {(r.accent, r.gender, r.age_band, r.device, r.sample_rate) for r in rows} == {("en-GB-x-test", "f", "30-44", "pulse", 16000)}
    import soundfile as sf

    for row, prompt in zip(rows, plan):
        info = sf.info(ds / row.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert sha256_file(ds / row.path) == row.sha256
        # trimmed to the speech plus 0.15 s either side: the synthesised utterance's length give or take a frame or two
        speech_s = len(texts[prompt.text]) / 16000
        assert speech_s < row.duration_s < speech_s + 0.45, (row.path, row.duration_s, speech_s)
    assert check_dataset(ds).problems == []
    consent = [json.loads(line) for line in (session / "consent.jsonl").read_text().splitlines()]
    assert consent[0]["speaker"] == "spk-042" and consent[0]["consent"] is True and consent[0]["consent_version"]
    assert "kept 2 computer, 1 negative" in out and "en-GB-x-test" in out
    assert not no_temp_files(ds)


def test_each_quality_check_on_recorded_audio(pulse, tmp_path):
    """One keyword prompt: silence, a burst, clipped and quiet speech are refused in turn, then a good take kept.

    (Too long and cut off are in test_quality.py: here they would need minutes of scene.)
    """
    ds = tmp_path / "ds"
    burst = (0.4 * np.sin(2 * np.pi * 440 * np.arange(960) / 16000)).astype(np.float32)
    clipped = np.clip(10 * say("computer"), -1, 1)
    pieces = [burst, clipped, say("computer", peak=0.012), say("computer")]
    rc, out, err = record_with_scene(pulse, [ds, "-k", "computer", "--takes", 1, "--negatives", 0, "--retries", 6,
                                             "--max-seconds", 2.0, *COMMON], pieces, tmp_path, lead=2.3)
    assert rc == 0, out + err
    reasons = [line.split("not kept: ")[1] for line in out.splitlines() if "not kept: " in line]
    assert [r.split(":")[0].split(";")[0] for r in reasons] == ["no speech found", "too short", "clipped", "too quiet"], out
    rows = rows_of(ds)
    assert len(rows) == 1 and rows[0].label == "computer"


def test_killed_mid_session_keeps_earlier_takes_and_resumes(pulse, tmp_path):
    ds = tmp_path / "ds"
    args = [ds, "-k", "computer", "--takes", 3, "--negatives", 0, "--session", "s1", *COMMON]
    wav = scene_file(tmp_path / "scene.wav", [say("computer")] * 3)
    kws = Kws(["record", *args], pulse.env)
    kws.wait_for("recording")
    player = pulse.play(wav)
    kws.wait_for("take 3/3")  # two takes saved, the third is being recorded
    kws.proc.send_signal(signal.SIGKILL)
    kws.finish()
    player.kill()
    player.wait()
    rows = rows_of(ds)
    assert len(rows) == 2
    assert check_dataset(ds).problems == []  # every saved take intact: file, length, sha256
    assert sorted(p.name for p in (ds / "s1").glob("*.wav")) == sorted(Path(r.path).name for r in rows)
    # --resume continues with the prompt left, here also opening the device at 48 kHz (resampled to 16 kHz)
    rc, out, err = record_with_scene(pulse, [ds, "--resume", "s1", "--device-rate", 48000, *COMMON],
                                     [say("computer")], tmp_path)
    assert rc == 0, out + err
    assert "resuming session s1: 2 takes kept, 1 to record" in out
    rows = rows_of(ds)
    assert sorted(r.extra["prompt"] for r in rows) == [0, 1, 2]
    assert [r.extra["device_rate"] for r in sorted(rows, key=lambda r: r.extra["prompt"])] == [16000, 16000, 48000]
    assert check_dataset(ds).problems == [] and not no_temp_files(ds)


def test_ctrl_c_mid_take_keeps_earlier_takes(pulse, tmp_path):
    ds = tmp_path / "ds"
    wav = scene_file(tmp_path / "scene.wav", [say("computer")] * 3)
    kws = Kws(["record", ds, "-k", "computer", "--takes", 3, "--negatives", 0, "--session", "s2", *COMMON], pulse.env)
    kws.wait_for("recording")
    player = pulse.play(wav)
    kws.wait_for("take 2/3")
    kws.proc.send_signal(signal.SIGINT)
    rc, err = kws.finish()
    player.kill()
    player.wait()
    assert rc == 130 and "Traceback" not in err
    assert "interrupted" in err and "--resume s2" in err
    rows = rows_of(ds)
    assert len(rows) >= 1 and check_dataset(ds).problems == [] and not no_temp_files(ds)


def test_consent_refused_records_nothing(pulse, tmp_path):
    ds = tmp_path / "new-ds"
    kws = Kws(["record", ds, "-k", "computer", "--no-consent", *COMMON], pulse.env)
    rc, err = kws.finish()
    assert rc == 1 and "no consent given: nothing was recorded" in kws.out
    assert not ds.exists()


def test_unknown_device(pulse, tmp_path):
    kws = Kws(["record", tmp_path / "ds", "-k", "computer", "--device", "no-such-mic", "--accent", "x", "--yes"], pulse.env)
    rc, err = kws.finish()
    assert rc == 2 and "Traceback" not in err
    assert "no input device matches 'no-such-mic'" in err and "pulse" in err
    assert not list((tmp_path / "ds").rglob("*"))


def _unload_the_sink(server):
    module = next(line.split()[0] for line in server.pactl("list", "short", "modules").splitlines() if "null-sink" in line)
    server.pactl("unload-module", module)


def _freeze_the_server(server):
    """SIGSTOP: the server stops answering, and closing the stream blocks in the ALSA plugin (bounded since 2026-11-27:
    before, this session's close took about a minute more, until libpulse's request timeouts ran out)."""
    server.process.send_signal(signal.SIGSTOP)


@pytest.mark.parametrize("fail", [_unload_the_sink, _freeze_the_server], ids=["sink-unloaded", "server-frozen"])
def test_device_that_disappears(tmp_path, fail):
    """The device fails mid-take: a one-line device error, the earlier take intact (own server: it breaks it)."""
    with private_server() as server:
        ds = tmp_path / "ds"
        wav = scene_file(tmp_path / "scene.wav", [say("computer")] * 3)
        kws = Kws(["record", ds, "-k", "computer", "--takes", 3, "--negatives", 0, "--session", "s3", *COMMON], server.env)
        kws.wait_for("recording")
        player = server.play(wav)
        kws.wait_for("take 2/3")
        fail(server)
        try:
            rc, err = kws.finish(timeout=120)  # bounds a hang; not a timing assertion
        finally:
            server.process.send_signal(signal.SIGCONT)
        player.kill()
        player.wait()
        assert rc == 2 and "Traceback" not in err, err
        assert "'pulse' stopped delivering audio" in err and "--resume s3" in err
        rows = rows_of(ds)
        assert len(rows) >= 1 and check_dataset(ds).problems == []


def test_dataset_under_a_file_is_not_writable(pulse, tmp_path):
    (tmp_path / "a-file").write_text("x")
    kws = Kws(["record", tmp_path / "a-file" / "ds", "-k", "computer", *COMMON], pulse.env)
    rc, err = kws.finish()
    assert rc == 2 and "Traceback" not in err and "dataset folder is not writable" in err


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode == 0


def test_read_only_dataset_folder(pulse, tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=64k"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        kws = Kws(["record", ro, "-k", "computer", *COMMON], pulse.env)
        rc, err = kws.finish()
        assert rc == 2 and "Traceback" not in err and "not writable" in err and "Read-only file system" in err
    finally:
        subprocess.run(["umount", str(ro)])


def test_disk_full_mid_session(pulse, tmp_path):
    """A 200 kB tmpfs, mostly filled: two takes fit, the third cannot be saved: clean error, nothing half-written."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=200k"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        st = os.statvfs(disk)
        free = st.f_bavail * st.f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 72 * 1024))  # room for two 0.9 s takes (29 kB each) and the session files
        ds = disk / "ds"
        rc, out, err = record_with_scene(pulse, [ds, "-k", "computer", "--takes", 3, "--negatives", 0, "--session", "s4", *COMMON],
                                         [say("computer")] * 3, tmp_path)
        assert rc == 2 and "Traceback" not in err, out + err
        assert "No space left on device" in err and "--resume s4" in err
        rows = rows_of(ds)
        assert 1 <= len(rows) < 3 and check_dataset(ds).problems == [] and not no_temp_files(ds)
        assert sorted(p.name for p in (ds / "s4").glob("*.wav")) == sorted(Path(r.path).name for r in rows)
    finally:
        subprocess.run(["umount", str(disk)])


def test_redo_and_mark_bad_take_a_take_out_of_the_dataset(tmp_path):
    """What the r and b keys do, on the session itself: the row leaves the manifest, the file moves to rejected/."""
    from collect.record import Session, Speaker

    ds = tmp_path / "ds"
    plan = plan_prompts("computer", 2, 0, 0)
    session = Session.create(ds, "computer", plan, Speaker("spk-001", "en-US"), "test", {}, session_id="s5")
    first = session.keep(plan[0], say("computer"))
    second = session.keep(plan[1], say("computer"))
    assert session.remaining() == []
    session.mark_bad(second, "redo", ask_again=True)
    assert [p.index for p in session.remaining()] == [1]
    assert (ds / "s5" / "rejected" / Path(second.path).name).exists() and not (ds / second.path).exists()
    redo = session.keep(plan[1], say("computer"))
    session.mark_bad(redo, "redo", ask_again=True)  # the same prompt redone twice: both rejected takes are kept
    assert len(list((ds / "s5" / "rejected").glob("*.wav"))) == 2
    again = session.keep(plan[1], say("computer"))
    session.mark_bad(first, "wrong word", ask_again=False)
    assert session.remaining() == []  # marked bad and skipped
    session.close()
    assert [r.path for r in rows_of(ds)] == [again.path] and check_dataset(ds).problems == []
    # an interruption between the WAV and its row: resume sets the orphan aside, and temp files go
    (ds / "s5" / "spk-001-009-keyword.wav").write_bytes((ds / again.path).read_bytes())
    (ds / "s5" / ".spk-001-009-keyword-x.tmp").write_bytes(b"half")
    resumed = Session.resume(ds, "s5")
    assert (ds / "s5" / "rejected" / "spk-001-009-keyword.wav").exists() and not no_temp_files(ds)
    assert [r.path for r in resumed.rows()] == [again.path]


def test_device_refusing_16k_is_opened_at_its_own_rate(pulse):
    """The fallback of ``choose_rate``: a device that refuses 16 kHz opens at its default rate (resampled later).

    The ALSA pulse plugin accepts every rate, so the refusal is made by the
    ``check`` hook; the device, its index and its default rate are real.
    """
    import sounddevice as sd

    from collect.mic import choose_rate
    from features.errors import DeviceError

    index = next(i for i, d in enumerate(sd.query_devices()) if d["name"] == "pulse")
    native = int(sd.query_devices(index)["default_samplerate"])
    assert native != 16000

    def refuses_16k(rate):
        if rate == 16000:
            raise sd.PortAudioError("Invalid sample rate")

    assert choose_rate(index, "pulse", check=refuses_16k) == native
    assert choose_rate(index, "pulse") == 16000

    def refuses_all(rate):
        raise sd.PortAudioError("Invalid sample rate")

    with pytest.raises(DeviceError, match="accepts neither 16000 Hz nor its default"):
        choose_rate(index, "pulse", check=refuses_all)


class TerminalKws:
    """``kws record`` on a pseudo-terminal, as an organiser runs it: the screen is read as drawn, keys are typed.

    ``wait_for`` looks only at what was drawn since the previous match, so a
    status left on the screen from an earlier step never counts for a later one.
    """

    def __init__(self, args, env):
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # wide enough for one status per line
        self.proc = subprocess.Popen([*KWS, *map(str, args)], stdin=slave, stdout=slave, stderr=slave,
                                     env={**os.environ, **env, "TERM": "xterm-256color"})
        os.close(slave)
        self.raw = b""
        self.mark = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            self.raw += data

    @property
    def screen(self) -> str:
        import re

        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r", "", self.raw.decode("utf-8", "replace"))

    def wait_for(self, text, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.screen.find(text, self.mark)
            if at >= 0:
                self.mark = at + len(text)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"never drew {text!r}; since the last step:\n{self.screen[self.mark:][-3000:]}")

    def type(self, keys: str):
        os.write(self.master, keys.encode())

    def finish(self, timeout=30.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        os.close(self.master)
        return rc


def test_terminal_ui_questions_and_keys(pulse, tmp_path):
    """The organiser's screen end to end on a terminal: the questions, then space, p, r, b, a key mid-take and s.

    Three keyword prompts. Take 1 is kept, played back (p) and redone (r): it
    leaves the dataset for rejected/ and prompt 1 is asked again. Take 2 is
    kept. Take 3 (prompt 2) is kept and marked bad (b): rejected, its prompt
    skipped. Prompt 3 is started and stopped at once by a key (with 30 s
    allowed, only the key can end it within the wait): nothing was said, so it
    is not kept; s skips it and the session ends. Only take 2 stays.
    """
    ds = tmp_path / "ds"
    word = scene_file(tmp_path / "computer.wav", [say("computer")], lead=0.3)
    kws = TerminalKws(["record", ds, "-k", "computer", "--takes", 3, "--negatives", 0, "--device", "pulse", "--output-device", "pulse",
                       "--countdown", 0, "--max-seconds", 30, "--seed", 7], pulse.env)

    def take(expect="kept ✓"):
        kws.type(" ")
        kws.wait_for("recording: speak now")
        player = pulse.play(word)
        kws.wait_for(expect)
        player.wait(10)

    kws.wait_for("speaker id")
    kws.type("\n")  # the suggested id
    kws.wait_for("accent")
    kws.type("en-GB-x-tui\n")
    kws.wait_for("gender")
    kws.type("\n")
    kws.wait_for("age band")
    kws.type("\n")
    kws.wait_for("Does the volunteer agree?")
    kws.type("y\n")
    kws.wait_for("press space to record")
    take()
    kws.type("p")
    kws.wait_for("playing the last take")
    kws.type("r")
    kws.wait_for("record it again")
    take()
    take()
    kws.type("b")
    kws.wait_for("its prompt is skipped")
    kws.type(" ")
    kws.wait_for("recording: speak now")
    kws.type("x")
    kws.wait_for("not kept")
    kws.type("s")
    rc = kws.finish()
    assert rc == 0, kws.screen[-3000:]
    rows = rows_of(ds)
    assert len(rows) == 1 and rows[0].speaker == "spk-001" and rows[0].accent == "en-GB-x-tui"
    plan = plan_prompts("computer", 3, 0, 7)
    assert rows[0].extra["prompt"] == plan[0].index and rows[0].extra["stopped_by"] == "speech-end"  # take 2
    session = ds / rows[0].session
    assert len(list((session / "rejected").glob("*.wav"))) == 2  # takes 1 and 3
    events = [json.loads(line) for line in (session / EVENTS_FILE).read_text().splitlines()]
    assert [(e["type"], e["prompt"]) for e in events if e["type"] in ("bad", "skip")] == \
           [("bad", plan[0].index), ("bad", plan[1].index), ("skip", plan[1].index), ("skip", plan[2].index)]
    consent = [json.loads(line) for line in (session / "consent.jsonl").read_text().splitlines()]
    assert consent[0]["consent"] is True
    assert check_dataset(ds).problems == [] and not no_temp_files(ds)


def test_terminal_ui_playback_failure_does_not_end_the_session(pulse, tmp_path):
    """p with an output device that does not exist: a message on the screen, and the session goes on (q quits, the take stays)."""
    ds = tmp_path / "ds"
    word = scene_file(tmp_path / "computer.wav", [say("computer")], lead=0.3)
    kws = TerminalKws(["record", ds, "-k", "computer", "--takes", 2, "--negatives", 0, "--device", "pulse", "--output-device", "no-such-speaker",
                       "--countdown", 0, "--speaker", "spk-009", "--accent", "en-US", "--gender", "", "--age-band", "", "--consent",
                       "--seed", 7], pulse.env)
    kws.wait_for("press space to record")
    kws.type(" ")
    kws.wait_for("recording: speak now")
    player = pulse.play(word)
    kws.wait_for("kept ✓")
    player.wait(10)
    kws.type("p")
    kws.wait_for("cannot play back on output device 'no-such-speaker'")
    kws.type("q")
    assert kws.finish() == 0, kws.screen[-3000:]
    assert "continue later with: kws record" in kws.screen
    assert len(rows_of(ds)) == 1
