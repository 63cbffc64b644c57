"""How well a Glow-TTS voice's text encoder can predict its teacher's pitch per token, when
pitch is its own training target.

    python benchmarks/token_pitch_probe.py --corpus data/slt_hts --train-limit 4000 --epochs 4
    python benchmarks/token_pitch_probe.py --corpus data/slt_hts --train-limit 4000 --epochs 5 \
        --fine-tune --learning-rate 5e-4

A FastPitch-style head (two convolutions as in the duration predictor, 256 channels) reads
the encoder's output and is trained by squared error on each token's mean log-F0 in the
recording (dio, over the token's voiced frames, tokens placed by MAS under the voice's own
prior), weighted by those frames; ``--fine-tune`` trains the encoder with it. Scored on the
``--split`` sentences the same way, beside predicting every token as the training mean.
Compare with ``pitch_error_sources.py``'s token-level error, the voice's pitch as its
likelihood training left it: a head that does no better says the limit is what the
sentences teach about pitch, not how the loss weighs it.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import pyworld
import torch
from _teacher_timing import add_voice_arguments, load_glow_tts, split_sentences, teacher_timing

from flowspeech.models.glow_tts import DurationPredictor, GlowTTS, TextEncoder


def token_log_f0(tts, corpus, sentences) -> list[dict[str, np.ndarray]]:
    """Per sentence: token ids, each token's mean log-F0 over its voiced frames (0 where
    none) and its voiced frames, under the voice's MAS alignment of the recording."""
    rate, hop = tts.sample_rate, tts.mel_config.hop_length
    items = []
    for uid, text in sentences:
        ids, _, recording, _, out = teacher_timing(tts, corpus, uid, text)
        frames = out.attn.sum(-1)[0].round().long().numpy()
        x = recording.astype(np.float64)
        f0, t = pyworld.dio(x, rate, f0_floor=71.0, f0_ceil=800.0,
                            frame_period=1000.0 * hop / rate)
        f0 = pyworld.stonemask(x, f0, t, rate)
        f0 = np.pad(f0, (0, max(0, int(frames.sum()) - len(f0))))[:int(frames.sum())]
        token = np.repeat(np.arange(len(frames)), frames)
        voiced = f0 > 0
        count = np.bincount(token[voiced], minlength=len(frames)).astype(np.float32)
        total = np.bincount(token[voiced], np.log(f0[voiced]), minlength=len(frames))
        items.append({"ids": ids[0].numpy(), "count": count,
                      "log_f0": np.where(count > 0, total / np.maximum(count, 1), 0.0)})
    return items


def batch(items, mean: float):
    n = max(len(d["ids"]) for d in items)
    ids = torch.zeros(len(items), n, dtype=torch.long)
    target, weight = torch.zeros(len(items), n), torch.zeros(len(items), n)
    for b, d in enumerate(items):
        k = len(d["ids"])
        ids[b, :k] = torch.from_numpy(d["ids"])
        weight[b, :k] = torch.from_numpy(d["count"])
        target[b, :k] = torch.from_numpy(d["log_f0"] - mean).float() * (weight[b, :k] > 0)
    return ids, torch.tensor([len(d["ids"]) for d in items]), target, weight


def encoder_output(encoder: TextEncoder, ids: torch.Tensor, lengths: torch.Tensor):
    """The hidden states the prior and the durations are projected from, and the mask."""
    captured = {}
    handle = encoder.encoder.register_forward_hook(lambda _m, _i, out: captured.update(x=out))
    _, _, _, mask = encoder(ids, lengths)
    handle.remove()
    return captured["x"], mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_voice_arguments(parser)
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--fine-tune", action="store_true", help="train the text encoder too")
    args = parser.parse_args()
    torch.manual_seed(0)
    tts, _ = load_glow_tts(args)
    assert isinstance(tts.model, GlowTTS)
    train_args = copy.copy(args)
    train_args.split, train_args.limit = "train", args.train_limit
    train = token_log_f0(tts, args.corpus, split_sentences(train_args))
    held_out = token_log_f0(tts, args.corpus, split_sentences(args))
    mean = float(np.concatenate([d["log_f0"][d["count"] > 0] for d in train]).mean())

    encoder = copy.deepcopy(tts.model.encoder).float()
    head = DurationPredictor(encoder.hidden_channels, 256, 3, 0.1)
    for p in encoder.parameters():
        p.requires_grad_(args.fine_tune)
    params = list(head.parameters()) + (list(encoder.parameters()) if args.fine_tune else [])
    optimiser = torch.optim.Adam(params, lr=args.learning_rate)

    def score() -> float:
        head.eval()
        encoder.eval()
        with torch.no_grad():
            ids, lengths, target, weight = batch(held_out, mean)
            hidden, mask = encoder_output(encoder, ids, lengths)
            error = head(hidden, mask)[:, 0] - target
        head.train()
        encoder.train(args.fine_tune)
        return float(((error ** 2 * weight).sum() / weight.sum()).sqrt())

    _, _, target, weight = batch(held_out, mean)
    print(f"{len(train)} training and {len(held_out)} {args.split} sentences; token-level "
          f"log-F0 error of predicting the training mean: "
          f"{float(((target ** 2 * weight).sum() / weight.sum()).sqrt()):.4f}\n")
    print("| epoch | steps | token-level log-F0 error | seconds |\n|---:|---:|---:|---:|")
    start, steps = time.time(), 0
    head.train()
    encoder.train(args.fine_tune)
    for epoch in range(args.epochs):
        order = np.random.RandomState(epoch).permutation(len(train))
        for k in range(0, len(order) - args.batch_size + 1, args.batch_size):
            chosen = [train[j] for j in order[k:k + args.batch_size]]
            ids, lengths, target, weight = batch(chosen, mean)
            hidden, mask = encoder_output(encoder, ids, lengths)
            loss = ((head(hidden, mask)[:, 0] - target) ** 2 * weight).sum() / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
        print(f"| {epoch + 1} | {steps} | {score():.4f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
