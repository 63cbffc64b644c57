"""``flowspeech text``: show what the text front end makes of a sentence."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "text",
        help="print normalised text, phonemes and token ids",
        description="Run the text front end on TEXT and print each stage: a debugging aid.",
    )
    p.add_argument("text", help="the text to process")
    p.add_argument("--config", help="take the front-end options from this preset or YAML file")
    p.add_argument("--symbols", default=None, help="symbol set: glow-tts (default) or ipa")
    p.add_argument("--phonemizer", default=None, help="cmudict, espeak or none (default: cmudict for glow-tts, espeak for ipa)")
    p.add_argument("--add-blank", action="store_true", default=None, help="intersperse blanks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def frontend_options(args) -> dict:
    """Front-end options: the config's `text` section, overridden by explicit flags."""
    options: dict = {}
    if args.config:
        from flowspeech.config import load_config

        options.update(load_config(args.config).get("text", {}))
    options.setdefault("symbol_set", "glow-tts")
    if args.symbols is not None:
        options["symbol_set"] = args.symbols
    if args.phonemizer is not None:
        options["phonemizer"] = args.phonemizer
    if args.add_blank:
        options["add_blank"] = True
    return options


def run(args) -> int:
    import warnings

    from flowspeech.errors import TextChangedWarning
    from flowspeech.text import TextFrontend
    from flowspeech.text.normalize import describe_changes

    for note in describe_changes(args.text):
        warnings.warn(note, TextChangedWarning, stacklevel=1)
    frontend = TextFrontend(**frontend_options(args))
    normalized = frontend.normalize(args.text)
    phonemes = frontend.phonemize(args.text)
    ids = frontend.encode(args.text)
    if args.json:
        import json

        print(json.dumps({"normalized": normalized, "phonemes": phonemes, "ids": ids,
                          "tokens": frontend.tokens(args.text)}))
    else:
        print(f"normalized: {normalized}")
        print(f"phonemes:   {phonemes}")
        print(f"ids ({len(ids)}): {' '.join(map(str, ids))}")
    return 0
