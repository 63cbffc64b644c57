"""Griffin-Lim inversion of a log-mel spectrogram: audio to listen to before a vocoder exists.

Three steps, and an optional one between the last two:

1. mel -> linear magnitude by non-negative least squares against the mel basis
   (:func:`nnls`; it reproduces the mel exactly, where the clipped pseudo-inverse leaves a
   few percent of residual and a noisier reconstruction);
2. phase retrieval by fast Griffin-Lim (Griffin & Lim, 1984; with the momentum of
   Perraudin, Balazs & Sondergaard, 2013), in torch so that it runs batched and on the
   mel's device. Same update as ``librosa.griffinlim``. It starts from the phase that
   phase-gradient heap integration reads off the magnitude (:mod:`flowspeech.audio.phase`;
   ``init="pghi"``, the default) or from random phases (``init="random"``, as librosa).
   :func:`phase_retrieval` is this step alone, for a linear magnitude from elsewhere.
   (2b.) harmonic restoration (``harmonic_iter`` iterations; needs the mel matching after
   it): above about 2 kHz a mel band is wider than the spacing of a voice's harmonics, and
   the least-squares magnitude spreads a band's energy evenly across it, so the signal has
   lost much of the harmonics' peak-to-valley contrast there. The F0 of the signal phase
   retrieval made, at each frame (:func:`~flowspeech.audio.harmonics.frame_f0`), says where
   the harmonics are; its spectrum's magnitude is weighted by a harmonic comb in the voiced
   frames (:func:`~flowspeech.audio.harmonics.harmonic_comb`), and phase retrieval runs
   again for it, from the signal's own phase. The mel matching then sets each band's level
   back and keeps the comb's structure within it. (Run after the mel matching instead, with
   the mel matched a second time, it restores as much but the second matching raises the
   voice's spurious voicing: ``docs/default-voice.md``.)
3. mel matching (``mel_iter`` iterations): the least-squares magnitude is smooth across each
   mel band, so the signal that phase retrieval makes of it no longer has the mel it came
   from. Each iteration takes the signal's own STFT, rescales its bins band by band so that
   its mel meets the target (the ratio of target to current mel of every band, averaged over
   the bands a bin lies under with the filters' weights), and resynthesises, extrapolating
   from the previous iteration's rescaled spectrum as fast Griffin-Lim does (momentum
   ``MEL_MOMENTUM``: 30 iterations then come as close as 100 without). The fine
   structure within each band is then the signal's own, consistent with its phase, rather
   than the least-squares step's. (Masuyama et al., 2023, reconstruct the full-band magnitude
   and phase under the same mel constraint by proximal splitting; this is a simpler
   multiplicative update.)

The first step is the one that costs intelligibility (``docs/default-voice.md``, "What
Griffin-Lim loses"); the third wins most of it back, the harmonic restoration some more.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flowspeech.audio.config import MelConfig
from flowspeech.audio.features import compress_mel, decompress_mel, mel_basis
from flowspeech.audio.harmonics import frame_f0, harmonic_comb
from flowspeech.audio.phase import STARTS as INITS
from flowspeech.audio.phase import pghi_phase
from flowspeech.errors import AudioError, ConfigError
from flowspeech.utils.chunks import chunk_spans

# The iterations and the start that the voices use: from the PGHI phase, 12 iterations come
# closer to the recordings' voicing, pitch and spectrum than 60 from random phases, in a
# third of the time (chosen on the validation split: docs/default-voice.md, "Griffin-Lim from
# the PGHI phase").
N_ITER = 12
INIT = "pghi"
# Mel-matching iterations after those, with momentum: 30 bring re-synthesised recordings'
# intelligibility, pitch and voicing to those of phase retrieval from their true linear
# magnitude; 100 add next to nothing at three times the cost (docs/default-voice.md,
# "Matching the mel after phase retrieval").
MEL_ITER = 30
MEL_MOMENTUM = 0.9
# Phase-retrieval iterations from the harmonic comb's magnitude (step 2b), when the mel
# matching runs: on the voice's validation sentences, 12 make it 1.6 points more intelligible
# to the recogniser and its spectrum 0.10 dB closer, pitch and voicing unchanged; 3, 6 and 24
# restore as much (docs/default-voice.md, "Restoring the harmonics the mel does not resolve").
HARMONIC_ITER = 12


def harmonic_iterations(mel_iter: int, harmonic_iter: int | None = None) -> int:
    """The harmonic restoration's iterations: ``harmonic_iter``, or for None the default
    (:data:`HARMONIC_ITER`) when the mel matching it needs runs (``mel_iter > 0``), else 0."""
    if harmonic_iter is None:
        return HARMONIC_ITER if mel_iter else 0
    return harmonic_iter


def describe(n_iter: int, init: str, mel_iter: int, harmonic_iter: int | None = None) -> str:
    """The steps in words: ``12 iterations from the PGHI phase, then 30 matching the mel``
    (``12 iterations from the PGHI phase, then the harmonics restored (N iterations), then 30
    matching the mel`` when that step runs)."""
    start = "the PGHI phase" if init == "pghi" else "random phases"
    steps = f"{n_iter} iterations from {start}"
    harmonic_iter = harmonic_iterations(mel_iter, harmonic_iter)
    if harmonic_iter:
        steps += f", then the harmonics restored ({harmonic_iter} iterations)"
    if mel_iter:
        steps += f", then {mel_iter} matching the mel"
    return steps


def griffin_lim(
    mel: Tensor | np.ndarray,
    config: MelConfig | None = None,
    n_iter: int = N_ITER,
    power: float = 1.0,
    momentum: float = 0.99,
    seed: int = 0,
    init: str = INIT,
    mel_iter: int = MEL_ITER,
    harmonic_iter: int | None = None,
) -> np.ndarray:
    """Waveform from a log-mel spectrogram computed with ``config``, by fast Griffin-Lim.

    Meant for listening to features (or a text-to-mel model's output) before a neural vocoder
    is trained; the result has the usual Griffin-Lim phasiness.

    Args:
        mel: ``[n_mels, F]`` or ``[B, n_mels, F]`` log-mel (as :class:`MelSpectrogram`
            returns), torch (any device; the iterations run there) or numpy.
        config: the features' settings; default ``MelConfig.glow_tts()``.
        n_iter: Griffin-Lim iterations (0: random phase).
        power: the recovered magnitude is raised to this power first; 1.2-1.5 sharpens
            harmonics and lowers the noise floor (Tacotron, Wang et al., 2017, used 1.5).
        momentum: fast Griffin-Lim momentum in [0, 1); 0 is plain Griffin-Lim.
        seed: seed of the random initial phase (results are reproducible; ``"pghi"`` uses
            none).
        init: ``"pghi"``: start from the phase-gradient heap integration of the magnitude
            (:func:`~flowspeech.audio.phase.pghi_phase`); ``"random"``: from uniform random
            phases.
        mel_iter: mel-matching iterations after phase retrieval (0: none; the module
            docstring says what they do).
        harmonic_iter: phase-retrieval iterations of the harmonic restoration between
            phase retrieval and the mel matching (0: none; the module docstring's step 2b);
            None: :data:`HARMONIC_ITER` if ``mel_iter``, else none
            (:func:`harmonic_iterations`).

    Returns:
        float32 ``[T]`` or ``[B, T]`` with ``T = hop * (F - 1)`` for ``"center"`` padding
        and ``T = hop * F`` for ``"vits"`` padding, so that ``config.n_frames(T) == F``.
    """
    config = MelConfig.glow_tts() if config is None else config
    harmonic_iter = harmonic_iterations(mel_iter, harmonic_iter)
    log_mel, squeeze = _check(mel, config, n_iter, momentum, power, init, mel_iter,
                              harmonic_iter)
    magnitude = _magnitude(log_mel, config, power)
    return _retrieve(magnitude, config, n_iter, momentum, seed, init, squeeze,
                     log_mel, mel_iter, harmonic_iter)


def phase_retrieval(
    magnitude: Tensor | np.ndarray,
    config: MelConfig | None = None,
    n_iter: int = N_ITER,
    momentum: float = 0.99,
    seed: int = 0,
    init: str = INIT,
) -> np.ndarray:
    """Waveform from a linear STFT magnitude: :func:`griffin_lim`'s second step alone.

    For a magnitude that did not come from a mel through :func:`nnls`: the recordings' own
    (which shows what the mel-to-linear step costs: ``benchmarks/griffin_lim_ceiling.py``),
    or a model's.

    Args:
        magnitude: ``[n_fft // 2 + 1, F]`` or ``[B, n_fft // 2 + 1, F]`` non-negative
            ``|STFT|`` with ``config``'s framing (as :class:`LinearSpectrogram` with
            ``power=1`` returns), torch or numpy.
        config, n_iter, momentum, seed, init: as in :func:`griffin_lim`.

    Returns:
        float32 ``[T]`` or ``[B, T]``, ``T`` as :func:`griffin_lim` gives for ``F`` frames.
    """
    config = MelConfig.glow_tts() if config is None else config
    _check_options(n_iter, momentum, 1.0, init)
    if isinstance(magnitude, Tensor):
        magnitude = magnitude.detach().float()
    else:
        magnitude = torch.from_numpy(np.array(magnitude, dtype=np.float32))
    n_bins = config.n_fft // 2 + 1
    if magnitude.ndim not in (2, 3) or magnitude.shape[-2] != n_bins:
        raise AudioError(f"expected a magnitude of shape [{n_bins}, F] or [B, {n_bins}, F], "
                         f"got {tuple(magnitude.shape)}")
    if magnitude.shape[-1] < 2:
        raise AudioError(f"need at least 2 frames to invert, got {magnitude.shape[-1]}")
    if not bool(torch.isfinite(magnitude).all()) or bool((magnitude < 0).any()):
        raise AudioError("a magnitude must be finite and non-negative")
    squeeze = magnitude.ndim == 2
    if squeeze:
        magnitude = magnitude[None]
    return _retrieve(magnitude, config, n_iter, momentum, seed, init, squeeze)


def _retrieve(magnitude: Tensor, config: MelConfig, n_iter: int, momentum: float, seed: int,
              init: str, squeeze: bool, mel: Tensor | None = None,
              mel_iter: int = 0, harmonic_iter: int = 0) -> np.ndarray:
    """The waveform of ``magnitude [B, bins, F]`` from its starting phase, its mel then
    matched to ``mel [B, n_mels, F]`` (if given) by ``mel_iter`` iterations and its harmonics
    restored by ``harmonic_iter``; ``[T]`` if ``squeeze`` (one item given without a batch
    axis), else ``[B, T]``."""
    phase = _initial_phase(magnitude, config, init, seed)
    wav = _fast_griffin_lim(magnitude, config, n_iter, momentum, phase, mel,
                            mel_iter, harmonic_iter).cpu().numpy()
    return wav[0] if squeeze else wav


def griffin_lim_stream(mel: Tensor | np.ndarray, config: MelConfig | None = None,
                       chunk_frames: int = 32, max_chunk_frames: int | None = None,
                       overlap: int = 16, n_iter: int = N_ITER, power: float = 1.0,
                       momentum: float = 0.99, seed: int = 0, init: str = INIT,
                       mel_iter: int = MEL_ITER, harmonic_iter: int | None = None):
    """:func:`griffin_lim` of one ``[n_mels, F]`` mel in pieces, each available as soon as its
    window is inverted: windows of ``chunk_frames`` frames with ``overlap`` frames of context
    on each side (the first window ``chunk_frames`` long, the others ``max_chunk_frames``;
    :func:`~flowspeech.utils.chunks.chunk_spans`), joined by a one-hop crossfade. Every window
    starts from the phases the whole inversion starts from, so the pieces approximate it
    (Griffin-Lim has no exact local form: tests bound the log-spectral distance to it). Yields
    float32 numpy arrays that join to the length :func:`griffin_lim` returns."""
    config = MelConfig.glow_tts() if config is None else config
    harmonic_iter = harmonic_iterations(mel_iter, harmonic_iter)
    log_mel, _ = _check(mel, config, n_iter, momentum, power, init, mel_iter, harmonic_iter)
    if log_mel.shape[0] != 1:
        raise AudioError("griffin_lim_stream takes one mel [n_mels, F]")
    if chunk_frames < 1 or overlap < 1:
        raise ConfigError(f"chunk_frames and overlap must be >= 1, got {chunk_frames}, {overlap}")
    spans = chunk_spans(log_mel.shape[-1], chunk_frames, max_chunk_frames)
    n_frames, hop = log_mel.shape[-1], config.hop_length
    total = _wav_length(config, n_frames)
    shape = (1, config.n_fft // 2 + 1, n_frames)
    # The magnitude is recovered frame by frame (each frame's least squares is its own), so
    # with random starting phases it is computed as the windows reach new frames: the first
    # piece does not wait for the whole mel's. The PGHI phase integrates over the whole
    # magnitude (every window then starts from the phase the whole inversion starts from), and
    # with power != 1 the sharpening keeps the whole mel's energy: both need it all at once.
    if init == "random" and power == 1.0:
        magnitude, known = log_mel.new_zeros(shape), 0
        phase = _random_phase(shape, seed)
    else:
        magnitude, known = _magnitude(log_mel, config, power), n_frames
        phase = _initial_phase(magnitude, config, init, seed)
    fade = min(hop, chunk_frames * hop) // 2 * 2
    ramp = (torch.arange(fade, dtype=torch.float32) + 0.5) / max(fade, 1)
    held = None  # the previous window's samples past its core end, to blend into the next
    for start, end in spans:
        lo, hi = max(0, start - overlap), min(n_frames, end + overlap)
        if hi - lo < 2:  # a window of one frame cannot be inverted: widen it
            lo = max(0, hi - 2)
        if hi > known:
            magnitude[..., known:hi] = _magnitude(log_mel[..., known:hi], config, power)
            known = hi
        wav = _fast_griffin_lim(magnitude[..., lo:hi], config, n_iter, momentum,
                                phase[..., lo:hi], log_mel[..., lo:hi], mel_iter,
                                harmonic_iter)[0].cpu()
        offset = lo * hop  # a window's audio starts at its first frame's sample
        a, b = start * hop, min(total, end * hop)
        core = wav[a - offset:b - offset]
        if held is not None:  # the crossfade at this window's start
            n = min(fade, held.numel(), core.numel())
            core = core.clone()
            core[:n] = held[:n] * (1 - ramp[:n]) + core[:n] * ramp[:n]
        if end < n_frames:  # keep the first samples after the core for the next crossfade
            held = wav[b - offset:b - offset + fade]
        yield core.numpy().astype(np.float32, copy=False)


def _wav_length(config: MelConfig, n_frames: int) -> int:
    if config.padding == "center":
        return config.hop_length * (n_frames - 1)
    return config.hop_length * n_frames


def _random_phase(shape, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator)


def _initial_phase(magnitude: Tensor, config: MelConfig, init: str, seed: int) -> Tensor:
    """Griffin-Lim's starting phase for ``magnitude [B, bins, F]``, in turns."""
    if init == "random":
        return _random_phase(magnitude.shape, seed)
    phase = pghi_phase(magnitude.detach().cpu().numpy(), config.n_fft, config.hop_length,
                       config.win_length)
    return torch.from_numpy(phase)


def _check(mel, config: MelConfig, n_iter, momentum, power, init, mel_iter,
           harmonic_iter) -> tuple[Tensor, bool]:
    _check_options(n_iter, momentum, power, init, mel_iter, harmonic_iter)
    if isinstance(mel, Tensor):
        log_mel = mel.detach().float()
    else:
        log_mel = torch.from_numpy(np.array(mel, dtype=np.float32))
    if log_mel.ndim not in (2, 3) or log_mel.shape[-2] != config.n_mels:
        raise AudioError(
            f"expected a mel spectrogram of shape [{config.n_mels}, F] or "
            f"[B, {config.n_mels}, F], got {tuple(log_mel.shape)}"
        )
    if log_mel.shape[-1] < 2:
        raise AudioError(f"need at least 2 mel frames to invert, got {log_mel.shape[-1]}")
    squeeze = log_mel.ndim == 2
    if squeeze:
        log_mel = log_mel[None]
    return log_mel, squeeze


def _check_options(n_iter, momentum, power, init, mel_iter=0, harmonic_iter=0) -> None:
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    for name, value in (("n_iter", n_iter), ("mel_iter", mel_iter),
                        ("harmonic_iter", harmonic_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    if harmonic_iter and not mel_iter:
        raise ConfigError("the harmonic restoration (harmonic_iter > 0) needs the mel "
                          "matching after it to set the bands' levels back: mel_iter > 0")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
    if not power > 0:
        raise ConfigError(f"power must be > 0, got {power!r}")


def _magnitude(log_mel: Tensor, config: MelConfig, power: float) -> Tensor:
    """Linear magnitude ``[B, n_fft // 2 + 1, F]`` of a log-mel, frame by frame."""
    basis = torch.tensor(mel_basis(config), device=log_mel.device)
    mel_lin = decompress_mel(log_mel, config)  # exp for log-mels; FloWaveNet's dB scaling
    if config.magnitude_eps:
        # sqrt(|X|^2 + eps) puts a floor of sqrt(eps) in every bin; remove its mel image so
        # that it is not rebuilt as broadband noise.
        floor = math.sqrt(config.magnitude_eps) ** config.power * basis.sum(dim=1)
        mel_lin = (mel_lin - floor[:, None]).clamp_(min=0)
    magnitude = nnls(basis, mel_lin) ** (1 / config.power)  # nnls gives |X| ** config.power
    if power != 1.0:
        # Sharpen, keeping each item's energy so that the level stays where it was.
        sharp = magnitude**power
        energy = magnitude.square().sum(dim=(1, 2), keepdim=True)
        sharp_energy = sharp.square().sum(dim=(1, 2), keepdim=True).clamp(min=1e-30)
        magnitude = sharp * (energy / sharp_energy).sqrt()
    return magnitude


def nnls(basis: Tensor, target: Tensor, n_iter: int = 50) -> Tensor:
    """Non-negative least squares ``min_{S >= 0} ||basis @ S - target||^2``, batched.

    Accelerated projected gradient (FISTA; Beck & Teboulle, 2009) started from the clipped
    pseudo-inverse. (``librosa.util.nnls`` scales its objective by ``1 / target.size``, so
    on more than one frame L-BFGS-B stops at that starting point; here 50 iterations bring
    the relative mel residual on LJSpeech from ~2e-2 to ~5e-5.)

    Shapes:
        basis ``[M, N]``, target ``[..., M, F]`` -> ``[..., N, F]``, non-negative.
    """
    pinv, step = _nnls_start(basis)
    solution = torch.matmul(pinv, target).clamp_(min=0)
    point, momentum = solution, 1.0
    for _ in range(n_iter):
        gradient = torch.matmul(basis.T, torch.matmul(basis, point) - target)
        updated = (point - step * gradient).clamp_(min=0)
        next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
        point = updated + ((momentum - 1) / next_momentum) * (updated - solution)
        solution, momentum = updated, next_momentum
    return solution


def _nnls_start(basis: Tensor) -> tuple[Tensor, float]:
    """The pseudo-inverse and the gradient step (1 / Lipschitz constant) for ``basis``;
    kept for the last few bases, since a streamed inversion solves one window at a time."""
    key = (basis.device, basis.dtype, tuple(basis.shape), hash(basis.cpu().numpy().tobytes()))
    cached = _NNLS_START.get(key)
    if cached is None:
        pinv = torch.linalg.pinv(basis.double()).to(basis.dtype)
        step = 1.0 / torch.linalg.matrix_norm(basis.double(), ord=2).item() ** 2
        if len(_NNLS_START) >= 8:
            _NNLS_START.pop(next(iter(_NNLS_START)))
        cached = _NNLS_START[key] = (pinv, step)
    return cached


_NNLS_START: dict = {}


def _fast_griffin_lim(
    magnitude: Tensor, config: MelConfig, n_iter: int, momentum: float, phase: Tensor,
    mel: Tensor | None = None, mel_iter: int = 0, harmonic_iter: int = 0,
) -> Tensor:
    """Phase retrieval for ``magnitude [B, n_fft // 2 + 1, F]`` -> waveform ``[B, T]``,
    starting from ``phase`` (same shape, in turns); then, if ``mel [B, n_mels, F]`` (the
    features, compressed as ``config`` says) is given, the harmonic restoration
    (``harmonic_iter`` iterations; the module docstring's step 2b) and ``mel_iter``
    mel-matching iterations."""
    n_frames = magnitude.shape[-1]
    if config.padding == "center":
        shift, length = 0, config.hop_length * (n_frames - 1)
    else:
        # A "vits" frame t is centred on sample t * hop + shift. Run the iterations on the
        # signal advanced by `shift`, which centred framing then sees frame-aligned, and
        # delay the result back at the end (the first `shift` samples are unknown: zeros).
        shift = config.n_fft // 2 - config.pad
        length = config.hop_length * n_frames - shift
    window = torch.hann_window(
        config.win_length, periodic=True, dtype=magnitude.dtype, device=magnitude.device
    )
    stft = _Stft(config, window, length)

    phase = phase.to(magnitude.dtype)
    angles = torch.polar(torch.ones_like(phase), phase * (2 * math.pi)).to(magnitude.device)
    wav = _phase_iterations(stft, magnitude, angles, n_iter, momentum)
    if mel is not None and mel_iter:
        if harmonic_iter:
            wav = _restore_harmonics(stft, wav, config, n_frames, harmonic_iter, momentum)
        wav = _match_mel(stft, _MelMatch(mel.to(magnitude.device), config), wav, mel_iter)
    return F.pad(wav, (shift, 0)) if shift else wav


class _Stft:
    """The STFT pair every step uses: periodic Hann window, centred frames with reflect
    padding, the synthesis cut to ``length`` samples."""

    def __init__(self, config: MelConfig, window: Tensor, length: int):
        self.args = {"n_fft": config.n_fft, "hop_length": config.hop_length,
                     "win_length": config.win_length, "window": window, "center": True}
        self.length = length

    def analysis(self, wav: Tensor) -> Tensor:
        return torch.stft(wav, pad_mode="reflect", return_complex=True, **self.args)

    def synthesis(self, spectrum: Tensor) -> Tensor:
        return torch.istft(spectrum, length=self.length, **self.args)


def _phase_iterations(stft: _Stft, magnitude: Tensor, angles: Tensor, n_iter: int,
                      momentum: float) -> Tensor:
    """Fast Griffin-Lim: ``n_iter`` iterations for ``magnitude`` from the unit phasors
    ``angles``; the waveform of the last."""
    decay = momentum / (1 + momentum)
    previous = None
    for _ in range(n_iter):
        rebuilt = stft.analysis(stft.synthesis(magnitude * angles))
        # Accelerated projection (Perraudin et al., 2013): extrapolate away from the
        # previous consistent estimate, then keep only the phase.
        angles = rebuilt if previous is None else rebuilt - decay * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return stft.synthesis(magnitude * angles)


def _restore_harmonics(stft: _Stft, wav: Tensor, config: MelConfig, n_frames: int,
                       n_iter: int, momentum: float) -> Tensor:
    """The harmonic restoration (the module docstring's step 2b) of ``wav [B, T]``: its
    spectrum's magnitude times the harmonic comb of its F0, ``n_iter`` phase-retrieval
    iterations from its own phase."""
    spectrum = stft.analysis(wav)
    level = spectrum.abs()
    f0 = [frame_f0(item, config.sample_rate, config.hop_length, n_frames)
          for item in wav.detach().cpu().numpy()]
    comb = np.stack([harmonic_comb(item, config.sample_rate, config.n_fft, config.win_length)
                     for item in f0])
    return _phase_iterations(stft, level * torch.from_numpy(comb).to(level.device),
                             spectrum / (level + 1e-16), n_iter, momentum)


def _match_mel(stft: _Stft, match: _MelMatch, wav: Tensor, mel_iter: int) -> Tensor:
    """``mel_iter`` mel-matching iterations on ``wav`` (the module docstring's third step)."""
    previous = None
    for _ in range(mel_iter):
        spectrum = stft.analysis(wav)
        matched = spectrum * match.gain(spectrum)
        step = matched if previous is None else matched + MEL_MOMENTUM * (matched - previous)
        previous = matched
        wav = stft.synthesis(step)
    return wav


class _MelMatch:
    """One mel-matching step's gain: for a spectrum ``[B, bins, F]``, the factor on each bin
    that brings its mel to the target's (the module docstring's third step).

    The current mel goes through the features' own compression and back, so that what the
    features cannot tell apart (anything under the log clamp) counts as a match."""

    def __init__(self, mel: Tensor, config: MelConfig):
        self.config = config
        self.basis = torch.tensor(mel_basis(config), device=mel.device)  # [n_mels, bins]
        coverage = self.basis.sum(dim=0)
        # A bin's gain is the ratios of the bands over it, weighted as the filters weigh it;
        # bins under no filter (above fmax) keep their level.
        self.weights = (self.basis / coverage.clamp(min=1e-12)).T  # [bins, n_mels]
        self.uncovered = (coverage == 0)[:, None]
        self.target = decompress_mel(mel, config)

    def gain(self, spectrum: Tensor) -> Tensor:
        config = self.config
        level = spectrum.real.square() + spectrum.imag.square()
        if config.magnitude_eps:
            level = level + config.magnitude_eps
        level = level ** (config.power / 2)  # what the features' filters sum: |X| ** power
        current = decompress_mel(compress_mel(torch.matmul(self.basis, level), config), config)
        ratio = self.target / current
        gain = torch.matmul(self.weights, ratio) ** (1 / config.power)
        return gain.masked_fill_(self.uncovered, 1.0)
