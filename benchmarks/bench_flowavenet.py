"""Speed of FloWaveNet synthesis, against the authors' code and beside WaveGlow.

All models run at their paper's size (``flowavenet-base``, 182.6 M parameters;
``waveglow-base``, 87.9 M) on the same length of audio. FloWaveNet's weights are random
(with the zero-initialised coupling outputs given small random values so that every flow
does work): speed does not depend on the values. With ``--reference DIR`` (a folder holding
the authors' ``model.py`` and ``modules.py`` from github ksw0306/FloWaveNet; not part of
flowspeech) their model is built, its state dict converted by
``flowspeech.models.flowavenet_import``, and both sides synthesise from the same mel and the
same noise; the table reports the largest difference of the waveforms.

Variants (``--variants``):
  authors   their ``Flowavenet.reverse(z, c)`` as their ``synthesize.py`` calls it (weight norm
            recomputed on every call, as their checkpoints are used)
  layers    flowspeech's ``FloWaveNet.inverse`` straight from a checkpoint (weight norm as trained)
  infer     flowspeech's ``FloWaveNet.infer`` after ``prepare_for_inference()`` (weight norm folded)
  couplings-bf16, couplings-fp16
            ``infer`` after ``set_coupling_dtype(torch.bfloat16 / float16)``: coupling WaveNets
            and priors reduced, audio, upsampler, ActNorms and affine maps in float32
  waveglow  flowspeech's ``WaveGlow.infer`` (its folded engine) on the same number of samples
  waveglow-bf16  the same with its couplings in bfloat16

Each variant runs once to warm up, then ``--repeats`` times in turns; medians.

    python benchmarks/bench_flowavenet.py --seconds 1
    python benchmarks/bench_flowavenet.py --seconds 1 --reference /path/to/FloWaveNet
    python benchmarks/bench_flowavenet.py --device cuda --seconds 10 --reference /path/to/FloWaveNet
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from _timing import load_note, snr_db, timed

from flowspeech.config import load_config
from flowspeech.models.flowavenet import FloWaveNet
from flowspeech.models.flowavenet_import import load_authors_flowavenet
from flowspeech.models.waveglow import WaveGlow

SAMPLE_RATE = 22050
HOP = 256


def import_reference(folder: str):
    """The authors' ``model`` module from ``folder`` (it imports ``modules`` from there too)."""
    folder = str(Path(folder).resolve())
    if not (Path(folder, "model.py").is_file() and Path(folder, "modules.py").is_file()):
        sys.exit(f"--reference {folder}: model.py and modules.py of github ksw0306/FloWaveNet are needed")
    sys.path.insert(0, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their `is not 0`, torch's weight_norm deprecation
        module = importlib.import_module("model")
    sys.path.remove(folder)
    return module


def randomize_outputs(named_parameters, std: float = 0.02) -> None:
    """Give the zero-initialised coupling / prior output layers small random values."""
    with torch.no_grad():
        for name, p in named_parameters:
            if ".end.conv." in name or ".final_conv.3.conv." in name:
                p.normal_(0.0, std)


def build_pair(ref_module, config: dict, seed: int):
    """(authors' model or None, our state dict): the same weights."""
    torch.manual_seed(seed)
    if ref_module is None:
        ours = FloWaveNet.from_config(config)
        randomize_outputs(ours.named_parameters())
        return None, ours.state_dict()
    args = config["model_args"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ref_module.Flowavenet(1, 80, args["n_blocks"], args["n_flows"], args["n_layers"], affine=True,
                                       pretrained=True, block_per_split=args["block_per_split"])
    randomize_outputs(theirs.named_parameters())
    path = os.path.join(tempfile.mkdtemp(), "flowavenet_state.pth")
    torch.save({"state_dict": theirs.state_dict()}, path)
    state, _ = load_authors_flowavenet(path)
    os.remove(path)
    return theirs, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="folder with the authors' model.py and modules.py")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio length (1 s)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="authors,layers,infer,waveglow",
                        help="comma list of authors, layers, infer, waveglow")
    parser.add_argument("--sigma", type=float, default=0.8, help="latent standard deviation (the authors' temperature)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = args.variants.split(",")
    if "authors" in variants and not args.reference:
        print("no --reference: skipping the authors' code")
        variants.remove("authors")
    ref_module = import_reference(args.reference) if args.reference else None

    n_frames = math.ceil(args.seconds * SAMPLE_RATE / HOP)
    n_samples = n_frames * HOP
    duration = n_samples / SAMPLE_RATE
    print(f"# FloWaveNet base, mel of {n_frames} frames = {n_samples} samples = {duration:.2f} s, "
          f"sigma {args.sigma}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}"
          f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}, {load_note()}")

    config = load_config("flowavenet-base")
    theirs, state = build_pair(ref_module if "authors" in variants else None, config, args.seed)

    def make() -> FloWaveNet:
        model = FloWaveNet.from_config(config)
        model.load_state_dict(state)
        return model.to(device).eval()

    torch.manual_seed(args.seed + 1)
    mel = torch.rand(1, 80, n_frames).to(device)  # FloWaveNet features lie in [0, 1]
    noise = torch.randn(1, n_samples, generator=torch.Generator().manual_seed(args.seed + 2)).to(device)

    runs = {}
    if "authors" in variants:
        theirs = theirs.to(device).eval()

        def run_authors():
            with torch.no_grad():
                return theirs.reverse((noise * args.sigma)[:, None], mel)[:, 0]
        runs["authors"] = run_authors
    if "layers" in variants:
        layers = make()

        def run_layers():
            with torch.inference_mode():
                return layers.inverse(noise * args.sigma, mel)
        runs["layers"] = run_layers
    prepare_time = None
    if "infer" in variants:
        fast = make()
        prepare_time, _ = timed(fast.prepare_for_inference, device)
        runs["infer"] = lambda: fast.infer(mel, sigma=args.sigma, noise=noise).waveforms
    for name, dtype in (("couplings-bf16", torch.bfloat16), ("couplings-fp16", torch.float16)):
        if name in variants:
            reduced = make().prepare_for_inference().set_waveform_dtype(dtype)
            runs[name] = lambda reduced=reduced: reduced.infer(mel, sigma=args.sigma, noise=noise).waveforms
    if {"waveglow", "waveglow-bf16"} & set(variants):
        torch.manual_seed(args.seed)
        waveglow = WaveGlow.from_config(load_config("waveglow-base"))
        with torch.no_grad():
            for coupling in waveglow.coupling:
                coupling.net.end.weight.normal_(0.0, 0.02)
                coupling.net.end.bias.normal_(0.0, 0.02)
        waveglow = waveglow.to(device).prepare_for_inference()
        log_mel = (torch.randn(1, 80, n_frames) * 2 - 6).to(device)
        if "waveglow" in variants:
            runs["waveglow"] = lambda: waveglow.infer(
                log_mel, sigma=0.6, generator=torch.Generator(device).manual_seed(args.seed)).waveforms
        if "waveglow-bf16" in variants:
            reduced_wg = copy.deepcopy(waveglow).set_waveform_dtype(torch.bfloat16)
            runs["waveglow-bf16"] = lambda: reduced_wg.infer(
                log_mel, sigma=0.6, generator=torch.Generator(device).manual_seed(args.seed)).waveforms
    for run in runs.values():
        run()  # warm-up

    times = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t, out = timed(run, device)
            times[name].append(t)
            outputs[name] = out.float()
    print(f"# after timing: {load_note()}")

    base = "authors" if "authors" in times else next(iter(times))
    base_median = statistics.median(times[base])
    print(f"\n| variant | median s | best s | kHz (median) | RTF | speed-up vs {base} | max abs diff vs "
          "float32 | SNR vs float32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        diff = snr = "–"
        ref = "waveglow" if name.startswith("waveglow") else "infer"
        if name != ref and ref in outputs:
            err = outputs[name] - outputs[ref]
            diff = f"{err.abs().max().item():.1e}"
            snr = f"{snr_db(outputs[ref], outputs[name]):.1f} dB"
        print(f"| {name} | {med:.2f} | {min(ts):.2f} | {n_samples / med / 1e3:.1f} | {med / duration:.3f} | "
              f"{base_median / med:.2f}x | {diff} | {snr} |")
    if prepare_time is not None:
        print(f"\nprepare_for_inference: {prepare_time:.2f} s; output peak |audio| "
              f"{outputs['infer'].abs().max().item():.3f}")


if __name__ == "__main__":
    main()
