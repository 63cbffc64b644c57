"""``flowspeech mel`` and ``flowspeech griffin-lim``: the audio front end from the shell."""

from __future__ import annotations

from flowspeech.cli.common import (
    add_audio_config_args,
    add_audio_output_arg,
    add_seed_arg,
    audio_output_path,
    check_audio_output,
    check_output,
    mel_config_from_args,
    seed_everything,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mel", help="compute the log-mel spectrogram of a wav (float32 .npy, [n_mels, frames])"
    )
    p.add_argument("wav", help="input audio file (resampled to the config's rate if needed)")
    p.add_argument("out", help="output .npy file")
    add_audio_config_args(p)
    p.set_defaults(run=run_mel)

    g = subparsers.add_parser(
        "griffin-lim",
        help="invert a log-mel spectrogram to audio with Griffin-Lim (no vocoder needed)",
    )
    g.add_argument("mel", help="input .npy log-mel spectrogram [n_mels, frames]")
    add_audio_output_arg(g, positional=True)
    add_audio_config_args(g)
    g.add_argument("--n-iter", type=int, default=None,
                   help="Griffin-Lim iterations (default: the voices' 12)")
    g.add_argument("--init", choices=("pghi", "random"), default="pghi",
                   help="starting phase: phase-gradient heap integration of the magnitude "
                        "(default) or random")
    g.add_argument("--mel-iter", type=int, default=None,
                   help="mel-matching iterations after those (default: the voices' 30; 0: none)")
    g.add_argument("--harmonic-iter", type=int, default=None,
                   help="phase-retrieval iterations restoring the harmonics above the mel's "
                        "resolution after those, each followed by the mel matching again "
                        "(default: the voices', with the mel matching; 0: none)")
    add_seed_arg(g)
    g.set_defaults(run=run_griffin_lim)


def run_mel(args) -> int:
    import numpy as np

    from flowspeech.audio import load_wav, mel_spectrogram
    from flowspeech.errors import FlowspeechError

    if not args.out.endswith(".npy"):
        raise FlowspeechError(f"output {args.out}: mel spectrograms are written as .npy")
    check_output(args.out, [args.wav])
    config = mel_config_from_args(args)
    wav, _ = load_wav(args.wav, sample_rate=config.sample_rate, announce=True)
    import torch

    mel = mel_spectrogram(torch.from_numpy(wav), config).numpy().astype(np.float32)
    from flowspeech.utils.files import atomic_save_npy

    atomic_save_npy(args.out, mel)
    print(f"{args.out}: mel {mel.shape[0]} x {mel.shape[1]} frames "
          f"({len(wav) / config.sample_rate:.2f} s at {config.sample_rate} Hz)")
    return 0


def run_griffin_lim(args) -> int:
    from flowspeech.audio import save_wav
    from flowspeech.audio.griffin_lim import MEL_ITER, N_ITER, describe, griffin_lim
    from flowspeech.utils.files import load_mel_npy

    out = check_audio_output(audio_output_path(args), [args.mel])
    config = mel_config_from_args(args)
    mel = load_mel_npy(args.mel, n_mels=config.n_mels)
    seed_everything(args.seed)
    n_iter = N_ITER if args.n_iter is None else args.n_iter
    mel_iter = MEL_ITER if args.mel_iter is None else args.mel_iter
    wav = griffin_lim(mel, config, n_iter=n_iter, seed=args.seed or 0, init=args.init,
                      mel_iter=mel_iter, harmonic_iter=args.harmonic_iter)
    save_wav(out, wav, config.sample_rate)
    steps = describe(n_iter, args.init, mel_iter, args.harmonic_iter)
    print(f"{out}: {len(wav) / config.sample_rate:.2f} s of audio from Griffin-Lim ({steps})")
    return 0
