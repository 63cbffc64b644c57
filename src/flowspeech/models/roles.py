"""The three roles a flowspeech model plays, each with one inference signature.

=================  ====================================  =========================
role               ``infer`` maps                        models
=================  ====================================  =========================
text to mel        tokens -> mel frames, durations       Glow-TTS
mel to waveform    mel frames -> waveform                WaveGlow, FloWaveNet
text to waveform   tokens -> waveform, durations         NaturalSpeech
=================  ====================================  =========================

Synthesis, vocoding, voices, export and the command line pick a model by its role
(:attr:`SpeechModel.role`, also in :mod:`flowspeech.models.registry`) and call the role's
signature; they never ask a model which methods it happens to have. The keyword names are
shared by every model: ``noise_scale`` and ``length_scale`` for text models, ``sigma`` for the
standard deviation of every vocoder's latent, ``speakers``, ``generator`` (a
``torch.Generator`` on any device: the noise is drawn on the generator's device, so one seed
gives one latent everywhere; or a list, one per utterance, so that an utterance's noise does
not depend on the batch it is in). The authors' names (FloWaveNet's ``temperature``, ...) survive
only in the importers of their checkpoints.

Every ``infer`` returns tensors with their lengths: a :class:`MelSynthesis`,
:class:`WaveformSynthesis` or :class:`Vocoded` named tuple, which unpacks like a tuple.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from flowspeech.flows import remove_weight_norm
from flowspeech.models.registry import Role
from flowspeech.utils.chunks import chunk_spans
from flowspeech.utils.durations import DurationRounding
from flowspeech.utils.noise import Generators, per_utterance

__all__ = ["MelSynthesis", "MelToWaveform", "Role", "SpeechModel", "TextToMel", "TextToWaveform",
           "Vocoded", "WaveformStream", "WaveformSynthesis"]


class MelSynthesis(NamedTuple):
    """What a text-to-mel model returns."""

    mels: torch.Tensor        # [B, n_mels, F], zero past each length
    mel_lengths: torch.Tensor  # [B] frames
    durations: torch.Tensor   # [B, T_text] frames per token (0 for padding)


class WaveformSynthesis(NamedTuple):
    """What a text-to-waveform model returns."""

    waveforms: torch.Tensor         # [B, S], zero past each length
    waveform_lengths: torch.Tensor  # [B] samples
    durations: torch.Tensor         # [B, T_text] frames of hop_length samples per token


class WaveformStream(NamedTuple):
    """What a text-to-waveform model's ``stream`` returns: all but the audio at once."""

    durations: torch.Tensor         # [1, T_text] frames per token
    waveform_lengths: torch.Tensor  # [1] samples the pieces add up to
    pieces: Iterator[torch.Tensor]  # [1, n] waveform pieces, in order


class Vocoded(NamedTuple):
    """What a mel-to-waveform model returns."""

    waveforms: torch.Tensor         # [B, F * hop], zero past each length
    waveform_lengths: torch.Tensor  # [B] samples


