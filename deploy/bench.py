"""``kws bench``: what listening costs, measured the way the listener runs, beside the engines users would pick instead.

Every engine is measured by one harness (``deploy/bench_worker.py``) in a
fresh process of its own, on the same audio, streamed in microphone-sized
chunks on one CPU with one thread: process CPU seconds per hour of audio, the
real-time factor, per-chunk (and, for ours, per-hop) latency percentiles, the
detection latency after the end of each known keyword, and the peak resident
memory of that process (imports count: it is what a listening process costs).
Every engine runs once per round for several rounds, interleaved, and
keeps its median round (``run_bench``): on a shared machine one run each
can rank two engines either way. The static facts come from the model
files: size, parameters, and
multiply-accumulates per second of audio counted from the ONNX graph
(``deploy.macs``).

openWakeWord and microWakeWord are not dependencies of this package: with
``--against`` they are installed once into a separate venv
(``benchmarks/.venv-against``) and run there. Their wheels ship their models
(openWakeWord 0.5.1: ``openwakeword/resources/models/`` holds
``melspectrogram.onnx``, ``embedding_model.onnx`` and the ONNX and TFLite
keyword models; pymicro-wakeword 2.5.0: ``pymicro_wakeword/models/*.tflite``
and ``lib/libtensorflowlite_c.so``), so nothing is downloaded at run time.
Both have a bundled "hey jarvis" model, so the built-in stream says "hey
jarvis" as well as our keyword: each engine listens for its own phrase in the
same audio, and the other phrases are just speech to it.

The built-in stream (espeak-ng voices saying the keywords among ordinary
sentences, over faint noise, with the time of every keyword known) needs the
training side (``collect``: espeak-ng, librosa); on a Raspberry Pi, give a WAV
instead, e.g. the ``stream.wav`` a laptop run wrote, with its ``stream.json``
of keyword times beside it. Without ``--against`` this module needs only
numpy and onnxruntime (``onnx`` for the MAC count, reported as unknown
without it).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from features.errors import AudioError, ConfigError, KwsError

log = logging.getLogger("kws")

SAMPLE_RATE = 16000
WORKER = Path(__file__).with_name("bench_worker.py")
REPO = Path(__file__).resolve().parent.parent
AGAINST_REQUIREMENTS = ["openwakeword==0.5.1", "pymicro-wakeword==2.5.0"]
AGAINST_ENGINES = {
    # engine -> (bundled model, the phrase it listens for)
    "openwakeword": ("hey_jarvis", "hey jarvis"),
    "microwakeword": ("hey_jarvis", "hey jarvis"),
}
DETECTION_WINDOW_S = 2.0  # a detection up to this long after a keyword's end counts as detecting it
REFRACTORY_S = 1.0  # for the engines without a refractory period of their own

# Raspberry Pi 4 estimate (see ``pi4_estimate``): stated assumptions, not measurements.
PI4_CLOCK_HZ = 1.5e9  # Cortex-A72 at 1.5 GHz
PI4_MACS_PER_CYCLE = 1.0  # sustained fp32 MACs per cycle for small convolutions in ONNX Runtime (peak is 8 with NEON)
PI4_SLOWDOWN = (4.0, 8.0)  # one A72 core vs one core of a 2020s x86 machine on scalar/Python-heavy code


# --------------------------------------------------------------------------- the stream


@dataclass
class BenchStream:
    """Audio to listen to, with the keywords known to be in it."""

    audio: np.ndarray  # float32, 16 kHz mono
    events: list[dict] = field(default_factory=list)  # {"phrase", "start_s", "end_s"}
    source: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def repeated(self, min_duration_s: float) -> "BenchStream":
        """The stream played back to back until it lasts ``min_duration_s`` (a longer run steadies the CPU figure)."""
        # The 1e-9 keeps float rounding (3 * d / d = 3.0000000000000004) from adding a whole extra copy.
        n = max(1, int(np.ceil(min_duration_s / max(self.duration_s, 1e-9) - 1e-9)))
        if n == 1:
            return self
        events = [
            {**e, "start_s": e["start_s"] + i * self.duration_s, "end_s": e["end_s"] + i * self.duration_s}
            for i in range(n)
            for e in self.events
        ]
        return BenchStream(np.tile(self.audio, n), events, f"{self.source} x{n}")


def phrase_of(label: str) -> str:
    """The spoken phrase of a label ("hey_jarvis" -> "hey jarvis")."""
    return label.replace("_", " ").strip()


def builtin_stream(phrases: list[str], *, takes_per_phrase: int = 6, n_sentences: int = 14, seed: int = 0) -> BenchStream:
    """espeak-ng voices saying each phrase ``takes_per_phrase`` times among ordinary sentences, over faint noise.

    The keyword times are known to the sample (the synthesised clips are
    trimmed of silence), which is what the detection latency is measured
    against. Needs the training side (espeak-ng, librosa): ``KwsError`` if it
    is not installed, saying to pass a WAV instead.
    """
    try:
        from collect import phrases as phrase_lists
        from collect.synth import coloured_noise, synthesize
    except ImportError as exc:
        raise ConfigError(
            f"the built-in benchmark stream needs the training side ({exc.name} is not installed); "
            "pass a WAV to listen to, e.g. the stream.wav (with stream.json) that 'kws bench' wrote on another machine"
        ) from None
    rng = np.random.default_rng(seed)
    voices = ["en-us+m3", "en+f2", "en-gb-scotland+m1", "en-029+f4", "en-us-nyc+m5", "en-gb-x-rp+f3"]
    items: list[tuple[str | None, str, str]] = []  # (phrase or None, text, voice)
    for phrase in phrases:
        for i in range(takes_per_phrase):
            items.append((phrase, phrase, voices[i % len(voices)]))
    banned = " ".join(phrases)
    for i, text in enumerate(phrase_lists.sentences(banned, n_sentences, rng)):
        items.append((None, text, voices[(i + 1) % len(voices)]))
    order = rng.permutation(len(items))
    pieces, events, t = [], [], 0
    gap = lambda: np.zeros(int(SAMPLE_RATE * rng.uniform(0.6, 1.6)), np.float32)  # noqa: E731
    pieces.append(gap())
    t += len(pieces[-1])
    for k in order:
        phrase, text, voice = items[k]
        clip = synthesize(text, voice, rate=int(rng.integers(140, 190)), pitch=int(rng.integers(35, 65)),
                           seed=int(rng.integers(2**31)))
        loud = np.flatnonzero(np.abs(clip) > 1e-3)
        if len(loud) == 0:
            continue
        clip = clip[loud[0] : loud[-1] + 1]
        clip = clip * np.float32(10 ** (rng.uniform(-18, -6) / 20) / (np.max(np.abs(clip)) or 1.0))
        if phrase is not None:
            events.append({"phrase": phrase, "start_s": t / SAMPLE_RATE, "end_s": (t + len(clip)) / SAMPLE_RATE})
        pieces += [clip.astype(np.float32), gap()]
        t += len(clip) + len(pieces[-1])
    audio = np.concatenate(pieces)
    audio = audio + coloured_noise(len(audio), rng, 1.0) * np.float32(10 ** (-55 / 20))
    source = f"built-in: espeak-ng, {', '.join(repr(p) for p in phrases)} x{takes_per_phrase} among {n_sentences} sentences, seed {seed}"
    return BenchStream(np.clip(audio, -1, 1).astype(np.float32), events, source)


def read_wav(path: Path) -> np.ndarray:
    """A WAV as float32 16 kHz mono: the house format with the standard library, anything else through ``features.audio``."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2):
                audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
                if len(audio) == 0:
                    raise AudioError(f"{path}: no audio in the file")
                return audio
    except (wave.Error, EOFError):
        pass
    try:
        from features.audio import load_audio
    except ImportError:
        raise AudioError(f"{path}: not a 16 kHz mono 16-bit WAV, and soundfile is not installed to convert it") from None
    return load_audio(path)


