"""``flowspeech export``: a compact, inference-only copy of a checkpoint."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="strip a training checkpoint to its weights (optionally float16)",
        description="Write CKPT's model weights and config without optimiser state, "
        "optionally in float16 (half the size; loaders convert back to float32).",
    )
    p.add_argument("checkpoint", help="flowspeech checkpoint (e.g. RUN/checkpoints/step_*.pt)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--half", action="store_true", help="store floating-point weights as float16")
    p.set_defaults(run=run)


def run(args) -> int:
    import os

    from flowspeech.checkpoints import export_checkpoint
    from flowspeech.cli.common import check_output
    from flowspeech.models.registry import inference_state

    check_output(args.out, [args.checkpoint], "--out")
    info = export_checkpoint(args.checkpoint, args.out, args.half, inference_state)
    print(f"{args.out}: {info['parameters']:,} values from step {info['step']}, "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB{' (float16)' if args.half else ''}")
    return 0
