"""``flowspeech vocode``: a mel spectrogram (or a wav, for copy-synthesis) to audio with a
neural vocoder checkpoint or Griffin-Lim."""

from __future__ import annotations

from flowspeech.cli.common import PRECISION_CHOICES, add_audio_output_arg, add_seed_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "vocode", help="turn a mel spectrogram (or a wav: copy-synthesis) into audio",
        description="Synthesise audio from a log-mel spectrogram with a vocoder. With --wav the "
        "file is resampled to the vocoder's rate and turned into the mel its config expects "
        "(copy-synthesis), and the log-spectral distance of the result to the input is printed.",
    )
    p.add_argument("--vocoder", required=True,
                   help="a vocoder checkpoint (WaveGlow, FloWaveNet) or griffin-lim")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mel", help="input .npy log-mel spectrogram [n_mels, frames]")
    src.add_argument("--wav", help="input audio file (copy-synthesis)")
    add_audio_output_arg(p)
    p.add_argument("--sigma", type=float, default=None,
                   help="latent standard deviation (default: the model's, 0.6 for WaveGlow)")
    p.add_argument("--denoise", type=float, default=0.0, metavar="STRENGTH",
                   help="WaveGlow bias removal strength in [0, 1] (default 0: off; try 0.1)")
    p.add_argument("--chunk-frames", type=int, default=1024,
                   help="synthesise mels longer than this in chunks of this many frames, so "
                   "memory stays bounded (exact; default 1024)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="float32",
                   help="arithmetic of the neural vocoder's coupling networks (default float32); "
                   "bfloat16 is about twice as fast on CPUs with AVX512-BF16/AMX, float16 is for "
                   "GPUs; the audio and the invertible layers stay in float32")
    p.add_argument("--config", help="griffin-lim only: take the audio settings from this preset or "
                   "YAML (a checkpoint carries its own)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    add_seed_arg(p)
    p.set_defaults(run=run)


def _check_bands(mel, path: str, vocoder, spec: str) -> None:
    from flowspeech.errors import ConfigError

    cfg = vocoder.mel_config
    if mel.shape[0] == cfg.n_mels:
        return
    if mel.shape[1] == cfg.n_mels:
        raise ConfigError(f"mel file {path} has shape {tuple(mel.shape)}: it looks transposed; "
                          f"the vocoder expects [{cfg.n_mels}, frames]")
    raise ConfigError(
        f"mel file {path} has {mel.shape[0]} bands but the vocoder {spec} expects {cfg.n_mels} "
        f"({cfg.sample_rate} Hz, hop {cfg.hop_length}, {cfg.fmin:g}-{cfg.fmax:g} Hz); compute "
        f"the mel with the vocoder's settings, or pass --wav to let vocode compute it")


def run(args) -> int:
    import time

    import torch

    from flowspeech.audio import load_wav, log_spectral_distance, mel_spectrogram, save_wav
    from flowspeech.cli.common import (
        audio_output_path,
        check_audio_output,
        mel_config_from_args,
        resolve_device,
    )
    from flowspeech.errors import ConfigError
    from flowspeech.inference.vocoders import GriffinLimVocoder, load_vocoder
    from flowspeech.utils.files import load_mel_npy

    out = check_audio_output(audio_output_path(args), [args.wav, args.mel, args.vocoder], "--out")
    args.device = resolve_device(args.device)
    griffin = str(args.vocoder) in ("griffin-lim", "griffinlim", "gl")
    if griffin and args.sigma is not None:
        raise ConfigError("--sigma applies to neural vocoders, not griffin-lim")
    if not griffin and args.config:
        raise ConfigError(f"--config applies to griffin-lim only: {args.vocoder} carries its own "
                          f"audio settings")
    t0 = time.perf_counter()
    vocoder = load_vocoder(args.vocoder, mel_config_from_args(args) if griffin else None,
                           device=args.device, sigma=args.sigma, denoise=args.denoise,
                           chunk_frames=args.chunk_frames, precision=args.precision)
    t_load = time.perf_counter() - t0
    cfg = vocoder.mel_config
    reference = None
    if args.wav is not None:
        reference, _ = load_wav(args.wav, sample_rate=cfg.sample_rate, announce=True)
        mel = mel_spectrogram(torch.from_numpy(reference), cfg)
        source = f"the mel of {args.wav}"
    else:
        mel = load_mel_npy(args.mel)
        _check_bands(mel, args.mel, vocoder, args.vocoder)
        mel = torch.from_numpy(mel)
        source = args.mel
    generator = torch.Generator(device=args.device)
    seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
    generator.manual_seed(seed)
    t1 = time.perf_counter()
    mel = mel.to(args.device)
    out_audio = vocoder.vocode(mel[None], torch.tensor([mel.size(1)]), generator)
    wav = out_audio.waveforms[0, :int(out_audio.waveform_lengths[0])].numpy()
    t_synth = time.perf_counter() - t1
    save_wav(out, wav.clip(-1.0, 1.0), cfg.sample_rate)
    seconds = len(wav) / cfg.sample_rate
    kind = "Griffin-Lim" if isinstance(vocoder, GriffinLimVocoder) else vocoder.describe()
    line = (f"{out}: {seconds:.2f} s of audio from {source} ({mel.size(1)} frames) with {kind}; "
            f"load {t_load:.2f} s, synthesis {t_synth:.2f} s (real-time factor "
            f"{t_synth / max(seconds, 1e-9):.2f})")
    if reference is not None:
        lsd = log_spectral_distance(reference, wav)
        line += f"; log-spectral distance to the input {lsd:.2f} dB"
    print(line)
    return 0