def load_stream(path: Path) -> BenchStream:
    """A WAV, with the keyword times from ``<name>.json`` beside it if there is one (``{"events": [...]}``)."""
    path = Path(path)
    audio = read_wav(path)
    events = []
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            events = json.loads(sidecar.read_text(encoding="utf-8"))["events"]
            events = [{"phrase": str(e["phrase"]), "start_s": float(e["start_s"]), "end_s": float(e["end_s"])} for e in events]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{sidecar}: not a list of keyword events ({exc})") from None
    return BenchStream(audio, events, str(path))


def save_stream(stream: BenchStream, out_dir: Path) -> Path:
    """``stream.wav`` (16-bit) and ``stream.json`` (keyword times) in ``out_dir``: replayable on a Pi."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_path = out_dir / "stream.wav"
    pcm = np.round(np.clip(stream.audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    (out_dir / "stream.json").write_text(json.dumps({"source": stream.source, "events": stream.events}, indent=1), encoding="utf-8")
    return wav_path


# --------------------------------------------------------------------------- running engines


def against_venv_dir() -> Path:
    """Where the comparison engines live: ``benchmarks/.venv-against`` in a checkout, else a user cache folder."""
    if env := os.environ.get("KWS_AGAINST_VENV"):
        return Path(env)
    if (REPO / "pyproject.toml").is_file():
        return REPO / "benchmarks" / ".venv-against"
    return Path.home() / ".cache" / "kws" / "venv-against"


def ensure_against_venv(venv: Path | None = None, install: bool = True) -> Path:
    """The Python of a venv holding openWakeWord and microWakeWord, created (once, from PyPI) if missing."""
    venv = Path(venv) if venv else against_venv_dir()
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import openwakeword, pymicro_wakeword"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    if not install:
        raise ConfigError(f"{venv}: no venv with openWakeWord and microWakeWord; run 'kws bench ... --against' once to create it")
    log.info("creating %s with %s (one time; they are benchmark extras, not dependencies of kws)", venv, " ".join(AGAINST_REQUIREMENTS))
    try:
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *AGAINST_REQUIREMENTS], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        raise ConfigError(f"could not create {venv} for --against ({exc}); install {' '.join(AGAINST_REQUIREMENTS)} there by hand") from None
    if subprocess.run(check, capture_output=True).returncode != 0:
        raise ConfigError(f"{venv}: openWakeWord / microWakeWord installed but do not import")
    return python


def run_worker(python: str | Path, engine: str, models: list[str], raw_path: Path, chunk: int, copies: int = 1) -> dict:
    """One engine in a fresh process (``bench_worker.py``); its result dict, with the peak RSS in MiB.

    The peak RSS is the worker's own ``getrusage(RUSAGE_SELF).ru_maxrss`` at
    the end of the run (imports, model, buffers), cross-checked with its
    ``VmHWM``. The worker is started by a ``/bin/sh`` that forks it, and that
    is not for convenience: Linux carries the *forking* process's peak into a
    child's ``ru_maxrss`` across ``exec`` (so ``wait4`` on a child of this
    large, torch-importing process reports this process's memory); forked from
    a small shell, the worker's figure is its own.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        if engine == "kws":
            cmd = [str(python), "-m", "deploy.bench_worker"]
        else:
            # A copy outside the package, so the other venv never sees our modules on its sys.path.
            script = Path(tmp) / "bench_worker.py"
            shutil.copyfile(WORKER, script)
            cmd = [str(python), str(script)]
        cmd += ["--engine", engine, "--audio", str(raw_path), "--chunk", str(chunk), "--copies", str(copies), "--refractory", str(REFRACTORY_S)]
        for m in models:
            cmd += ["--model", str(m)]
        err_path = Path(tmp) / "stderr.txt"
        with open(err_path, "wb") as err_file:
            shell = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]  # "; exit" makes sh fork instead of exec
            proc = subprocess.Popen(shell, stdout=subprocess.PIPE, stderr=err_file, env=env, cwd=tmp)
            stdout = proc.stdout.read()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_bytes()
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise KwsError(f"benchmark of {engine} failed (exit {proc.returncode}): {' | '.join(tail)}")
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith("KWS-BENCH-RESULT "):
            result = json.loads(line[len("KWS-BENCH-RESULT ") :])
            break
    else:
        raise KwsError(f"benchmark of {engine} printed no result")
    result["peak_rss_mib"] = result["peak_rss_kib"] / 1024
    for key in ("rss_anon", "rss_file"):
        kib = result.get(f"{key}_kib")
        result[f"{key}_mib"] = None if kib is None else kib / 1024
    del usage  # includes the shell's inherited peak: see above
    return result


