"""An ONNX voice folder (``flowspeech export --onnx``) run with onnxruntime.

The pipeline is :class:`flowspeech.Synthesizer`'s for a Glow-TTS voice, on the exported graphs:
text -> sentences -> token ids -> ``encoder.onnx`` -> durations (``length_scale``, rounded up
as the model does) -> ``decoder.onnx`` with the prior noise -> mels -> the vocoder
(``vocoder.onnx`` with its latent noise, or Griffin-Lim in numpy) -> sentences joined with a
pause. Noise comes from numpy's generator: a seed reproduces this runtime's output; the graphs
given the PyTorch model's noise reproduce its output (the tests check both).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowspeech.audio.harmonics import pitch_tracker
from flowspeech.audio.phase import STARTS, pghi_phase
from flowspeech.errors import CheckpointError, ConfigError, FlowspeechError
from flowspeech.inference.controls import check_scale
from flowspeech.inference.timestamps import Timestamps, sentence_timestamps
from flowspeech.runtime.griffin_lim import GriffinLim, MelMatch, fft, mel_to_magnitude, sparse
from flowspeech.text import TextFrontend, split_sentences
from flowspeech.utils.durations import DurationRounding, check_duration_scale
from flowspeech.utils.files import sha256_file

FORMAT, FORMAT_VERSION, CONFIG_NAME = "flowspeech-onnx", 1, "voice.onnx.json"


def is_onnx_voice(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with an ONNX voice's config."""
    return (Path(path) / CONFIG_NAME).is_file()


@dataclass
class RuntimeChunk:
    """One sentence's audio, as :meth:`OnnxVoice.stream` yields it (the fields of
    :class:`flowspeech.inference.synthesizer.AudioChunk`)."""

    samples: np.ndarray  # float32 [n], the pause before it included
    sample_rate: int
    sentence: int
    start: float         # seconds from the start of the stream
    end: float
    timestamps: Timestamps | None = None  # the sentence's words and phonemes