class SpeechModel(nn.Module, ABC):
    """What every flowspeech model offers besides its role's ``infer``."""

    role: ClassVar[Role]

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> "SpeechModel":
        """The model a resolved config (:func:`flowspeech.config.load_config`) describes."""

    def prepare_for_inference(self) -> "SpeechModel":
        """Eval mode and weight norm folded into plain weights (outputs unchanged); models add
        their own caches. Returns ``self``."""
        self.eval()
        remove_weight_norm(self)
        return self

    @staticmethod
    def inference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights synthesis uses, from a checkpoint's ``model`` entry (e.g. a GAN's
        generator without its discriminators). The default keeps everything."""
        return state

    def attach_inference_extras(self, extras: dict[str, Any]) -> None:
        """Take what a checkpoint stores for inference beside the weights (its ``inference``
        entry, written by the training recipe), e.g. a tokenizer. The default needs nothing."""


class TextToMel(SpeechModel):
    """Tokens to mel frames (Glow-TTS)."""

    role = Role.TEXT_TO_MEL
    n_speakers: int = 1
    #: How predicted durations become whole frames per token, for models that round them
    #: (Glow-TTS); None for models whose durations stay continuous.
    duration_rounding: DurationRounding | None = None

    @abstractmethod
    def infer(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *,
              speakers: torch.Tensor | None = None, noise_scale: float = 0.667,
              length_scale: float = 1.0, generator: Generators = None,
              max_frames: int | None = None) -> MelSynthesis:
        """Parallel synthesis of a batch of token sequences ``[B, T_text]`` (``token_lengths``
        ``[B]``). ``noise_scale``: temperature of the prior sample; ``length_scale``: > 1
        speaks slower; ``speakers`` ``[B]`` ids of a multi-speaker model; ``max_frames``
        refuses longer output (a ValueError) to bound memory."""


class TextToWaveform(SpeechModel):
    """Tokens to waveform in one network (NaturalSpeech)."""

    role = Role.TEXT_TO_WAVEFORM
    n_speakers: int = 1
    duration_rounding: DurationRounding | None = None  # as TextToMel's

    @abstractmethod
    def infer(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *,
              speakers: torch.Tensor | None = None, noise_scale: float = 0.667,
              length_scale: float = 1.0, generator: Generators = None,
              max_frames: int | None = None) -> WaveformSynthesis:
        """As :meth:`TextToMel.infer`, to waveforms; ``max_frames`` counts ``hop_length``
        frames."""

    @abstractmethod
    def set_waveform_dtype(self, dtype: torch.dtype) -> "TextToWaveform":
        """Run the waveform decoder in ``dtype`` (bfloat16 on CPUs with AVX512-BF16 or AMX,
        float16 on GPUs) for inference; its weights are rounded in place. Returns ``self``."""

    def stream(self, tokens: torch.Tensor, token_lengths: torch.Tensor, *, chunk_frames: int = 32,
               max_chunk_frames: int | None = None, **kwargs) -> WaveformStream:
        """One utterance (``tokens [1, T]``) as a :class:`WaveformStream`: its durations and
        length first, then waveform pieces (sized as :meth:`MelToWaveform.stream` sizes them)
        that join to :meth:`infer`'s waveform; ``kwargs`` as :meth:`infer`. This default
        synthesises the whole utterance, then cuts it; a model that can decode in pieces
        overrides it, so that the first piece comes sooner."""
        out = self.infer(tokens, token_lengths, **kwargs)
        n, hop = int(out.waveform_lengths[0]), self.hop_length
        spans = chunk_spans(n // hop, chunk_frames, max_chunk_frames)
        return WaveformStream(out.durations, out.waveform_lengths,
                              (out.waveforms[:, a * hop:b * hop] for a, b in spans))


class MelToWaveform(SpeechModel):
    """Mel frames to waveform: a flow vocoder that samples a latent and inverts it.

    Subclasses give the latent's layout and the synthesis of a window of frames; ``infer``
    and ``infer_chunked`` (exact synthesis in bounded memory) are built here on those, so
    every vocoder chunks, and later streams, the same way.
    """

    role = Role.MEL_TO_WAVEFORM
    default_sigma: ClassVar[float] = 1.0
    hop_length: int
    n_mel_channels: int

    # --- what a vocoder provides --------------------------------------------------------------
    @abstractmethod
    def receptive_field_frames(self) -> int:
        """Mel frames of context on each side beyond which an output sample no longer depends
        on its inputs (the overlap that makes chunked synthesis exact)."""

    def lead_frames(self) -> int:
        """Frames before a window that its first frame's upsampling still reads (0 unless the
        upsampler reaches back)."""
        return 0

    @abstractmethod
    def sample_noise(self, batch: int, n_frames: int, generator: torch.Generator | None = None,
                     device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A standard-normal latent for ``n_frames`` mel frames, in the model's layout."""

    @abstractmethod
    def noise_frames(self, noise: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The part of a latent that belongs to mel frames ``start .. end - 1``."""

    @abstractmethod
    def synthesize_window(self, mels: torch.Tensor, noise: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """Audio ``[B, (F - lead) * hop]`` of mel frames ``lead .. F - 1`` of ``mels``
        ``[B, n_mels, F]`` from their latent ``noise`` (already scaled by sigma); the first
        ``lead`` frames are upsampler context only."""

    @abstractmethod
    def set_waveform_dtype(self, dtype: torch.dtype) -> "MelToWaveform":
        """Run the coupling networks in ``dtype`` for inference (the audio and the invertible
        maps stay in the model's dtype); their weights are rounded in place. Returns ``self``."""

    # --- built on them ----------------------------------------------------------------------
    def _as_model_input(self, mels: torch.Tensor) -> torch.Tensor:
        if mels.dim() != 3 or mels.size(1) != self.n_mel_channels or mels.size(2) < 1:
            raise ValueError(f"{type(self).__name__}: expected mels [B, {self.n_mel_channels}, F] "
                             f"with F >= 1, got {tuple(mels.shape)}")
        p = next(self.parameters())
        return mels.to(device=p.device, dtype=p.dtype)

    def _latent(self, mels: torch.Tensor, sigma: float | None, generator, noise,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        sigma = self.default_sigma if sigma is None else float(sigma)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        rows = per_utterance(generator, mels.size(0)) if noise is None else None
        if rows is not None:  # each utterance's latent from its own generator, at its own length
            z = torch.zeros(self.sample_noise(mels.size(0), mels.size(2), device="meta").shape,
                            device=mels.device, dtype=mels.dtype)
            n_frames = lengths.tolist() if lengths is not None else [mels.size(2)] * mels.size(0)
            for i, (n, g) in enumerate(zip(n_frames, rows)):
                self.noise_frames(z[i:i + 1], 0, n).copy_(self.sample_noise(1, n, g, mels.device, mels.dtype))
            return z * sigma
        if noise is None:
            return self.sample_noise(mels.size(0), mels.size(2), generator, mels.device, mels.dtype) * sigma
        expected = tuple(self.sample_noise(mels.size(0), mels.size(2), device="meta").shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"{type(self).__name__}: noise must be {list(expected)} for these "
                             f"mels, got {tuple(noise.shape)}")
        return noise.to(mels.device, mels.dtype) * sigma

    @staticmethod
    def _check_lengths(mels: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        n = mels.size(2)
        if lengths is None:
            return torch.full((mels.size(0),), n, dtype=torch.long, device=mels.device)
        if not torch.is_tensor(lengths) or lengths.shape != (mels.size(0),):
            raise ValueError(f"lengths must be a tensor [B] = [{mels.size(0)}] of frame counts, "
                             f"got {lengths!r}")
        lengths = lengths.to(mels.device).long()
        if int(lengths.min()) < 1 or int(lengths.max()) > n:
            raise ValueError(f"lengths must lie in [1, {n}], got {lengths.tolist()}")
        return lengths

    def _per_utterance(self, mels, lengths, z, synthesize) -> torch.Tensor:
        """``synthesize(mels, z)`` on the whole batch when every utterance fills it, else
        utterance by utterance at its own length: a vocoder's output depends on
        :meth:`receptive_field_frames` of context, so a batch's padding would leak into the
        end of its shorter utterances."""
        n = mels.size(2)
        if bool((lengths == n).all()):
            return synthesize(mels, z)
        out = mels.new_zeros(mels.size(0), n * self.hop_length)
        for i, m in enumerate(lengths.tolist()):
            out[i, :m * self.hop_length] = synthesize(mels[i:i + 1, :, :m],
                                                      self.noise_frames(z[i:i + 1], 0, m))[0]
        return out

    @torch.inference_mode()
    def infer(self, mels: torch.Tensor, lengths: torch.Tensor | None = None, *,
              sigma: float | None = None, generator: Generators = None,
              noise: torch.Tensor | None = None) -> Vocoded:
        """Synthesise the waveform of mels ``[B, n_mels, F]``, all samples in parallel.

        Args:
            lengths: frames of each utterance ``[B]`` (None: all ``F``); each is synthesised
                at its own length.
            sigma: standard deviation of the latent (None: :attr:`default_sigma`; 0 gives the
                model's "bias" audio).
            generator: for the latent, or one per utterance (each utterance's latent then
                depends on its own generator and length only); None uses the global RNG.
            noise: a standard-normal latent to use instead (scaled by ``sigma``), in the
                layout of :meth:`sample_noise`.
        """
        mels = self._as_model_input(mels)
        lengths = self._check_lengths(mels, lengths)
        z = self._latent(mels, sigma, generator, noise, lengths)
        audio = self._per_utterance(mels, lengths, z, self.synthesize_window)
        return Vocoded(audio, lengths * self.hop_length)

    @torch.inference_mode()
    def infer_chunked(self, mels: torch.Tensor, lengths: torch.Tensor | None = None, *,
                      chunk_frames: int = 512, overlap: int | None = None,
                      crossfade: int | None = None, sigma: float | None = None,
                      generator: Generators = None,
                      noise: torch.Tensor | None = None) -> Vocoded:
        """:meth:`infer` in memory bounded by ``chunk_frames + 2 * overlap`` frames.

        Each chunk of ``chunk_frames`` frames is synthesised with ``overlap`` frames of context
        on each side (and the frames the upsampler reaches back to) from the matching slice of
        ONE latent drawn for the whole utterance; neighbouring chunks are crossfaded linearly
        over ``crossfade`` samples centred on their boundary. With the default overlap every
        kept sample sees all of its receptive field, so the output equals :meth:`infer` to
        float rounding; a smaller overlap trades exactness for speed.

        Args:
            chunk_frames: frames synthesised per chunk.
            overlap: context frames on each side (default :meth:`receptive_field_frames` + 1,
                the one for the crossfade).
            crossfade: samples of crossfade per boundary (default ``hop_length``; at most
                ``2 * overlap * hop`` and ``chunk_frames * hop``).
            lengths, sigma, generator, noise: as in :meth:`infer`.
        """
        if chunk_frames < 1:
            raise ValueError(f"infer_chunked: chunk_frames must be >= 1, got {chunk_frames}")
        overlap = self.receptive_field_frames() + 1 if overlap is None else overlap
        if overlap < 0:
            raise ValueError(f"infer_chunked: overlap must be >= 0, got {overlap}")
        hop = self.hop_length
        crossfade = min(hop, 2 * overlap * hop) if crossfade is None else crossfade
        limit = min(2 * overlap * hop, chunk_frames * hop)
        if not 0 <= crossfade <= limit:
            raise ValueError(f"infer_chunked: crossfade ({crossfade} samples) must lie in [0, {limit}] "
                             f"(2 * overlap * hop and chunk_frames * hop)")
        mels = self._as_model_input(mels)
        lengths = self._check_lengths(mels, lengths)
        z = self._latent(mels, sigma, generator, noise, lengths)

        def synthesize(mel, latent):
            return self._chunked(mel, latent, chunk_frames, overlap, crossfade)

        return Vocoded(self._per_utterance(mels, lengths, z, synthesize), lengths * hop)

    @torch.inference_mode()
    def stream(self, mels: torch.Tensor, *, chunk_frames: int = 32, max_chunk_frames: int | None = None,
               sigma: float | None = None, generator: Generators = None,
               noise: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """:meth:`infer` of one utterance, ``mels [1, n_mels, F]``, in pieces: the first of
        ``chunk_frames`` frames, the others ``max_chunk_frames`` (None: all equal; see
        :func:`~flowspeech.utils.chunks.chunk_spans`), each computed with
        :meth:`receptive_field_frames` of context on both sides. The pieces (``[1, frames *
        hop]``) join to :meth:`infer`'s waveform to float rounding, and the first costs one
        window, not the utterance. The latent is drawn for the whole utterance first, as
        :meth:`infer` does."""
        if mels.dim() != 3 or mels.size(0) != 1:
            raise ValueError(f"stream takes one utterance [1, n_mels, F], got {tuple(mels.shape)}")
        mels = self._as_model_input(mels)
        n_frames, hop = mels.size(2), self.hop_length
        spans = chunk_spans(n_frames, chunk_frames, max_chunk_frames)
        z = self._latent(mels, sigma, generator, noise, torch.tensor([n_frames]))
        overlap, lead_max = self.receptive_field_frames() + 1, self.lead_frames()
        for start, end in spans:
            lo, hi = max(0, start - overlap), min(n_frames, end + overlap)
            lead = min(lo, lead_max)
            audio = self.synthesize_window(mels[:, :, lo - lead:hi], self.noise_frames(z, lo, hi), lead)
            yield audio[:, (start - lo) * hop:(end - lo) * hop]

    def _chunked(self, mels, z, chunk_frames: int, overlap: int, crossfade: int) -> torch.Tensor:
        hop, n_frames = self.hop_length, mels.size(2)
        lead_max = self.lead_frames()
        out = mels.new_zeros(mels.size(0), n_frames * hop)
        half = crossfade // 2
        ramp = (torch.arange(crossfade, device=mels.device, dtype=mels.dtype) + 0.5) / max(crossfade, 1)
        for start in range(0, n_frames, chunk_frames):
            end = min(n_frames, start + chunk_frames)
            lo, hi = max(0, start - overlap), min(n_frames, end + overlap)
            lead = min(lo, lead_max)
            audio = self.synthesize_window(mels[:, :, lo - lead:hi], self.noise_frames(z, lo, hi), lead)
            # This chunk's share: its own frames plus half a crossfade into each neighbour.
            a = start * hop - (half if start > 0 else 0)
            b = end * hop + (crossfade - half if end < n_frames else 0)
            piece = audio[:, a - lo * hop:b - lo * hop].clone()
            if crossfade:
                if start > 0:
                    piece[:, :crossfade] *= ramp
                if end < n_frames:
                    piece[:, -crossfade:] *= 1 - ramp
            out[:, a:b] += piece
        return out

