"""Exceptions a user can cause, each with a message that says what to do."""

from __future__ import annotations


class FlowspeechError(Exception):
    """Base class of every error flowspeech raises on purpose."""


class AudioError(FlowspeechError):
    """A wav file is missing, unreadable, empty, or has the wrong format."""


class TextError(FlowspeechError, ValueError):
    """Text cannot be turned into tokens (empty, unsupported characters, too long)."""


class ConfigError(FlowspeechError, ValueError):
    """A configuration or preset is unknown or inconsistent."""


class CheckpointError(FlowspeechError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class DatasetError(FlowspeechError):
    """A dataset folder or filelist cannot be read."""


class NumericalError(FlowspeechError):
    """A computation gave NaN or infinity where the model's own arithmetic cannot (e.g. a
    faulty reduced-precision kernel of the installed PyTorch on this processor)."""


class OutputError(FlowspeechError, OSError):
    """An output file cannot be written (read-only folder, full disk, the input's own name)."""


class FlowspeechWarning(UserWarning):
    """Something flowspeech changed or decided on the user's behalf, said once."""


class TextChangedWarning(FlowspeechWarning):
    """Input text had characters removed, or read through a transliteration."""


class AudioConvertedWarning(FlowspeechWarning):
    """Input audio was resampled or mixed down to what the model reads."""
