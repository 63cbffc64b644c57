"""``flowspeech import MODEL SRC --out CKPT``: convert the authors' published weights."""

from __future__ import annotations

IMPORTERS = {
    "glow-tts": "flowspeech.models.glow_tts_import:import_glow_tts",
    "waveglow": "flowspeech.models.waveglow_import:import_waveglow",
    "flowavenet": "flowspeech.models.flowavenet_import:import_flowavenet",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="convert a checkpoint of the authors' original code to flowspeech",
        description="Read weights published with the original implementation of MODEL and "
        "write a flowspeech checkpoint that gives the same outputs.",
    )
    p.add_argument("model", choices=sorted(IMPORTERS), help="model type")
    p.add_argument("src", help="the authors' checkpoint file")
    p.add_argument("--out", required=True, help="flowspeech checkpoint to write")
    p.add_argument("--config", default=None,
                   help="glow-tts: base (default) or base-blank, the configuration it was trained with")
    p.set_defaults(run=run)


def run(args) -> int:
    import importlib

    module_name, func_name = IMPORTERS[args.model].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    if args.config and args.model != "glow-tts":
        from flowspeech.errors import ConfigError

        raise ConfigError(f"--config applies to glow-tts imports only; {args.model} reads its "
                          f"configuration from the checkpoint's tensors")
    kwargs = {"preset": args.config} if args.config else {}
    config = func(args.src, args.out, **kwargs)
    print(f"{args.out}: {config.get('description', args.model)}")
    return 0
