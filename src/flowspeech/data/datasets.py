"""Torch datasets over a :class:`~flowspeech.data.Manifest` and the feature cache.

* :class:`TextMelDataset`: (tokens, mel) pairs for Glow-TTS (Kim et al., 2020).
* :class:`AudioMelDataset`: random waveform segments and their mel frames for vocoders
  (WaveGlow, Prenger et al., 2019, Sec. 3.1; FloWaveNet, Kim et al., 2019).
* :class:`TextAudioDataset`: tokens, waveform, linear and mel spectrograms for end-to-end
  models (VITS, Kim et al., 2021; NaturalSpeech, Tan et al., 2022).

Every dataset has ``lengths`` (frames, or samples for :class:`AudioMelDataset`) computed from
the audio headers, for :class:`~flowspeech.data.BucketBatchSampler`, and ``skipped``, the rows
of the manifest and of its own checks that were left out (each logged).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from flowspeech.audio import MelConfig
from flowspeech.data.features import FeatureCache, resampled_length
from flowspeech.data.manifest import Manifest, SkippedRow, Utterance, audio_header, report_skipped
from flowspeech.data.speakers import SpeakerTable
from flowspeech.errors import AudioError, ConfigError, DatasetError, TextError


class TextEncoder(Protocol):
    """What the datasets need of a text front end (:class:`flowspeech.text.TextFrontend`)."""

    def encode(self, text: str) -> list[int]: ...


def _skipped_row(utt: Utterance, reason: str) -> SkippedRow:
    source, _, line = utt.origin.rpartition(":")
    return SkippedRow(source or str(utt.audio_path), int(line) if line.isdigit() else 0, reason)


class _ClipDataset(Dataset):
    """Shared part: the manifest's clips long enough to frame, their lengths, the cache."""

    def __init__(self, manifest: Manifest, mel_config: MelConfig, cache_dir=None):
        self.mel_config = mel_config
        self.cache = FeatureCache(mel_config, cache_dir, manifest.root)
        self.manifest = manifest
        self.skipped: list[SkippedRow] = list(manifest.skipped)
        self._own_skipped: list[SkippedRow] = []
        self.utterances: list[Utterance] = []
        samples: list[int] = []
        for utt in manifest.utterances:
            n = self._num_samples(utt)
            if n < 0:
                continue  # unreadable, already reported
            if mel_config.n_frames(n) == 0:
                rate = mel_config.sample_rate
                self._skip(utt, f"clip too short to frame: {n} samples at {rate} Hz")
                continue
            self.utterances.append(utt)
            samples.append(n)
        self.num_samples = np.asarray(samples, dtype=np.int64)

    def _num_samples(self, utt: Utterance) -> int:
        """Clip length at the feature sample rate, from the header (no decoding)."""
        n, sr = utt.num_samples, utt.sample_rate
        if n is None or sr is None:
            try:
                n, sr = audio_header(utt.audio_path)
            except (RuntimeError, OSError, ValueError, EOFError) as err:
                return self._unreadable(utt, err)
        return resampled_length(int(n), int(sr), self.mel_config.sample_rate)

    def _unreadable(self, utt: Utterance, err: Exception) -> int:
        self._skip(utt, f"audio file {utt.audio_path} is unreadable ({err})")
        return -1

    def _skip(self, utt: Utterance, reason: str) -> None:  # also used by _TextMixin
        row = _skipped_row(utt, reason)
        self._own_skipped.append(row)
        self.skipped.append(row)

    def _finish(self) -> None:
        """Report this dataset's own skipped rows; fail if nothing is left."""
        report_skipped(self._own_skipped, self.manifest.source)
        if not self.utterances:
            first = self.skipped[0] if self.skipped else "-"
            raise DatasetError(
                f"no usable utterance left in {self.manifest.source} "
                f"({len(self.skipped)} rows skipped; first: {first})"
            )

    def _frames(self) -> np.ndarray:
        """``[N]`` spectrogram frames of each clip."""
        frames = [self.mel_config.n_frames(int(n)) for n in self.num_samples]
        return np.array(frames, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.utterances]


