"""``flowspeech voices``: list, show, add and remove named voices."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "voices", help="list installed voices (the default is marked *); add/show/remove",
        description="Without a subcommand, list the shipped and user-registered voices. User "
        "voices live in $FLOWSPEECH_VOICES (default ~/.local/share/flowspeech/voices); "
        "`flowspeech synthesize --voice NAME` speaks with one.",
    )
    p.set_defaults(run=run_list)
    sub = p.add_subparsers(dest="voices_command", metavar="SUBCOMMAND")
    add = sub.add_parser("add", help="register a trained Glow-TTS (and vocoder) as a named voice")
    add.add_argument("name")
    add.add_argument("--acoustic", required=True, help="Glow-TTS checkpoint")
    add.add_argument("--vocoder", help="WaveGlow or FloWaveNet checkpoint (default: Griffin-Lim)")
    add.add_argument("--description", default="", help="one line shown by `flowspeech voices`")
    add.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    add.add_argument("--overwrite", action="store_true", help="replace a user voice of that name")
    add.add_argument("--noise-scale", type=float, help="the voice's default prior temperature")
    add.add_argument("--length-scale", type=float, help="the voice's default speaking rate")
    add.add_argument("--duration-rounding", choices=("ceil", "round"),
                     help="how the voice rounds predicted durations to frames (default: ceil, the "
                          "Glow-TTS authors'; see benchmarks/duration_rounding.py --corpus)")
    add.add_argument("--duration-scale", type=float, default=1.0,
                     help="with --duration-rounding: the duration predictor's calibration, aligned "
                          "over predicted frames on held-out data (default 1)")
    add.set_defaults(run=run_add)
    show = sub.add_parser("show", help="print a voice's files and voice.json")
    show.add_argument("name")
    show.set_defaults(run=run_show)
    remove = sub.add_parser("remove", help="delete a user voice")
    remove.add_argument("name")
    remove.set_defaults(run=run_remove)


def run_list(args) -> int:
    from flowspeech.voices import DEFAULT_VOICE, list_voices, user_voices_dir

    voices = list_voices()
    if not voices:
        print(f"no voice is installed; synthesize with --acoustic CKPT, or register one with "
              f"`flowspeech voices add NAME --acoustic CKPT` (stored in {user_voices_dir()})")
        return 0
    width = max(len(v.name) for v in voices)
    for voice in voices:
        mark = "*" if voice.name == DEFAULT_VOICE else " "
        vocoder = "vocoder.pt" if voice.vocoder else "griffin-lim"
        print(f"{mark} {voice.name:<{width}}  {voice.source:<7}  {voice.info.get('description', '')}"
              f"  (vocoder: {vocoder})")
    return 0


def run_add(args) -> int:
    from flowspeech.utils.durations import DurationRounding
    from flowspeech.voices import register_voice

    rounding = (DurationRounding(args.duration_rounding, args.duration_scale).to_dict()
                if args.duration_rounding else None)
    voice = register_voice(args.name, args.acoustic, args.vocoder, args.description, args.half,
                           args.overwrite, {"noise_scale": args.noise_scale,
                                            "length_scale": args.length_scale,
                                            "duration_rounding": rounding})
    print(f"registered voice {voice.name!r} in {voice.folder}; speak with "
          f"`flowspeech synthesize --voice {voice.name} --text ... --out x.wav`")
    return 0


def run_show(args) -> int:
    import json

    from flowspeech.voices import get_voice

    voice = get_voice(args.name)
    print(f"{voice.name} ({voice.source}) in {voice.folder}")
    for path in sorted(voice.folder.iterdir()):
        print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB")
    print(json.dumps(voice.info, indent=2))
    return 0


def run_remove(args) -> int:
    from flowspeech.voices import remove_voice

    print(f"removed {remove_voice(args.name)}")
    return 0
