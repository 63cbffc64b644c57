"""``flowspeech export``: a compact, inference-only copy of a checkpoint, or an ONNX voice."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="strip a training checkpoint to its weights (optionally float16), or "
        "export a voice to ONNX (--onnx)",
        description="Write CKPT's model weights and config without optimiser state, "
        "optionally in float16 (half the size; loaders convert back to float32). Given several "
        "checkpoints of one run, write the mean of their weights (checkpoint averaging). With --onnx, "
        "write a voice (a registered voice name or a Glow-TTS checkpoint, with its vocoder) as "
        "an ONNX voice folder that `flowspeech synthesize --backend onnx` and "
        "flowspeech.runtime run without PyTorch (docs/onnx.md).",
    )
    p.add_argument("checkpoint", metavar="SOURCE", nargs="+",
                   help="flowspeech checkpoint (e.g. RUN/checkpoints/step_*.pt); with --onnx also a voice "
                   "name. Several checkpoints of one run: the mean of their weights (e.g. the last few; "
                   "docs/glow-tts.md)")
    p.add_argument("--out", help="file to write; with --onnx, a new folder (default with --onnx and a "
                   "voice name: the folder `synthesize --backend onnx --voice NAME` reads)")
    p.add_argument("--half", action="store_true", help="store floating-point weights as float16")
    p.add_argument("--weight-average", action="store_true",
                   help="write the checkpoint's moving average of the weights (kept by runs with "
                   "train.weight_average_decay set) instead of its weights")
    p.add_argument("--onnx", action="store_true", help="export to an ONNX voice folder")
    p.add_argument("--vocoder", default=None,
                   help="with --onnx: griffin-lim or a WaveGlow / FloWaveNet checkpoint (default: the "
                   "voice's own vocoder, else griffin-lim)")
    p.add_argument("--winograd", action="store_true",
                   help="with --onnx: compute the Glow-TTS decoder's WaveNet input convolutions by "
                   "Winograd's F(6, k), the same mel to float rounding: Glow-TTS base 1.1-1.35x faster "
                   "end to end, the shipped voice's decoder 12 %%, the file about half as large again "
                   "(docs/onnx.md)")
    p.set_defaults(run=run)


def run(args) -> int:
    import os

    from flowspeech.checkpoints import export_checkpoint
    from flowspeech.cli.common import check_output
    from flowspeech.errors import ConfigError
    from flowspeech.models.registry import inference_state, parameter_names

    if args.onnx and args.weight_average:
        raise ConfigError("--weight-average writes a checkpoint: export that one with --onnx")
    if args.onnx:
        if len(args.checkpoint) > 1:
            raise ConfigError("--onnx exports one voice or checkpoint: average checkpoints "
                              "first (`flowspeech export A.pt B.pt --out mean.pt`), then export that")
        args.checkpoint = args.checkpoint[0]
        return _onnx(args)
    if args.vocoder is not None or args.winograd:
        raise ConfigError("--vocoder and --winograd go with --onnx")
    if args.out is None:
        raise ConfigError("--out is needed: the file to write")
    check_output(args.out, args.checkpoint, "--out")
    info = export_checkpoint(args.checkpoint, args.out, args.half, inference_state, parameter_names,
                             weight_average=args.weight_average)
    what = (f"the mean of {info['averaged']} checkpoints, the last from step {info['step']}"
            if info["averaged"] > 1 else f"from step {info['step']}")
    if args.weight_average:
        what = f"the moving average of the weights, {what}"
    print(f"{args.out}: {info['parameters']:,} values {what}, "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB{' (float16)' if args.half else ''}")
    return 0


def _onnx(args) -> int:
    import time
    from pathlib import Path

    from flowspeech.errors import ConfigError
    from flowspeech.inference.onnx_export import export_onnx, export_voice_to_cache
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.voices import voice_names

    if args.half:
        raise ConfigError("--half is for checkpoints; ONNX voices keep float32 weights")
    source = args.checkpoint
    is_voice = source in voice_names() and not Path(source).is_file()
    if args.out is None and not is_voice:
        raise ConfigError("--out is needed: the folder for the ONNX voice")
    t0 = time.perf_counter()
    if args.out is None:  # a registered voice, into the cache `synthesize --backend onnx` reads
        if args.vocoder is not None or args.winograd:
            raise ConfigError("--vocoder and --winograd go with --out: a voice's cached "
                              "export uses its own vocoder and the default graphs")
        out, config = export_voice_to_cache(source)
    else:
        out = Path(args.out)
        tts = (Synthesizer(voice=source, vocoder=args.vocoder or "griffin-lim") if is_voice
               else Synthesizer(source, vocoder=args.vocoder or "griffin-lim"))
        config = export_onnx(tts, out, winograd=args.winograd)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{out}/: ONNX voice {config['name']!r} ({config['model_type']}, vocoder "
          f"{config['vocoder']['type']}; {', '.join(sorted(g['file'] for g in config['graphs'].values()))}), "
          f"{size:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return 0
