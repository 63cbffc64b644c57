"""`MelConfig`: every number that defines a spectrogram front end, in one frozen record.

A checkpoint stores ``MelConfig.to_dict()`` so that a vocoder is never fed mels computed
with different settings from the ones it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from flowspeech.errors import ConfigError

PADDINGS = ("center", "vits")
COMPRESSIONS = ("log", "db_normalized")

# The "db_normalized" scaling of FloWaveNet (Kim et al., 2019; the authors' preprocessing.py):
# 20 log10 of the mel, minus a reference level of 20 dB, with -100 dB mapped to 0 and 0 dB to 1.
DB_REFERENCE = 20.0
DB_MIN = -100.0


@dataclass(frozen=True)
class MelConfig:
    """Settings of the STFT, the mel filter bank and the amplitude compression.

    The spectrogram of a waveform ``x`` is ``S = (|STFT(x)|^2 + magnitude_eps) ** (power / 2)``
    (``power=1``: magnitude, ``power=2``: power), the mel spectrogram is ``M @ S`` with
    ``M`` librosa's Slaney-normalised mel basis (Slaney, 1998; ``librosa.filters.mel`` with
    ``htk=False, norm="slaney"``), and the features are ``log(clamp(M @ S, min=log_clamp))``
    (``compression="log"``) or FloWaveNet's dB scaling into [0, 1] (``"db_normalized"``).

    Attributes:
        sample_rate: Hz.
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins. Must be even.
        hop_length: samples between frames.
        win_length: Hann window length (periodic, zero-padded to ``n_fft`` in the middle).
        n_mels: number of mel bands.
        fmin: lowest mel band edge, Hz.
        fmax: highest mel band edge, Hz; ``None`` means ``sample_rate / 2``.
        padding: how the signal is extended before framing.
            ``"center"``: reflect-pad ``n_fft // 2`` on each side, frame ``t`` centred on
            sample ``t * hop`` (librosa ``center=True, pad_mode="reflect"``; the Tacotron 2 /
            WaveGlow / Glow-TTS STFT). ``n_frames = T // hop + 1``.
            ``"vits"``: reflect-pad ``(n_fft - hop) // 2`` on each side, then frame without
            centring (VITS, Kim et al. 2021, ``mel_processing.py``).
            ``n_frames = T // hop`` for even ``n_fft - hop``.
        power: exponent of the magnitude, 1.0 (magnitude) or 2.0 (power spectrogram).
        magnitude_eps: added to ``|STFT|^2`` before the square root. VITS adds 1e-6, which
            keeps the gradient of the square root finite; the Tacotron 2 STFT adds nothing.
        compression: amplitude scaling of the mel spectrogram. ``"log"``: natural log of the
            mel clamped at ``log_clamp`` (Tacotron 2 ``dynamic_range_compression``).
            ``"db_normalized"`` (FloWaveNet ``preprocessing.py``):
            ``clip((20 log10(max(mel, log_clamp)) - 20 + 100) / 100, 0, 1)``, i.e. decibels
            relative to a 20 dB reference, -100 dB and below mapped to 0, 0 dB and above to 1.
        log_clamp: floor applied before the log (1e-5 in Tacotron 2, WaveGlow, Glow-TTS, VITS;
            1e-4 in FloWaveNet).
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    padding: str = "center"
    power: float = 1.0
    magnitude_eps: float = 0.0
    compression: str = "log"
    log_clamp: float = 1e-5

    PRESETS: ClassVar[tuple[str, ...]] = ("glow_tts", "waveglow", "vits", "naturalspeech", "flowavenet")

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_fft % 2:
            raise ConfigError(f"MelConfig.n_fft must be even, got {self.n_fft}")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"MelConfig.win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})"
            )
        if self.hop_length > self.n_fft:
            raise ConfigError(
                f"MelConfig.hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft})"
            )
        for name in ("fmin", "power", "magnitude_eps", "log_clamp") + (
            ("fmax",) if self.fmax is not None else ()
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"MelConfig.{name} must be a number, got {value!r}")
        nyquist = self.sample_rate / 2
        fmax = self.fmax_hz
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ConfigError(
                f"MelConfig needs 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g} Hz, "
                f"got fmin={self.fmin!r}, fmax={self.fmax!r}"
            )
        if self.padding not in PADDINGS:
            raise ConfigError(f"MelConfig.padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"MelConfig.compression must be one of {COMPRESSIONS}, got {self.compression!r}"
            )
        if self.power not in (1.0, 2.0):
            raise ConfigError(f"MelConfig.power must be 1.0 or 2.0, got {self.power!r}")
        if not self.magnitude_eps >= 0:
            raise ConfigError(f"MelConfig.magnitude_eps must be >= 0, got {self.magnitude_eps!r}")
        if not self.log_clamp > 0:
            raise ConfigError(f"MelConfig.log_clamp must be > 0, got {self.log_clamp!r}")

    # ----------------------------------------------------------------------------- presets

    @classmethod
    def glow_tts(cls) -> MelConfig:
        """Glow-TTS (Kim et al., 2020) and WaveGlow (Prenger et al., 2019) features.

        Both use NVIDIA's Tacotron 2 STFT: 22050 Hz, n_fft = window = 1024, hop 256,
        80 bands over 0-8000 Hz, magnitude, ``log(clamp(., 1e-5))``, centred reflect padding.
        """
        return cls()

    @classmethod
    def vits(cls) -> MelConfig:
        """VITS (Kim et al., 2021) features, also read by NaturalSpeech (Tan et al., 2022).

        22050 Hz, 1024/256/1024, 80 bands over 0 Hz - sr/2, ``sqrt(|X|^2 + 1e-6)``,
        reflect padding of ``(n_fft - hop) / 2`` then uncentred frames.
        """
        return cls(fmax=None, padding="vits", magnitude_eps=1e-6)

    @classmethod
    def flowavenet(cls) -> MelConfig:
        """FloWaveNet (Kim et al., 2019) features, the authors' ``preprocessing.py``.

        ``librosa.feature.melspectrogram`` defaults of their time: 22050 Hz, n_fft = window
        = 1024, hop 256, centred reflect-padded frames, *power* spectrogram, 80 Slaney bands
        over 125-7600 Hz; then ``clip((20 log10(max(mel, 1e-4)) - 20 + 100) / 100, 0, 1)``.
        The authors also scale every waveform to a peak of 0.999 first
        (``normalize_peak(wav, 20 * log10(0.999))``); that is the dataset's business.
        """
        return cls(fmin=125.0, fmax=7600.0, power=2.0, compression="db_normalized", log_clamp=1e-4)

    @classmethod
    def preset(cls, name: str) -> MelConfig:
        """The preset called ``name`` (one of ``MelConfig.PRESETS``; ``-`` may stand for ``_``)."""
        name = name.replace("-", "_")
        if name in ("glow_tts", "waveglow"):
            return cls.glow_tts()
        if name in ("vits", "naturalspeech"):
            return cls.vits()
        if name == "flowavenet":
            return cls.flowavenet()
        raise ConfigError(f"unknown mel preset {name!r}; choose one of {cls.PRESETS}")

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict of every field (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelConfig:
        """Inverse of :meth:`to_dict`. Missing keys take their defaults; unknown keys raise
        :class:`~flowspeech.errors.ConfigError` (they would otherwise be silently ignored)."""
        if not isinstance(data, dict):
            raise ConfigError(f"MelConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown MelConfig key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**data)

    # -------------------------------------------------------------------- derived numbers

    @property
    def fmax_hz(self) -> float:
        """``fmax`` with ``None`` resolved to the Nyquist frequency."""
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    @property
    def top_filter_hz(self) -> float:
        """Centre of the highest mel filter (Slaney scale, as :func:`~flowspeech.audio.mel_basis`).

        The band a mel-based vocoder can reproduce ends here: between it and ``fmax`` the
        filter bank has only the top filter's falling edge, so every such vocoder's output
        falls away towards ``fmax`` (25 dB below the recording at 8 kHz on the stand-in
        corpus, even for copy-synthesis). Spectral distances of mel-vocoded speech are taken
        up to this frequency (``mcd_max_hz``). 7,699 Hz for 80 bands over 0-8 kHz.
        """
        import librosa  # lazy: a second to import, and only evaluation asks

        return float(librosa.mel_frequencies(self.n_mels + 2, fmin=self.fmin, fmax=self.fmax_hz,
                                             htk=False)[-2])

    @property
    def n_freqs(self) -> int:
        """Frequency bins of the linear spectrogram, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def pad(self) -> int:
        """Samples of reflect padding added on each side before framing."""
        if self.padding == "center":
            return self.n_fft // 2
        return (self.n_fft - self.hop_length) // 2

    @property
    def min_samples(self) -> int:
        """Shortest waveform that can be framed (reflect padding needs ``T > pad``)."""
        return max(self.pad + 1, self.n_fft - 2 * self.pad)

    def n_frames(self, n_samples: int) -> int:
        """Number of frames a waveform of ``n_samples`` samples yields (0 if too short)."""
        if n_samples < self.min_samples:
            return 0
        return 1 + (n_samples + 2 * self.pad - self.n_fft) // self.hop_length
