"""The ``flowspeech`` command.

Start-up time matters (``flowspeech --help`` must answer in well under a second), so this
module and the command modules it loads import nothing heavy at module level: each
command imports torch, librosa and the models inside its ``run`` function.
"""

from __future__ import annotations

import argparse
import sys

from flowspeech import __version__
from flowspeech.cli import (
    align_cmd,
    audio_cmds,
    evaluate_cmd,
    export_cmd,
    import_cmd,
    preprocess_cmd,
    presets_cmd,
    pretrain_cmd,
    synthesize_cmd,
    text_cmd,
    train_cmd,
    vocode_cmd,
    voices_cmd,
)

# Each command module has register(subparsers) which adds its parser(s) and sets `run`.
COMMAND_MODULES = [synthesize_cmd, text_cmd, audio_cmds, presets_cmd, preprocess_cmd, train_cmd,
                   pretrain_cmd, import_cmd, align_cmd, export_cmd, voices_cmd, vocode_cmd,
                   evaluate_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowspeech",
        description="Flow-based text-to-speech: Glow-TTS, WaveGlow, FloWaveNet, NaturalSpeech.",
    )
    parser.add_argument("--version", action="version", version=f"flowspeech {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from flowspeech.errors import FlowspeechError

    try:
        return int(args.run(args) or 0)
    except FlowspeechError as err:
        print(f"flowspeech {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowspeech {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
