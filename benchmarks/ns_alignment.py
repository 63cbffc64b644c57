"""Has a NaturalSpeech checkpoint's in-model alignment (MAS) collapsed?

For validation clips: Monotonic Alignment Search between ``z' = f(z)`` (``z`` the posterior
mean) and the alignment head's token Gaussians, as training runs it when no durations file is
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


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="+")
    ap.add_argument("--corpus", required=True, help="LJSpeech-layout corpus with filelists/")
    ap.add_argument("--split", default="val")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--show", action="store_true", help="print the first clip's alignment")
    args = ap.parse_args()

    from flowspeech.data import TextAudioDataset, load_manifest
    from flowspeech.inference.loading import load_model
    from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe

    manifest = load_manifest(args.corpus, split=args.split)
    print("| checkpoint | phonemes given one frame | frames of the 5 longest phonemes | "
          "predicted / MAS length |")
    print("|---|---:|---:|---:|")
    for path in args.checkpoint:
        model, payload = load_model(path, model_type="naturalspeech")
        recipe = NaturalSpeechRecipe(payload["config"])
        dataset = TextAudioDataset(manifest, recipe.frontend, recipe.mel_config, None)
        n = min(args.clips, len(dataset))
        one_frame = longest = ratio = 0.0
        for i in range(n):
            item = dataset[i]
            tokens, spec = item["tokens"][None], item["linear"][None]
            sup = (recipe.sup_tokenizer.sup_ids_padded(tokens, torch.tensor([tokens.size(1)]))
                   if recipe.sup_tokenizer is not None else None)
            h, text_mask = model._encode_text(tokens, torch.tensor([tokens.size(1)]), sup)
            spec_mask = torch.ones(1, 1, spec.size(2))
            z, _, _ = model.posterior_encoder(spec, spec_mask, 0.0)
            d = model._mas_durations(h, text_mask, model.flow(z, spec_mask), spec_mask).sum(-1)[0]
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
