"""Synthetic voices: a multi-accent dataset for any wake phrase, from espeak-ng, Piper, Flite, Kokoro or Festival.

Each *synthetic speaker* is one voice configuration (accent voice, variant,
base pitch, pitch range, speaking rate); it counts as a speaker for the
speaker-disjoint splits. Each take varies rate and pitch a little around the
speaker's own, adds a random gap before and after, and a random level, so no
two takes are the same waveform.

Accents: the English voices of espeak-ng (US, GB, Scottish, RP, Lancashire,
West Midlands, Caribbean, New York) and English text read by non-English
voices (Spanish, French, German, Italian, Polish, Brazilian Portuguese), which
gives foreign-accented English. Clips are written under
``<dataset>/<session>/<accent>/`` with one manifest row each
(``collect.manifest``); noise clips (generated coloured noise) are added as the
``noise`` label.

The second engine, ``piper`` (``collect.piper_tts``), speaks the same prompts
in the same accents with a neural voice; the third, ``flite``
(``collect.flite_tts``), with four voices made from recordings, in the two
accents it has; the fourth, ``kokoro`` (``collect.kokoro_tts``), with blends
of another neural model's five voices, mostly women's; the fifth,
``festival`` (``collect.festival_tts``), with ten recorded diphone voices
(Czech, Italian, Finnish and American; women, men and a boy) speaking every
accent's phonemes. Each engine writes its own session (``synth-espeak``,
``synth-piper``, ``synth-flite``, ``synth-kokoro``, ``synth-festival``) so a
dataset can hold all of them.

The seed fixes voices, prompts and every parameter, and seeds espeak-ng's own
waveform flutter per take, so ``kws synth`` run twice with the same arguments
writes the same bytes. Within one process, espeak-ng carries a little state
from one utterance to the next, so the same take made after different earlier
ones can differ by a few samples; the data digest of a training run records
the exact bytes it used.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collect import phrases
from collect.espeak import espeak
from collect.manifest import NEGATIVE, NOISE, ClipRow, ManifestWriter, now_iso
from features.audio import SAMPLE_RATE, resample, sha256_file, write_wav
from features.errors import ConfigError

log = logging.getLogger("kws")

ENGINE = "espeak-ng"
SESSION = "synth-espeak"
SESSIONS = {"espeak": SESSION, "piper": "synth-piper", "flite": "synth-flite", "kokoro": "synth-kokoro",  # engine -> its session folder
            "festival": "synth-festival"}
DEVICES = {"espeak": ENGINE, "piper": "piper", "flite": "flite", "kokoro": "kokoro", "festival": "festival"}  # engine -> the manifest's device field
WORDS_STREAM = 7  # seeds a voice's random-word sentences apart from its other prompts (any constant would do)

# accent tag -> espeak-ng voice. Tags follow BCP 47; "en-x-<lang>" is English read by a <lang> voice.
ACCENTS: dict[str, str] = {
    "en-US": "en-us",
    "en-GB": "en",
    "en-GB-scotland": "en-gb-scotland",
    "en-GB-x-rp": "en-gb-x-rp",
    "en-GB-x-gbclan": "en-gb-x-gbclan",
    "en-GB-x-gbcwmd": "en-gb-x-gbcwmd",
    "en-029": "en-029",
    "en-US-nyc": "en-us-nyc",
    "en-x-es": "es",
    "en-x-fr": "fr",
    "en-x-de": "de",
    "en-x-it": "it",
    "en-x-pl": "pl",
    "en-x-pt": "pt-br",
}
# espeak-ng voice variants (espeak-ng-data/voices/!v): male, female and Klatt-synthesiser voices.
MALE = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt3", "klatt4"]
FEMALE = ["f1", "f2", "f3", "f4", "f5", "klatt2"]


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: a fixed voice configuration."""

    speaker: str
    accent: str
    voice: str  # espeak-ng voice name with variant, e.g. "en-gb-scotland+f3"
    gender: str
    pitch: int  # 0-100
    pitch_range: int  # 0-100
    rate: int  # words per minute

    @property
    def source(self) -> str:
        return f"{ENGINE}:{self.voice}:p{self.pitch}:r{self.rate}:g{self.pitch_range}"


def slug(phrase: str) -> str:
    """A folder-safe name for a phrase ("Hey Jarvis" -> "hey_jarvis")."""
    s = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
    if not s:
        raise ConfigError(f"the phrase {phrase!r} has no letters or digits")
    return s


