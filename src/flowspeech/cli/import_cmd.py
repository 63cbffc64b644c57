"""``flowspeech import MODEL SRC --out CKPT``: convert the authors' published weights."""

from __future__ import annotations

from flowspeech.models.registry import model_specs  # a plain table: no heavy imports


def _importable(plugins: bool = True) -> dict:
    return {s.name: s for s in model_specs(plugins=plugins) if s.importer is not None}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="convert a checkpoint of the authors' original code to flowspeech",
        description="Read weights published with the original implementation of MODEL and "
        "write a flowspeech checkpoint that gives the same outputs.",
    )
    p.add_argument("model", metavar="MODEL",
                   help=f"model type: {', '.join(_importable(plugins=False))}, or one a plugin registers")
    p.add_argument("src", help="the authors' checkpoint file")
    p.add_argument("--out", required=True, help="flowspeech checkpoint to write")
    p.add_argument("--config", default=None,
                   help="glow-tts: base (default) or base-blank, the configuration it was trained with")
    p.set_defaults(run=run)


def run(args) -> int:
    from flowspeech.errors import ConfigError
    from flowspeech.models.registry import resolve

    importable = _importable()
    if args.model not in importable:
        raise ConfigError(f"nothing imports {args.model!r} checkpoints; importable model types: "
                          f"{', '.join(importable)}")
    spec = importable[args.model]
    if args.config and "preset" not in spec.import_options:
        raise ConfigError(f"--config applies to {', '.join(s.name for s in _importable().values() if 'preset' in s.import_options)} "
                          f"imports only; {args.model} reads its configuration from the checkpoint's tensors")
    kwargs = {"preset": args.config} if args.config else {}
    config = resolve(spec.importer)(args.src, args.out, **kwargs)
    print(f"{args.out}: {config.get('description', args.model)}")
    return 0
