"""One benchmark run in a fresh process: load one wake-word engine, listen to a stream, report JSON.

``kws bench`` starts this file as a script, once per engine, so that every
engine is measured by the same harness and its imports count towards its own
memory: our detector with the interpreter of the project, openWakeWord and
microWakeWord with the interpreter of their separate venv (they are not
dependencies of the package). That is why this file imports nothing but the
standard library and numpy at the top, and nothing of the project: it must run
in a venv where the project is not installed.

The stream arrives the way a microphone delivers it: a raw 16 kHz mono
16-bit PCM file read ``--chunk`` samples at a time (the file is read chunk by
chunk, never loaded whole, so the process's peak memory is the engine's, not
the recording's). Each engine gets the chunk in its native input format
(float32 for ours, int16 for openWakeWord, bytes for microWakeWord); the
conversion is part of the timed call. The process pins itself to one CPU and
asks every runtime for one thread.

Measured: process CPU seconds and wall seconds of the listening loop only
(start-up is reported apart), the time of each chunk's call, the chunks in
which the engine scored (ours only: per-hop latency), detections (stream time
at the end of the chunk whose processing reported it: when a user learns of
it), and the peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

SAMPLE_RATE = 16000
WARMUP_S = 1.0  # silence fed before the stream: first-run costs (allocations, ORT graph caches) are not the stream's


class Engine:
    """What the harness needs of an engine: feed a chunk, get keyword scores / detections."""

    name = "?"
    keyword = "?"

    def feed(self, pcm: bytes, samples: np.ndarray) -> list[tuple[str, float]]:
        """Process one chunk; return (keyword, score) of every detection it completes."""
        raise NotImplementedError

    def hops_done(self) -> int:
        """Scorings so far (only where the engine exposes it; -1 otherwise)."""
        return -1

    def model_files(self) -> list[str]:
        """Every model file the engine loaded (for size, parameters and MACs)."""
        return []


class KwsEngine(Engine):
    """This project's streaming detector (one model, or several sharing one MFCC front end)."""

    def __init__(self, models: list[str], copies: int):
        from deploy.detector import Detector
        from deploy.modelfile import KwsModel

        paths = list(models) * copies
        if len(paths) == 1:
            self.det = Detector(KwsModel(paths[0]))
            self._dets = [self.det]
        else:
            from deploy.multi import MultiDetector

            self.det = MultiDetector([KwsModel(p) for p in paths])
            self._dets = self.det.detectors
        self.keyword = ",".join(self._dets[0].keywords)
        self.name = "kws"

    def feed(self, pcm, samples):
        audio = samples.astype(np.float32) * np.float32(1 / 32768)
        return [(d.keyword, float(d.score)) for d in self.det.update(audio)]

    def model_files(self):
        return sorted({str(d.model.path) for d in self._dets})

    def hops_done(self):
        det = self._dets[0]
        window, hop = det.info.window_frames, det.info.hop_frames
        n = det._n_frames
        return 0 if n < window else 1 + (n - window) // hop


class RisingEdge:
    """Refractory period for engines that say "above threshold" at every step without a trigger of their own.

    Without it one spoken keyword would count as a dozen detections; ours applies
    the same refractory period (from its model metadata) in its own ``Trigger``.
    """

    def __init__(self, refractory_s: float):
        self.refractory_s = refractory_s
        self.last = -1e9

    def step(self, t: float, above: bool) -> bool:
        if above and t - self.last > self.refractory_s:
            self.last = t
            return True
        return False


class OpenWakeWordEngine(Engine):
    """openWakeWord with its ONNX backend and one thread (``ncpu=1``), a bundled model from its wheel."""

    def __init__(self, model: str, threshold: float, refractory_s: float):
        import openwakeword
        from openwakeword.model import Model

        self.model = Model(wakeword_models=[model], inference_framework="onnx", ncpu=1)
        self.keyword = model
        self.name = f"openwakeword {getattr(openwakeword, '__version__', '')}".strip()
        self.threshold = threshold
        self.trigger = RisingEdge(refractory_s)
        self.t = 0.0

    def model_files(self):
        import openwakeword

        resources = os.path.join(os.path.dirname(openwakeword.__file__), "resources", "models")
        keyword = [p for p in openwakeword.get_pretrained_model_paths("onnx") if os.path.basename(p).startswith(self.keyword)]
        return [os.path.join(resources, "melspectrogram.onnx"), os.path.join(resources, "embedding_model.onnx")] + keyword

    def feed(self, pcm, samples):
        self.t += len(samples) / SAMPLE_RATE
        scores = self.model.predict(samples)
        score = float(scores[self.keyword])
        return [(self.keyword, score)] if self.trigger.step(self.t, score >= self.threshold) else []


class MicroWakeWordEngine(Engine):
    """microWakeWord (pymicro-wakeword): its bundled TFLite model, feature front end and TFLite library."""

    def __init__(self, model: str, refractory_s: float):
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

        self.mww = MicroWakeWord.from_builtin(Model(model))
        self.features = MicroWakeWordFeatures()
        self.keyword = model
        self.name = "microwakeword"
        self.trigger = RisingEdge(refractory_s)
        self.t = 0.0

    def model_files(self):
        return [str(self.mww.tflite_model)]

    def feed(self, pcm, samples):
        self.t += len(samples) / SAMPLE_RATE
        out = []
        for feats in self.features.process_streaming(pcm):
            prob = self.mww.process_streaming_prob(feats)
            # microWakeWord fires strictly above its cutoff (MicroWakeWord.process_streaming).
            if prob is not None and self.trigger.step(self.t, prob > self.mww.probability_cutoff):
                out.append((self.keyword, float(prob)))
        return out


