"""``flowspeech voices``: the voices that ship with the package."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("voices", help="list installed voices (the default is marked *)")
    p.set_defaults(run=run)


def run(args) -> int:
    from flowspeech.voices import DEFAULT_VOICE, list_voices

    voices = list_voices()
    if not voices:
        print("no voice is installed; synthesize with --acoustic CKPT")
        return 0
    for voice in voices:
        mark = "*" if voice.name == DEFAULT_VOICE else " "
        vocoder = voice.vocoder.name if voice.vocoder else "griffin-lim"
        print(f"{mark} {voice.name}  {voice.info.get('description', '')}  (vocoder: {vocoder})")
    return 0
