"""Griffin-Lim phase retrieval in numpy, for the runtime without PyTorch.

The same algorithm and the same framing as :func:`flowspeech.audio.griffin_lim.griffin_lim`
(fast Griffin-Lim with momentum, Perraudin et al., 2013; periodic Hann window, ``center``
framing with reflect padding, least-squares overlap-add; then the mel-matching iterations),
written on ``scipy.fft`` so that it runs on the cores numpy's FFT leaves idle. The magnitude
comes from the mel's non-negative least squares (:func:`mel_to_magnitude`); only the
iterations run in :class:`GriffinLim`, and the harmonic restoration between them, on the
same functions as the PyTorch path (:mod:`flowspeech.audio.harmonics`).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flowspeech.audio.config import DB_MIN, DB_REFERENCE
from flowspeech.audio.harmonics import frame_f0, harmonic_comb


def fft():
    """``scipy.fft`` (single-precision FFTs, 4x numpy's on float32 frames), imported on first
    use: its import takes 0.2 s, which a voice spends while its graphs load."""
    import scipy.fft  # lazy: see above

    return scipy.fft


class GriffinLim:
    """Phase retrieval for one STFT setting.

    Args:
        n_fft, hop_length, win_length: the STFT (``win_length <= n_fft``; ``n_fft`` a
            multiple of ``hop_length``).
        padding: ``"center"`` (frame ``t`` centred on sample ``t * hop``) or ``"vits"``
            (centred on ``t * hop + shift``; the first ``shift`` samples come out as zeros).
        pad: the ``"vits"`` padding's reflect pad, ``(n_fft - hop) // 2``.
        n_iter, momentum: iterations and the fast Griffin-Lim momentum.
        workers: threads, each taking a slice of the frames (None: all cores).
        mel_iter: mel-matching iterations after those, for calls given the mel.
        mel_match: how the mel is measured (needed when ``mel_iter > 0``).
        mel_momentum: their extrapolation from the previous rescaled spectrum
            (:data:`flowspeech.audio.griffin_lim.MEL_MOMENTUM`).
        harmonic_iter: phase-retrieval iterations of the harmonic restoration, between
            phase retrieval and the mel matching (0: none; needs ``mel_iter`` and
            ``sample_rate``).
        sample_rate: the signal's rate (the harmonic restoration tracks its pitch).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, padding: str = "center",
                 pad: int = 0, n_iter: int = 60, momentum: float = 0.99, workers: int | None = None,
                 mel_iter: int = 0, mel_match: MelMatch | None = None, mel_momentum: float = 0.9,
                 harmonic_iter: int = 0, sample_rate: int | None = None):
        if n_fft % hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop_length ({hop_length})")
        if mel_iter and mel_match is None:
            raise ValueError("mel-matching iterations need a MelMatch")
        if harmonic_iter and (not mel_iter or sample_rate is None):
            raise ValueError("the harmonic restoration needs mel-matching iterations and the "
                             "sample rate")
        self.harmonic_iter, self.sample_rate, self.win_length = harmonic_iter, sample_rate, win_length
        self.n_fft, self.hop, self.n_iter, self.momentum = n_fft, hop_length, n_iter, momentum
        self.mel_iter, self.mel_match, self.mel_momentum = mel_iter, mel_match, mel_momentum
        self.padding, self.workers = padding, max(1, workers or os.cpu_count() or 1)
        self.shift = 0 if padding == "center" else n_fft // 2 - pad
        window = np.zeros(n_fft, dtype=np.float32)
        left = (n_fft - win_length) // 2
        n = np.arange(win_length)
        window[left:left + win_length] = 0.5 - 0.5 * np.cos(2 * math.pi * n / win_length)  # periodic Hann
        self.window = window

    def __call__(self, magnitude: np.ndarray, phase: np.ndarray,
                 mel: np.ndarray | None = None) -> np.ndarray:
        """``magnitude [n_fft // 2 + 1, F]`` and the starting phase in turns ``[same]`` (the
        PyTorch path's ``torch.rand``) -> float32 waveform ``[T]``; with the mel features
        ``[n_mels, F]`` the magnitude came from, ``mel_iter`` mel-matching iterations
        follow."""
        n_frames = magnitude.shape[-1]
        if self.padding == "center":
            length = self.hop * (n_frames - 1)
        else:
            length = self.hop * n_frames - self.shift
        magnitude = np.ascontiguousarray(magnitude.T, dtype=np.float32)  # [F, bins]
        angles = np.exp(2j * math.pi * phase.T.astype(np.float32)).astype(np.complex64)
        half = self.n_fft // 2
        # The signal between iterations lives in one buffer, reflect-padded by half a frame on
        # each side for the next analysis: the overlap-add lands in it, the envelope's
        # reciprocal scales it in place and the two margins are mirrored in, with no copy of
        # the signal (the padding, the slice and the division cost 13 % of the run before).
        padded = np.empty(max((n_frames + self.n_fft // self.hop - 1) * self.hop, length + 2 * half), np.float32)
        inverse_envelope = (1 / self._envelope(n_frames)[half:half + length]).astype(np.float32)
        # The frames are cut into slices, as many for every worker and at most 256 frames long:
        # each slice's FFTs and element-wise work run in a worker thread (numpy and scipy.fft
        # release the GIL), on arrays small enough to stay in cache; only the overlap-add,
        # which joins neighbouring frames, runs on one. (Measured on 900 frames, 2 cores: one
        # slice 1.05 s, 256-frame slices 0.60 s on one worker; two workers 0.43 s. With the
        # element-wise work below done in place and as real products: 860 frames, 0.45 s on
        # one worker, 0.36 s on two, against 0.63 s and 0.49 s before.)
        rounds = math.ceil(n_frames / 256 / self.workers)  # the same number of slices for every worker
        slices = [slice(a, b) for a, b in _bounds(n_frames, self.workers * rounds)]
        frames = np.empty((n_frames, self.n_fft), dtype=np.float32)
        # Per slice: the spectrum the next synthesis reads, and the last analysis (momentum).
        spectra = [magnitude[part] * angles[part] for part in slices]
        rebuilt: list[np.ndarray | None] = [None] * len(slices)
        decay = np.float32(self.momentum / (1 + self.momentum))
        eps = np.float32(1e-16)

        def synthesis_frames(i: int) -> None:
            signal = fft().irfft(spectra[i], n=self.n_fft, axis=-1, overwrite_x=True)
            np.multiply(signal, self.window, out=frames[slices[i]])

        def spectrum(i: int, wav: np.ndarray) -> np.ndarray:  # the STFT of slice i's frames
            return fft().rfft(self._frames(wav, slices[i]) * self.window, axis=-1, overwrite_x=True)

        def analysis(i: int, wav: np.ndarray) -> None:
            now = spectrum(i, wav)
            if rebuilt[i] is None:
                update = now.copy()
            else:  # Perraudin et al.'s momentum, in place on the float32 view of the last analysis
                update = rebuilt[i]
                pairs = update.view(np.float32)
                pairs *= -decay
                pairs += now.view(np.float32)
            # The next spectrum: the update's phase times the magnitude, as real products on
            # the real and imaginary parts (a complex-by-real product casts the real factor
            # to complex element by element: twice the time).
            scale = np.abs(update)
            scale += eps
            np.divide(magnitude[slices[i]], scale, out=scale)
            np.multiply(update.real, scale, out=update.real)
            np.multiply(update.imag, scale, out=update.imag)
            spectra[i], rebuilt[i] = update, now

        def each(fn, *args) -> None:
            if self.workers == 1:
                for i in range(len(slices)):
                    fn(i, *args)
            else:
                list(self._pool.map(lambda i: fn(i, *args), range(len(slices))))

        def retrieve_phase(n_iter: int) -> None:  # fast Griffin-Lim from spectra
            for _ in range(n_iter):
                each(synthesis_frames)
                each(analysis, self._signal(frames, length, inverse_envelope, padded))
            each(synthesis_frames)
            self._signal(frames, length, inverse_envelope, padded)

        retrieve_phase(self.n_iter)
        if mel is not None and self.mel_iter:
            if self.harmonic_iter:
                # The harmonic restoration (flowspeech.audio.griffin_lim's step 2b): the
                # signal's spectrum weighted by the comb of its F0 is the magnitude phase
                # retrieval runs for, from the signal's own phase.
                f0 = frame_f0(padded[half:half + length], self.sample_rate, self.hop, n_frames)
                comb = np.ascontiguousarray(harmonic_comb(f0, self.sample_rate, self.n_fft,
                                                          self.win_length).T)  # [F, bins]

                def weighted(i: int, wav: np.ndarray) -> None:
                    now = spectrum(i, wav)
                    magnitude[slices[i]] = np.abs(now) * comb[slices[i]]
                    now *= comb[slices[i]]
                    spectra[i], rebuilt[i] = now, None

                magnitude = np.empty_like(magnitude)  # the comb's; the caller's stays as it was
                each(weighted, padded)
                retrieve_phase(self.harmonic_iter)

            target = self.mel_match.target(mel)  # [F, n_mels]
            beta = np.float32(self.mel_momentum)
            matched: list[np.ndarray | None] = [None] * len(slices)  # the last rescaled spectra

            def matching(i: int, wav: np.ndarray) -> None:
                now = spectrum(i, wav)
                now *= self.mel_match.gain(now, target[slices[i]])
                # A new array: the synthesis transforms spectra[i] in place.
                spectra[i] = now.copy() if matched[i] is None else now + beta * (now - matched[i])
                matched[i] = now

            for _ in range(self.mel_iter):
                each(matching, padded)
                each(synthesis_frames)
                self._signal(frames, length, inverse_envelope, padded)
        wav = padded[half:half + length]
        return np.concatenate([np.zeros(self.shift, np.float32), wav]) if self.shift else wav.copy()

    @functools.cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="griffin-lim")

    def _frames(self, padded: np.ndarray, part: slice) -> np.ndarray:
        """Frames ``part`` of the reflect-padded signal, as a strided view."""
        start, stop = part.start, part.stop
        view = np.lib.stride_tricks.as_strided(
            padded[start * self.hop:], (stop - start, self.n_fft), (padded.strides[0] * self.hop, padded.strides[0]))
        return view

    def _overlap_add(self, frames: np.ndarray) -> np.ndarray:
        n_frames, r = frames.shape[0], self.n_fft // self.hop
        blocks = frames.reshape(n_frames, r, self.hop)
        out = np.zeros((n_frames + r - 1, self.hop), dtype=np.float32)
        for j in range(r):
            out[j:j + n_frames] += blocks[:, j]
        return out.reshape(-1)

    def _envelope(self, n_frames: int) -> np.ndarray:
        squared = np.broadcast_to(self.window**2, (n_frames, self.n_fft))
        envelope = self._overlap_add(np.ascontiguousarray(squared))
        return np.where(envelope > 1e-11, envelope, 1.0).astype(np.float32)

    def _signal(self, frames: np.ndarray, length: int, inverse_envelope: np.ndarray,
                padded: np.ndarray) -> np.ndarray:
        """The signal of windowed ``frames`` (overlap-add, times the reciprocal of the window's
        envelope), ``length`` samples from ``padded[n_fft // 2]`` on, and ``padded`` returned
        with ``n_fft // 2`` reflected samples on each side (``np.pad``'s ``"reflect"``)."""
        n_frames, r, hop, half = frames.shape[0], self.n_fft // self.hop, self.hop, self.n_fft // 2
        blocks = frames.reshape(n_frames, r, hop)
        out = padded[:(n_frames + r - 1) * hop].reshape(n_frames + r - 1, hop)
        out[:n_frames] = blocks[:, 0]
        out[n_frames:] = 0
        for j in range(1, r):
            out[j:j + n_frames] += blocks[:, j]
        signal = padded[half:half + length]
        signal *= inverse_envelope
        if length > half:  # one reflection each side
            padded[:half] = padded[2 * half:half:-1]
            padded[half + length:2 * half + length] = padded[half + length - 2:length - 2:-1]
        else:  # a signal shorter than the margin reflects more than once: np.pad's rule
            padded[:length + 2 * half] = np.pad(signal.copy(), half, mode="reflect")
        return padded


class MelMatch:
    """The mel-matching step's gain, as :class:`flowspeech.audio.griffin_lim._MelMatch`
    computes it: for a spectrum ``[F, bins]``, the factor on each bin that brings its mel to
    the target's (the ratios of the bands over the bin, weighted as the filters weigh it; bins
    under no filter keep their level). The current mel goes through the features' compression
    and back, so that what the features cannot tell apart counts as a match.

    Args:
        basis: the mel filters ``[n_mels, n_fft // 2 + 1]``.
        compression, magnitude_eps, power, log_clamp: the features' settings
            (:class:`~flowspeech.audio.config.MelConfig`).
    """

    def __init__(self, basis: np.ndarray, compression: str = "log", magnitude_eps: float = 0.0,
                 power: float = 1.0, log_clamp: float = 1e-5):
        basis = basis.astype(np.float32)
        coverage = basis.sum(axis=0)
        self.compression, self.magnitude_eps = compression, np.float32(magnitude_eps)
        self.power, self.log_clamp = power, np.float32(log_clamp)
        self.filters = sparse().csr_matrix(basis.T)  # [bins, n_mels]: spectrum -> mel
        self.weights = sparse().csr_matrix(basis / np.maximum(coverage, 1e-12))  # mel -> bins
        self.uncovered = coverage == 0

    def target(self, features: np.ndarray) -> np.ndarray:
        """The linear mel ``[F, n_mels]`` of features ``[n_mels, F]``."""
        return np.ascontiguousarray(decompress(features.astype(np.float32), self.compression).T)

    def gain(self, spectrum: np.ndarray, target: np.ndarray) -> np.ndarray:
        """``spectrum [F, bins]`` (complex), ``target [F, n_mels]`` -> gain ``[F, bins]``."""
        level = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        if self.magnitude_eps:
            level += self.magnitude_eps
        level = np.sqrt(level) if self.power == 1.0 else level ** np.float32(self.power / 2)
        current = decompress(self._compress(np.asarray(level @ self.filters)), self.compression)
        gain = np.asarray((target / current) @ self.weights, dtype=np.float32)
        if self.power != 1.0:
            gain **= np.float32(1 / self.power)
        gain[:, self.uncovered] = 1.0
        return gain

    def _compress(self, mel: np.ndarray) -> np.ndarray:
        if self.compression == "log":
            return np.log(np.maximum(mel, self.log_clamp))
        db = 20.0 * np.log10(np.maximum(mel, self.log_clamp)) - DB_REFERENCE
        return np.clip((db - DB_MIN) / -DB_MIN, 0.0, 1.0)


def decompress(features: np.ndarray, compression: str) -> np.ndarray:
    """The linear mel of compressed features (``"log"`` or ``"db_normalized"``), as
    :func:`flowspeech.audio.features.decompress_mel` computes it."""
    if compression == "log":
        return np.exp(features)
    return np.power(np.float32(10.0), (features * -DB_MIN + DB_MIN + DB_REFERENCE) / 20.0)


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, n))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def sparse():
    """``scipy.sparse``, imported on first use (0.15 s; see :func:`fft`)."""
    import scipy.sparse  # lazy: see above

    return scipy.sparse


