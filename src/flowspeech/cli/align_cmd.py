"""``flowspeech align``: forced alignment (frames per token) and likelihood of (text, audio)
pairs with a Glow-TTS model, by Monotonic Alignment Search."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "align", help="per-token durations and NLL of (text, audio) pairs (forced alignment)",
        description="For every utterance of DATA, find the most likely monotonic alignment of "
        "its tokens to its mel frames under a Glow-TTS model and write one JSON line: id, "
        "tokens, frames per token, start/end seconds, and the NLL per dimension.",
    )
    p.add_argument("--acoustic", required=True, help="Glow-TTS checkpoint")
    p.add_argument("--data", required=True, help="dataset folder or filelist")
    p.add_argument("--split", help="split of a dataset folder (train, val, test)")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--merge-blanks", action="store_true",
                   help="for a model trained with interspersed blanks: fold each blank's frames "
                   "into the tokens beside it, so the file fits a config with the same symbols "
                   "and add_blank: false (e.g. NaturalSpeech's train.durations)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", help="feature cache folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=run)


def symbol_of(frontend, token_id: int) -> str:
    """The symbol an id stands for (``<blank>`` for interspersed blanks)."""
    if frontend.add_blank and token_id == frontend.blank_id:
        return "<blank>"
    return frontend.symbols[token_id]


def run(args) -> int:
    import json

    import torch

    from flowspeech.align import merge_blank_durations
    from flowspeech.cli.common import check_output, resolve_device
    from flowspeech.config import mel_config
    from flowspeech.data import TextMelDataset, collate_text_mel, load_manifest
    from flowspeech.inference.loading import load_model
    from flowspeech.text import TextFrontend
    from flowspeech.utils.files import atomic_write

    check_output(args.out, [args.acoustic, args.data], "--out")
    args.device = resolve_device(args.device)
    model, payload = load_model(args.acoustic, "glow-tts", device=args.device)
    config = payload["config"]
    frontend = TextFrontend(**config.get("text", {}))
    if args.merge_blanks and not frontend.add_blank:
        from flowspeech.errors import ConfigError

        raise ConfigError(f"--merge-blanks: {args.acoustic} was trained without blanks")
    mels = mel_config(config)
    dataset = TextMelDataset(load_manifest(args.data, split=args.split), frontend, mels, args.cache_dir)
    seconds_per_frame = mels.hop_length / mels.sample_rate
    lines, total_nll, total_dims = [], 0.0, 0
    for start in range(0, len(dataset), args.batch_size):
        items = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
        batch = collate_text_mel(items)
        with torch.inference_mode():
            out = model(batch["tokens"].to(args.device), batch["token_lengths"].to(args.device),
                        batch["mels"].to(args.device), batch["mel_lengths"].to(args.device),
                        batch["speakers"].to(args.device) if model.n_speakers > 1 else None)
            nll = model.nll_per_dim(out, reduce=False)
        durations = out.attn.sum(-1).round().long().cpu()
        for i, item in enumerate(items):
            n_tok = int(batch["token_lengths"][i])
            ids = batch["tokens"][i, :n_tok].tolist()
            d = durations[i, :n_tok].tolist()
            if args.merge_blanks:
                ids, d = ids[1::2], merge_blank_durations(d)
            ends = torch.tensor(d).cumsum(0).tolist()
            lines.append({
                "id": item["id"], "tokens": [symbol_of(frontend, t) for t in ids],
                "durations": d,
                "start": [round((e - k) * seconds_per_frame, 4) for e, k in zip(ends, d)],
                "end": [round(e * seconds_per_frame, 4) for e in ends],
                "frames": int(out.mel_lengths[i]), "nll_per_dim": round(float(nll[i]), 5),
            })
            dims = int(out.mel_lengths[i]) * mels.n_mels
            total_nll += float(nll[i]) * dims
            total_dims += dims
    text = "".join(json.dumps(line) + "\n" for line in lines)
    from pathlib import Path

    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    print(f"{args.out}: {len(lines)} utterances aligned; NLL {total_nll / max(total_dims, 1):.4f} "
          f"nats per dimension")
    return 0
