"""Manifest rows for tests that need a ``ClipRow`` but no file behind it."""

from collect.manifest import ClipRow

DEFAULTS = dict(path="a.wav", label="computer", text="", speaker="s", accent="en-US", source="espeak-ng:test", session="s",
                device="test", sample_rate=16000, duration_s=1.0, sha256="0" * 64, created="2026-11-29T00:00:00+00:00")


def clip_row(**fields) -> ClipRow:
    """A row with harmless defaults; a test names only the fields it is about."""
    return ClipRow(**{**DEFAULTS, **fields})
