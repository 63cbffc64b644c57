"""Speed of WaveGlow synthesis: flowspeech against the authors' inference code.

Both run the ``waveglow-base`` architecture (the paper's model) with the SAME weights on the
same mel, with the same noise (same seed), and the outputs are compared. The authors' code is
not part of flowspeech: pass ``--reference DIR``, a checkout of github NVIDIA/waveglow (its
``glow.py``) or of DeepLearningExamples' ``Tacotron2/waveglow`` (its ``model.py``). Small
shims for old torch APIs are installed here at import time; their files are not modified.

Without ``--checkpoint`` the weights are random (the authors' initialisation, with the
zero-initialised coupling outputs given small random values so every flow does work): speed
does not depend on the values. With ``--checkpoint`` (an authors' checkpoint in either
published format) both load it.

Variants (``--variants``):
  authors        their ``WaveGlow.infer`` after their ``remove_weightnorm`` (as inference.py)
  layers         flowspeech's layer modules (``WaveGlow.inverse``), weight norm as trained
  layers-folded  the same after ``remove_weight_norm`` (folded weights, cached W^-1)
  compiled       ``torch.compile(WaveGlow.inverse)`` of layers-folded (reports compile time)
  engine         ``WaveGlow.infer`` after ``prepare_for_inference()`` (the folded engine)

Each variant runs once to warm up, then ``--repeats`` times in turns (so load from other
processes hits all alike); the table gives the median and the best, and each variant's
difference from the float32 engine. ``couplings-bf16`` / ``couplings-fp16`` are the engine
after ``WaveGlow.set_waveform_dtype`` (coupling WaveNets reduced, audio and 1x1 inverses in
float32). ``--dtypes`` also times the whole model cast to other dtypes (the default on CUDA).

    python benchmarks/bench_waveglow.py --reference /path/to/waveglow
    python benchmarks/bench_waveglow.py --reference /path/to/waveglow --threads 1
    python benchmarks/bench_waveglow.py --reference /path/to/waveglow --profile
    python benchmarks/bench_waveglow.py --reference /path/to/waveglow --variants authors,engine,couplings-bf16
"""

from __future__ import annotations

import argparse
import contextlib
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
from flowspeech.flows import remove_weight_norm
from flowspeech.models.waveglow import WaveGlow
from flowspeech.models.waveglow_import import load_authors_waveglow

SAMPLE_RATE = 22050


# --- the authors' code ------------------------------------------------------------------------
def import_reference(folder: str):
    """Import ``glow`` (NVIDIA/waveglow) or ``model`` (DeepLearningExamples) from ``folder``."""
    folder = str(Path(folder).resolve())
    name = "glow" if Path(folder, "glow.py").is_file() else "model"
    if not Path(folder, name + ".py").is_file():
        sys.exit(f"--reference {folder}: neither glow.py nor model.py found")
    if not hasattr(torch, "qr"):  # removed from recent torch; their Invertible1x1Conv uses it
        torch.qr = lambda a, some=True: torch.linalg.qr(a, "reduced" if some else "complete")
    sys.path.insert(0, folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
    sys.path.remove(folder)
    return module


@contextlib.contextmanager
def cpu_cuda_tensors(enabled: bool):
    """glow.py's ``infer`` allocates its noise with ``torch.cuda.FloatTensor(...)`` whatever the
    device; on a CPU-only run make that an uninitialised CPU tensor (it is then ``normal_()``-ed
    from the global CPU generator, as flowspeech's noise is)."""
    if not enabled:
        yield
        return
    saved = {n: getattr(torch.cuda, n, None) for n in ("FloatTensor", "HalfTensor")}
    torch.cuda.FloatTensor = lambda *size: torch.empty(*size)
    torch.cuda.HalfTensor = lambda *size: torch.empty(*size, dtype=torch.float16)
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(torch.cuda, n, v)


def build_pair(ref_module, checkpoint: str | None, device: torch.device, seed: int):
    """(authors' model or None, our state dict, our model_args): the same weights."""
    config = load_config("waveglow-base")
    args = config["model_args"]
    torch.manual_seed(seed)
    if ref_module is None:
        if checkpoint:
            return (None, *load_authors_waveglow(checkpoint))
        ours = WaveGlow.from_config(config)
        with torch.no_grad():
            for coupling in ours.coupling:
                coupling.net.end.weight.normal_(0.0, 0.02)
                coupling.net.end.bias.normal_(0.0, 0.02)
        model_args = dict(config["model_args"], n_mel_channels=80, hop_length=256)
        return None, ours.state_dict(), model_args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ref_module.WaveGlow(80, args["n_flows"], args["n_group"], args["n_early_every"],
                                     args["n_early_size"], dict(n_layers=args["n_layers"],
                                                                n_channels=args["n_channels"],
                                                                kernel_size=args["kernel_size"]))
        if checkpoint:
            obj = torch.load(checkpoint, map_location="cpu", weights_only=False)  # a file you trust
            if isinstance(obj, dict) and isinstance(obj.get("model"), torch.nn.Module):
                theirs = obj["model"]
            else:
                sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
                theirs.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()})
            path = checkpoint
        else:
            with torch.no_grad():
                for wn in theirs.WN:
                    wn.end.weight.normal_(0.0, 0.02)
                    wn.end.bias.normal_(0.0, 0.02)
            path = os.path.join(tempfile.mkdtemp(), "waveglow_state.pt")
            torch.save({"state_dict": theirs.state_dict()}, path)
    state, model_args = load_authors_waveglow(path)
    theirs = theirs.to(device).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ref_module.WaveGlow.remove_weightnorm(theirs)
    return theirs, state, model_args


