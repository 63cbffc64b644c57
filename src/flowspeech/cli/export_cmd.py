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


def export_checkpoint(src, out, half: bool = False) -> dict:
    import torch

    from flowspeech.training.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(src)
    state = payload["model"]
    from flowspeech.models.registry import MODELS, model_class

    if payload.get("model_type") in MODELS:  # e.g. a GAN checkpoint keeps only its generator
        cls = model_class(payload["model_type"])
        if hasattr(cls, "inference_state_dict"):
            state = cls.inference_state_dict(state)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    exported = {key: payload[key] for key in ("model_type", "config", "step", "inference") if key in payload}
    exported["model"] = state
    exported["exported_from"] = str(src)
    save_checkpoint(out, exported)
    n = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    return {"parameters": n, "step": payload.get("step")}


def run(args) -> int:
    import os

    info = export_checkpoint(args.checkpoint, args.out, args.half)
    print(f"{args.out}: {info['parameters']:,} values from step {info['step']}, "
          f"{os.path.getsize(args.out) / 1e6:.1f} MB{' (float16)' if args.half else ''}")
    return 0
