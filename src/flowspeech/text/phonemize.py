"""IPA phonemes from espeak-ng through ``phonemizer``, as VITS ``english_cleaners2`` does.

VITS calls ``phonemize(text, language='en-us', backend='espeak', strip=True,
preserve_punctuation=True, with_stress=True)`` and then collapses whitespace. That builds a
new espeak backend on every call; here one backend per language is built on first use and
kept (building one costs about 0.1 s, phonemizing a sentence well under a millisecond).

Two settings differ from the ``phonemize()`` defaults, on purpose:

* the punctuation kept is phonemizer 2.x's default set ``;:,.!?¡¿—…"«»“”``, the one VITS
  was trained with (phonemizer 3 added brackets, which the VITS symbol set lacks);
* ``language_switch='remove-flags'``: espeak marks words it reads in another language with
  ``(fr)...(en)``; VITS kept the flags and failed on them (``(`` has no id), here they are
  dropped.
"""

from __future__ import annotations

import logging
import threading

from flowspeech.errors import ConfigError, TextError

VITS_PUNCTUATION = ';:,.!?¡¿—…"«»“”'

INSTALL_HINT = (
    "espeak-ng is not installed (phonemizer='espeak' needs it): install it with "
    "`apt-get install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng` (macOS) or "
    "from https://github.com/espeak-ng/espeak-ng/releases (Windows; then set "
    "PHONEMIZER_ESPEAK_LIBRARY to the path of libespeak-ng.dll)"
)

_lock = threading.Lock()  # espeak keeps global state: one call at a time
_backends: dict[str, object] = {}
_separator = None
_logger = logging.getLogger("flowspeech.text.espeak")
# phonemizer logs a "words count mismatch" warning whenever punctuation is preserved,
# even with words_mismatch='ignore'; it says nothing useful here.
_logger.setLevel(logging.ERROR)


def _backend(language: str):
    backend = _backends.get(language)
    if backend is not None:
        return backend
    global _separator
    try:
        from phonemizer.backend import EspeakBackend  # lazy: 0.2 s and espeak-ng; IPA only
        from phonemizer.separator import Separator  # lazy: as above
    except ImportError as err:
        raise TextError("phonemizer='espeak' needs the phonemizer package: pip install "
                        "phonemizer; " + INSTALL_HINT) from err
    if not EspeakBackend.is_available():
        raise TextError(INSTALL_HINT)
    try:
        backend = EspeakBackend(
            language,
            punctuation_marks=VITS_PUNCTUATION,
            preserve_punctuation=True,
            with_stress=True,
            language_switch="remove-flags",
            words_mismatch="ignore",
            logger=_logger,
        )
    except RuntimeError as err:  # phonemizer reports an unknown language this way
        raise ConfigError(f"espeak-ng cannot phonemize language {language!r}: {err}") from err
    _separator = Separator(phone="", syllable="", word=" ")
    _backends[language] = backend
    return backend


def espeak_phonemize(text: str, language: str = "en-us") -> str:
    """IPA for ``text`` with stress marks and punctuation kept.

    Args:
        text: normalised text on one line, e.g. ``"hello world."``.
        language: an espeak-ng voice, e.g. ``"en-us"``, ``"en-gb"``.

    Returns:
        IPA, words separated by single spaces, e.g. ``"həlˈoʊ wˈɜːld."``.

    Raises:
        TextError: espeak-ng (or phonemizer) is not installed, or espeak fails.
        ConfigError: espeak-ng does not know ``language``.
    """
    if not text.strip():
        return ""
    with _lock:
        backend = _backend(language)
        try:
            out = backend.phonemize([text], separator=_separator, strip=True, njobs=1)
        except (RuntimeError, ValueError) as err:
            raise TextError(f"espeak-ng could not phonemize {text[:80]!r}: {err}") from err
    return out[0] if out else ""


def reset() -> None:
    """Forget the cached backends (tests use it to simulate a missing espeak-ng)."""
    with _lock:
        _backends.clear()