# --------------------------------------------------------------------------- figures


def detection_latency(detections: list[dict], events: list[dict], phrase: str, window_s: float = DETECTION_WINDOW_S) -> dict:
    """Match detections to the known keyword ends of ``phrase``; latency = detection time - keyword end.

    A detection between a keyword's start and ``window_s`` after its end
    detects it (the first one counts); any other detection is a false accept
    on this stream. Detection times are the end of the chunk whose processing
    reported them, i.e. when the listener could act.
    """
    mine = sorted((e for e in events if e["phrase"] == phrase), key=lambda e: e["end_s"])
    used = set()
    latencies = []
    for e in mine:
        for i, d in enumerate(detections):
            if i not in used and e["start_s"] <= d["time_s"] <= e["end_s"] + window_s:
                used.add(i)
                latencies.append(d["time_s"] - e["end_s"])
                break
    false = len(detections) - len(used)
    ms = np.asarray(latencies) * 1000
    return {
        "phrase": phrase,
        "keywords": len(mine),
        "detected": len(latencies),
        "false_accepts": false,
        "median_ms": float(np.median(ms)) if len(ms) else None,
        "p90_ms": float(np.percentile(ms, 90)) if len(ms) else None,
    }


def mfcc_macs_per_frame(cfg) -> int:
    """MACs of one MFCC frame as ``features.mfcc`` computes it (numpy, not a graph, so counted by formula).

    Window (n_fft), a real FFT (about n_fft/2 * log2(n_fft/2) complex MACs,
    4 real each, plus the real-split pass), power (2 per bin), the dense mel
    matrix (bins x mels), the DCT (mels x mfcc).
    """
    n = cfg.n_fft
    bins = n // 2 + 1
    fft = 4 * (n // 2) * int(np.log2(n // 2)) + 2 * n
    return n + fft + 2 * bins + bins * cfg.n_mels + cfg.n_mels * cfg.n_mfcc


def onnx_facts(paths_and_shapes: list[tuple[Path, dict | None, float]]) -> dict:
    """Size, parameters and MACs/s of a set of ONNX graphs, each run ``rate`` times per second of audio."""
    size = sum(Path(p).stat().st_size for p, _, _ in paths_and_shapes)
    try:
        import onnx

        from deploy.macs import count_macs
    except ImportError:
        return {"size_bytes": size, "parameters": None, "macs_per_s": None, "macs_note": "onnx not installed"}
    params, macs_s, unresolved = 0, 0.0, []
    for path, shapes, rate in paths_and_shapes:
        m = onnx.load(str(path))
        params += sum(int(np.prod(i.dims)) for i in m.graph.initializer)
        c = count_macs(m, shapes)
        macs_s += c.total * rate
        unresolved += c.unresolved
    return {"size_bytes": size, "parameters": params, "macs_per_s": macs_s, "macs_unresolved": unresolved}


def kws_facts(model_path: Path) -> dict:
    """Our model: file size, parameters (metadata), classifier MACs per hop (graph) and MFCC MACs (formula), per second."""
    from deploy.modelfile import KwsModel

    model = KwsModel(model_path)
    info = model.info
    cfg = info.feature_config
    hops_per_s = 1.0 / info.hop_s
    facts = onnx_facts([(model_path, {"mfcc": [1, info.window_frames, cfg.n_mfcc]}, hops_per_s)])
    if info.metadata.get("n_parameters") is not None:
        facts["parameters"] = int(info.metadata["n_parameters"])
    facts["streaming"] = model.stream is not None
    if model.stream is not None and facts["macs_per_s"] is not None:
        # What the detector runs per hop is the streaming graph: its MACs, not the window graph's (kept for comparison).
        import onnx

        from deploy.macs import count_macs

        counted = count_macs(onnx.load_model_from_string(model.stream_graph()))
        facts["window_model_macs_per_s"] = facts["macs_per_s"]
        facts["macs_per_s"] = counted.total * hops_per_s
        facts["macs_unresolved"] = counted.unresolved
    model_macs = facts["macs_per_s"]
    feature_macs = mfcc_macs_per_frame(cfg) / cfg.hop_s
    facts.update(
        {
            "model_macs_per_s": model_macs,
            "feature_macs_per_s": feature_macs,
            "macs_per_s": None if model_macs is None else model_macs + feature_macs,
            "hop_ms": info.hop_s * 1000,
            "window_s": info.window_s,
            "keywords": list(info.keywords),
            "quantization": str(info.metadata.get("quantization", "float32")),
        }
    )
    return facts


def against_facts(engine: str, model_files: list[str]) -> dict:
    """Static facts of a comparison engine from the model files its worker reported."""
    files = [Path(f) for f in model_files]
    if engine == "openwakeword":
        # Per 80 ms: the mel model on 1280 new + 480 context samples, the embedding on 76 mel frames, the keyword model.
        rate = 16000 / 1280
        shapes = {"melspectrogram.onnx": {"input": [1, 1760]}}
        return onnx_facts([(f, shapes.get(f.name), rate) for f in files if f.suffix == ".onnx"])
    # microWakeWord: TFLite, no ONNX graph to count from.
    return {"size_bytes": sum(f.stat().st_size for f in files if f.is_file()), "parameters": None, "macs_per_s": None, "macs_note": "TFLite graph: not counted"}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (Linux; ``{}`` elsewhere)."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id() -> dict:
    """The CPU's family, model and vector instruction sets (Linux; ``{}`` elsewhere).

    Why: a model name can be as vague as "AMD EPYC", while the vector
    instructions decide which kernels PyTorch and ONNX Runtime run, and
    kernels of another width can round floating point otherwise.
    """
    info = _cpuinfo()
    if not info:
        return {}
    simd = sorted(f for f in info.get("flags", "").split() if f.startswith(("sse", "ssse", "avx", "fma", "amx", "f16c")))
    return {"vendor": info.get("vendor_id"), "family": info.get("cpu family"), "model": info.get("model"), "simd": simd}


def machine_info(packages: bool = False) -> dict:
    """What a measurement ran on: CPU model and ``cpu_id``, cores, platform, Python and, with ``packages``, every installed
    distribution's version.

    Why: figures that should repeat can differ between machines (another CPU
    can round floating point otherwise, another package version can change a
    result); a report that says where it was made lets two of them be told apart.
    """
    info = {"cpu": cpu_model(), "cpu_id": cpu_id(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": sys.version.split()[0]}
    if packages:
        from importlib.metadata import distributions

        info["packages"] = dict(sorted((d.metadata["Name"], d.version) for d in distributions() if d.metadata["Name"]))
    return info


def pi4_estimate(ours: dict) -> dict:
    """Expected share of one Raspberry Pi 4 core while listening, from two independent estimates.

    ``ours``: our engine's report row (its measured CPU and ``kws_facts``).

    1. Scaling what was measured here: this machine's CPU seconds per second
       of audio times ``PI4_SLOWDOWN`` (a Cortex-A72 core at 1.5 GHz runs
       Python and small-kernel numpy/ONNX Runtime code about 4 to 8 times slower
       than one core of a 2020s x86 machine). This captures the per-hop
       Python and runtime overheads, which dominate for a model this small.
    2. From the MAC count: MACs per second of audio over
       ``PI4_CLOCK_HZ * PI4_MACS_PER_CYCLE`` (a sustained 1 fp32 MAC per cycle
       for small convolutions; NEON's peak is 8). This is the arithmetic alone.

    The expected share is the larger of the two (they bound different costs).
    """
    here = ours["cpu_s"] / ours["audio_s"]
    lo, hi = here * PI4_SLOWDOWN[0], here * PI4_SLOWDOWN[1]
    macs = ours.get("macs_per_s")
    arithmetic = None if macs is None else macs / (PI4_CLOCK_HZ * PI4_MACS_PER_CYCLE)
    expected_hi = max(hi, arithmetic or 0.0)
    return {
        "measured_here_core_share": here,
        "scaled_core_share": [lo, hi],
        "mac_bound_core_share": arithmetic,
        "expected_core_share": [max(lo, arithmetic or 0.0), expected_hi],
        "assumptions": {
            "pi4_clock_hz": PI4_CLOCK_HZ,
            "pi4_macs_per_cycle": PI4_MACS_PER_CYCLE,
            "pi4_slowdown_vs_this_core": list(PI4_SLOWDOWN),
            "this_cpu": cpu_model(),
        },
    }


# --------------------------------------------------------------------------- the benchmark


def _write_raw(stream: BenchStream, path: Path) -> Path:
    np.round(np.clip(stream.audio, -1, 1) * 32767).astype("<i2").tofile(path)
    return path


def int8_sibling(model_path: Path) -> Path | None:
    """The quantised model ``kws export --int8`` writes beside a float one (``<stem>.int8.onnx``), if present."""
    p = model_path.with_name(model_path.stem + ".int8.onnx")
    return p if p.is_file() and p != model_path else None


def run_bench(
    model: str | Path,
    audio: str | Path | None = None,
    *,
    against: list[str] | tuple[str, ...] = (),
    out_dir: str | Path | None = None,
    chunk: int = 1600,
    min_audio_s: float = 300.0,
    copies: tuple[int, ...] = (1, 2, 4),
    against_venv: Path | None = None,
    stream: BenchStream | None = None,
    rounds: int = 3,
) -> dict:
    """Measure ``model`` (and ``against`` engines) on one stream; return the report dict (also written to ``out_dir``).

    ``rounds``: every engine (and every number of ``copies``) runs once per
    round, in the same order each round (``interleaved_rounds``). On a shared
    machine the CPU a process gets drifts by up to 2x within a minute, so one
    run per engine can rank two engines either way; per engine the report
    keeps its median round, and each ratio is the median of the per-round
    ratios, with their range.
    """
    from deploy.modelfile import KwsModel

    model = Path(model).resolve()  # the workers run in a temporary folder: a relative path would not be found there
    info = KwsModel(model).info  # fails early, with a clear message, on a file that is not ours
    unknown = sorted(set(against) - set(AGAINST_ENGINES))
    if unknown:
        raise ConfigError(f"unknown --against engine(s) {', '.join(unknown)}; choose from {', '.join(AGAINST_ENGINES)}")
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1 sample, got {chunk}")
    if any(c < 1 for c in copies):
        raise ConfigError(f"model copies must be at least 1, got {copies}")
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    out_dir = Path(out_dir) if out_dir else Path("runs") / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)

    if stream is None:
        if audio is not None:
            stream = load_stream(Path(audio))
        else:
            phrases = [phrase_of(k) for k in info.keywords]
            # The other engines' phrases are always said too: other speech for ours, and runs with and
            # without --against listen to the same stream.
            for p in [AGAINST_ENGINES[e][1] for e in AGAINST_ENGINES]:
                if p not in phrases:
                    phrases.append(p)
            stream = builtin_stream(phrases)
            save_stream(stream, out_dir)
    measured = stream.repeated(min_audio_s)
    python_against = ensure_against_venv(against_venv) if against else None

    q = int8_sibling(model)
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as tmp:
        raw = _write_raw(measured, Path(tmp) / "stream.s16")
        jobs = {"kws": partial(run_worker, sys.executable, "kws", [str(model)], raw, chunk)}
        if q is not None:
            jobs["int8"] = partial(run_worker, sys.executable, "kws", [str(q)], raw, chunk)
        for engine in against:
            jobs[engine] = partial(run_worker, python_against, engine, [AGAINST_ENGINES[engine][0]], raw, chunk)
        for n in copies:
            if n > 1:
                jobs[f"copies-{n}"] = partial(run_worker, sys.executable, "kws", [str(model)], raw, chunk, copies=n)
        runs = interleaved_rounds(jobs, rounds)

    def kws_row(key: str, path: Path, label: str) -> dict:
        r = median_round(runs[key])
        r.update(kws_facts(path))
        r["label"] = label
        r["detection"] = [detection_latency([d for d in r["detections"] if phrase_of(d["keyword"]) == phrase_of(k)], measured.events, phrase_of(k))
                          for k in info.keywords]
        return r

    ours = kws_row("kws", model, f"kws ({model.name})")
    keyed = [("kws", ours)] + ([("int8", kws_row("int8", q, f"kws int8 ({q.name})"))] if q is not None else [])
    for engine in against:
        bundled, phrase = AGAINST_ENGINES[engine]
        r = median_round(runs[engine])
        r.update(against_facts(engine, r.get("model_files", [])))
        r["label"] = f"{r['engine']} ({bundled})"
        r["detection"] = [detection_latency(r["detections"], measured.events, phrase)]
        keyed.append((engine, r))
    for key, r in keyed:
        r["cpu_vs_kws"], r["cpu_vs_kws_range"] = round_ratio(runs[key], runs["kws"])
        r["rss_vs_kws"] = r["peak_rss_mib"] / ours["peak_rss_mib"]
    rows = [r for _, r in keyed]
    multi = []
    for n in copies:
        key = "kws" if n == 1 else f"copies-{n}"
        r = median_round(runs[key])
        vs_one, vs_one_range = round_ratio(runs[key], runs["kws"])
        multi.append({"models": n, "cpu_s_per_hour": r["cpu_s_per_hour"], "cpu_s_per_hour_rounds": r["cpu_s_per_hour_rounds"],
                      "peak_rss_mib": r["peak_rss_mib"], "vs_one": vs_one, "vs_one_range": vs_one_range})

    report = {
        "command": "kws bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "stream": {"source": stream.source, "duration_s": stream.duration_s, "measured_s": measured.duration_s, "keywords": len(stream.events)},
        "chunk": chunk,
        "rounds": rounds,
        "model": str(model),
        "engines": rows,
        "multi": multi,
        "pi4": pi4_estimate(ours),
        "targets": targets(rows, multi),
    }
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    (out_dir / "bench.md").write_text(markdown(report), encoding="utf-8")
    return report


def interleaved_rounds(jobs: dict, rounds: int) -> dict[str, list[dict]]:
    """Call every job once per round, in the same order every round: ``{key: [result of round 1, ...]}``.

    Interleaving puts the engines side by side in time, so a slow spell of
    the machine lands on all of them rather than on whichever ran then.
    """
    out: dict[str, list[dict]] = {key: [] for key in jobs}
    for i in range(rounds):
        for key, job in jobs.items():
            log.info("round %d of %d: %s", i + 1, rounds, key)
            out[key].append(job())
    return out


def median_round(results: list[dict]) -> dict:
    """The round with the median CPU time (the lower middle one of an even count), with every round's CPU time added."""
    cpu = [r["cpu_s_per_hour"] for r in results]
    pick = dict(results[int(np.argsort(cpu, kind="stable")[(len(cpu) - 1) // 2])])
    pick["cpu_s_per_hour_rounds"] = cpu
    return pick


def round_ratio(results: list[dict], reference: list[dict]) -> tuple[float | None, list[float] | None]:
    """CPU of ``results`` over ``reference`` round by round: the median ratio and ``[lowest, highest]`` (None if the reference took no CPU)."""
    ratios = [r["cpu_s_per_hour"] / ref["cpu_s_per_hour"] for r, ref in zip(results, reference) if ref["cpu_s_per_hour"]]
    if not ratios:
        return None, None
    return float(np.median(ratios)), [min(ratios), max(ratios)]


def targets(rows: list[dict], multi: list[dict]) -> dict:
    """The issue's goals, checked on this run's ratios (None where an engine was not measured)."""
    ours = rows[0]
    by = {r["engine"].split()[0]: r for r in rows[1:]}
    oww, mww = by.get("openwakeword"), by.get("microwakeword")
    med = ours["detection"][0]["median_ms"] if ours["detection"] else None
    out = {
        "cpu_at_most_quarter_of_openwakeword": None if oww is None or oww["cpu_vs_kws"] is None else oww["cpu_vs_kws"] >= 4,
        "cpu_at_most_microwakeword": None if mww is None or mww["cpu_vs_kws"] is None else mww["cpu_vs_kws"] >= 1,
        "rss_below_both": None if oww is None or mww is None else ours["peak_rss_mib"] < min(oww["peak_rss_mib"], mww["peak_rss_mib"]),
        "median_detection_latency_under_300ms": None if med is None else med < 300,
    }
    if len(multi) > 1:
        last = multi[-1]
        # "far slower than N times one": the N-model cost at most half of N separate ones.
        out["n_models_cost_under_half_of_n_times_one"] = last["vs_one"] is not None and last["vs_one"] <= last["models"] / 2
    return out


def _fmt(x, spec: str = ".1f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def _spread(values: list[float] | None, spec: str, sep: str = ", ") -> str:
    """`` (a, b, c)`` after a figure measured in several rounds (``sep="-"`` for a range); nothing when all are equal."""
    if not values or len({format(v, spec) for v in values}) < 2:
        return ""
    return " (" + sep.join(format(v, spec) for v in values) + ")"


def markdown(report: dict) -> str:
    """The report as Markdown: the engines side by side, N models, the Pi estimate, the goals."""
    lines = [
        "# kws bench",
        "",
        f"Stream: {report['stream']['source']} ({report['stream']['duration_s']:.0f} s, played for {report['stream']['measured_s']:.0f} s), "
        f"chunks of {report['chunk']} samples, one CPU, one thread. Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores).",
        "",
    ]
    if report.get("rounds", 1) > 1:
        lines += [f"{report['rounds']} rounds, every engine once per round in the same order: each row is the engine's median round "
                  "(CPU of every round in brackets), each ratio the median of the per-round ratios (their range in brackets).", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    lines += [
        "| engine | CPU s / h audio | CPU vs kws | real-time factor | chunk p50 / p99 ms | hop p50 / p99 ms | detected | median detection latency ms | false accepts | peak RSS MiB | RSS vs kws | RSS at end: private / file MiB | model KiB | parameters | MMAC / s audio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["engines"]:
        det = r["detection"][0] if r["detection"] else {}
        cl, hl = r["chunk_latency_ms"], r["hop_latency_ms"]
        lines.append(
            "| "
            + " | ".join(
                [
                    r["label"],
                    _fmt(r["cpu_s_per_hour"]) + _spread(r.get("cpu_s_per_hour_rounds"), ".1f"),
                    _fmt(r["cpu_vs_kws"], ".2f") + "x" + _spread(r.get("cpu_vs_kws_range"), ".2f", "-"),
                    _fmt(r["rtf"], ".4f"),
                    f"{_fmt(cl['p50'], '.3f')} / {_fmt(cl['p99'], '.3f')}",
                    f"{_fmt(hl['p50'], '.3f')} / {_fmt(hl['p99'], '.3f')}" if hl["n"] else "n/a",
                    f"{det.get('detected', 0)}/{det.get('keywords', 0)} '{det.get('phrase', '?')}'",
                    _fmt(det.get("median_ms"), ".0f"),
                    str(det.get("false_accepts", "n/a")),
                    _fmt(r["peak_rss_mib"]),
                    _fmt(r["rss_vs_kws"], ".2f") + "x",
                    f"{_fmt(r.get('rss_anon_mib'))} / {_fmt(r.get('rss_file_mib'))}",
                    _fmt(r["size_bytes"] / 1024, ".0f"),
                    "n/a" if r.get("parameters") is None else f"{r['parameters']:,}",
                    _fmt(None if r.get("macs_per_s") is None else r["macs_per_s"] / 1e6, ".1f"),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Detection latency: from the end of the spoken keyword to the end of the chunk whose processing reported it. "
        "RSS at end: resident memory after the stream, split into what the process allocated (private) and pages of "
        "mapped files such as shared libraries (shared with other processes; varies with the page cache).",
        "",
    ]
    if len(report["multi"]) > 1:
        lines += ["## Several models sharing one MFCC front end", "", "| models | CPU s / h audio | vs one model | peak RSS MiB |", "|---|---|---|---|"]
        for m in report["multi"]:
            lines.append(f"| {m['models']} | {_fmt(m['cpu_s_per_hour'])}{_spread(m.get('cpu_s_per_hour_rounds'), '.1f')} "
                         f"| {_fmt(m['vs_one'], '.2f')}x{_spread(m.get('vs_one_range'), '.2f', '-')} | {_fmt(m['peak_rss_mib'])} |")
        lines.append("")
    pi = report["pi4"]
    a = pi["assumptions"]
    lines += [
        "## Raspberry Pi 4 (estimate)",
        "",
        f"Measured here: {100 * pi['measured_here_core_share']:.3f}% of one core. Scaled by {a['pi4_slowdown_vs_this_core'][0]:.0f}-{a['pi4_slowdown_vs_this_core'][1]:.0f}x "
        f"(one Cortex-A72 core vs this CPU's): {100 * pi['scaled_core_share'][0]:.2f}-{100 * pi['scaled_core_share'][1]:.2f}%. "
        f"From the MAC count at {a['pi4_macs_per_cycle']:.0f} MAC/cycle x {a['pi4_clock_hz'] / 1e9:.1f} GHz: "
        f"{_fmt(None if pi['mac_bound_core_share'] is None else 100 * pi['mac_bound_core_share'], '.2f')}%. "
        f"Expected: {100 * pi['expected_core_share'][0]:.2f}-{100 * pi['expected_core_share'][1]:.2f}% of one Pi 4 core.",
        "",
        "## Goals",
        "",
    ]
    for k, v in report["targets"].items():
        lines.append(f"- {k.replace('_', ' ')}: {'not measured' if v is None else ('yes' if v else 'NO')}")
    return "\n".join(lines) + "\n"
