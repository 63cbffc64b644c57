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
    serve_cmd,
    synthesize_cmd,
    text_cmd,
    train_cmd,
    vocode_cmd,
    voices_cmd,
)

# Each command module has register(subparsers) which adds its parser(s) and sets `run`.
COMMAND_MODULES = [synthesize_cmd, text_cmd, audio_cmds, presets_cmd, preprocess_cmd, train_cmd,
                   pretrain_cmd, import_cmd, align_cmd, export_cmd, voices_cmd, vocode_cmd,
                   evaluate_cmd, serve_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowspeech",
        description="Flow-based text-to-speech: Glow-TTS, WaveGlow, FloWaveNet, NaturalSpeech.",
    )
    parser.add_argument("--version", action="version", version=f"flowspeech {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    for sub in subparsers.choices.values():  # `flowspeech CMD ... --debug` works too
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="on an error, show the full traceback instead of one line")
    return parser


def _os_error_line(err: OSError) -> str:
    """One line for a file-system failure: what, where, and what to do."""
    import errno

    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    hint = {errno.ENOSPC: "the disk is full: free some space or write elsewhere",
            errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
            errno.EROFS: "that file system is read-only: write elsewhere",
            errno.EACCES: "you may not write there: choose a folder you own",
            errno.EPERM: "you may not write there: choose a folder you own",
            errno.ENOENT: "check the path"}.get(err.errno)
    return f"{what}:{where}" + (f" ({hint})" if hint else "")


def _show_warning(command: str):
    """Warnings flowspeech gives on purpose as one line each; others as Python shows them."""
    import warnings

    from flowspeech.errors import FlowspeechWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FlowspeechWarning):
            print(f"flowspeech {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    import warnings

    from flowspeech.errors import FlowspeechError

    saved = warnings.showwarning
    warnings.showwarning = _show_warning(args.command)
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as Unix tools do. Point standard
        # output at /dev/null so that the interpreter's final flush does not fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FlowspeechError, OSError) as err:
        if args.debug:
            raise
        line = str(err) if isinstance(err, FlowspeechError) else _os_error_line(err)
        print(f"flowspeech {args.command}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowspeech {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = saved


if __name__ == "__main__":
    sys.exit(main())
