"""Optional metric libraries: imported on first use, with a message that says what to install.

The metrics rely on the reference implementations papers use (PocketSphinx, jiwer, pysptk,
pyworld, pesq, pystoi). They are not needed to train or synthesise, so they live in the
``eval`` extra: ``pip install 'flowspeech[eval]'``.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from flowspeech.errors import FlowspeechError

# module name -> (PyPI package, what it is used for)
PACKAGES = {
    "pocketsphinx": ("pocketsphinx", "speech recognition (WER/CER)"),
    "jiwer": ("jiwer", "word and character error rates"),
    "pyworld": ("pyworld", "F0 and spectral envelopes (MCD, log-F0 RMSE)"),
    "pysptk": ("pysptk", "mel-cepstra (MCD)"),
    "pesq": ("pesq", "PESQ"),
    "pystoi": ("pystoi", "STOI"),
}


class MissingDependencyError(FlowspeechError, ImportError):
    """An optional metric library is not installed."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package.

    pysptk 1.0 and pyworld 0.3 import ``pkg_resources`` (setuptools < 81), which warns on
    import; the warning is silenced because the ``eval`` extra pins a setuptools that has it.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            return importlib.import_module(module)
    except ImportError as err:
        package, purpose = PACKAGES.get(module, (module, module))
        hint = ""
        if "pkg_resources" in str(err):
            hint = " (it needs pkg_resources: pip install 'setuptools<81')"
        raise MissingDependencyError(
            f"{purpose} needs the '{package}' package{hint}: pip install 'flowspeech[eval]' "
            f"(or pip install {package})"
        ) from err


def available(module: str) -> bool:
    """True when ``module`` imports (used to skip a metric rather than fail)."""
    try:
        require(module)
    except MissingDependencyError:
        return False
    return True
