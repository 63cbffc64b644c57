"""``flowspeech presets``: every preset with its model type and exact parameter count."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "presets", help="list model presets: NAME  TYPE  N_PARAMS",
        description="List every preset in flowspeech/configs with its model type and exact "
        "parameter count (models are built on the meta device: nothing is allocated).",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="also print each description")
    p.set_defaults(run=run)


def run(args) -> int:
    from flowspeech.config import list_presets, load_config
    from flowspeech.models.registry import count_parameters

    rows = []
    for name in list_presets():
        config = load_config(name)
        rows.append((name, config["model"], count_parameters(config), config.get("description", "")))
    width = max((len(r[0]) for r in rows), default=4)
    type_width = max((len(r[1]) for r in rows), default=4)
    for name, model_type, n_params, description in rows:
        line = f"{name:<{width}}  {model_type:<{type_width}}  {n_params}"
        if args.verbose and description:
            line += f"  # {description}"
        print(line)
    return 0
