"""Text in, waveform out: the Python front door of flowspeech.

    >>> from flowspeech import Synthesizer
    >>> tts = Synthesizer("runs/glow-tts/checkpoints/step_00100000.pt", vocoder="griffin-lim")
    >>> waveform, sample_rate = tts.synthesize("Hello world.")

    >>> for chunk in tts.stream("A long text. Of many sentences."):
    ...     play(chunk.samples)            # audio as it is made, with its sentence and times

Long text is split into sentences, which are synthesised as one padded batch and joined
with a short pause. A call's ``seed`` gives every sentence its own random stream
(:func:`~flowspeech.utils.noise.utterance_generators`), so a sentence sounds the same
whether it is synthesised in a batch or streamed, and ``seed=`` reproduces a result exactly.
The result carries when each sentence, word and phoneme is spoken (:mod:`timestamps
<flowspeech.inference.timestamps>`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowspeech.audio import mel_spectrogram
from flowspeech.config import mel_config
from flowspeech.data import SpeakerTable
from flowspeech.errors import ConfigError, FlowspeechError, TextChangedWarning
from flowspeech.inference.controls import check_scale
from flowspeech.inference.loading import load_model
from flowspeech.inference.timestamps import Timestamps, sentence_timestamps
from flowspeech.inference.vocoders import load_vocoder, precision_dtype
from flowspeech.models.registry import Role
from flowspeech.text import TextFrontend, split_sentences
from flowspeech.text.normalize import describe_changes
from flowspeech.utils.durations import DurationRounding
from flowspeech.utils.noise import utterance_generators
from flowspeech.voices import default_voice, get_voice


@dataclass
class SynthesisResult:
    waveform: np.ndarray     # float32 [samples]
    sample_rate: int
    mels: list[np.ndarray]   # one [n_mels, frames] per sentence (end-to-end models: if asked)
    sentences: list[str]
    timings: dict[str, float] | None = None  # seconds per stage: text, acoustic, vocoder
    timestamps: Timestamps = field(default_factory=Timestamps)  # sentences, words, phonemes


@dataclass
class AudioChunk:
    """A piece of streamed audio (:meth:`Synthesizer.stream`)."""

    samples: np.ndarray   # float32 [n], in [-1, 1]
    sample_rate: int
    sentence: int         # index of the sentence it belongs to (a pause before it included)
    start: float          # seconds from the start of the stream
    end: float
    timestamps: Timestamps | None = None  # the sentence's spans, on its first chunk


# Outside these the output is silence, noise or minutes per word: a typo, not a setting.


def _seed(seed: int | None) -> int:
    return int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))


class Synthesizer:
    """Acoustic model + vocoder.

    Args:
        acoustic: a Glow-TTS checkpoint (trained with ``flowspeech train`` or converted with
            ``flowspeech import``), an end-to-end NaturalSpeech checkpoint (which needs no
            vocoder), or None for a named voice.
        voice: name of a shipped or user-registered voice (:mod:`flowspeech.voices`), used
            when ``acoustic`` is None; None means the default voice.
        vocoder: ``"griffin-lim"`` or a vocoder checkpoint (WaveGlow, FloWaveNet).
        device: ``"cpu"``, ``"cuda"``...
        noise_scale: prior temperature (0.667 as the authors' code; 0.333 in the paper's
            tests); None: the voice's own setting (its ``voice.json`` ``inference``) or 0.667.
        sigma: neural vocoder temperature (WaveGlow's default 0.6).
        denoise: WaveGlow bias-removal strength (0 = off, the authors' default; try 0.1).
        vocoder_precision: arithmetic of the waveform generator, ``"float32"``, ``"bfloat16"``
            or ``"float16"``: a neural vocoder's coupling networks (see
            :class:`~flowspeech.inference.vocoders.NeuralVocoder`), or an end-to-end model's
            waveform decoder (NaturalSpeech's HiFi-GAN generator).
        length_scale: > 1 speaks slower; None: the voice's setting or 1.0.
        duration_rounding: how a Glow-TTS model turns predicted durations into frames
            (:class:`~flowspeech.utils.durations.DurationRounding` or its dict); None: the
            voice's setting, else the model's own (the authors' ceiling).
        sentence_pause: seconds of silence between sentences.
        max_seconds: longest audio one sentence may produce (guards against runaway
            durations on odd input).
    """

    def __init__(self, acoustic: str | Path | None = None, vocoder: str | Path = "griffin-lim",
                 device: str | torch.device = "cpu", noise_scale: float | None = None,
                 length_scale: float | None = None, sigma: float | None = None, denoise: float = 0.0,
                 sentence_pause: float = 0.2, max_seconds: float = 30.0, batch_size: int = 16,
                 voice: str | None = None, vocoder_precision: str = "float32",
                 duration_rounding: DurationRounding | dict | None = None):
        self.device = torch.device(device)
        self.voice = None
        if acoustic is None:
            self.voice = get_voice(voice) if voice is not None else default_voice()
            acoustic = self.voice.acoustic
            if str(vocoder) == "griffin-lim" and self.voice.vocoder is not None:
                vocoder = self.voice.vocoder
        elif voice is not None:
            raise ConfigError("pass either acoustic or voice, not both")
        self.acoustic_path = str(acoustic)
        self.model, payload = load_model(acoustic, device=self.device,
                                         roles=(Role.TEXT_TO_MEL, Role.TEXT_TO_WAVEFORM))
        self.model_type = payload["model_type"]
        self.config = payload["config"]
        self.frontend = TextFrontend(**self.config.get("text", {}))
        self.mel_config = mel_config(self.config)
        speakers = (payload.get("inference") or {}).get("speakers")
        self.speakers = SpeakerTable.from_dict(speakers) if speakers else None
        if str(vocoder) == "griffin-lim" and (sigma is not None or denoise):
            raise ConfigError("sigma and denoise apply to neural vocoders, not Griffin-Lim")
        if self.end_to_end:
            if str(vocoder) != "griffin-lim":
                raise ConfigError(f"{acoustic} is an end-to-end {self.model_type!r} model: it makes "
                                  f"the waveform itself, so do not pass a vocoder")
            self.vocoder = None
            if precision_dtype(vocoder_precision) != torch.float32:
                self.model.set_waveform_dtype(precision_dtype(vocoder_precision))
        elif str(vocoder) == "griffin-lim" and vocoder_precision != "float32":
            raise ConfigError("the vocoder precision applies to neural vocoders, not Griffin-Lim")
        else:
            self.vocoder = (load_vocoder(vocoder, self.mel_config, self.device)
                            if str(vocoder) == "griffin-lim"
                            else load_vocoder(vocoder, self.mel_config, self.device, sigma, denoise=denoise,
                                              precision=vocoder_precision))
        if self.vocoder is not None and self.vocoder.mel_config != self.mel_config:
            raise ConfigError(
                f"the vocoder expects other features than the acoustic model makes "
                f"(vocoder {self.vocoder.mel_config}, acoustic model {self.mel_config}); use a "
                f"vocoder trained on the same audio settings")
        # Explicit arguments win, then what the voice was evaluated with, then the authors' defaults.
        voice_defaults = (self.voice.info.get("inference") or {}) if self.voice is not None else {}
        self.noise_scale = check_scale("noise_scale", noise_scale if noise_scale is not None
                                       else voice_defaults.get("noise_scale", 0.667))
        self.length_scale = check_scale("length_scale", length_scale if length_scale is not None
                                        else voice_defaults.get("length_scale", 1.0))
        rounding = (duration_rounding if duration_rounding is not None
                    else voice_defaults.get("duration_rounding"))
        if rounding is not None:
            if self.model.duration_rounding is None:
                raise ConfigError(f"a {self.model_type} model does not round its durations per "
                                  f"token: duration_rounding applies to Glow-TTS voices")
            self.model.duration_rounding = (rounding if isinstance(rounding, DurationRounding)
                                            else DurationRounding.from_dict(rounding))
        self.duration_rounding = self.model.duration_rounding
        self.sentence_pause = sentence_pause
        self.max_frames = int(max_seconds * self.mel_config.sample_rate / self.mel_config.hop_length)
        self.batch_size = batch_size

    @property
    def end_to_end(self) -> bool:
        """True for text-to-waveform models (NaturalSpeech): no separate vocoder."""
        return self.model.role == Role.TEXT_TO_WAVEFORM

    def describe_vocoder(self) -> str:
        return "the model's own waveform decoder" if self.vocoder is None else self.vocoder.describe()

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def _speaker_ids(self, speaker: str | int | None, n: int):
        if self.model.n_speakers <= 1:
            if speaker not in (None, 0, "0"):
                raise ConfigError("this voice has one speaker; do not pass a speaker")
            return None
        if speaker is None:
            raise ConfigError("this is a multi-speaker model: choose a speaker"
                              + (f" ({', '.join(self.speakers.names[:10])})" if self.speakers else ""))
        sid = self.speakers.id(str(speaker)) if self.speakers is not None else int(speaker)
        return torch.full((n,), sid, dtype=torch.long, device=self.device)

    def synthesize_sentences(self, sentences: list[str], *, noise_scale: float | None = None,
                             length_scale: float | None = None, seed: int | None = None,
                             speaker: str | int | None = None, with_mels: bool = True,
                             progress=None) -> SynthesisResult:
        """Synthesise each string as one utterance and join them with pauses.

        ``progress``, if given, is called with the number of sentences done after each batch.

        ``with_mels=False`` leaves ``mels`` empty for end-to-end models, which make no mel and
        would otherwise compute one from the waveform (the first call imports librosa, about a
        second)."""
        noise_scale, length_scale = self._controls(sentences, noise_scale, length_scale)
        t0 = time.perf_counter()
        ids = [self.frontend.encode(s) for s in sentences]
        timings = {"text": time.perf_counter() - t0, "acoustic": 0.0, "vocoder": 0.0}
        generators = utterance_generators(_seed(seed), len(sentences))
        mels, waves, durations = [], [], []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            rows = generators[start:start + len(chunk)]
            tokens, lengths = self._tokens(chunk)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.infer(
                    tokens, lengths, speakers=self._speaker_ids(speaker, len(chunk)),
                    noise_scale=noise_scale, length_scale=length_scale,
                    generator=rows, max_frames=self.max_frames)
            t1 = time.perf_counter()
            timings["acoustic"] += t1 - t0
            durations += [out.durations[i, :n].float().cpu() for i, n in enumerate(lengths.tolist())]
            if self.end_to_end:
                for i, n in enumerate(out.waveform_lengths.tolist()):
                    w = out.waveforms[i, :n].float().cpu()
                    waves.append(w.numpy())
                    if with_mels:
                        mels.append(mel_spectrogram(w, self.mel_config).numpy())
                if progress is not None:
                    progress(len(chunk))
                continue
            vocoded = self.vocoder.vocode(out.mels, out.mel_lengths, rows)
            timings["vocoder"] += time.perf_counter() - t1
            waves.extend(vocoded.waveforms[i, :n].numpy() for i, n in enumerate(vocoded.waveform_lengths.tolist()))
            mels.extend(out.mels[i, :, :n].float().cpu().numpy() for i, n in enumerate(out.mel_lengths.tolist()))
            if progress is not None:
                progress(len(chunk))
        pause = np.zeros(self._pause_samples(), dtype=np.float32)
        pieces, stamps, position = [], Timestamps(), 0
        for i, (sentence, w, d) in enumerate(zip(sentences, waves, durations)):
            if i:
                pieces.append(pause)
                position += len(pause)
            pieces.append(np.asarray(w, dtype=np.float32))
            stamps.extend(self._timestamps(sentence, i, d, position, len(w)))
            position += len(w)
        waveform = np.clip(np.concatenate(pieces), -1.0, 1.0)
        return SynthesisResult(waveform, self.sample_rate, mels, list(sentences), timings, stamps)

    def stream(self, text: str, *, noise_scale: float | None = None, length_scale: float | None = None,
               seed: int | None = None, speaker: str | int | None = None, sigma: float | None = None,
               chunk_seconds: float = 0.35, max_chunk_seconds: float = 6.0) -> Iterator[AudioChunk]:
        """Synthesise ``text`` as a stream of :class:`AudioChunk`: sentence by sentence, and
        inside a sentence in pieces: the stream's first piece ``chunk_seconds`` long, for an
        early start, and every other piece up to ``max_chunk_seconds`` (large, so that the
        context each piece recomputes costs little; each is ready long before the audio before
        it has played). A sentence's first chunk carries its timestamps. Joined, the chunks are :meth:`synthesize` of the same text and seed: to
        float rounding with a neural vocoder or an end-to-end model, and within a small
        log-spectral distance with Griffin-Lim, which has no exact local form.

        Keyword arguments as :meth:`synthesize`; ``sigma`` overrides a neural vocoder's latent
        standard deviation for this call. A sentence that cannot be spoken raises
        before any of its audio; the chunks already given stand.
        """
        sentences = self.split(text)
        noise_scale, length_scale = self._controls(sentences, noise_scale, length_scale)
        generators = utterance_generators(_seed(seed), len(sentences))
        per_frame = self.sample_rate / self.mel_config.hop_length
        first = max(1, math.ceil(chunk_seconds * per_frame))
        largest = max(first, math.ceil(max_chunk_seconds * per_frame))
        pause = np.zeros(self._pause_samples(), dtype=np.float32)
        position = 0
        mels: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # sentence -> (mel, durations)
        for i, sentence in enumerate(sentences):
            # Only the start of the stream needs a small piece: later sentences are made while
            # earlier ones play, in pieces as large as allowed (no context recomputed).
            head = first if i == 0 else largest
            with torch.inference_mode():
                if self.end_to_end:
                    tokens, lengths = self._tokens([self.frontend.encode(sentence)])
                    durations, n_samples, pieces = self.model.stream(
                        tokens, lengths, chunk_frames=head, max_chunk_frames=largest,
                        speakers=self._speaker_ids(speaker, 1), noise_scale=noise_scale,
                        length_scale=length_scale, generator=[generators[i]], max_frames=self.max_frames)
                    n_samples = int(n_samples[0])
                    pieces = (p[0].float().cpu().numpy() for p in pieces)
                else:
                    if i not in mels:
                        # The first sentence alone, for an early start; then the next ones in
                        # batches while the audio plays (per-sentence generators: the same mels).
                        group = range(i, min(len(sentences), i + (1 if i == 0 else self.batch_size)))
                        tokens, lengths = self._tokens([self.frontend.encode(sentences[j]) for j in group])
                        out = self.model.infer(
                            tokens, lengths, speakers=self._speaker_ids(speaker, len(group)),
                            noise_scale=noise_scale, length_scale=length_scale,
                            generator=[generators[j] for j in group], max_frames=self.max_frames)
                        for k, j in enumerate(group):
                            n = int(out.mel_lengths[k])
                            mels[j] = (out.mels[k:k + 1, :, :n], out.durations[k:k + 1])
                    mel, durations = mels.pop(i)
                    n_samples = self._vocoded_length(mel.size(2))
                    pieces = self.vocoder.stream(mel, [generators[i]], head, largest, sigma=sigma)
            lead = pause if i else pause[:0]
            stamps = self._timestamps(sentence, i, durations[0].float().cpu(), position + len(lead), n_samples)
            for k, piece in enumerate(pieces):
                samples = np.clip(np.asarray(piece, dtype=np.float32), -1.0, 1.0)
                if k == 0:
                    samples = np.concatenate([lead, samples])
                yield AudioChunk(samples, self.sample_rate, i, position / self.sample_rate,
                                 (position + len(samples)) / self.sample_rate, stamps if k == 0 else None)
                position += len(samples)

    # --- helpers ---------------------------------------------------------------------------
    def _controls(self, sentences: list[str], noise_scale: float | None,
                  length_scale: float | None) -> tuple[float, float]:
        """The call's scales (checked, else the voice's), after refusing empty text and
        warning about what normalisation changed in it."""
        if not sentences:
            raise FlowspeechError("nothing to synthesise: the text is empty")
        noise_scale = self.noise_scale if noise_scale is None else check_scale("noise_scale", noise_scale)
        length_scale = self.length_scale if length_scale is None else check_scale("length_scale", length_scale)
        for note in describe_changes(" ".join(sentences)):
            warnings.warn(note, TextChangedWarning, stacklevel=3)  # at the caller of the public method
        return noise_scale, length_scale

    def _tokens(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in ids], device=self.device)
        tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long, device=self.device)
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = torch.tensor(x, device=self.device)
        return tokens, lengths

    def _pause_samples(self) -> int:
        return int(self.sentence_pause * self.sample_rate)

    def _vocoded_length(self, n_frames: int) -> int:
        """Samples the vocoder makes of ``n_frames`` (Griffin-Lim's centred frames: one hop
        fewer)."""
        hop = self.mel_config.hop_length
        if self.vocoder.name == "griffin-lim" and self.mel_config.padding == "center":
            return (n_frames - 1) * hop
        return n_frames * hop

    def _timestamps(self, sentence: str, index: int, durations: torch.Tensor, start: int,
                    n_samples: int) -> Timestamps:
        sr = self.sample_rate
        return sentence_timestamps(self.frontend, sentence, index, durations.numpy(),
                                   self.mel_config.hop_length / sr, start / sr, n_samples / sr)

    def split(self, text: str) -> list[str]:
        """The sentences :meth:`synthesize` and :meth:`stream` make of ``text``."""
        return split_sentences(text, max_chars=min(300, self.frontend.max_chars))

    def synthesize_full(self, text: str, **kwargs) -> SynthesisResult:
        """Like :meth:`synthesize`, also returning the mels, the sentence split and the
        timestamps."""
        return self.synthesize_sentences(self.split(text), **kwargs)

    def synthesize(self, text: str, **kwargs) -> tuple[np.ndarray, int]:
        """``text`` -> ``(waveform float32 [samples], sample_rate)``. Keyword arguments:
        ``noise_scale``, ``length_scale``, ``seed``, ``speaker``."""
        result = self.synthesize_full(text, with_mels=False, **kwargs)
        return result.waveform, result.sample_rate
