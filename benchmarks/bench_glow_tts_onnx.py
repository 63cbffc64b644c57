"""Glow-TTS base on onnxruntime against the authors' PyTorch code, at equal weights.

    git clone https://github.com/jaywalnut310/glow-tts /tmp/glow-tts   # outside this repository
    python benchmarks/bench_glow_tts_onnx.py --authors /tmp/glow-tts [--repeats 5] [--threads 2] [--encoder-tokens 30,100,300]

Builds the authors' ``FlowGenerator`` with their ``configs/base.json``, gives its couplings and
ActNorms random non-trivial weights, imports them into flowspeech (``import_glow_tts``), exports
the two graphs, and times one sentence of 100 tokens, 2 threads: the authors' code as their
inference notebook runs it (``store_inverse()``, ``gen=True``), flowspeech's PyTorch ``infer``,
and the ONNX graphs on onnxruntime (with the numpy step between them) six ways: plain ``Conv``
operators or the decoder's input convolutions by Winograd's F(4, 5) (and then the text encoder's
and duration predictor's kernel-3 and kernel-5 convolutions by F(4, k) as well, as ``--winograd``
exports them), each with the decoder folded (what the export does,
``flowspeech.inference.folding``) and without; the folded plain
graphs also with their convolutions left 1-D (the export writes them 2-D,
``flowspeech.inference.onnx_graph``); and the folded Winograd decoder with its frames in phase
order (``export --onnx --winograd``, ``flowspeech.inference.phase_order``). Every session has the
runtime's options (``flowspeech.runtime.voice.session_options``: the threads spin between
operators within a run and stop at its end); the phase-order graphs are also timed with the
threads sleeping between operators instead (the runtime's setting before).
The systems are timed in turn, round by round, a quarter second apart. With the noise scale at 0
all must make the same mel; the largest differences are printed.
Their ``monotonic_align`` (a Cython extension used only in training) is replaced by an empty
module, since synthesis never calls it.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from flowspeech.inference.loading import load_model
from flowspeech.inference.onnx_export import (
    GlowTTSDecoderGraph,
    GlowTTSEncoderGraph,
    _trace,
    glow_tts_for_export,
)
from flowspeech.models.glow_tts_import import import_glow_tts
from flowspeech.runtime.voice import session_options

# "Winograd": the decoder's input convolutions and the encoder graph's kernel-3 and kernel-5 ones.
VARIANTS = {"plain": "plain Conv, decoder not folded",
            "winograd": "decoder input convolutions by Winograd, not folded",
            "folded, 1-D": "decoder folded, plain Conv, 1-D convolutions left 1-D",
            "folded": "decoder folded, plain Conv (export --onnx)",
            "folded, winograd, natural order": "decoder folded, input convolutions by Winograd, frames in natural order",
            "folded, winograd": "decoder folded, Winograd, frames in phase order (export --onnx --winograd)"}

SLEEPING = "folded, winograd"  # also timed with onnxruntime's threads sleeping between operators


def label(variant: str) -> str:
    if variant.endswith(", sleeping"):
        return VARIANTS[variant.removesuffix(", sleeping")] + "; threads sleeping between operators"
    return VARIANTS[variant]


def authors_model(repo: Path):
    sys.path.insert(0, str(repo))
    sys.modules.setdefault("monotonic_align", types.ModuleType("monotonic_align"))
    import models  # the authors' models.py
    import modules

    hps = json.loads((repo / "configs" / "base.json").read_text())["model"]
    torch.manual_seed(0)
    model = models.FlowGenerator(n_vocab=148, out_channels=80, **hps).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, modules.ActNorm):
                module.initialized = True
                module.logs.normal_(0, 0.05)
                module.bias.normal_(0, 0.05)
        for name, p in model.named_parameters():
            if ".end." in name:  # the couplings start at the identity; make them do something
                p.normal_(0, 0.02)
        model.encoder.proj_w.proj.bias.fill_(1.6)  # about 5 frames per token, as speech has
    return model


def imported(theirs, folder: Path):
    """flowspeech's model with the authors' weights, through their checkpoint format
    (``import_glow_tts``); call before their ``store_inverse()``, which removes the weight
    normalisation the import reads."""
    torch.save({"model": theirs.state_dict(), "iteration": 0}, folder / "authors.pth")
    import_glow_tts(folder / "authors.pth", folder / "ours.pt")
    return load_model(folder / "ours.pt")[0]


def export_graphs(ours, variant: str, tokens: torch.Tensor, folder: Path) -> None:
    """Writes ``encoder.onnx`` and ``decoder.onnx`` of one of :data:`VARIANTS` into ``folder``
    (the decoder traced on the frames that ``tokens`` get)."""
    model, _ = glow_tts_for_export(ours, fold=variant.startswith("folded"), winograd="winograd" in variant,
                                   phase_order="natural" not in variant)
    encoder, decoder = GlowTTSEncoderGraph(model).eval(), GlowTTSDecoderGraph(model).eval()
    conv_2d = "1-D" not in variant  # the export writes 1-D convolutions as 2-D ones
    _trace(encoder, (tokens[:, :50], torch.tensor([50])), folder / "encoder.onnx", 17,
           ["tokens", "token_lengths"], ["mean", "log_scale", "log_durations", "text_mask"],
           {"tokens": {0: "b", 1: "t"}, "token_lengths": {0: "b"}}, conv_2d=conv_2d)
    with torch.no_grad():
        m, s, w, k = encoder(tokens, torch.tensor([tokens.size(1)]))
    d = torch.ceil(torch.exp(w) * k).squeeze(1)
    n = max(2, int(d.sum()) // 2 * 2)
    _trace(decoder, (m, s, d, torch.tensor([n]), torch.zeros(1, 80, n), torch.tensor(0.0)),
           folder / "decoder.onnx", 17, ["mean", "log_scale", "durations", "mel_lengths", "noise", "noise_scale"],
           ["mels"], {"mean": {0: "b", 2: "t"}, "log_scale": {0: "b", 2: "t"}, "durations": {0: "b", 1: "t"},
                      "mel_lengths": {0: "b"}, "noise": {0: "b", 2: "f"}}, conv_2d=conv_2d)


def run_graphs(encoder, decoder, tokens: np.ndarray, noise_scale: float = 0.667) -> np.ndarray:
    """One sentence through the two graphs' sessions and the numpy step between them, as the
    runtime makes it (the authors' ceiling on durations; seeded noise)."""
    mean, log_scale, log_durations, mask = encoder.run(
        None, {"tokens": tokens, "token_lengths": np.asarray([tokens.shape[1]])})
    durations = np.ceil(np.exp(log_durations) * mask)[:, 0].astype(np.float32)
    frames = max(2, int(durations.sum()) // 2 * 2)
    noise = np.random.default_rng(0).standard_normal((1, 80, frames), dtype=np.float32)
    return decoder.run(None, {"mean": mean, "log_scale": log_scale, "durations": durations,
                              "mel_lengths": np.asarray([frames]), "noise": noise,
                              "noise_scale": np.asarray(noise_scale, np.float32)})[0]


def interleaved_medians(systems: dict, repeats: int, pause: float = 0.25) -> dict[str, float]:
    """Median seconds of each system, timed in turn round by round (a shared machine's speed
    drifts; interleaving gives every system the same drift). Each run starts ``pause`` seconds
    after the one before: PyTorch's OpenMP threads spin a while after a run, and a system timed
    at once after it loses a core to them (onnxruntime measured 10-13 % slower without it)."""
    for fn in systems.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            time.sleep(pause)
            t = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t)
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of jaywalnut310/glow-tts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between two timed runs")
    parser.add_argument("--encoder-tokens", default="",
                        help="also time the encoder graph alone, plain and by Winograd, at these token "
                             "counts (comma-separated, e.g. 30,100,300)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    theirs = authors_model(args.authors)
    tokens = torch.randint(1, 148, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([args.tokens])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = imported(theirs, tmp)

        def sessions(spinning: bool) -> tuple:
            """The two graphs' sessions with the runtime's options: threads spinning between
            operators within a run (stopped when it ends) or sleeping."""
            options = session_options(args.threads, spinning)
            return tuple(ort.InferenceSession(str(tmp / f), options, providers=["CPUExecutionProvider"])
                         for f in ("encoder.onnx", "decoder.onnx"))

        graphs = {}
        for variant in VARIANTS:
            export_graphs(ours, variant, tokens, tmp)
            graphs[variant] = sessions(spinning=True)
            if variant == SLEEPING:
                graphs[variant + ", sleeping"] = sessions(spinning=False)

    def run_onnx(variant: str, noise_scale: float = 0.667):
        return run_graphs(*graphs[variant], tokens.numpy(), noise_scale)

    theirs.store_inverse()
    with torch.no_grad():
        authors_mel = theirs(tokens, lengths, gen=True, noise_scale=0.0)[0][0]
    ours_mel = ours.infer(tokens, lengths, noise_scale=0.0).mels
    onnx_mels = {variant: run_onnx(variant, 0.0) for variant in graphs}
    frames = onnx_mels["plain"].shape[2]

    def run_authors():
        with torch.no_grad():
            theirs(tokens, lengths, gen=True, noise_scale=0.667)

    systems = {"the authors' code (PyTorch)": run_authors,
               "flowspeech, PyTorch": lambda: ours.infer(tokens, lengths, noise_scale=0.667)}
    systems.update({f"flowspeech, ONNX runtime ({label(v)})": functools.partial(run_onnx, v) for v in graphs})
    times = interleaved_medians(systems, args.repeats, args.pause)
    print(f"# Glow-TTS base, {sum(p.numel() for p in theirs.parameters()):,} parameters (the authors' model); one sentence of "
          f"{args.tokens} tokens -> {frames} frames; {args.threads} threads; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}; median of {args.repeats}, the systems timed in turn, {args.pause} s apart\n")
    print(f"Same mel at noise scale 0 (largest value {authors_mel.abs().max():.2f}), max abs difference to the "
          f"authors': flowspeech PyTorch {(ours_mel - authors_mel).abs().max():.2e}, ONNX " +
          ", ".join(f"{label(v)} {np.abs(mel - authors_mel.numpy()).max():.2e}" for v, mel in onnx_mels.items()) + "\n")
    print("| system | time (s) | mel frames/s | vs the authors' code |")
    print("|---|---:|---:|---:|")
    base = times["the authors' code (PyTorch)"]
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {frames / t:,.0f} | {base / t:.2f}x |")
    if args.encoder_tokens:
        print("\nThe encoder graph alone (text encoder and duration predictor), the two timed in turn:\n")
        print("| tokens | plain Conv (`export --onnx`) | by Winograd (`export --onnx --winograd`) |")
        print("|---:|---:|---:|")
        for count in (int(n) for n in args.encoder_tokens.split(",")):
            feed = {"tokens": torch.randint(1, 148, (1, count), generator=torch.Generator().manual_seed(2)).numpy(),
                    "token_lengths": np.asarray([count])}
            encoders = {v: functools.partial(graphs[v][0].run, None, feed) for v in ("folded", "folded, winograd")}
            t = interleaved_medians(encoders, args.repeats, args.pause)
            print(f"| {count} | {t['folded'] * 1e3:.1f} ms | {t['folded, winograd'] * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
