"""Festival's diphone voices: ten recorded speakers, women and a child among them, speaking espeak-ng's accents.

Why a fifth engine: on the real-speech benchmark each synthesis engine is a
domain of its own to the model (one never trained on Kokoro missed about 90 %
of clean Kokoro keywords), and the misses are worst for high voices. Debian's
Festival voices are diphones cut from recordings of real people: two
American men (``kal``, ``ked``), four Czech speakers (a woman, ``dita``; a boy,
``krb``; two men), two Italian (a woman and a man) and two Finnish (a woman and
a man). A probe of the benchmark's models on their "computer" missed 22-82 %
of the takes, the boy's nearly all.

How they speak English: as Kokoro does (``collect.kokoro_tts``), a voice
speaks the IPA of an accent's espeak-ng voice (``collect.espeak.phonemize``),
mapped to the voice's own phone set (``PHONES``). A sound the voice's
language lacks becomes its nearest one (``θ`` a Czech ``t``, ``w`` a Finnish
``v``), which is how such a speaker's accent sounds. The prosody is ours:
Festival's ``Segments`` utterance takes each phone's duration and pitch
targets, so durations come from the phone's kind and stress, and the pitch
follows a falling line with a peak on each stressed vowel. Each speaker
has a pitch, a speaking rate and the vocal-tract warp of the other engines
(synthesised ``warp`` times slower and lower, played back ``warp`` times
faster); each take varies them a little.

Festival runs as a program (``festival -b``, one process per take); nothing is
downloaded. Every voice in ``VOICES`` must be installed, so a dataset is the
same on every machine that makes it; the error names the missing packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collect.espeak import phonemize
from features.audio import SAMPLE_RATE, load_audio, resample
from features.errors import ConfigError

ENGINE = "festival"
VOICE_DIR = Path("/usr/share/festival/voices")


@dataclass(frozen=True)
class FestivalVoice:
    phoneset: str  # key of PHONES
    gender: str
    f0: tuple[float, float]  # range of a speaker's mean pitch, Hz (the voice's own, measured with Praat, +-15 %)
    package: str  # the Debian package that installs it


VOICES: dict[str, FestivalVoice] = {
    "kal_diphone": FestivalVoice("english", "male", (95.0, 125.0), "festvox-kallpc16k"),
    "ked_diphone": FestivalVoice("english", "male", (95.0, 125.0), "festvox-kdlpc16k"),
    "czech_dita": FestivalVoice("czech", "female", (185.0, 245.0), "festvox-czech-dita"),
    "czech_krb": FestivalVoice("czech", "child", (220.0, 290.0), "festvox-czech-krb"),
    "czech_machac": FestivalVoice("czech", "male", (90.0, 120.0), "festvox-czech-machac"),
    "czech_ph": FestivalVoice("czech", "male", (115.0, 150.0), "festvox-czech-ph"),
    "lp_diphone": FestivalVoice("italian", "female", (180.0, 230.0), "festvox-italp16k"),
    "pc_diphone": FestivalVoice("italian", "male", (100.0, 130.0), "festvox-itapc16k"),
    "suo_fi_lj_diphone": FestivalVoice("finnish", "female", (150.0, 200.0), "festvox-suopuhe-lj"),
    "hy_fi_mv_diphone": FestivalVoice("finnish", "male", (85.0, 115.0), "festvox-suopuhe-mv"),
}
HIGH = [v for v, spec in VOICES.items() if spec.gender != "male"]  # half the speakers come from these
INSTALL_HINT = "apt-get install festival " + " ".join(sorted({v.package for v in VOICES.values()}))

# IPA unit (longest first when parsed) -> phones, per phone set. A "ː" after a vowel in the IPA makes it
# long where the phone set has long vowels (LONG). _SAME holds what every set writes alike, _FOREIGN what the
# Czech, Italian and Finnish sets share (a foreign speaker's nearest sounds); each set lists only its own.
_SAME = {"b": "b", "d": "d", "f": "f", "g": "g", "ɡ": "g", "k": "k", "l": "l", "ɫ": "l", "m": "m", "n": "n", "p": "p",
         "r": "r", "ɹ": "r", "ʁ": "r", "s": "s", "t": "t", "v": "v", "ʋ": "v"}
_FOREIGN = {**_SAME,
            "a": "a", "ɐ": "a", "ʌ": "a", "ɑ": "a", "ɒ": "o", "ə": "e", "ɚ": "e r", "ɜ": "e", "ɝ": "e r", "ɛ": "e", "e": "e",
            "ɪ": "i", "i": "i", "ɨ": "i", "ɔ": "o", "o": "o", "ɵ": "o", "ʊ": "u", "u": "u", "ʉ": "u", "ɯ": "u",
            "ɪə": "i e", "ʊə": "u e", "h": "h", "j": "j", "ɾ": "r", "z": "z", "θ": "t", "ð": "d"}
PHONES: dict[str, dict[str, str]] = {
    # Festival's US English ("radio") set; flap and r-coloured schwa avoid diphones the voices lack
    "english": {
        **_SAME,
        "tʃ": "ch", "dʒ": "jh", "ts": "t s", "eɪ": "ey", "aɪ": "ay", "oʊ": "ow", "əʊ": "ow", "aʊ": "aw", "ɔɪ": "oy",
        "ɛə": "eh", "ɪə": "ih ax", "ʊə": "uh ax",
        "a": "ae", "æ": "ae", "ɐ": "ah", "ʌ": "ah", "ɑ": "aa", "ɒ": "aa", "ə": "ax", "ɚ": "er", "ɜ": "er", "ɝ": "er",
        "ɛ": "eh", "e": "ey", "ɪ": "ih", "i": "iy", "ɨ": "ih", "y": "uw", "ɔ": "ao", "o": "ow", "ɵ": "ow", "ʊ": "uh",
        "u": "uw", "ʉ": "uw", "ɯ": "uw", "ø": "er", "œ": "eh",
        "h": "hh", "j": "y", "ɾ": "t", "w": "w", "z": "z", "ʃ": "sh", "ʒ": "zh", "θ": "th", "ð": "dh", "ŋ": "ng",
        "ɲ": "n y", "x": "hh", "ç": "hh", "χ": "hh", "ʎ": "l y", "ɣ": "g", "β": "b", "c": "k", "ɟ": "g",
    },
    "czech": {
        **_FOREIGN,
        "tʃ": "c~", "dʒ": "dz~", "ts": "c", "eɪ": "e j", "aɪ": "a j", "oʊ": "o u", "əʊ": "o u", "aʊ": "a u", "ɔɪ": "o j",
        "ɛə": "e:", "æ": "e", "y": "i", "ø": "e", "œ": "e",
        "w": "u", "ʃ": "s~", "ʒ": "z~", "ŋ": "n", "ɲ": "n~", "x": "ch", "ç": "ch", "χ": "ch", "ʎ": "l", "ɣ": "h",
        "β": "v", "c": "t~", "ɟ": "d~",
    },
    "italian": {
        **_FOREIGN,
        "tʃ": "tS", "dʒ": "dZ", "ts": "ts", "eɪ": "e j", "aɪ": "a j", "oʊ": "o w", "əʊ": "o w", "aʊ": "a w", "ɔɪ": "O j",
        "ɛə": "E", "æ": "E", "ɒ": "O", "ɛ": "E", "y": "i", "ɔ": "O", "ø": "e", "œ": "E",
        "h": "", "w": "w", "ʃ": "S", "ʒ": "Z", "ŋ": "n g", "ɲ": "J", "x": "k", "ç": "S", "χ": "k", "ʎ": "L", "ɣ": "g",
        "β": "b", "c": "k", "ɟ": "g",
    },
    "finnish": {
        **_FOREIGN,
        "tʃ": "t S", "dʒ": "t S", "ts": "t s", "eɪ": "e i", "aɪ": "a i", "oʊ": "o u", "əʊ": "o u", "aʊ": "a u", "ɔɪ": "o i",
        "ɛə": "e:", "æ": "@", "ɜ": "7", "ɝ": "7 r", "y": "y", "ø": "7", "œ": "7",
        "w": "v", "z": "s", "ʃ": "S", "ʒ": "S", "ŋ": "N", "ɲ": "n j", "x": "h", "ç": "h", "χ": "h", "ʎ": "l j",
        "ɣ": "g", "β": "v", "c": "k", "ɟ": "g",
    },
}
LONG = {"czech": {"a", "e", "i", "o", "u"}, "finnish": {"a", "e", "i", "o", "u", "y", "@", "7"}}  # vowels with a ":" form
STRESSED = {"italian": {"a", "e", "E", "i", "o", "O", "u"}}  # vowels with a stressed ("1") form
SILENCE = {"english": "pau", "czech": "#", "italian": "#", "finnish": "#"}
VOWEL_PHONES = {  # the vowels of each phone set: where stress and pitch targets go
    "english": {"aa", "ae", "ah", "ao", "aw", "ax", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"},
    "czech": {"a", "e", "i", "o", "u"},
    "italian": {"a", "e", "E", "i", "o", "O", "u"},
    "finnish": {"a", "e", "i", "o", "u", "y", "@", "7"},
}
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")  # espeak-ng's "(en)" markers around words it reads in another language
_UNITS = sorted({u for table in PHONES.values() for u in table}, key=len, reverse=True)


@dataclass(frozen=True)
class FestivalSpeaker:
    """One synthetic speaker made from a Festival voice."""

    speaker: str
    accent: str
    phonemizer: str  # espeak-ng voice whose phonemes it speaks
    voice: str  # key of VOICES
    f0: float  # mean pitch, Hz, as heard
    stretch: float  # > 1 speaks slower
    warp: float  # formant factor (the warp's pitch shift is undone: the pitch is f0)
    gender: str

    @property
    def source(self) -> str:
        return f"{ENGINE}:{self.voice}:{self.phonemizer}:f{self.f0:.0f}:s{self.stretch:.2f}:w{self.warp:.2f}"


def missing() -> list[str]:
    """What is not installed: the ``festival`` program and voice packages, by Debian package name."""
    out = [] if shutil.which("festival") else ["festival"]
    return out + sorted({spec.package for name, spec in VOICES.items() if not any(VOICE_DIR.glob(f"*/{name}"))})


def check_installed() -> None:
    gone = missing()
    if gone:
        raise ConfigError(f"the festival engine needs {', '.join(gone)}: {INSTALL_HINT}")


def available() -> bool:
    return not missing()


def make_speakers(accents: dict[str, str], n_per_accent: int, seed: int) -> list[FestivalSpeaker]:
    """``n_per_accent`` speakers per accent (tag -> espeak-ng voice): half from the women and the boy, half from the men."""
    men = [v for v in VOICES if v not in HIGH]
    speakers = []
    for a, (accent, phonemizer) in enumerate(accents.items()):
        rng = np.random.default_rng([seed, 4127, a])
        for i in range(n_per_accent):
            pool = HIGH if i % 2 == 0 else men
            name = pool[int(rng.integers(len(pool)))]
            spec = VOICES[name]
            speakers.append(FestivalSpeaker(
                speaker=f"festival-{accent}-{i:02d}", accent=accent, phonemizer=phonemizer, voice=name,
                f0=round(float(rng.uniform(*spec.f0)), 1), stretch=round(float(rng.uniform(0.85, 1.25)), 3),
                warp=round(float(rng.uniform(0.92, 1.12)), 3), gender="male" if spec.gender == "child" else spec.gender,
            ))
    return speakers


def to_phones(ipa: str, phoneset: str) -> list[tuple[str, int]]:
    """One clause of espeak-ng IPA as (phone, stress) in ``phoneset``; stress 2 primary, 1 secondary, 0 none.

    Stress marks stand before the stressed syllable; the mark applies to that
    syllable's vowel. Symbols outside the table (tones, nasal marks) are dropped.
    """
    table, out, stress, i = PHONES[phoneset], [], 0, 0
    ipa = _LANGUAGE_SWITCH.sub("", ipa)
    vowels = VOWEL_PHONES[phoneset]
    while i < len(ipa):
        ch = ipa[i]
        if ch in "ˈˌ":
            stress = 2 if ch == "ˈ" else 1
            i += 1
            continue
        if ch == "ː":
            if out and out[-1][0] in LONG.get(phoneset, ()):
                out[-1] = (out[-1][0] + ":", out[-1][1])
            i += 1
            continue
        unit = next((u for u in _UNITS if ipa.startswith(u, i) and u in table), None)
        if unit is None:
            i += 1
            continue
        i += len(unit)
        for phone in table[unit].split():
            if phone in vowels:
                out.append((phone, stress))
                stress = 0
            else:
                out.append((phone, 0))
    return out


def segments(clauses: list[list[tuple[str, int]]], phoneset: str, f0: float, stretch: float,
             rng: np.random.Generator) -> list[tuple[str, float, list[tuple[float, float]]]]:
    """(phone, seconds, pitch targets) for Festival's ``Segments`` utterance.

    Durations: vowels 75 ms (long 130 ms), consonants 65 ms, a stressed vowel
    1.5x, all times ``stretch``. Pitch: every vowel gets a target at its middle
    on a line falling from 1.1 to 0.85 times ``f0`` over the clause, raised
    20-35 % on a primary stress and 10 % on a secondary; the last vowel falls
    further, to 0.75.
    """
    silence = SILENCE[phoneset]
    vowels = VOWEL_PHONES[phoneset] | {v + ":" for v in LONG.get(phoneset, ())}
    out = [(silence, 0.15, [])]
    for c, clause in enumerate(clauses):
        n_vowels = sum(p in vowels for p, _ in clause) or 1
        k = 0
        for j, (phone, stress) in enumerate(clause):
            if phone not in vowels:
                out.append((phone, 0.065 * stretch, []))
                continue
            duration = (0.13 if phone.endswith(":") else 0.075) * (1.5 if stress == 2 else 1.0) * stretch
            level = 1.1 - 0.25 * k / max(1, n_vowels - 1)
            level *= {2: float(rng.uniform(1.2, 1.35)), 1: 1.1}.get(stress, 1.0)
            if k == n_vowels - 1 and n_vowels > 1:
                level = min(level, 0.75)
            name = phone + "1" if stress == 2 and phone in STRESSED.get(phoneset, ()) else phone
            out.append((name, duration, [(duration / 2, f0 * level)]))
            k += 1
        if c < len(clauses) - 1:
            out.append((silence, 0.2 * stretch, []))
    out.append((silence, 0.15, []))
    return out


CRASH_STRETCHES = (1.0, 1.03, 1.06)  # festival 2.5's UniSyn segfaults on a few exact timings; a hair longer passes


def render(voice: str, segs: list[tuple[str, float, list[tuple[float, float]]]]) -> np.ndarray:
    """``segments``' phones spoken by a Festival ``voice`` (``festival -b``, one process); float32 at 16 kHz.

    Festival sometimes dies of a segmentation fault on one exact set of
    timings (the Italian lp_diphone on "computes" with 78 ms consonants and a
    90 ms vowel at 228 Hz, for one); the same phones 3 % slower pass. So a
    crash, and only a crash, is retried with every time stretched by the next
    of ``CRASH_STRETCHES``: deterministic, and the takes that never crashed
    stay byte for byte what they were. A Scheme error (festival exits 0 and
    writes nothing) is reported at once.
    """
    with tempfile.TemporaryDirectory(prefix="kws-festival-") as tmp:
        out = Path(tmp) / "take.wav"
        script = Path(tmp) / "take.scm"
        for k in CRASH_STRETCHES:
            phones = " ".join(f"({p} {d * k:.3f}{''.join(f' ({t * k:.3f} {hz:.1f})' for t, hz in targets)})" for p, d, targets in segs)
            script.write_text(f"(voice_{voice})\n(set! utt (eval (list 'Utterance 'Segments '({phones}))))\n"
                              f"(utt.synth utt)\n(utt.save.wave utt \"{out}\" 'riff)\n", encoding="utf-8")
            proc = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=120)
            if out.is_file():
                return load_audio(out)  # at 16 kHz whatever the voice's own rate
            if proc.returncode >= 0:  # festival -b exits 0 even when its Scheme fails
                errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
                raise ConfigError(f"festival failed for voice {voice!r}: {errors[-1] if errors else 'no output'}")
        raise ConfigError(f"festival crashed (signal {-proc.returncode}) for voice {voice!r} on {phones!r}, "
                          f"also with its times stretched by {', '.join(map(str, CRASH_STRETCHES[1:]))}")


def speak(text: str, speaker: FestivalSpeaker, rng: np.random.Generator) -> np.ndarray:
    """``text`` in this speaker's voice with per-take variation; float32 at 16 kHz (``collect.synth.take`` trims and pads it)."""
    check_installed()
    phoneset = VOICES[speaker.voice].phoneset
    try:
        ipa = phonemize(text, speaker.phonemizer)
    except ConfigError as e:
        raise ConfigError(f"festival cannot phonemize with espeak-ng voice {speaker.phonemizer!r}: {e}") from None
    if speaker.phonemizer.startswith("en"):  # English voices' flap is a /t/ or /d/, not the tapped r of other languages
        ipa = [c.replace("ɾ", "t") for c in ipa]
    clauses = [phones for phones in (to_phones(c, phoneset) for c in ipa) if phones]
    if not clauses:
        raise ConfigError(f"festival has no phones for {text!r} in espeak-ng voice {speaker.phonemizer!r}")
    stretch = speaker.stretch * float(rng.uniform(0.9, 1.1)) * speaker.warp
    f0 = speaker.f0 * float(rng.uniform(0.93, 1.07)) / speaker.warp
    audio = render(speaker.voice, segments(clauses, phoneset, f0, stretch, rng))
    # synthesised warp times slower and lower, played warp times faster: pitch back, formants moved by warp
    return resample(audio, int(round(SAMPLE_RATE * speaker.warp)), SAMPLE_RATE)