class _TextMixin:
    """Tokens of every transcript, encoded once at construction, and speaker ids."""

    utterances: list[Utterance]

    def _encode_texts(self, frontend: TextEncoder, speakers: SpeakerTable | None) -> None:
        if speakers is None:
            speakers = SpeakerTable.from_labels(u.speaker for u in self.utterances)
        self.speakers = speakers
        keep, tokens, speaker_ids = [], [], []
        for i, utt in enumerate(self.utterances):
            try:
                speaker_id = speakers.id(utt.speaker)
            except ConfigError as err:
                self._skip(utt, str(err))
                continue
            try:
                ids = frontend.encode(utt.text)
            except TextError as err:
                self._skip(utt, f"text rejected: {err}")
                continue
            if len(ids) == 0:
                self._skip(utt, "text rejected: it encodes to no tokens")
                continue
            keep.append(i)
            tokens.append(np.asarray(ids, dtype=np.int64))
            speaker_ids.append(speaker_id)
        self.utterances = [self.utterances[i] for i in keep]
        self.num_samples = self.num_samples[np.asarray(keep, dtype=np.int64)]
        # One flat array instead of a list of small ones: DataLoader workers forked from this
        # process share it without copy-on-access reference-count churn.
        self._token_offsets = np.cumsum([0] + [len(t) for t in tokens]).astype(np.int64)
        self._tokens = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64)
        self.speaker_ids = np.asarray(speaker_ids, dtype=np.int64)

    def tokens(self, index: int) -> torch.Tensor:
        """``LongTensor [L]``: token ids of item ``index``."""
        start, end = self._token_offsets[index], self._token_offsets[index + 1]
        return torch.from_numpy(self._tokens[start:end].copy())

    @property
    def token_lengths(self) -> np.ndarray:
        """``[N]`` number of tokens of each item."""
        return np.diff(self._token_offsets)


class TextMelDataset(_TextMixin, _ClipDataset):
    """Transcript tokens and log-mel spectrograms, for text-to-mel models (Glow-TTS).

    Args:
        manifest: the dataset (:func:`~flowspeech.data.load_manifest`).
        frontend: text front end; ``frontend.encode(text)`` gives the token ids (a
            :class:`flowspeech.text.TextFrontend`). Rows it rejects with ``TextError`` are
            skipped and reported.
        mel_config: feature settings; default ``MelConfig.glow_tts()``.
        cache_dir: feature cache folder; default ``<dataset>/.flowspeech_cache/<hash>``.
        speakers: speaker table; default built from the manifest's labels. Rows whose
            speaker it lacks are skipped and reported.

    Item:
        ``{"id": str, "tokens": LongTensor [L], "mel": FloatTensor [n_mels, F],
        "speaker": int}``; batch with :func:`~flowspeech.data.collate_text_mel`.

    Attributes:
        lengths: ``[N]`` mel frames per item (from the audio headers).
        skipped: rows left out, with file, line and reason.
        speakers: the :class:`SpeakerTable` used.
    """

    def __init__(
        self,
        manifest: Manifest,
        frontend: TextEncoder,
        mel_config: MelConfig | None = None,
        cache_dir=None,
        speakers: SpeakerTable | None = None,
    ):
        super().__init__(manifest, mel_config or MelConfig.glow_tts(), cache_dir)
        self._encode_texts(frontend, speakers)
        self.lengths = self._frames()
        self._finish()

    def __getitem__(self, index: int) -> dict[str, Any]:
        utt = self.utterances[index]
        return {
            "id": utt.id,
            "tokens": self.tokens(index),
            "mel": torch.from_numpy(self.cache.mel(utt)),
            "speaker": int(self.speaker_ids[index]),
        }


class TextAudioDataset(_TextMixin, _ClipDataset):
    """Tokens, waveform, linear and mel spectrograms, for end-to-end models (VITS-style).

    NaturalSpeech's posterior encoder reads the linear spectrogram, its losses the mel
    spectrogram and the waveform (Tan et al., 2022, Sec. 3); both spectrograms come from the
    cache and have the same frames.

    Args:
        manifest, frontend, cache_dir, speakers: as :class:`TextMelDataset`.
        mel_config: feature settings; default ``MelConfig.vits()``.

    Item:
        ``{"id", "tokens": LongTensor [L], "audio": FloatTensor [T], "linear":
        FloatTensor [n_fft // 2 + 1, F], "mel": FloatTensor [n_mels, F], "speaker": int}``;
        batch with :func:`~flowspeech.data.collate_text_audio`. The waveform is the whole
        clip at ``mel_config.sample_rate``; frame ``t`` covers samples from ``t * hop``.

    Attributes:
        lengths: ``[N]`` spectrogram frames per item.
    """

    def __init__(
        self,
        manifest: Manifest,
        frontend: TextEncoder,
        mel_config: MelConfig | None = None,
        cache_dir=None,
        speakers: SpeakerTable | None = None,
    ):
        super().__init__(manifest, mel_config or MelConfig.vits(), cache_dir)
        self._encode_texts(frontend, speakers)
        self.lengths = self._frames()
        self._finish()

    def __getitem__(self, index: int) -> dict[str, Any]:
        utt = self.utterances[index]
        features = self.cache.get(utt, ("mel", "linear"))
        return {
            "id": utt.id,
            "tokens": self.tokens(index),
            "audio": torch.from_numpy(self.cache.audio(utt)),
            "linear": torch.from_numpy(features["linear"]),
            "mel": torch.from_numpy(features["mel"]),
            "speaker": int(self.speaker_ids[index]),
        }


