"""Audio in, numbers out: the lowest stage, imported by every other one.

Public modules:

- ``features.errors``: the ``KwsError`` family every stage raises.
- ``features.config``: ``FeatureConfig``, the one MFCC definition.
- ``features.mfcc``: numpy MFCC (batch and streaming); imports only numpy so the
  listener on a Raspberry Pi can use it.
- ``features.reference``: the same MFCC through librosa, the reference tests hold
  ``features.mfcc`` to.
- ``features.audio``: load any soundfile-readable file as 16 kHz mono float32,
  write house-format WAV atomically.
- ``features.augment``: on-the-fly training augmentation.
- ``features.devices``: audio input devices (list, find by name or index), for
  the recorder and the listener alike.

This ``__init__`` imports nothing heavy on purpose: the runtime imports
``features.mfcc`` without pulling librosa or torch.
"""
