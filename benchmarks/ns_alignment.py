"""Has a NaturalSpeech checkpoint's in-model alignment (MAS) collapsed?

For validation clips: Monotonic Alignment Search between ``z' = f(z)`` (``z`` the posterior
mean) and the token Gaussians (``align_proj``), as training runs it when no durations file is
given. Reports the share of phonemes MAS gives a single frame, the share of frames the five
longest phonemes hold, and the duration predictor's total against MAS's. A healthy alignment
gives few phonemes one frame; a collapsed one gives nearly all of them one frame and the rest
of the sentence to a handful (docs/naturalspeech.md, training report). ``--show`` prints the
first clip's phonemes with their frame counts.

    python benchmarks/ns_alignment.py runs/ns/checkpoints/step_00001100.pt --corpus data/slt_hts
"""

from __future__ import annotations

import argparse

import torch
from _ns_checkpoints import add_checkpoint_args, checkpoints_and_clips


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_args(ap, clips=32)
    ap.add_argument("--show", action="store_true", help="print the first clip's alignment")
    args = ap.parse_args()

    print("| checkpoint | phonemes given one frame | frames of the 5 longest phonemes | "
          "predicted / MAS length |")
    print("|---|---:|---:|---:|")
    for path, model, recipe, items in checkpoints_and_clips(args):
        n = len(items)
        one_frame = longest = ratio = 0.0
        for i, item in enumerate(items):
            tokens, spec = item["tokens"][None], item["linear"][None]
            sup = (recipe.sup_tokenizer.sup_ids_padded(tokens, torch.tensor([tokens.size(1)]))
                   if recipe.sup_tokenizer is not None else None)
            h, text_mask = model._encode_text(tokens, torch.tensor([tokens.size(1)]), sup)
            spec_mask = torch.ones(1, 1, spec.size(2))
            z, _, _ = model.posterior_encoder(spec, spec_mask, 0.0)
            mean, log_scale = model.token_gaussians(h, text_mask)
            d = model._mas_durations(mean, log_scale, text_mask, model.flow(z, spec_mask), spec_mask).sum(-1)[0]
            one_frame += float((d == 1).float().mean()) / n
            longest += float(d.sort(descending=True).values[:5].sum() / d.sum()) / n
            predicted = torch.exp(model.durator.predict_log_durations(h, text_mask))[0]
            ratio += float(predicted.sum() / d.sum()) / n
            if args.show and i == 0:
                symbols = [recipe.frontend.symbols[t] for t in item["tokens"].tolist()]
                print(item["id"], " ".join(f"{s}:{int(k)}" for s, k in zip(symbols, d)))
        print(f"| {path} | {one_frame:.1%} | {longest:.1%} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
