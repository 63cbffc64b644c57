"""Does a NaturalSpeech checkpoint's decoder get information through the memory bank?

For validation clips: the posterior latent ``z``, the memory's answer ``memory(z)`` (what
the decoder reads), the attention's entropy against the uniform ``ln L``, its largest
weight, and how much of ``z``'s variance across frames the answer keeps. A memory whose
attention is uniform answers every frame alike (frame variance near 0): the decoder can
then make only a stationary sound (docs/naturalspeech.md, training report).

    python benchmarks/ns_memory.py runs/ns/checkpoints/step_00002000.pt --corpus data/slt_hts
"""

from __future__ import annotations

import argparse
import math

import torch


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="+")
    ap.add_argument("--corpus", required=True, help="LJSpeech-layout corpus with filelists/")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=16)
    args = ap.parse_args()

    from flowspeech.data import TextAudioDataset, load_manifest
    from flowspeech.inference.loading import load_model
    from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe

    print("| checkpoint | memory in use | attention entropy (uniform) | largest weight | "
          "frame variance of z | of memory(z) | variance kept |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.checkpoint:
        torch.manual_seed(0)
        model, payload = load_model(path, model_type="naturalspeech")
        if model.memory is None:
            print(f"| {path} | no memory (memory_vae=false) | | | | | |")
            continue
        recipe = NaturalSpeechRecipe(payload["config"])
        manifest = load_manifest(args.corpus, split=args.split)
        dataset = TextAudioDataset(manifest, recipe.frontend, recipe.mel_config, None)
        memory = model.memory
        entropy = top = var_z = var_m = error = 0.0
        n = min(args.clips, len(dataset))
        for i in range(n):
            spec = dataset[i]["linear"].unsqueeze(0)
            z, _, _ = model.posterior_encoder(spec, torch.ones(1, 1, spec.size(2)))
            attn = memory.attention(z)                                     # [1, H, F, L]
            answer = memory(z)
            entropy += float(-(attn * torch.log(attn.clamp_min(1e-12))).sum(-1).mean()) / n
            top += float(attn.max(-1).values.mean()) / n
            var_z += float(z.var(2).mean()) / n
            var_m += float(answer.var(2).mean()) / n
            error += float(((answer - z) ** 2).sum() / ((z - z.mean(2, keepdim=True)) ** 2).sum()) / n
        size = memory.bank.size(0)
        print(f"| {path} | {'yes' if bool(memory.in_use) else 'not yet'} | {entropy:.3f} "
              f"({math.log(size):.3f}) | {top:.4f} (1/{size}) | {var_z:.3f} | {var_m:.2e} | "
              f"{max(0.0, 1 - error):.0%} |")


if __name__ == "__main__":
    main()
