"""Glow-TTS speed: inference (mel frames per second, real-time factor) and training step time.

    python benchmarks/bench_glow_tts.py                      # base preset, CPU, 2 threads
    python benchmarks/bench_glow_tts.py --device cuda --precision bf16

Random weights (speed does not depend on training), with the duration predictor's bias set
so that every token lasts about ``--frames-per-token`` frames: a 100-token sentence then makes
~5.9 s of audio, like an average LJSpeech clip. Reports medians of ``--repeats`` runs after
warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics

import torch
from _timing import repeat_timed

from flowspeech.config import load_config
from flowspeech.models.registry import build_model


def timed(fn, device, repeats: int) -> float:
    return statistics.median(repeat_timed(fn, repeats, device=device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="glow-tts-base")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=100, help="tokens per sentence")
    p.add_argument("--frames-per-token", type=float, default=5.2)
    p.add_argument("--batch", type=int, default=16, help="batch size of the batched-inference run")
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-frames", type=int, default=600)
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = load_config(args.preset)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    with torch.no_grad():
        model.encoder.proj_w.proj.bias.fill_(math.log(args.frames_per_token))
    n_vocab, n_mels = model.n_vocab, model.n_mels
    hop, sr = 256, 22050
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if args.precision == "bf16" else torch.float16)
                if args.precision != "fp32" and device.type == "cuda" else torch.autocast("cpu", enabled=False))
    results = {"preset": args.preset, "device": str(device), "threads": torch.get_num_threads(),
               "precision": args.precision, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)

    # --- inference ------------------------------------------------------------------------
    # Inference first, on the untouched weights (a training step would change durations).
    inference_model = build_model(config).to(device)
    inference_model.load_state_dict(model.state_dict())
    inference_model.prepare_for_inference()
    g = torch.Generator().manual_seed(1)
    one = torch.randint(1, n_vocab, (1, args.tokens), generator=g).to(device)
    one_len = torch.tensor([args.tokens], device=device)
    frames = {}

    def infer_one():
        with torch.inference_mode(), autocast:
            mel, lengths, _ = inference_model.infer(one, one_len, noise_scale=0.667)
        frames["one"] = int(lengths.sum())

    t1 = timed(infer_one, device, args.repeats)
    many = torch.randint(1, n_vocab, (args.batch, args.tokens), generator=g).to(device)
    many_len = torch.full((args.batch,), args.tokens, device=device)

    def infer_many():
        with torch.inference_mode(), autocast:
            mel, lengths, _ = inference_model.infer(many, many_len, noise_scale=0.667)
        frames["many"] = int(lengths.sum())

    tb = timed(infer_many, device, args.repeats)
    # --- training step -------------------------------------------------------------------
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, n_vocab, (args.train_batch, args.train_frames // 5), generator=g).to(device)
    token_lengths = torch.full((args.train_batch,), tokens.size(1), device=device)
    mels = torch.randn(args.train_batch, n_mels, args.train_frames, generator=g).to(device)
    mel_lengths = torch.full((args.train_batch,), args.train_frames, device=device)

    def train_step():
        with autocast:
            out = model(tokens, token_lengths, mels, mel_lengths)
        loss = model.nll_per_dim(out) + model.duration_loss(out, token_lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    results["train_step_s"] = timed(train_step, device, max(2, args.repeats // 2))
    results["train_batch"] = f"{args.train_batch} x {args.train_frames} frames"

    for key, seconds in (("one", t1), ("many", tb)):
        audio_s = frames[key] * hop / sr
        results[f"infer_{key}"] = {"seconds": seconds, "frames": frames[key],
                                   "frames_per_s": frames[key] / seconds, "rtf": seconds / audio_s}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Glow-TTS speed: {results['preset']} on {results['device']}"
          f"{' (' + results['gpu'] + ')' if 'gpu' in results else ''}, {results['threads']} threads, "
          f"{results['precision']}, torch {results['torch']}")
    print("| measurement | value |\n|---|---:|")
    print(f"| training step, batch {results['train_batch']} | {results['train_step_s']:.3f} s |")
    for key, label in (("one", f"inference, 1 sentence of {args.tokens} tokens"),
                       ("many", f"inference, batch {args.batch} x {args.tokens} tokens")):
        r = results[f"infer_{key}"]
        print(f"| {label} | {r['frames_per_s']:,.0f} mel frames/s ({r['frames']} frames in "
              f"{r['seconds'] * 1000:.0f} ms, real-time factor {r['rtf']:.4f}) |")


if __name__ == "__main__":
    main()
