"""Would Winograd's minimal filtering make Glow-TTS's decoder faster on onnxruntime?

The decoder's time is its couplings' WaveNet input convolutions (kernel 5, dilation 1; 81 % of
its arithmetic), and onnxruntime already runs them near the CPU's float32 peak, so only less
arithmetic can make them much faster. Winograd's F(m, 5) (Lavin and Gray, 2016) computes
``m`` outputs of a 5-tap correlation with ``m + 4`` multiplications instead of ``5 m``: tiles
of ``m + 4`` samples go through a fixed transform (``B^T``), each of the ``m + 4`` transformed
positions is one matrix product with the transformed weights (``G w``), and a second transform
(``A^T``) gives the outputs. This script builds that as an ONNX graph for one coupling layer
of Glow-TTS base (192 -> 384 channels, 265 frames after the squeeze: a 100-token sentence)
and times it against the plain convolution, with its error; ``--decoder`` does the same for
the whole decoder graph of Glow-TTS base (random coupling weights), every coupling's input
convolutions replaced.

    python benchmarks/winograd_conv.py [--tiles 4] [--threads 1] [--frames 265] [--decoder]

The graph is :class:`flowspeech.inference.winograd.WinogradConv1d`, which the ONNX export
uses for Glow-TTS's decoder by default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowspeech.inference.winograd import WinogradConv1d, use_winograd_input_convolutions


def onnx_time(module: nn.Module, x: torch.Tensor, threads: int, repeats: int) -> tuple[float, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv.onnx"
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {2: "t"}}, opset_version=17, dynamo=False)
        return session_time(path, {"x": x.numpy()}, threads, repeats)


def session_time(path: Path, feed: dict, threads: int, repeats: int) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(5):
        out = session.run(None, feed)[0]
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feed)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), out


def decoder(args) -> None:
    """The whole Glow-TTS base decoder graph, plain and with Winograd input convolutions."""
    from flowspeech.config import load_config
    from flowspeech.inference.onnx_export import GlowTTSDecoderGraph, _trace
    from flowspeech.training.recipes import recipe_for

    torch.manual_seed(0)
    model = recipe_for(load_config("glow-tts-base")).build_model().eval()
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            if ".end." in name or "log_scale" in name or "bias" in name:  # away from the identity
                p.normal_(0, 0.02)
    frames, tokens = 2 * args.frames, 100
    channels = 80  # the mel bands of glow-tts-base
    mean, log_scale = torch.randn(1, channels, tokens), torch.full((1, channels, tokens), -1.0)
    durations = torch.full((1, tokens), frames / tokens).floor()
    durations[0, -1] += frames - durations.sum()
    noise = torch.randn(1, channels, frames)
    inputs = (mean, log_scale, durations, torch.tensor([frames]), noise, torch.tensor(0.667))
    names = ["mean", "log_scale", "durations", "mel_lengths", "noise", "noise_scale"]
    axes = {"mean": {0: "b", 2: "t"}, "log_scale": {0: "b", 2: "t"}, "durations": {0: "b", 1: "t"},
            "mel_lengths": {0: "b"}, "noise": {0: "b", 2: "f"}}
    feed = {k: v.numpy() for k, v in zip(names, inputs)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("Conv (onnxruntime's own)", f"Winograd F({args.tiles}, 5)"):
            if label.startswith("Winograd"):
                replaced = use_winograd_input_convolutions(model.decoder, args.tiles)
            path = Path(tmp) / "decoder.onnx"
            _trace(GlowTTSDecoderGraph(model).eval(), inputs, path, 17, names, ["mels"], axes)
            results[label] = session_time(path, feed, args.threads, args.repeats)
    print(f"# the Glow-TTS base decoder graph, {frames} frames, {replaced} input convolutions "
          f"replaced; {args.threads} thread(s), median of {args.repeats}\n")
    print("| graph | time (s) | max abs mel difference to the plain graph |")
    print("|---|---:|---:|")
    plain = next(iter(results.values()))[1]
    for label, (seconds, out) in results.items():
        print(f"| {label} | {seconds:.3f} | {np.abs(out - plain).max():.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=4, help="m of F(m, 5): outputs per tile")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=265)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--decoder", action="store_true", help="the whole Glow-TTS base decoder graph")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.decoder:
        decoder(args)
        return
    torch.manual_seed(0)
    conv = nn.Conv1d(192, 384, 5, padding=2)
    with torch.no_grad():
        conv.weight.normal_(0, 0.05)
    x = torch.randn(1, 192, args.frames)
    with torch.no_grad():
        exact = F.conv1d(x.double(), conv.weight.double(), conv.bias.double(), padding=2).float().numpy()
    flops = 2 * 384 * 192 * 5 * args.frames
    print(f"# one coupling input convolution of Glow-TTS base: 192 -> 384 channels, kernel 5, "
          f"{args.frames} frames; {args.threads} thread(s), median of {args.repeats}\n")
    print("| graph | time (ms) | GFLOP/s of the direct arithmetic | max abs error (largest value "
          f"{np.abs(exact).max():.2f}) |")
    print("|---|---:|---:|---:|")
    for name, module in (("Conv (onnxruntime's own)", conv),
                         (f"Winograd F({args.tiles}, 5)", WinogradConv1d(conv, args.tiles))):
        seconds, out = onnx_time(module, x, args.threads, args.repeats)
        print(f"| {name} | {1000 * seconds:.2f} | {flops / seconds / 1e9:.0f} | "
              f"{np.abs(out - exact).max():.1e} |")


if __name__ == "__main__":
    main()
