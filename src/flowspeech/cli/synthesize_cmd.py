"""``flowspeech synthesize``: text to a wav file."""

from __future__ import annotations

from flowspeech.cli.common import PRECISION_CHOICES, add_seed_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synthesize", help="speak text into a wav (or .npy) file",
        description="Synthesise TEXT with a Glow-TTS acoustic model and a vocoder, or with an "
        "end-to-end NaturalSpeech model (--model). Without "
        "--voice or --acoustic the voice shipped with the package is used.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text to speak (long text is split into sentences)")
    src.add_argument("--text-file", help="file with one utterance per line (optionally ID|text)")
    p.add_argument("--out", required=True, help="output .wav / .npy; with --text-file, a folder "
                   "gets one file per line (ID.wav), a file gets all lines joined")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--voice", help="a named voice (see `flowspeech voices`; default: the shipped voice)")
    model.add_argument("--acoustic", help="Glow-TTS checkpoint (instead of a named voice)")
    model.add_argument("--model", help="any text-input checkpoint: Glow-TTS (with --vocoder) or an "
                       "end-to-end NaturalSpeech model (no vocoder)")
    p.add_argument("--vocoder", default="griffin-lim",
                   help="griffin-lim or a vocoder checkpoint (WaveGlow, FloWaveNet); default: the "
                   "voice's own vocoder if it has one, else griffin-lim")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="prior temperature (default: the voice's setting, else 0.667 as the authors' "
                   "code; the paper's listening tests used 0.333)")
    p.add_argument("--length-scale", type=float, default=None,
                   help="speaking rate: > 1 is slower (default: the voice's setting, else 1.0)")
    p.add_argument("--sigma", type=float, default=None, help="vocoder sampling temperature (WaveGlow: 0.6)")
    p.add_argument("--denoise", type=float, default=0.0,
                   help="WaveGlow denoiser strength, 0 (off, default) to 1; try 0.1")
    p.add_argument("--vocoder-precision", choices=PRECISION_CHOICES, default="float32",
                   help="arithmetic of the waveform generator (default float32): a neural "
                   "vocoder's coupling networks (the audio and the invertible layers stay in "
                   "float32), or NaturalSpeech's decoder; bfloat16 is about twice as fast on CPUs "
                   "with AVX512-BF16/AMX, float16 is for GPUs")
    p.add_argument("--speaker", help="speaker name or id (multi-speaker models)")
    p.add_argument("--save-mel", help="also save the acoustic model's mel as .npy [n_mels, frames]")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    add_seed_arg(p)
    p.set_defaults(run=run)


def _read_lines(path: str) -> list[tuple[str, str]]:
    """``(id, text)`` of every non-empty line (``ID|text`` or plain text, whose ID is its line
    number); IDs are checked as file names and must be unique."""
    from pathlib import Path

    from flowspeech.cli.common import check_file_stem
    from flowspeech.errors import FlowspeechError

    try:
        raw = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FlowspeechError(f"cannot read --text-file {path}: {err}") from None
    rows, first_line = [], {}
    for n, line in enumerate(raw, 1):
        if not line.strip():
            continue
        if "|" in line:
            uid, _, text = line.partition("|")
            uid, text = uid.strip(), text.split("|")[-1]
        else:
            uid, text = f"{n:04d}", line
        check_file_stem(uid, f"{path}:{n}")
        if uid in first_line:
            raise FlowspeechError(f"{path}:{n}: the ID {uid!r} is already used on line "
                                  f"{first_line[uid]}; each line needs its own ID (file name)")
        first_line[uid] = n
        rows.append((uid, text.strip()))
    if not rows:
        raise FlowspeechError(f"--text-file {path} has no text")
    return rows


def run(args) -> int:
    import time
    from pathlib import Path

    import numpy as np

    from flowspeech.audio import save_wav
    from flowspeech.cli.common import (
        check_audio_output,
        check_distinct,
        check_output,
        resolve_device,
    )
    from flowspeech.errors import FlowspeechError
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.utils.files import atomic_save_npy

    out = Path(args.out)
    per_line_folder = args.text_file is not None and out.suffix == ""
    inputs = [args.text_file, args.acoustic, args.model, args.vocoder]
    if per_line_folder:
        if args.save_mel:
            raise FlowspeechError("--save-mel writes one file; with a folder for --out, leave it out")
        rows = _read_lines(args.text_file)
        check_output(out / f"{rows[0][0]}.wav", inputs, "--out")
    else:
        check_audio_output(str(out), inputs, "--out")
        if args.save_mel:
            if not args.save_mel.endswith(".npy"):
                raise FlowspeechError(f"--save-mel {args.save_mel}: mel spectrograms are written as .npy")
            check_output(args.save_mel, inputs, "--save-mel")
            check_distinct(out=args.out, save_mel=args.save_mel)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    tts = Synthesizer(args.acoustic or args.model, voice=args.voice, vocoder=args.vocoder, device=device,
                      noise_scale=args.noise_scale, length_scale=args.length_scale, sigma=args.sigma,
                      denoise=args.denoise, vocoder_precision=args.vocoder_precision)
    t_load = time.perf_counter() - t0
    kwargs = {"seed": args.seed, "speaker": args.speaker, "with_mels": args.save_mel is not None}
    t1 = time.perf_counter()
    if per_line_folder:
        total = 0.0
        for uid, text in rows:
            result = tts.synthesize_full(text, **kwargs)
            save_wav(out / f"{uid}.wav", result.waveform, result.sample_rate)
            total += len(result.waveform) / result.sample_rate
        summary = f"{out}/: {total:.2f} s of audio in {len(rows)} files"
    else:
        if args.text_file is not None:
            result = tts.synthesize_sentences([t for _, t in _read_lines(args.text_file)], **kwargs)
        else:
            result = tts.synthesize_full(args.text, **kwargs)
        save_wav(out, result.waveform, result.sample_rate)
        if args.save_mel:
            atomic_save_npy(args.save_mel, np.concatenate(result.mels, axis=1).astype(np.float32))
        total = len(result.waveform) / result.sample_rate
        summary = f"{out}: {total:.2f} s of audio, {len(result.sentences)} sentence(s)"
    t_synth = time.perf_counter() - t1
    voice = f"voice {tts.voice.name!r}: " if tts.voice is not None else ""
    print(f"{summary}; {voice}acoustic model {tts.acoustic_path} ({tts.model_type}: {tts.config.get('description', '')}), "
          f"vocoder {tts.describe_vocoder()}; load {t_load:.2f} s, synthesis {t_synth:.2f} s "
          f"(real-time factor {t_synth / max(total, 1e-9):.2f})")
    return 0
