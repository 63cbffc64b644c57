"""NaturalSpeech synthesis speed, next to the cascades Glow-TTS + vocoder on the same input.

    python benchmarks/bench_naturalspeech.py                      # paper-size presets, CPU, 2 threads
    python benchmarks/bench_naturalspeech.py --device cuda
    python benchmarks/bench_naturalspeech.py --model runs/ns/checkpoints/step_00010000.pt

Random weights by default (speed does not depend on training): every system gets the same
``--tokens`` phonemes, and the duration predictors are biased so that each phoneme lasts
``--frames-per-token`` frames (100 tokens -> ~6 s of audio, like an average LJSpeech clip).
The rows:

* NaturalSpeech, text to waveform in one network;
* Glow-TTS base + WaveGlow base, and Glow-TTS base + FloWaveNet base (the cascades of this
  toolkit);
* Glow-TTS base + the HiFi-GAN V1 generator (NaturalSpeech's decoder fed mels), the
  cascade NaturalSpeech's paper compares with.

Reports the median seconds of ``--repeats`` runs after a warm-up, and the real-time factor
(seconds of compute per second of audio). Intelligibility of trained models is measured by
``benchmarks/eval_voice.py --acoustic CKPT`` (it accepts NaturalSpeech checkpoints).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics

import torch
from _timing import load_note, repeat_timed, snr_db

from flowspeech.config import load_config
from flowspeech.models.registry import build_model

SR, HOP = 22050, 256


def median_seconds(fn, device, repeats: int) -> float:
    return statistics.median(repeat_timed(fn, repeats, device=device))


def naturalspeech(preset: str | None, checkpoint: str | None, device, frames_per_token: float):
    if checkpoint:
        from flowspeech.inference.loading import load_model

        model, _ = load_model(checkpoint, "naturalspeech", device=device)
        return model
    config = load_config(preset)
    config["model_args"]["n_sup_vocab"] = 0
    torch.manual_seed(0)
    model = build_model(config).to(device).prepare_for_inference()
    with torch.no_grad():
        model.durator.duration_predictor.proj.bias.fill_(math.log(frames_per_token))
    return model


def glow_tts(device, frames_per_token: float):
    torch.manual_seed(0)
    model = build_model(load_config("glow-tts-base")).to(device).prepare_for_inference()
    with torch.no_grad():
        model.encoder.proj_w.proj.bias.fill_(math.log(frames_per_token))
    return model


def vocoder(preset: str, device):
    torch.manual_seed(0)
    model = build_model(load_config(preset)).to(device)
    return model.prepare_for_inference() if hasattr(model, "prepare_for_inference") else model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="naturalspeech-base")
    p.add_argument("--model", help="a trained NaturalSpeech checkpoint instead of random weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--frames-per-token", type=float, default=5.2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cascades", action="store_true", help="time NaturalSpeech only")
    p.add_argument("--decoder-dtype", default="bfloat16",
                   help="also time NaturalSpeech with its waveform decoder in this dtype, with the "
                        "error it adds (default bfloat16; 'none' to skip)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    results = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "machine": platform.processor() or platform.machine(), "load": load_note(), "rows": []}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)

    ns = naturalspeech(args.preset, args.model, device, args.frames_per_token)
    tokens = torch.randint(1, ns.encoder.n_vocab if hasattr(ns.encoder, "n_vocab") else 40,
                           (1, args.tokens), generator=g).to(device)
    lengths = torch.tensor([args.tokens], device=device)
    box = {}

    def run_ns():
        with torch.inference_mode():
            wav, wav_lengths, _ = ns.infer(tokens, lengths, noise_scale=0.667)
        box["ns"] = int(wav_lengths[0])

    seconds = median_seconds(run_ns, device, args.repeats)
    audio = box["ns"] / SR
    label = f"NaturalSpeech ({args.model or args.preset})"
    results["rows"].append({"system": label, "seconds": seconds, "audio_s": audio, "rtf": seconds / audio})
    if args.decoder_dtype != "none":
        with torch.inference_mode():
            reference = ns.infer(tokens, lengths, noise_scale=0.667, generator=torch.Generator().manual_seed(5)).waveforms
            ns.set_waveform_dtype(getattr(torch, args.decoder_dtype))
            reduced = ns.infer(tokens, lengths, noise_scale=0.667, generator=torch.Generator().manual_seed(5)).waveforms
        snr = snr_db(reference, reduced)
        seconds = median_seconds(run_ns, device, args.repeats)
        results["rows"].append({"system": f"{label}, decoder in {args.decoder_dtype} (SNR {snr:.1f} dB "
                                          f"against float32)", "seconds": seconds, "audio_s": audio,
                                "rtf": seconds / audio})

    if not args.no_cascades:
        acoustic = glow_tts(device, args.frames_per_token)
        glow_tokens = torch.randint(1, acoustic.n_vocab, (1, args.tokens), generator=g).to(device)
        with torch.inference_mode():
            mel, mel_lengths, _ = acoustic.infer(glow_tokens, lengths, noise_scale=0.667)
        t_acoustic = median_seconds(lambda: acoustic.infer(glow_tokens, lengths, noise_scale=0.667),
                                    device, args.repeats)
        from flowspeech.models.hifigan import HiFiGANGenerator

        torch.manual_seed(0)
        hifigan = HiFiGANGenerator(80).to(device).eval()
        hifigan.remove_weight_norm()
        vocoders = {"WaveGlow base": vocoder("waveglow-base", device),
                    "FloWaveNet base": vocoder("flowavenet-base", device)}

        def cascade(name, fn):
            t_voc = median_seconds(fn, device, args.repeats)
            audio_s = int(mel_lengths[0]) * HOP / SR
            results["rows"].append({"system": f"Glow-TTS base + {name}", "seconds": t_acoustic + t_voc,
                                    "acoustic_s": t_acoustic, "vocoder_s": t_voc, "audio_s": audio_s,
                                    "rtf": (t_acoustic + t_voc) / audio_s})

        with torch.inference_mode():
            cascade("HiFi-GAN V1 generator", lambda: hifigan(mel))
            # FloWaveNet base reads its [0, 1] dB features: same frames, values in its range.
            inputs = {"WaveGlow base": mel, "FloWaveNet base": torch.rand_like(mel)}
            for name, model in vocoders.items():
                cascade(name, lambda model=model, x=inputs[name]: model.infer(x, sigma=0.6).waveforms)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"Text to waveform, {args.tokens} tokens, {results['device']}"
          f"{' (' + results['gpu'] + ')' if 'gpu' in results else ''}, {results['threads']} threads, "
          f"torch {results['torch']}, {results['load']}")
    print("| system | seconds | audio | real-time factor |\n|---|---:|---:|---:|")
    for r in results["rows"]:
        split = (f" (acoustic {r['acoustic_s']:.2f} + vocoder {r['vocoder_s']:.2f})"
                 if "acoustic_s" in r else "")
        print(f"| {r['system']} | {r['seconds']:.2f}{split} | {r['audio_s']:.2f} s | {r['rtf']:.3f} |")


if __name__ == "__main__":
    main()
