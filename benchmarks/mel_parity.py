"""flowspeech's Glow-TTS/WaveGlow mel against the authors' ``TacotronSTFT``, on real speech.

    python benchmarks/mel_parity.py --reference .ref/glow_tts \\
        [--wavs ../shared/corpus/data/ljspeech_real_sample/wavs]

``--reference`` is a folder holding ``commons.py``, ``stft.py`` and ``audio_processing.py``
from github jaywalnut310/glow-tts (never part of flowspeech). Two patches are needed with
librosa >= 0.10, which refuses positional arguments: their ``librosa_mel_fn(sr, n_fft,
n_mels, fmin, fmax)`` and ``pad_center(window, filter_length)`` calls get the same values by
keyword, and so does their CPU path's ``stft(y, n_fft, hop, win, window)``, with
``pad_mode="reflect"``: librosa 0.10 changed that default to ``"constant"``, which moves
their first and last frames by up to 1.6 nats (their code was written for reflect padding). Their
``STFT.transform`` takes librosa's STFT on the CPU and a convolution with its Fourier basis on
CUDA (NVIDIA's Tacotron 2 ``TacotronSTFT``, which WaveGlow's code uses, always convolves);
both are compared, the second with their basis through ``conv1d`` as their CUDA branch does. Both sides run in
float32, as both codes do, on the LJSpeech clips; the report splits the bins by their level:
near the log floor (``log(1e-5)``) a float32 rounding of either FFT moves the log most.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from flowspeech.audio import MelConfig, mel_spectrogram

ROOT = Path(__file__).resolve().parent.parent
PAD_MODE = "reflect"  # librosa's default before 0.10, which the authors' code assumes


def authors_stft(folder: Path):
    sys.path.insert(0, str(folder))
    import commons  # the authors' modules
    import librosa
    import stft

    commons.librosa_mel_fn = lambda sr, n_fft, n_mels, fmin, fmax: librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    stft.pad_center = lambda data, size: librosa.util.pad_center(data, size=size)
    stft.stft = lambda y, n_fft, hop, win, window: librosa.stft(
        y, n_fft=n_fft, hop_length=hop, win_length=win, window=window, pad_mode=PAD_MODE)
    return commons.TacotronSTFT(1024, 256, 1024, 80, 22050, 0.0, 8000.0)


def authors_conv_mel(theirs, x: torch.Tensor) -> np.ndarray:
    """Their STFT's CUDA branch on the CPU: reflect padding, conv1d with ``forward_basis``."""
    fn = theirs.stft_fn
    padded = torch.nn.functional.pad(x[None, None, None], (fn.filter_length // 2,) * 2 + (0, 0),
                                     mode="reflect")[:, 0]
    spec = torch.nn.functional.conv1d(padded, fn.forward_basis, stride=fn.hop_length)
    cut = fn.filter_length // 2 + 1
    magnitude = torch.sqrt(spec[:, :cut] ** 2 + spec[:, cut:] ** 2)
    return theirs.spectral_normalize(torch.matmul(theirs.mel_basis, magnitude))[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--wavs", type=Path,
                        default=ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "wavs")
    args = parser.parse_args()
    theirs = authors_stft(args.reference)
    config = MelConfig.glow_tts()
    paths = sorted(args.wavs.glob("*.wav"))
    if not paths:
        raise SystemExit(f"no wavs in {args.wavs}")
    floor = np.log(1e-5)
    results, count = {}, 0
    for path in paths:
        audio, sr = sf.read(path, dtype="float32")
        assert sr == config.sample_rate, path
        x = torch.from_numpy(audio)
        ours = mel_spectrogram(x, config).numpy()
        with torch.no_grad():
            refs = {"CPU path (librosa STFT)": theirs.mel_spectrogram(x[None])[0].numpy(),
                    "CUDA path (conv1d with their basis)": authors_conv_mel(theirs, x)}
        for name, ref in refs.items():
            n = min(ours.shape[1], ref.shape[1])
            d = np.abs(ours[:, :n] - ref[:, :n])
            low = ref[:, :n] < floor + 3  # within 3 nats (a factor of 20) of the floor
            stats = results.setdefault(name, {"all": 0.0, "speech": 0.0, "floor": 0.0, "mean": []})
            stats["all"] = max(stats["all"], float(d.max()))
            stats["speech"] = max(stats["speech"], float(d[~low].max()) if (~low).any() else 0.0)
            stats["floor"] = max(stats["floor"], float(d[low].max()) if low.any() else 0.0)
            stats["mean"].append(float(d.mean()))
        count += ours.size
    print(f"{len(paths)} clips, {count:,} mel bins; |ours - authors'| in nats of log-mel, float32 "
          f"on both sides:")
    print("| their path | max, all bins | max, bins > 3 nats above the floor | max, near the floor | mean |")
    print("|---|---:|---:|---:|---:|")
    for name, stats in results.items():
        print(f"| {name} | {stats['all']:.1e} | {stats['speech']:.1e} | {stats['floor']:.1e} | "
              f"{np.mean(stats['mean']):.1e} |")


if __name__ == "__main__":
    main()