def make_engine(args) -> Engine:
    if args.engine == "kws":
        return KwsEngine(args.model, args.copies)
    if args.engine == "openwakeword":
        return OpenWakeWordEngine(args.model[0], args.threshold, args.refractory)
    if args.engine == "microwakeword":
        return MicroWakeWordEngine(args.model[0], args.refractory)
    raise SystemExit(f"unknown engine {args.engine!r}")


def pin_to_one_cpu() -> int | None:
    """Run on one CPU only (the last allowed one), so 'one thread' also holds for runtimes that spawn threads."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return cpus[-1]
    except (AttributeError, OSError):
        return None


def proc_status_kib(*keys: str) -> dict[str, int | None]:
    """Memory figures (kiB) of this process from ``/proc/self/status`` (Linux; None elsewhere).

    ``VmHWM``: the peak resident memory; unlike ``ru_maxrss`` it never
    includes the memory of the process this one was forked from (which the
    kernel carries into ``ru_maxrss`` across ``exec``). ``RssAnon`` and
    ``RssFile``: what is resident now, split into memory the process
    allocated itself and pages of mapped files (shared libraries). The file
    part is shared with every other process using the same libraries and
    depends on what the page cache already held (the kernel maps cached
    neighbours of a faulted page too), so it moves by megabytes between runs
    and machines while the private part does not.
    """
    out: dict[str, int | None] = {k: None for k in keys}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def percentiles(values_ns: list[int]) -> dict:
    if not values_ns:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ms = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "n": int(len(ms))}


def run(args) -> dict:
    cpu = pin_to_one_cpu()
    t0, c0 = time.perf_counter(), time.process_time()
    engine = make_engine(args)
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    chunk = args.chunk
    silence = np.zeros(chunk, np.int16)
    for _ in range(int(np.ceil(WARMUP_S * SAMPLE_RATE / chunk))):
        engine.feed(silence.tobytes(), silence)
    warm_samples = int(np.ceil(WARMUP_S * SAMPLE_RATE / chunk)) * chunk
    hops0 = engine.hops_done()

    chunk_ns: list[int] = []
    hop_ns: list[int] = []  # chunks in which exactly one hop was scored (ours only)
    detections = []
    fed = 0
    buf = bytearray(chunk * 2)
    view = memoryview(buf)
    c1, t1 = time.process_time(), time.perf_counter()
    with open(args.audio, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            pcm = bytes(view[:n - n % 2])
            samples = np.frombuffer(pcm, dtype=np.int16)
            hops_before = engine.hops_done()
            s = time.perf_counter_ns()
            fired = engine.feed(pcm, samples)
            e = time.perf_counter_ns()
            chunk_ns.append(e - s)
            if hops_before >= 0 and engine.hops_done() - hops_before == 1:
                hop_ns.append(e - s)
            fed += len(samples)
            for keyword, score in fired:
                detections.append({"keyword": keyword, "time_s": fed / SAMPLE_RATE, "score": score})
    wall = time.perf_counter() - t1
    cpu_s = time.process_time() - c1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    mem = proc_status_kib("VmHWM", "RssAnon", "RssFile")
    audio_s = fed / SAMPLE_RATE
    hops = engine.hops_done() - hops0 if hops0 >= 0 else None
    return {
        "engine": engine.name,
        "keyword": engine.keyword,
        "models": args.model,
        "copies": args.copies,
        "chunk": chunk,
        "cpu": cpu,
        "python": sys.version.split()[0],
        "audio_s": audio_s,
        "warmup_s": warm_samples / SAMPLE_RATE,
        "load_wall_s": load_wall,
        "load_cpu_s": load_cpu,
        "cpu_s": cpu_s,
        "wall_s": wall,
        "cpu_s_per_hour": cpu_s / audio_s * 3600 if audio_s else None,
        "rtf": wall / audio_s if audio_s else None,
        "chunk_latency_ms": percentiles(chunk_ns),
        "hop_latency_ms": percentiles(hop_ns),
        "hops": hops,
        "detections": detections,
        "model_files": engine.model_files(),
        "peak_rss_kib_loaded": rss_loaded,
        "peak_rss_kib": usage.ru_maxrss,
        "vm_hwm_kib": mem["VmHWM"],
        "rss_anon_kib": mem["RssAnon"],
        "rss_file_kib": mem["RssFile"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True, choices=["kws", "openwakeword", "microwakeword"])
    p.add_argument("--model", action="append", required=True, help="model path (kws, repeatable) or bundled model name")
    p.add_argument("--copies", type=int, default=1, help="kws: run this many copies of the model(s) sharing one MFCC")
    p.add_argument("--audio", required=True, help="raw 16 kHz mono int16 PCM file")
    p.add_argument("--chunk", type=int, default=1600)
    p.add_argument("--threshold", type=float, default=0.5, help="openWakeWord: score threshold (its default 0.5)")
    p.add_argument("--refractory", type=float, default=1.0, help="seconds between two detections (openWakeWord, microWakeWord)")
    args = p.parse_args(argv)
    result = run(args)
    sys.stdout.write("KWS-BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