def mel_to_magnitude(features: np.ndarray, basis: np.ndarray, compression: str = "log",
                     magnitude_eps: float = 0.0, power: float = 1.0, n_iter: int = 50,
                     workers: int = 1) -> np.ndarray:
    """Linear magnitude ``[n_fft // 2 + 1, F]`` of mel features ``[n_mels, F]``: what
    :func:`flowspeech.audio.griffin_lim._magnitude` computes (the non-negative least squares of
    :func:`flowspeech.audio.griffin_lim.nnls`, FISTA from the clipped pseudo-inverse).

    Each frame is its own problem, so ``workers`` threads take a slice of the frames each; the
    mel basis is sparse (each frequency bin lies under at most two filters), and its products
    run as sparse ones, five times faster than dense."""
    mel = decompress(features, compression).astype(np.float32)
    basis = basis.astype(np.float32)
    if magnitude_eps:
        floor = math.sqrt(magnitude_eps) ** power * basis.sum(axis=1)
        mel = np.maximum(mel - floor[:, None], 0)
    pinv, step, forward, backward = _nnls_operators(basis)
    out = np.empty((basis.shape[1], mel.shape[1]), dtype=np.float32)

    def solve(part: slice) -> None:
        target = np.ascontiguousarray(mel[:, part])
        solution = np.maximum(pinv @ target, 0)
        point, momentum = solution, 1.0
        for _ in range(n_iter):
            gradient = backward @ (forward @ point - target)
            updated = np.maximum(point - step * gradient, 0)
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            point = updated + np.float32((momentum - 1) / next_momentum) * (updated - solution)
            solution, momentum = updated, next_momentum
        out[:, part] = solution

    parts = [slice(a, b) for a, b in _bounds(mel.shape[1], workers)]
    if len(parts) == 1:
        solve(parts[0])
    else:
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            list(pool.map(solve, parts))
    return out ** np.float32(1 / power)


def _nnls_operators(basis: np.ndarray):
    key = basis.tobytes()
    cached = _OPERATORS.get(key)
    if cached is None:
        basis64 = basis.astype(np.float64)
        pinv = np.linalg.pinv(basis64).astype(np.float32)
        step = np.float32(1.0 / np.linalg.norm(basis64, ord=2) ** 2)
        cached = (pinv, step, sparse().csr_matrix(basis), sparse().csr_matrix(basis.T))
        _OPERATORS.clear()
        _OPERATORS[key] = cached
    return cached


_OPERATORS: dict = {}
