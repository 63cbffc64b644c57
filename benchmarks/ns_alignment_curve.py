"""Does NaturalSpeech learn its own alignment? Train the model from scratch on a corpus for
``--steps`` steps (the recipe's own training step, no durations file) and every ``--every``
steps run it on a fixed batch of validation clips (dropout off, seeded noise) and record:

* ``mas_one_frame``: the share of phonemes Monotonic Alignment Search gives a single frame
  (near 1: collapsed onto a few phonemes);
* ``mas_diagonal``: the alignment's mean deviation from the diagonal, the mean over frames of
  ``|(i + 1/2) / T - (t + 1/2) / F|`` (``i`` the token frame ``t`` is given, ``T`` tokens, ``F``
  frames; :func:`flowspeech.models.naturalspeech.alignment_stats`); a collapse onto the last
  phoneme gives nearly 1/2;
* ``kl_bwd`` (the backward KL, against the prior MAS aligns with), ``kl_frame`` (the frame-level
  prior's own KL; 0 with ``alignment_prior: head``), ``duration`` (log-duration MSE against
  MAS) and ``mel_l1`` on that batch, and the training-step means of the same losses since the
  last row.

Writes ``OUT/curve.csv`` and ``OUT/curve.json`` (rows and settings) and ``OUT/paths.json``
(every row's durations of each validation clip, for ``alignment_runs.py``) after every
row, and prints the rows.

    OMP_NUM_THREADS=1 python benchmarks/ns_alignment_curve.py --corpus data/slt_hts \\
        --out /work/runs/ns-align/token --steps 500 [--set model_args.alignment_prior=head]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import torch

VAL_COLUMNS = ("mas_one_frame", "mas_diagonal", "kl_bwd", "kl_frame", "duration", "mel_l1")
TRAIN_COLUMNS = ("kl_bwd", "kl_frame", "duration", "mel_l1", "align_nll")


class _StepContext:
    """What the recipe's ``training_step`` reads of the trainer's step context: one process,
    float32, gradient clipping as the config says."""

    def __init__(self, model, optimizers, recipe, train_set):
        self.model = self.raw_model = model
        self.optimizers, self.recipe, self.train_set = optimizers, recipe, train_set
        self.device = torch.device("cpu")
        self.step = 0
        self.dist = argparse.Namespace(is_main=True, enabled=False)

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def optimize(self, loss, name="main"):
        opt = self.optimizers[name]
        if not bool(torch.isfinite(loss.detach())):
            opt.zero_grad(set_to_none=True)
            return False
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        cfg = self.recipe.train
        if cfg.grad_clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, cfg.grad_clip_value)
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return True

    def to_device(self, batch):
        return batch

    def log(self, message: str) -> None:
        print(message, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True, help="LJSpeech-layout corpus with filelists/")
    ap.add_argument("--out", required=True, help="folder for curve.csv and curve.json")
    ap.add_argument("--config", default="naturalspeech-small")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--val-clips", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as `flowspeech train --set`")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from flowspeech.cli.train_cmd import parse_overrides
    from flowspeech.config import load_config
    from flowspeech.training.recipes import recipe_for

    config = load_config(args.config, parse_overrides(args.set))
    config["train"]["seed"] = args.seed
    recipe = recipe_for(config)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_set, val_set = recipe.build_datasets(args.corpus, None, str(out_dir / "cache"))
    if val_set is None:
        raise SystemExit(f"{args.corpus} has no validation split")
    torch.manual_seed(args.seed)
    model = recipe.build_model()
    optimizers = recipe.build_optimizers(model)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=recipe.train.batch_size, shuffle=True, drop_last=True,
        collate_fn=recipe.collate, generator=torch.Generator().manual_seed(args.seed))
    val_batch = recipe.collate([val_set[i] for i in range(min(args.val_clips, len(val_set)))])
    ctx = _StepContext(model, optimizers, recipe, train_set)
    recipe.initialize(model, val_batch)

    def evaluate(step, window, seconds):
        model.eval()
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            values, durations = recipe.validate_with_alignment(model, val_batch)
        model.train()
        paths[str(step)] = [[int(v) for v in d[:n].round().tolist()]
                            for d, n in zip(durations, val_batch["token_lengths"].tolist())]
        row = {"step": step, "seconds": round(seconds, 1)}
        row.update({k: round(float(values.get(k, math.nan)), 4) for k in VAL_COLUMNS})
        for k in TRAIN_COLUMNS:
            seen = [w[k] for w in window if k in w]
            row[f"train_{k}"] = round(sum(seen) / len(seen), 4) if seen else math.nan
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        return row

    settings = {"corpus": args.corpus, "config": args.config, "set": args.set,
                "steps": args.steps, "seed": args.seed, "val_clips": args.val_clips,
                "alignment_prior": config.get("model_args", {}).get("alignment_prior", "token")}

    def write(rows):  # after every row: a run stopped early keeps what it measured
        with open(out_dir / "curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "curve.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
        (out_dir / "paths.json").write_text(json.dumps(paths))

    paths: dict[str, list[list[int]]] = {}  # step -> each validation clip's durations
    rows, window, start, step = [], [], time.time(), 0
    rows.append(evaluate(0, window, 0.0))
    write(rows)
    while step < args.steps:
        for batch in loader:
            ctx.step = step
            logs = recipe.training_step(ctx, batch)
            window.append({k: float(v) for k, v in logs.items()})
            step += 1
            if step % args.every == 0 or step == args.steps:
                rows.append(evaluate(step, window, time.time() - start))
                write(rows)
                window = []
            if step >= args.steps:
                break
    print(f"wrote {out_dir / 'curve.csv'} and curve.json")


if __name__ == "__main__":
    main()
