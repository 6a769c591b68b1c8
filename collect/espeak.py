"""espeak-ng through its C library (bundled by the ``espeakng-loader`` wheel), driven with ctypes.

The library is used, not the ``espeak-ng`` binary, so no system package is
needed and no process is started per clip. espeak-ng keeps global state, so
this module owns one initialised engine per process; calls are serialised by a
lock.

espeak-ng's waveform has a little random flutter from two generators, its own
(``espeak_ng_SetRandSeed``) and the C library's ``rand``. ``espeak(seed=...)``
seeds both before speaking, so a process that makes the same calls in the same
order gets the same bytes. Some state also carries from one utterance to the
next inside the library (re-initialising does not reset it), so the same call
after different earlier ones can still differ by a few samples.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from features.errors import ConfigError, KwsError

# Constants of speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: phoneme names in the IPA, as UTF-8
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_engine: "_Engine | None" = None


class _Engine:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:  # pragma: no cover - a dependency of the package
            raise KwsError("espeak-ng is not available: pip install espeakng-loader") from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = Path(espeakng_loader.get_data_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), 0)
        if self.sample_rate <= 0:
            raise KwsError(f"espeak-ng failed to initialise with data in {data}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._libc = ctypes.CDLL(None)  # the C library the engine's rand() comes from
        self._libc.srand.argtypes = [ctypes.c_uint]
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p
        ]

    def _collect(self, wav, n, events) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, params: dict[str, int], seed: int | None) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigError(f"espeak-ng has no voice {voice!r}")
        if seed is not None:
            self.lib.espeak_ng_SetRandSeed(seed)
            self._libc.srand(seed)
        for name, value in params.items():
            self.lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise KwsError(f"espeak-ng could not synthesise {text!r} (error {err})")
        if not self._chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0

    def phonemes(self, text: str, voice: str) -> list[str]:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigError(f"espeak-ng has no voice {voice!r}")
        buffer = ctypes.c_char_p(text.encode("utf-8"))  # the library moves this pointer clause by clause
        pointer = ctypes.pointer(buffer)
        clauses = []
        while buffer.value:
            out = self.lib.espeak_TextToPhonemes(pointer, _CHARS_UTF8, _PHONEMES_IPA)
            if out:
                clauses.append(out.decode("utf-8"))
        return clauses


def _locked_engine() -> _Engine:
    """The process's engine, made on first use; call with ``_lock`` held."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def espeak(text: str, voice: str = "en-us", *, rate: int = 175, pitch: int = 50, pitch_range: int = 50, word_gap: int = 0, volume: int = 100,
           seed: int | None = None) -> tuple[np.ndarray, int]:
    """Speak ``text`` with an espeak-ng voice (``"en-gb-scotland"``, ``"es+f3"``...).

    ``rate`` is in words per minute (80-450), ``pitch`` and ``pitch_range``
    0-100, ``word_gap`` in units of 10 ms. ``seed`` (0 to 2**31 - 1) fixes the
    waveform's random flutter (see the module docstring). Returns float32 audio and its sample
    rate (22050 Hz for espeak-ng).
    """
    with _lock:
        engine = _locked_engine()
        params = {"rate": rate, "pitch": pitch, "range": pitch_range, "wordgap": word_gap, "volume": volume}
        return engine.synth(text, voice, params, seed), engine.sample_rate


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """``text`` as the IPA phonemes an espeak-ng voice would speak, one string per clause.

    Punctuation is not kept (espeak-ng reads it as clause breaks); stress
    marks are. For engines that speak phonemes (``collect.kokoro_tts``).
    """
    with _lock:
        return _locked_engine().phonemes(text, voice)