def synthesize(text: str, voice: str = "en-us", *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, word_gap: int = 0,
               seed: int | None = None) -> np.ndarray:
    """Speak ``text`` with an espeak-ng voice; float32 at 16 kHz, trimmed of espeak's trailing pause."""
    audio, rate_hz = espeak(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range, word_gap=word_gap, seed=seed)
    audio = resample(audio, rate_hz, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[: loud[-1] + 1] if len(loud) else audio


def make_voices(accents: list[str], n_per_accent: int, seed: int) -> list[Voice]:
    """``n_per_accent`` distinct speakers per accent, alternating male and female variants."""
    voices = []
    for accent in accents:
        if accent not in ACCENTS:
            raise ConfigError(f"unknown accent {accent!r}; known: {', '.join(ACCENTS)}")
        rng = np.random.default_rng([seed, list(ACCENTS).index(accent)])
        males, females = list(rng.permutation(MALE)), list(rng.permutation(FEMALE))
        for i in range(n_per_accent):
            female = i % 2 == 1
            pool = females if female else males
            variant = pool[(i // 2) % len(pool)]
            voices.append(
                Voice(
                    speaker=f"tts-{accent}-{i:02d}",
                    accent=accent,
                    voice=f"{ACCENTS[accent]}+{variant}",
                    gender="female" if female else "male",
                    pitch=int(rng.integers(25, 76)),
                    pitch_range=int(rng.integers(20, 91)),
                    rate=int(rng.integers(130, 206)),
                )
            )
    return voices


def take(text: str, voice, rng: np.random.Generator) -> np.ndarray:
    """One take: the speaker's voice with per-take jitter, a random gap either side, a random level.

    ``voice`` is an espeak-ng ``Voice``, or a ``PiperSpeaker``, ``FliteSpeaker``, ``KokoroSpeaker`` or ``FestivalSpeaker``
    of those engines' modules.
    """
    if isinstance(voice, Voice):
        audio = synthesize(
            text,
            voice.voice,
            rate=int(np.clip(voice.rate * rng.uniform(0.88, 1.12), 80, 400)),
            pitch=int(np.clip(voice.pitch + rng.integers(-8, 9), 0, 100)),
            pitch_range=voice.pitch_range,
            word_gap=int(rng.integers(0, 4)),
            seed=int(rng.integers(2**31)),
        )
    else:
        from collect import festival_tts, flite_tts, kokoro_tts, piper_tts

        engine = {piper_tts.PiperSpeaker: piper_tts, flite_tts.FliteSpeaker: flite_tts, kokoro_tts.KokoroSpeaker: kokoro_tts,
                  festival_tts.FestivalSpeaker: festival_tts}[type(voice)]
        audio = engine.speak(text, voice, rng)
        loud = np.flatnonzero(np.abs(audio) > 1e-2 * max(float(np.max(np.abs(audio))), 1e-6))
        audio = audio[loud[0]: loud[-1] + 1] if len(loud) else audio  # no silence of the engine's own: the gaps come next
    before, after = (int(SAMPLE_RATE * s) for s in rng.uniform(0.05, 0.35, size=2))
    audio = np.concatenate([np.zeros(before, np.float32), audio, np.zeros(after, np.float32)])
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio * (10 ** (rng.uniform(-22, -2) / 20) / peak)


def engine_voices(engine: str, accents: list[str], n_per_accent: int, seed: int, piper_voices: str = "warp") -> list:
    """The synthetic speakers of one engine (``piper_voices``: the Piper speaker recipe, ``collect.piper_tts.VOICES``)."""
    for accent in accents:
        if accent not in ACCENTS:
            raise ConfigError(f"unknown accent {accent!r}; known: {', '.join(ACCENTS)}")
    if engine == "espeak":
        return make_voices(accents, n_per_accent, seed)
    if engine == "piper":
        from collect.piper_tts import make_speakers

        return make_speakers({a: ACCENTS[a] for a in accents}, n_per_accent, seed, voices=piper_voices)
    if engine == "flite":
        from collect.flite_tts import binary, make_speakers

        binary()  # refuse before writing anything when flite is not installed
        return make_speakers(accents, n_per_accent, seed)
    if engine == "kokoro":
        from collect.kokoro_tts import make_speakers, model

        model()  # refuse before writing anything when the model is not installed
        return make_speakers({a: ACCENTS[a] for a in accents}, n_per_accent, seed)
    if engine == "festival":
        from collect.festival_tts import check_installed, make_speakers

        check_installed()  # refuse before writing anything when a voice is missing
        return make_speakers({a: ACCENTS[a] for a in accents}, n_per_accent, seed)
    raise ConfigError(f"unknown synthesis engine {engine!r}; known: {', '.join(SESSIONS)}")


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS.

    The arithmetic is done in place: a benchmark's two-hour bed is 115 M
    samples, and every float64 temporary of that length costs 0.9 GB.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    spectrum /= np.power(f, exponent / 2, out=f)
    del f
    noise = np.fft.irfft(spectrum, n)
    del spectrum
    noise /= np.std(noise) + 1e-12
    return noise.astype(np.float32)


def _prompts(phrase: str, voice_rng: np.random.Generator, takes: int, n_confusables: int, n_sentences: int,
             n_word_sentences: int, words_rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(label, kind, text) of one speaker's takes; the random-word sentences come last, drawn from their own
    generator, so asking for them leaves the speaker's other prompts as they were."""
    endings = ["", ".", "!", "?", ","]
    out = [(phrase, "keyword", phrase + endings[int(voice_rng.integers(len(endings)))]) for _ in range(takes)]
    out += [(NEGATIVE, "confusable", t) for t in phrases.confusables(phrase, n_confusables, voice_rng)]
    out += [(NEGATIVE, "sentence", t) for t in phrases.sentences(phrase, n_sentences, voice_rng)]
    if n_word_sentences:
        out += [(NEGATIVE, "sentence", t) for t in phrases.random_word_sentences(phrase, n_word_sentences, words_rng)]
    return out


def synthesize_dataset(
    dataset: str | Path,
    phrase: str = "computer",
    *,
    accents: list[str] | None = None,
    n_voices_per_accent: int = 6,
    takes_per_voice: int = 8,
    n_confusables: int = 8,
    n_sentences: int = 6,
    n_word_sentences: int = 0,
    n_noise: int | None = None,
    seed: int = 0,
    engine: str = "espeak",
    piper_voices: str = "warp",
    session: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic session into ``dataset`` and return its manifest path.

    Each voice speaks the phrase ``takes_per_voice`` times, ``n_confusables``
    hard negatives, ``n_sentences`` ordinary sentences and ``n_word_sentences``
    sentences of random common words (``collect.phrases.random_word_sentences``:
    text far more varied than the shipped sentences, for false accepts to
    learn from); ``n_noise`` noise clips (default: one per voice) are added. ``engine`` is "espeak",
    "piper", "flite", "kokoro" or "festival"; each writes its own session (``piper_voices``: the
    Piper speaker recipe, ``collect.piper_tts.VOICES``). Only that session folder is replaced
    with ``overwrite``; recorded sessions beside it are never touched. ``session``
    names the session folder instead of ``synth-<engine>`` (for a second session of one engine).
    """
    from tqdm import tqdm

    phrase = phrase.strip()
    slug(phrase)  # validates
    accents = list(ACCENTS) if accents is None else accents
    voices = engine_voices(engine, accents, n_voices_per_accent, seed, piper_voices)
    if not voices:  # Flite speaks only its own accents
        raise ConfigError(f"the {engine} engine has no voice for accent(s) {', '.join(accents)}; nothing was written")
    session = session or SESSIONS[engine]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", session):
        raise ConfigError(f"session name {session!r}: use letters, digits, '.', '_' and '-' only (it is a folder name)")
    session_dir = Path(dataset) / session
    if session_dir.exists():
        if not overwrite:
            raise ConfigError(f"{session_dir} already exists; pass --overwrite to replace the synthetic session")
        shutil.rmtree(session_dir)
    n_noise = len(voices) if n_noise is None else n_noise
    total = len(voices) * (takes_per_voice + n_confusables + n_sentences + n_word_sentences) + n_noise
    created = now_iso()
    with ManifestWriter(dataset, session) as writer, tqdm(total=total, desc=f"synthesising ({engine})", unit="clip", disable=not progress) as bar:
        for voice in voices:
            rng = np.random.default_rng([seed, *map(ord, voice.speaker)])
            words_rng = np.random.default_rng([seed, *map(ord, voice.speaker), WORDS_STREAM])
            prompts = _prompts(phrase, rng, takes_per_voice, n_confusables, n_sentences, n_word_sentences, words_rng)
            for i, (label, kind, text) in enumerate(prompts):
                audio = take(text, voice, rng)
                rel = f"{session}/{voice.accent}/{voice.speaker}-{kind}-{i:03d}.wav"
                write_clip(writer, dataset, rel, audio, ClipRow(
                    path=rel, label=label, text=text, speaker=voice.speaker, accent=voice.accent, source=voice.source,
                    session=session, device=DEVICES[engine], sample_rate=SAMPLE_RATE, duration_s=0.0, sha256="", created=created,
                    kind=kind, gender=voice.gender,
                ))
                bar.update()
        rng = np.random.default_rng([seed, 1_000_003])
        for i in range(n_noise):
            colour = ["white", "pink", "brown"][i % 3]
            audio = coloured_noise(int(SAMPLE_RATE * rng.uniform(1.0, 3.0)), rng, {"white": 0, "pink": 1, "brown": 2}[colour])
            audio *= 10 ** (rng.uniform(-45, -15) / 20)
            rel = f"{session}/noise/noise-{i:03d}.wav"
            write_clip(writer, dataset, rel, audio, ClipRow(
                path=rel, label=NOISE, text="", speaker="noise", accent="none", source=f"generated:{colour}-noise",
                session=session, device="generated", sample_rate=SAMPLE_RATE, duration_s=0.0, sha256="", created=created, kind="noise",
            ))
            bar.update()
    log.info("synthesised %d clips of %d voices in %d accents into %s", total, len(voices), len(accents), session_dir)
    return writer.path


def write_clip(writer: ManifestWriter, dataset: str | Path, rel: str, audio: np.ndarray, row: ClipRow) -> None:
    """Write the clip atomically, then its manifest row with the real duration and digest."""
    path = write_wav(Path(dataset) / rel, audio)
    row = ClipRow(**{**row.__dict__, "duration_s": round(len(audio) / SAMPLE_RATE, 4), "sha256": sha256_file(path)})
    writer.append(row)
