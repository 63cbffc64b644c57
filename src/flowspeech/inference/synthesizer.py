"""Text in, waveform out: the Python front door of flowspeech.

    >>> from flowspeech import Synthesizer
    >>> tts = Synthesizer("runs/glow-tts/checkpoints/step_00100000.pt", vocoder="griffin-lim")
    >>> waveform, sample_rate = tts.synthesize("Hello world.")

Long text is split into sentences, which are synthesised as one padded batch and joined
with a short pause. Randomness (the prior's temperature) is drawn from a generator seeded
per call, so ``seed=`` reproduces a result exactly.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowspeech.audio import mel_spectrogram
from flowspeech.config import mel_config
from flowspeech.data import SpeakerTable
from flowspeech.errors import ConfigError, FlowspeechError, TextChangedWarning
from flowspeech.inference.loading import load_model
from flowspeech.inference.vocoders import load_vocoder, precision_dtype
from flowspeech.models.registry import Role
from flowspeech.text import TextFrontend, split_sentences
from flowspeech.text.normalize import describe_changes
from flowspeech.voices import default_voice, get_voice


@dataclass
class SynthesisResult:
    waveform: np.ndarray     # float32 [samples]
    sample_rate: int
    mels: list[np.ndarray]   # one [n_mels, frames] per sentence (end-to-end models: if asked)
    sentences: list[str]
    timings: dict[str, float] | None = None  # seconds per stage: text, acoustic, vocoder


# Outside these the output is silence, noise or minutes per word: a typo, not a setting.
SCALE_LIMITS = {"noise_scale": (0.0, 10.0), "length_scale": (0.1, 10.0)}


def check_scale(name: str, value) -> float:
    """``value`` as a float within :data:`SCALE_LIMITS`, else a ConfigError naming it."""
    low, high = SCALE_LIMITS[name]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        usual = "1.0, the model's own pace" if name == "length_scale" else "0.667, the usual"
        raise ConfigError(f"{name} must lie in [{low:g}, {high:g}] ({usual}), got {value:g}")
    return value


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
        sentence_pause: seconds of silence between sentences.
        max_seconds: longest audio one sentence may produce (guards against runaway
            durations on odd input).
    """

    def __init__(self, acoustic: str | Path | None = None, vocoder: str | Path = "griffin-lim",
                 device: str | torch.device = "cpu", noise_scale: float | None = None,
                 length_scale: float | None = None, sigma: float | None = None, denoise: float = 0.0,
                 sentence_pause: float = 0.2, max_seconds: float = 30.0, batch_size: int = 16,
                 voice: str | None = None, vocoder_precision: str = "float32"):
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
                             speaker: str | int | None = None, with_mels: bool = True) -> SynthesisResult:
        """Synthesise each string as one utterance and join them with pauses.

        ``with_mels=False`` leaves ``mels`` empty for end-to-end models, which make no mel and
        would otherwise compute one from the waveform (the first call imports librosa, about a
        second)."""
        if not sentences:
            raise FlowspeechError("nothing to synthesise: the text is empty")
        noise_scale = self.noise_scale if noise_scale is None else check_scale("noise_scale", noise_scale)
        length_scale = self.length_scale if length_scale is None else check_scale("length_scale", length_scale)
        for note in describe_changes(" ".join(sentences)):
            warnings.warn(note, TextChangedWarning, stacklevel=2)
        t0 = time.perf_counter()
        ids = [self.frontend.encode(s) for s in sentences]
        timings = {"text": time.perf_counter() - t0, "acoustic": 0.0, "vocoder": 0.0}
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,))))
        mels, waves = [], []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            lengths = torch.tensor([len(x) for x in chunk], device=self.device)
            tokens = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long, device=self.device)
            for i, x in enumerate(chunk):
                tokens[i, : len(x)] = torch.tensor(x, device=self.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.infer(
                    tokens, lengths, speakers=self._speaker_ids(speaker, len(chunk)),
                    noise_scale=noise_scale, length_scale=length_scale,
                    generator=generator, max_frames=self.max_frames)
            t1 = time.perf_counter()
            timings["acoustic"] += t1 - t0
            if self.end_to_end:
                for i, n in enumerate(out.waveform_lengths.tolist()):
                    w = out.waveforms[i, :n].float().cpu()
                    waves.append(w.numpy())
                    if with_mels:
                        mels.append(mel_spectrogram(w, self.mel_config).numpy())
                continue
            vocoded = self.vocoder.vocode(out.mels, out.mel_lengths, generator)
            timings["vocoder"] += time.perf_counter() - t1
            waves.extend(vocoded.waveforms[i, :n].numpy() for i, n in enumerate(vocoded.waveform_lengths.tolist()))
            mels.extend(out.mels[i, :, :n].float().cpu().numpy() for i, n in enumerate(out.mel_lengths.tolist()))
        pause = np.zeros(int(self.sentence_pause * self.sample_rate), dtype=np.float32)
        pieces = []
        for i, w in enumerate(waves):
            if i:
                pieces.append(pause)
            pieces.append(np.asarray(w, dtype=np.float32))
        waveform = np.clip(np.concatenate(pieces), -1.0, 1.0)
        return SynthesisResult(waveform, self.sample_rate, mels, list(sentences), timings)

    def synthesize_full(self, text: str, **kwargs) -> SynthesisResult:
        """Like :meth:`synthesize`, also returning the mels and the sentence split."""
        sentences = split_sentences(text, max_chars=min(300, self.frontend.max_chars))
        return self.synthesize_sentences(sentences, **kwargs)

    def synthesize(self, text: str, **kwargs) -> tuple[np.ndarray, int]:
        """``text`` -> ``(waveform float32 [samples], sample_rate)``. Keyword arguments:
        ``noise_scale``, ``length_scale``, ``seed``, ``speaker``."""
        result = self.synthesize_full(text, with_mels=False, **kwargs)
        return result.waveform, result.sample_rate
