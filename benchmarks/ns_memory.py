"""Does a NaturalSpeech checkpoint's decoder get information through the memory bank?

For validation clips: the posterior latent ``z``, the memory's answer ``memory(z)`` (what
the decoder reads), the attention's entropy against the uniform ``ln L``, its largest
weight, and how much of ``z``'s variance across frames the answer keeps. A memory whose
attention is uniform answers every frame alike (frame variance near 0): the decoder can
then make only a stationary sound (docs/naturalspeech.md, training report).

Also the mel L1 of copy-synthesis through the posterior path
(:meth:`NaturalSpeech.reconstruct`: true latents, memory, decoder), over whole clips; with
``--out`` the first two reconstructions are written as wavs; ``--wav-dir`` writes every one
as ``<id>.wav``, for ``flowspeech evaluate --system`` (the copy-synthesis WER).

    python benchmarks/ns_memory.py runs/ns/checkpoints/step_00002000.pt --corpus data/slt_hts
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from _ns_checkpoints import add_checkpoint_args, checkpoints_and_clips


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_args(ap, clips=16)
    ap.add_argument("--out", help="folder for reconstructed wavs (the first two clips)")
    ap.add_argument("--wav-dir", help="every reconstruction as WAV_DIR/<id>.wav, for "
                    "`flowspeech evaluate --system WAV_DIR` (copy-synthesis WER)")
    args = ap.parse_args()

    from flowspeech.audio import save_wav

    print("| checkpoint | memory in use | attention entropy (uniform) | largest weight | "
          "frame variance of z | of memory(z) | variance kept | reconstruction mel L1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for path, model, recipe, items in checkpoints_and_clips(args):
        memory = model.memory
        entropy = top = var_z = var_m = error = mel_l1 = 0.0
        n = len(items)
        for i, item in enumerate(items):
            spec = item["linear"].unsqueeze(0)
            wav = model.reconstruct(spec, torch.tensor([spec.size(2)]))
            mel = recipe.mel(wav.unsqueeze(1))[0]
            frames = min(mel.size(1), item["mel"].size(1))
            mel_l1 += float((mel[:, :frames] - item["mel"][:, :frames]).abs().mean()) / n
            if args.out and i < 2:
                out = Path(args.out) / f"{Path(path).parent.parent.name}_{Path(path).stem}_{item['id']}.wav"
                save_wav(out, wav[0], recipe.mel_config.sample_rate)
            if args.wav_dir:
                save_wav(Path(args.wav_dir) / f"{item['id']}.wav", wav[0], recipe.mel_config.sample_rate)
            if memory is None:
                continue
            z, _, _ = model.posterior_encoder(spec, torch.ones(1, 1, spec.size(2)))
            stats = memory.stats(z)
            entropy += stats["entropy"] / n
            top += stats["largest_weight"] / n
            var_z += float(z.var(2).mean()) / n
            var_m += stats["answer_variance"] / n
            error += stats["relative_error"] / n
        if memory is None:
            print(f"| {path} | no memory (memory_vae=false) | | | | | | {mel_l1:.3f} |")
            continue
        size = memory.bank.size(0)
        print(f"| {path} | {'yes' if bool(memory.in_use) else 'not yet'} | {entropy:.3f} "
              f"({math.log(size):.3f}) | {top:.4f} (1/{size}) | {var_z:.3f} | {var_m:.2e} | "
              f"{max(0.0, 1 - error):.0%} | {mel_l1:.3f} |")


if __name__ == "__main__":
    main()
