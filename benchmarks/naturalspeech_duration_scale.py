"""How far a NaturalSpeech model's predicted durations fall short of its own alignments, and
the scale that calibrates them.

    python benchmarks/naturalspeech_duration_scale.py --acoustic runs/ns/checkpoints/step_N.pt \
        --corpus ../shared/corpus/data/slt_hts [--split val] [--write calibrated.pt]

The durator is trained by squared error on log-durations (as Glow-TTS's predictor is), so
``exp`` of its prediction estimates a geometric mean of the durations. Where its residual in
log-duration has variance ``s2``, the arithmetic mean, which sets the length of the speech, is
``exp(s2 / 2)`` times larger: a duration loss near 1 makes speech about 0.6 of its length.
NaturalSpeech keeps fractional durations, so no rounding offsets it (Glow-TTS's ceiling does,
partly: :mod:`flowspeech.utils.durations`).

On a corpus split, the model aligns each recording with its own MAS (the training pass, no
gradients) and predicts the durations from the text. This prints the frames of both, their
ratio, the residual's mean and variance in log-duration, and how much of the shortfall each
explains: ``exp(mean)`` and ``exp(-variance / 2)``. ``--write`` saves a copy of the checkpoint
whose ``inference`` entry has ``duration_scale`` (aligned frames over predicted frames), which
synthesis and the ONNX export apply on top of ``length_scale``. Fit on the validation split,
never on the test split.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from flowspeech.checkpoints import load_checkpoint, save_checkpoint
from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe
from flowspeech.utils.durations import check_duration_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acoustic", type=Path, required=True, help="a NaturalSpeech checkpoint")
    parser.add_argument("--corpus", required=True, help="an LJSpeech-layout corpus with filelists/")
    parser.add_argument("--split", choices=("val", "train"), default="val")
    parser.add_argument("--limit", type=int, default=100, help="utterances (train split: its first N)")
    parser.add_argument("--write", type=Path, help="save the calibrated checkpoint here")
    args = parser.parse_args()

    payload = load_checkpoint(args.acoustic, "naturalspeech")
    recipe = NaturalSpeechRecipe(payload["config"])
    train, val = recipe.build_datasets(args.corpus, None, None)
    dataset = val if args.split == "val" else train
    if dataset is None:
        raise SystemExit(f"{args.corpus} has no {args.split} split")
    generator = recipe.build_model().generator
    weights = {k.removeprefix("generator."): v for k, v in payload["model"].items()
               if not k.startswith("discriminator.")}
    generator.load_state_dict(weights)
    generator.attach_inference_extras(payload.get("inference") or {})
    generator.eval()

    torch.manual_seed(0)  # the training pass samples the posterior
    predicted, aligned = [], []
    count = min(args.limit, len(dataset))
    with torch.no_grad():
        for first in range(0, count, 8):
            batch = recipe.collate([dataset[i] for i in range(first, min(first + 8, count))])
            out = generator(*recipe._inputs(batch), use_forward_loss=False, use_e2e=False)
            mask = out.text_mask.squeeze(1).bool()
            predicted.append(out.log_durations[mask].double())
            aligned.append(out.durations[mask].double())
    log_predicted, frames = torch.cat(predicted), torch.cat(aligned)
    residual = log_predicted - torch.log(frames.clamp_min(1e-8))
    ratio = float(log_predicted.exp().sum() / frames.sum())
    mean, variance = float(residual.mean()), float(residual.var())
    print(f"{args.acoustic} (step {payload.get('step')}), {args.split} split: {count} utterances, "
          f"{frames.numel()} tokens")
    print(f"aligned frames {float(frames.sum()):.0f}, predicted frames {float(log_predicted.exp().sum()):.0f}: "
          f"predicted / aligned {ratio:.3f}")
    print(f"log-duration residual: mean {mean:+.3f} (explains x{math.exp(mean):.3f}), variance {variance:.3f} "
          f"(explains x{math.exp(-variance / 2):.3f}); together x{math.exp(mean - variance / 2):.3f}")
    scale = round(1.0 / ratio, 3)
    print(f"duration_scale (aligned / predicted frames): {scale}")
    if args.write is not None:
        payload.setdefault("inference", {})["duration_scale"] = check_duration_scale(scale)
        save_checkpoint(args.write, payload)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
