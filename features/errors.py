"""One exception family for the whole tool.

Every error a user can cause (a missing file, a corrupt WAV, a manifest row
pointing nowhere, a model that is not ours) is a ``KwsError`` whose message names
the culprit. The command line prints it on one line and exits non-zero, without
a traceback; anything else is a bug and keeps its traceback.
"""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): for a one-line error that quotes a library."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class KwsError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class AudioError(KwsError):
    """An audio file that cannot be used (missing, unreadable, empty, silent)."""


class ManifestError(KwsError):
    """A dataset or manifest row that is inconsistent with the files on disk."""


class ModelError(KwsError):
    """A model file that is missing, corrupt, or not produced by ``kws export``."""


class ConfigError(KwsError):
    """A configuration value or file that is invalid (unknown key, bad range)."""


class DeviceError(KwsError):
    """An audio device that does not exist, vanished, or refuses the settings."""