class AudioMelDataset(_ClipDataset):
    """Random waveform segments with exactly their mel frames, for vocoders (WaveGlow).

    WaveGlow trains on random 16000-sample segments of each clip with the matching mel
    frames (Prenger et al., 2019, Sec. 3.1). Here the start is a multiple of the hop, so
    frame ``j`` of the item's mel is frame ``k + j`` of the clip's cached mel, centred on
    sample ``j * hop`` of the segment (``"center"`` padding; for ``"vits"`` padding it covers
    ``[j * hop, (j + 1) * hop)`` plus the window overlap): the mel is the clip's own, without
    the edge effects of framing a cut-out segment. Clips shorter than the segment are padded
    with zeros at the end and their mel computed on the padded segment (as WaveGlow does).

    The start is drawn from ``numpy.random.default_rng([seed, epoch, index])``: the same item
    of the same epoch is always the same segment, whatever the worker or the order, so a
    resumed run sees exactly what it would have. Call :meth:`set_epoch` before each epoch
    (with ``persistent_workers=True`` workers keep the epoch they started with).

    Args:
        manifest: the dataset.
        mel_config: feature settings; default ``MelConfig.glow_tts()``.
        segment_length: samples per item (``S``); None gives whole clips (evaluation).
        cache_dir: feature cache folder.
        seed: base of the segment choice.

    Item:
        ``{"id", "audio": FloatTensor [S], "mel": FloatTensor [n_mels, S // hop]}``; batch
        with :func:`~flowspeech.data.collate_audio_mel`.

    Attributes:
        lengths: ``[N]`` samples per clip.
    """

    def __init__(
        self,
        manifest: Manifest,
        mel_config: MelConfig | None = None,
        segment_length: int | None = 16000,
        cache_dir=None,
        seed: int = 0,
    ):
        config = mel_config or MelConfig.glow_tts()
        shortest = max(config.hop_length, config.min_samples)
        if segment_length is not None and segment_length < shortest:
            raise ConfigError(
                f"segment_length {segment_length} is shorter than one frame "
                f"(hop {config.hop_length}, at least {config.min_samples} samples)"
            )
        super().__init__(manifest, config, cache_dir)
        self.segment_length = segment_length
        self.seed = int(seed)
        self.epoch = 0
        self.lengths = self.num_samples.copy()
        self._finish()

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose segments the next items come from."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        utt = self.utterances[index]
        if self.segment_length is None:
            audio, mel = self.cache.audio(utt), self.cache.mel(utt)
            return {"id": utt.id, "audio": torch.from_numpy(audio), "mel": torch.from_numpy(mel)}
        size, hop = self.segment_length, self.mel_config.hop_length
        n_mel = size // hop
        n = int(self.num_samples[index])
        if n < size:
            audio = self.cache.audio(utt)
            segment = np.pad(audio[:size], (0, size - min(len(audio), size)))
            mel = self.cache.compute(segment, "mel")[:, :n_mel]
            return {"id": utt.id, "audio": torch.from_numpy(segment), "mel": torch.from_numpy(mel)}
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.integers(0, (n - size) // hop + 1))
        mel = self.cache.mel(utt)[:, k:k + n_mel]
        segment = self.cache.audio(utt, start=k * hop, length=size)
        if len(segment) < size or mel.shape[1] < n_mel:  # the header overstated the length
            raise AudioError(
                f"audio file {utt.audio_path} is shorter than its header says ({n} samples)"
            )
        mel = torch.from_numpy(np.ascontiguousarray(mel))
        return {"id": utt.id, "audio": torch.from_numpy(segment), "mel": mel}
