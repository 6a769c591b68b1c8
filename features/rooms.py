"""Room impulse responses for training augmentation, simulated with pyroomacoustics.

Why: volunteers and users speak in rooms, a metre or three from a laptop or
phone microphone; synthetic voices and close-talk takes are dry. Convolving a
training window with the impulse response of a simulated room adds the
reflections and reverberant tail a real microphone hears.

Simulating a room (image-source method, ``pyroomacoustics.ShoeBox``) takes
0.03-0.3 s, far too slow to do for every window of every epoch, and the
convolution itself takes about a millisecond. So a training run simulates a
bank of rooms once, seeded (``impulse_responses``), and the augmenter picks
one at random for each window (``features.augment``): every epoch hears each
clip in a different room.

Each room: a shoebox 2.5-9 m by 2.5-7 m by 2.4-3.5 m, walls absorbing so the
reverberation time (Sabine) is drawn in the configured range, the talker and
the microphone at random places at least half a metre from the walls and
from each other. The response is scaled so its direct path has amplitude 1:
the voice keeps its level, the room only adds to it.
"""

from __future__ import annotations

import signal
import warnings

import numpy as np

from features.audio import SAMPLE_RATE

MAX_ORDER = 60  # image-source reflection order cap: enough for RT60 up to about 0.8 s in these rooms, fast to compute
MAX_RIR_S = 1.0  # responses are cut to this length


def _position(rng: np.random.Generator, dims: np.ndarray, margin: float = 0.5) -> np.ndarray:
    return np.array([rng.uniform(margin, d - margin) for d in dims])


def import_pyroomacoustics():
    """The pyroomacoustics module, imported without leaving SIGPIPE blocked.

    Its import adds SIGPIPE to the calling thread's blocked-signal mask, and
    every process started from that thread afterwards (espeak-ng, paplay)
    would inherit the block and not stop when its reader goes away; the mask
    is put back as it was.
    """
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        import pyroomacoustics
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return pyroomacoustics


def impulse_responses(n: int, seed: int, *, min_rt60: float = 0.15, max_rt60: float = 0.8,
                      sample_rate: int = SAMPLE_RATE, progress: bool = False) -> list[np.ndarray]:
    """``n`` room impulse responses (float32, direct path at amplitude 1), the same for the same seed."""
    from tqdm import tqdm

    pra = import_pyroomacoustics()

    rng = np.random.default_rng([seed, 0x600D])
    out = []
    for _ in tqdm(range(n), desc="simulating rooms", unit="room", disable=not progress or n < 20):
        dims = np.array([rng.uniform(2.5, 9.0), rng.uniform(2.5, 7.0), rng.uniform(2.4, 3.5)])
        rt60 = rng.uniform(min_rt60, max_rt60)
        with warnings.catch_warnings():  # inverse_sabine warns when it needs a large order; we cap it anyway
            warnings.simplefilter("ignore")
            absorption, order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(min(absorption, 1.0)), max_order=min(order, MAX_ORDER))
        talker = _position(rng, dims)
        mic = _position(rng, dims)
        while np.linalg.norm(mic - talker) < 0.5:
            mic = _position(rng, dims)
        room.add_source(talker)
        room.add_microphone(mic)
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float64)[: int(MAX_RIR_S * sample_rate)]
        onset = int(np.argmax(np.abs(h)))  # the direct path is the strongest single arrival
        out.append((h[max(onset - 40, 0):] / abs(h[onset])).astype(np.float32))  # start just before it: no added delay
    return out