def session_options(threads: int, spinning: bool = True):
    """onnxruntime's session options for a voice's graphs on ``threads`` intra-op threads
    (``spinning`` False: the threads sleep between operators, for comparison).

    With several threads, they spin between operators within a run and stop at its end
    (``session.force_spinning_stop``): waking a sleeping thread for each of a flow decoder's
    hundreds of small parallel operators costs more than many of them take (Glow-TTS base's
    decoder graph, two cores: 38.9 ms spinning, 44.0 ms sleeping), and a thread that went on
    spinning after the run would take a core from Griffin-Lim. Spinning threads do compete
    with other work during a run, so sentences made side by side run on one-thread sessions
    instead (:meth:`OnnxVoice._side_by_side_sessions`; docs/onnx.md)."""
    import onnxruntime as ort  # lazy: is_onnx_voice and the package import run without it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OnnxVoice:
    """A Glow-TTS voice (with Griffin-Lim, WaveGlow or FloWaveNet) or a NaturalSpeech model on
    onnxruntime.

    Args:
        folder: the voice folder.
        threads: onnxruntime's intra-op threads and Griffin-Lim's FFT workers (None: all
            cores). A text of one sentence takes them all; with several, the sentences are
            made side by side, one thread each, on one-thread copies of the graphs' sessions
            that the first such text loads (about 0.15 s for the shipped voice, 0.5 s for
            Glow-TTS base).
        verify: check each file's SHA-256 against the config (a second or so for a large
            voice; off when the folder is trusted).

    Raises:
        CheckpointError: a missing, unreadable or mismatched file, or a graph the installed
            onnxruntime cannot run (the message names the file, and the opset it needs).
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None, verify: bool = True):
        self.folder = Path(folder)
        config_path = self.folder / CONFIG_NAME
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{self.folder} is not an ONNX voice: it has no {CONFIG_NAME} "
                                  f"(make one with flowspeech export --onnx)") from None
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {config_path}: {err}") from None
        if self.config.get("format") != FORMAT:
            raise CheckpointError(f"{config_path} is not a flowspeech ONNX voice config")
        if self.config.get("version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{config_path} is format version {self.config['version']}; this "
                                  f"flowspeech reads up to {FORMAT_VERSION}: upgrade flowspeech")
        graphs = self.config.get("graphs", {})
        for role in graphs:
            self._check_file(role, graphs[role], verify)
        self.frontend = TextFrontend(**self.config.get("text", {}))
        # The text front end's dictionary and the FFT module load in a thread while the graphs
        # load here (onnxruntime works without the GIL): a cold start is that much shorter.
        self._warming = threading.Thread(target=self._warm, name="flowspeech-warm", daemon=True)
        self._warming.start()
        import onnxruntime as ort  # lazy: is_onnx_voice and the package import run without it

        cores = os.cpu_count() or 1
        self.threads = threads or cores
        self.sessions = self._sessions(ort, self.threads)
        self._one_thread_sessions = self.sessions if self.threads == 1 else None
        self._one_thread_lock = threading.Lock()
        for needed in ("encoder", "decoder"):
            if needed not in self.sessions:
                raise CheckpointError(f"{config_path} names no {needed} graph")
        inference = self.config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.sentence_pause = float(inference.get("sentence_pause", 0.2))
        self.max_frames = int(inference.get("max_frames", 2584))
        self.duration_rounding = DurationRounding.from_dict(inference.get("duration_rounding"))
        try:
            self.duration_scale = check_duration_scale(inference.get("duration_scale", 1.0))
        except ConfigError as err:
            raise CheckpointError(f"{config_path}: inference.{err}") from None
        self.sample_rate = int(self.config["sample_rate"])
        self.hop_length = int(self.config["hop_length"])
        self.n_mels, self.n_sqz = int(self.config["n_mels"]), int(self.config.get("n_sqz", 2))
        self.vocoder = self.config["vocoder"]
        self.sup_tokenizer = None
        if self.config.get("sup_phoneme_tokenizer"):
            from flowspeech.text.sup_phonemes import SupPhonemeTokenizer  # lazy: NaturalSpeech only

            self.sup_tokenizer = SupPhonemeTokenizer.from_json(self.config["sup_phoneme_tokenizer"])
        if self.vocoder["type"] == "end-to-end":
            pass  # NaturalSpeech: the decoder graph makes the waveform
        elif self.vocoder["type"] == "griffin-lim":
            self.basis = np.load(self.folder / graphs["mel_basis"]["file"], allow_pickle=False)
            # Voices exported before the PGHI start name none: random phases, as then.
            self.vocoder.setdefault("init", "random")
            if self.vocoder["init"] not in STARTS:
                raise CheckpointError(f"{config_path}: unknown Griffin-Lim start "
                                      f"{self.vocoder['init']!r} ({' or '.join(STARTS)})")
            # Voices exported before the mel-matching iterations or the harmonic restoration
            # name none: none, as then.
            self.vocoder.setdefault("mel_iter", 0)
            self.vocoder.setdefault("harmonic_iter", 0)
            match = MelMatch(self.basis, self.vocoder["compression"], self.vocoder["magnitude_eps"],
                             self.vocoder["power"], self.vocoder.get("log_clamp", 1e-5))
            settings = (self.vocoder["n_fft"], self.hop_length, self.vocoder["win_length"], self.vocoder["padding"],
                        self.vocoder["pad"], self.vocoder["n_iter"], self.vocoder["momentum"])
            extra = {"mel_iter": self.vocoder["mel_iter"], "mel_match": match,
                     "mel_momentum": self.vocoder.get("mel_momentum", 0.9),
                     "harmonic_iter": self.vocoder["harmonic_iter"],
                     "sample_rate": self.sample_rate}
            self.griffin_lim = GriffinLim(*settings, workers=self.threads, **extra)
            # for sentences side by side
            self._single_griffin_lim = GriffinLim(*settings, workers=1, **extra)
        elif "vocoder" not in self.sessions:
            raise CheckpointError(f"{config_path}: a {self.vocoder['type']} voice needs its vocoder graph")
        self.name = self.config.get("name", self.folder.name)

    def _warm(self) -> None:
        try:
            self.frontend.encode("a")
            fft()
            sparse()
            if self.vocoder.get("harmonic_iter"):
                pitch_tracker()
        except Exception:  # noqa: BLE001 - any real problem shows again on first use
            pass

    # --- files ---------------------------------------------------------------------------------
    def _check_file(self, role: str, entry: dict, verify: bool) -> None:
        path = self.folder / entry["file"]
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the ONNX voice {self.folder} needs its {role} file")
        if verify and "sha256" in entry:
            if sha256_file(path) != entry["sha256"]:
                raise CheckpointError(f"{path} does not match {CONFIG_NAME} (its SHA-256 differs): the "
                                      f"folder mixes files of different exports; export the voice again")

    def _sessions(self, ort, threads: int) -> dict:
        """A session for each graph of the folder, with :func:`session_options`."""
        options = session_options(threads)
        return {role: self._session(ort, self.folder / entry["file"], options)
                for role, entry in self.config.get("graphs", {}).items() if entry["file"].endswith(".onnx")}

    def _side_by_side_sessions(self) -> dict:
        """One-thread sessions of the graphs, for sentences made side by side (a core each);
        loaded on the first text of several sentences."""
        with self._one_thread_lock:
            if self._one_thread_sessions is None:
                import onnxruntime as ort  # lazy: as in __init__

                self._one_thread_sessions = self._sessions(ort, 1)
        return self._one_thread_sessions

    def _session(self, ort, path: Path, options):
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            message = str(err).splitlines()[0][:300]
            opset = self.config.get("opset")
            if "opset" in message.lower() or "version" in message.lower():
                raise CheckpointError(f"{path}: this onnxruntime ({ort.__version__}) cannot run it: "
                                      f"{message}. The voice needs ONNX opset {opset}: onnxruntime 1.14 "
                                      f"or later") from None
            raise CheckpointError(f"{path} cannot be loaded by onnxruntime {ort.__version__}: {message}") from None

    # --- synthesis -----------------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        return split_sentences(text, max_chars=min(300, self.frontend.max_chars))

    def synthesize(self, text: str, *, noise_scale: float | None = None, length_scale: float | None = None,
                   sigma: float | None = None, seed: int | None = None,
                   speaker: int | None = None) -> tuple[np.ndarray, int]:
        """``text`` -> ``(float32 waveform, sample_rate)``."""
        pieces = [c.samples for c in self.stream(text, noise_scale=noise_scale, length_scale=length_scale,
                                                  sigma=sigma, seed=seed, speaker=speaker)]
        return np.concatenate(pieces), self.sample_rate

    def stream(self, text: str, *, noise_scale: float | None = None, length_scale: float | None = None,
               sigma: float | None = None, seed: int | None = None,
               speaker: int | None = None) -> Iterator[RuntimeChunk]:
        """The audio sentence by sentence, each as soon as it is made."""
        self._warming.join()
        sentences = self.split(text)
        if not sentences:
            raise FlowspeechError("nothing to synthesise: the text is empty")
        noise_scale = self.noise_scale if noise_scale is None else check_scale("noise_scale", noise_scale)
        length_scale = self.length_scale if length_scale is None else check_scale("length_scale", length_scale)
        if sigma is not None and self.vocoder["type"] in ("griffin-lim", "end-to-end"):
            raise ConfigError("sigma applies to neural vocoders, not Griffin-Lim or an end-to-end model")
        seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        pause = np.zeros(int(self.sentence_pause * self.sample_rate), dtype=np.float32)

        def make(i: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng([seed, i])  # each sentence its own stream
            sessions = self.sessions if workers == self.threads else self._side_by_side_sessions()
            if self.vocoder["type"] == "end-to-end":
                return self._waveform(sentences[i], noise_scale, length_scale, rng, sessions)
            mel, durations = self._mel(sentences[i], noise_scale, length_scale, rng, speaker, sessions)
            return self.vocode(mel, rng, sigma, workers), durations

        # One sentence takes every core (the graphs' threads, Griffin-Lim in frame slices);
        # several are made side by side, a core each (one-thread graph sessions), which spends
        # nothing on joining slices or waking threads (Griffin-Lim makes about 1.4x the audio
        # per second that way on two cores). Each sentence is then what it would be made alone
        # on one core; the first arrives a little later.
        parallel = len(sentences) > 1 and self.threads > 1
        pool = ThreadPoolExecutor(max_workers=self.threads) if parallel else None
        try:
            pending = [pool.submit(make, i, 1) for i in range(len(sentences))] if parallel else None
            position = 0
            for i, sentence in enumerate(sentences):
                audio, durations = pending[i].result() if parallel else make(i, self.threads)
                audio = np.clip(audio, -1.0, 1.0)
                samples = np.concatenate([pause, audio]) if i else audio
                stamps = sentence_timestamps(self.frontend, sentence, i, durations,
                                             self.hop_length / self.sample_rate,
                                             (position + len(samples) - len(audio)) / self.sample_rate,
                                             len(audio) / self.sample_rate)
                yield RuntimeChunk(samples, self.sample_rate, i, position / self.sample_rate,
                                   (position + len(samples)) / self.sample_rate, stamps)
                position += len(samples)
        finally:
            if pool is not None:  # a reader that stops early: the sentences not begun are dropped
                pool.shutdown(wait=True, cancel_futures=True)

    def mel(self, sentence: str, noise_scale: float, length_scale: float, rng: np.random.Generator,
            speaker: int | None = None) -> np.ndarray:
        """One sentence's mel ``[n_mels, F]``."""
        return self._mel(sentence, noise_scale, length_scale, rng, speaker)[0]

    def _mel(self, sentence: str, noise_scale: float, length_scale: float, rng: np.random.Generator,
             speaker: int | None = None, sessions: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One sentence's mel and the frames each token got (the durations cut where the
        frames end, as the decoder's path cuts them), on ``sessions`` (None: the voice's)."""
        sessions = self.sessions if sessions is None else sessions
        ids = np.asarray([self.frontend.encode(sentence)], dtype=np.int64)
        speakers = self._speakers(speaker)
        mean, log_scale, log_durations, text_mask = sessions["encoder"].run(
            None, {"tokens": ids, "token_lengths": np.asarray([ids.shape[1]], np.int64), **speakers})
        durations = self.duration_rounding.frames(log_durations, text_mask, length_scale, np)[:, 0]
        durations = durations.astype(np.float32)
        n_frames = max(self.n_sqz, int(durations.sum()) // self.n_sqz * self.n_sqz)
        if n_frames > self.max_frames:
            raise FlowspeechError(f"synthesis would produce {n_frames} frames, over the limit of "
                                  f"{self.max_frames}: split the text into shorter sentences")
        noise = rng.standard_normal((1, self.n_mels, n_frames), dtype=np.float32)
        (mels,) = sessions["decoder"].run(None, {
            "mean": mean, "log_scale": log_scale, "durations": durations,
            "mel_lengths": np.asarray([n_frames], np.int64), "noise": noise,
            "noise_scale": np.asarray(noise_scale, np.float32), **speakers})
        ends = np.minimum(np.cumsum(durations[0]), n_frames)
        return mels[0], np.diff(ends, prepend=0.0)

    def _waveform(self, sentence: str, noise_scale: float, length_scale: float,
                  rng: np.random.Generator, sessions: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """NaturalSpeech: one sentence's waveform and its (fractional) durations in frames, on
        ``sessions`` (None: the voice's)."""
        sessions = self.sessions if sessions is None else sessions
        ids = self.frontend.encode(sentence)
        feeds = {"tokens": np.asarray([ids], np.int64), "token_lengths": np.asarray([len(ids)], np.int64)}
        if self.sup_tokenizer is not None:
            feeds["sup_tokens"] = np.asarray([self.sup_tokenizer.sup_ids(ids)], np.int64)
        h, text_mask, log_durations = sessions["encoder"].run(None, feeds)
        durations = (np.exp(log_durations) * text_mask[:, 0]
                     * np.float32(self.duration_scale * length_scale)).astype(np.float32)
        n_frames = max(1, int(np.round(durations.sum(dtype=np.float32))))
        if n_frames > self.max_frames:
            raise FlowspeechError(f"synthesis would produce {n_frames} frames, over the limit of "
                                  f"{self.max_frames}: split the text into shorter sentences")
        noise = rng.standard_normal((1, int(self.vocoder["latent_channels"]), n_frames), dtype=np.float32)
        (audio,) = sessions["decoder"].run(None, {
            "h": h, "durations": durations, "text_mask": text_mask,
            "frame_lengths": np.asarray([n_frames], np.int64), "noise": noise,
            "noise_scale": np.asarray(noise_scale, np.float32)})
        return audio[0], durations[0]

    def starting_phase(self, magnitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Griffin-Lim's starting phase for ``magnitude``, in turns: the PGHI phase, or random
        phases for voices exported before the PGHI start (no ``init`` in their settings)."""
        if self.vocoder["init"] == "pghi":
            return pghi_phase(magnitude, self.vocoder["n_fft"], self.hop_length,
                              self.vocoder["win_length"])
        return rng.random(magnitude.shape, dtype=np.float32)

    def vocode(self, mel: np.ndarray, rng: np.random.Generator, sigma: float | None = None,
               workers: int | None = None) -> np.ndarray:
        """Waveform of one mel ``[n_mels, F]``; ``workers``: Griffin-Lim's threads (None: the
        voice's); a vocoder graph runs on the voice's threads, or on one for any other number."""
        if self.vocoder["type"] == "griffin-lim":
            workers = self.threads if workers is None else workers
            magnitude = mel_to_magnitude(mel, self.basis, self.vocoder["compression"],
                                         self.vocoder["magnitude_eps"], self.vocoder["power"], workers=workers)
            phase = self.starting_phase(magnitude, rng)
            invert = self.griffin_lim if workers == self.threads else self._single_griffin_lim
            return invert(magnitude, phase, mel)
        n_frames = mel.shape[1]
        samples = n_frames * self.hop_length
        channels = self.vocoder["noise_channels"]
        shape = (1, channels, samples // channels) if channels else (1, samples)
        noise = rng.standard_normal(shape, dtype=np.float32)
        sigma = self.vocoder["sigma"] if sigma is None else check_scale("sigma", sigma)
        sessions = self.sessions if workers in (None, self.threads) else self._side_by_side_sessions()
        (audio,) = sessions["vocoder"].run(None, {"mels": mel[None].astype(np.float32), "noise": noise,
                                                       "sigma": np.asarray(sigma, np.float32)})
        return audio[0]

    def _speakers(self, speaker: int | None) -> dict[str, np.ndarray]:
        if int(self.config.get("n_speakers", 0)) <= 1:
            if speaker not in (None, 0):
                raise ConfigError("this voice has one speaker; do not pass a speaker")
            return {}
        if speaker is None:
            raise ConfigError("this is a multi-speaker voice: choose a speaker")
        return {"speakers": np.asarray([int(speaker)], np.int64)}