# --- timing ---------------------------------------------------------------------------------------
def profile_table(fn, rows: int = 12) -> str:
    from torch.profiler import profile

    with profile() as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="folder with the authors' glow.py (or DLE model.py)")
    parser.add_argument("--checkpoint", help="authors' WaveGlow checkpoint (default: random weights)")
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length of the mel (5 s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="authors,layers-folded,engine",
                        help="comma list of authors, layers, layers-folded, compiled, engine, "
                             "couplings-bf16, couplings-fp16 (the engine with its coupling "
                             "WaveNets in bfloat16 / float16, audio and 1x1 inverses in float32)")
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    parser.add_argument("--dtypes", default=None,
                        help="also time the engine in these dtypes, with their error against float32 "
                             "(default: float16,bfloat16 on CUDA, none on the CPU; bfloat16 is fast on "
                             "CPUs with AVX512-BF16 or AMX)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = args.variants.split(",")
    if "authors" in variants and not args.reference:
        print("no --reference: skipping the authors' code")
        variants.remove("authors")
    ref_module = import_reference(args.reference) if args.reference else None

    n_frames = math.ceil(args.seconds * SAMPLE_RATE / 256)
    n_samples = n_frames * 256
    duration = n_samples / SAMPLE_RATE
    print(f"# WaveGlow base, mel of {n_frames} frames = {n_samples} samples = {duration:.2f} s, "
          f"sigma {args.sigma}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device "
          f"{device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}, {load_note()}")

    theirs, state, model_args = build_pair(ref_module, args.checkpoint, device, args.seed)

    def make() -> WaveGlow:
        model = WaveGlow(**model_args)
        model.load_state_dict(state)
        return model.to(device).eval()

    torch.manual_seed(args.seed + 1)
    mel = (torch.randn(1, 80, n_frames) * 2 - 6).to(device)  # log-mel-like range

    ours = make() if "layers" in variants else None
    folded = remove_weight_norm(make()) if {"layers-folded", "compiled"} & set(variants) else None
    engine = make()
    t_prepare, _ = timed(engine.prepare_for_inference, device)

    torch.manual_seed(args.seed + 2)
    z = engine.sample_noise(1, n_samples // engine.hop_length, device=device) * args.sigma  # = what infer draws
    compile_time = None
    runs = {}
    for name in variants:
        if name == "authors":
            def run(name=name):
                torch.manual_seed(args.seed + 2)
                with torch.inference_mode(), cpu_cuda_tensors(device.type == "cpu"):
                    return theirs.infer(mel, sigma=args.sigma)
        elif name == "layers":
            def run():
                with torch.inference_mode():
                    return ours.inverse(z, mel)
        elif name == "layers-folded":
            def run():
                with torch.inference_mode():
                    return folded.inverse(z, mel)
        elif name == "compiled":
            compiled = torch.compile(folded.inverse)

            def run():
                with torch.inference_mode():
                    return compiled(z, mel)
        elif name == "engine":
            def run():
                torch.manual_seed(args.seed + 2)
                return engine.infer(mel, sigma=args.sigma).waveforms
        elif name in ("couplings-bf16", "couplings-fp16"):
            reduced = make().prepare_for_inference().set_waveform_dtype(
                torch.bfloat16 if name == "couplings-bf16" else torch.float16)

            def run(reduced=reduced):
                torch.manual_seed(args.seed + 2)
                return reduced.infer(mel, sigma=args.sigma).waveforms
        else:
            sys.exit(f"unknown variant {name}")
        t_first, _ = timed(run, device)  # warm-up (their W_inverse, our engine, compilation)
        if name == "compiled":
            compile_time = t_first
        runs[name] = run

    outputs, times = {}, {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            t, out = timed(run, device)
            times[name].append(t)
            outputs[name] = out.float()
    print(f"# after timing: {load_note()}")

    base = "authors" if "authors" in times else next(iter(times))
    base_median = statistics.median(times[base])
    print("\n| variant | median s | best s | kHz (median) | RTF | speed-up vs " + base
          + " | max abs diff vs engine | SNR vs engine |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        diff, snr = float("nan"), float("nan")
        if "engine" in outputs:
            diff = (outputs[name] - outputs["engine"]).abs().max().item()
            snr = snr_db(outputs["engine"], outputs[name])
        print(f"| {name} | {med:.2f} | {min(ts):.2f} | {n_samples / med / 1e3:.1f} | "
              f"{med / duration:.3f} | {base_median / med:.2f}x | {diff:.1e} | {snr:.1f} dB |")
    print(f"\nengine build (prepare_for_inference): {t_prepare:.2f} s"
          + (f"; torch.compile first call: {compile_time:.1f} s" if compile_time else ""))
    if "engine" in outputs:
        print(f"output peak |audio| {outputs['engine'].abs().max().item():.3f}")

    dtypes = args.dtypes
    if dtypes is None:
        dtypes = "float16,bfloat16" if device.type == "cuda" else ""
    if dtypes:
        low_precision(engine, mel, z, device, args.repeats, n_samples, duration,
                      [getattr(torch, d) for d in dtypes.split(",")])

    if args.profile:
        for name in ("authors", "engine"):
            if name in runs:
                print(f"\n## profile: {name}\n" + profile_table(runs[name]))


def low_precision(engine, mel, z, device, repeats, n_samples, duration, dtypes):
    """The engine in other dtypes: speed and error against float32 (same mel, same noise)."""
    reference = engine.infer(mel, sigma=1.0, noise=z).waveforms.float()
    print(f"\nrms of the float32 output: {reference.pow(2).mean().sqrt().item():.3f}")
    print("\n| dtype | median s | kHz | RTF | max abs err vs fp32 | rms err |")
    print("|---|---|---|---|---|---|")
    for dtype in [torch.float32] + dtypes:
        model = engine.to(dtype)
        model.infer(mel.to(dtype), sigma=1.0, noise=z.to(dtype)).waveforms
        ts, out = [], None
        for _ in range(repeats):
            t, out = timed(lambda: model.infer(mel.to(dtype), sigma=1.0, noise=z.to(dtype)).waveforms, device)
            ts.append(t)
        err = out.float() - reference
        med = statistics.median(ts)
        print(f"| {str(dtype).removeprefix('torch.')} | {med:.3f} | {n_samples / med / 1e3:.0f} | "
              f"{med / duration:.4f} | {err.abs().max().item():.1e} | "
              f"{err.pow(2).mean().sqrt().item():.1e} |")
    engine.to(torch.float32)


if __name__ == "__main__":
    main()
