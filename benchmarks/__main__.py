"""The speed suite: each flowspeech component against the strongest peer on this machine,
timed in one run, side by side.

    python -m benchmarks                                   # everything that is installed
    python -m benchmarks --coqui-python /opt/coqui/bin/python --write docs/benchmarks.md
    bash benchmarks/setup_coqui.sh /opt/coqui              # makes that Coqui TTS venv

| component | flowspeech | peer |
|---|---|---|
| Monotonic Alignment Search | ``maximum_path_numba`` | PyPI ``monotonic-alignment-search`` (the authors' Cython) |
| Glow-TTS inference, paper's model | ``GlowTTS.infer`` | Coqui TTS ``GlowTTS.inference`` |
| vocoders (1 s of audio) | WaveGlow, FloWaveNet (paper's models) | Coqui HiFi-GAN V1 (decoder reference) |
| end-to-end text to wave | NaturalSpeech, paper's model | Coqui VITS (its closest relative) |

Coqui TTS needs torchaudio and so another PyTorch build: it runs in its own venv, in a
subprocess (``benchmarks/coqui_side.py``), with the same thread count, random weights of the
papers' configurations, the same token count and the same durations. Peers run in turns with
ours; the tables give medians of ``--repeats`` runs after a warm-up run, and the machine.
With ``--write FILE`` the tables replace the part of FILE between
``<!-- speed-suite:start -->`` and ``<!-- speed-suite:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling helper modules, however this file is run
from _timing import repeat_timed as timed  # noqa: E402

HOP, RATE = 256, 22050
START, END = "<!-- speed-suite:start -->", "<!-- speed-suite:end -->"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- flowspeech's half ---------------------------------------------------------------------
def ours_mas(repeats: int) -> dict:
    from flowspeech.align import maximum_path_numba

    from bench_mas import make_batch

    value, mask, *_ = make_batch(16, 150, 800, 0)
    out = {"ours": timed(lambda: maximum_path_numba(value, mask), repeats, warmup=2)}
    try:
        from monotonic_alignment_search import maximum_path_cython
    except ImportError:
        return out
    if not torch.equal(maximum_path_cython(value, mask), maximum_path_numba(value, mask)):
        raise SystemExit("MAS: our path differs from the reference")
    out["peer"] = timed(lambda: maximum_path_cython(value, mask), repeats, warmup=2)
    return out


def ours_glow_tts(tokens: int, fpt: float, repeats: int) -> dict:
    from flowspeech.config import load_config
    from flowspeech.models.registry import build_model

    model = build_model(load_config("glow-tts-base"))
    with torch.no_grad():  # every token lasts ceil(fpt) frames, as on the peer's side
        model.encoder.proj_w.proj.weight.zero_()
        model.encoder.proj_w.proj.bias.fill_(math.log(fpt))
    model.prepare_for_inference()
    x = torch.randint(1, model.n_vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([tokens])
    frames = {}

    def run():
        with torch.inference_mode():
            _, mel_lengths, _ = model.infer(x, lengths, noise_scale=0.667)
        frames["n"] = int(mel_lengths.sum())

    return {"seconds": timed(run, repeats), "frames": frames["n"],
            "parameters": sum(p.numel() for p in model.parameters())}


def ours_naturalspeech(tokens: int, fpt: float, repeats: int) -> dict:
    from flowspeech.config import load_config
    from flowspeech.models.registry import build_model

    config = load_config("naturalspeech-base")
    config["model_args"]["n_sup_vocab"] = 0
    model = build_model(config)
    with torch.no_grad():  # every token lasts ceil(fpt) frames, as Coqui VITS's ceil gives
        proj = model.durator.duration_predictor.proj
        proj.weight.zero_()
        proj.bias.fill_(math.log(math.ceil(fpt)))
    model.prepare_for_inference()
    x = torch.randint(1, 100, (1, tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([tokens])
    samples = {}

    def run():
        with torch.inference_mode():
            _, wav_lengths, _ = model.infer(x, lengths, noise_scale=0.667)
        samples["n"] = int(wav_lengths.sum())

    return {"seconds": timed(run, repeats), "samples": samples["n"],
            "parameters": model.inference_parameters()}


def ours_vocoder(preset: str, frames: int, repeats: int) -> dict:
    from flowspeech.config import load_config
    from flowspeech.models.registry import build_model

    model = build_model(load_config(preset)).prepare_for_inference()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    # FloWaveNet reads its [0, 1] dB features, WaveGlow natural-log mels.
    mel = (torch.rand(1, 80, frames, generator=g) if preset.startswith("flowavenet")
           else torch.randn(1, 80, frames, generator=g))
    samples = {}

    def run():
        with torch.inference_mode():
            samples["n"] = int(model.infer(mel, generator=torch.Generator().manual_seed(0)).waveforms.shape[-1])

    return {"seconds": timed(run, repeats), "samples": samples["n"], "parameters": n_params}


# --- the peer's half --------------------------------------------------------------------------
def ours_under(python: str, args) -> dict | None:
    """flowspeech's Glow-TTS timed by another interpreter (the Coqui venv's PyTorch), so the
    two implementations are also compared on the same PyTorch build."""
    root = HERE.parent
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    cmd = [python, str(HERE / "__main__.py"), "--only", "glow-tts", "--json", "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--tokens", str(args.tokens), "--frames-per-token",
           str(args.frames_per_token)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    if done.returncode != 0:
        print(f"flowspeech under {python} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def coqui(python: str, args, only: str) -> dict | None:
    cmd = [python, str(HERE / "coqui_side.py"), "--threads", str(args.threads), "--tokens",
           str(args.tokens), "--frames-per-token", str(args.frames_per_token), "--vocoder-frames",
           str(args.vocoder_frames), "--repeats", str(args.repeats), "--only", only]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"Coqui TTS side failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------
def rtf(seconds: float, samples: int) -> float:
    return seconds / (samples / RATE)


def render(results: dict, args) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"{args.threads} torch threads, torch {torch.__version__}"
             + (f"; Coqui TTS {results['coqui']['coqui_tts']} with torch {results['coqui']['torch']}"
                if results.get("coqui") else "; Coqui TTS not run")
             + f"; medians of {args.repeats} runs after one warm-up; load average at the end "
             f"{os.getloadavg()[0]:.2f}. Command: `python -m benchmarks"
             + (" --coqui-python COQUI_VENV/bin/python" if results.get("coqui") else "") + "`.",
             "",
             "| component | flowspeech | peer | peer | speed-up |",
             "|---|---:|---:|---|---:|"]
    mas = results.get("mas")
    if mas:
        ours = median(mas["ours"])
        peer = median(mas["peer"]) if "peer" in mas else None
        lines.append(f"| MAS, batch 16, 150 tokens x 800 frames | {ours * 1e3:.1f} ms | "
                     + (f"{peer * 1e3:.1f} ms | monotonic-alignment-search (Cython) | **{peer / ours:.2f}x** |"
                        if peer else "– | not installed | – |"))
    c = results.get("coqui") or {}
    g = results.get("glow-tts")
    if g:
        ours = median(g["seconds"])
        audio = g["frames"] * HOP / RATE
        row = (f"| Glow-TTS base inference, 1 x {args.tokens} tokens -> {g['frames']} frames "
               f"({audio:.1f} s) | {ours * 1e3:.0f} ms (RTF {ours / audio:.4f}) | ")
        if "glow-tts" in c:
            peer = c["glow-tts"]["median_s"]
            same = "" if c["glow-tts"]["frames"] == g["frames"] else f" ({c['glow-tts']['frames']} frames!)"
            row += f"{peer * 1e3:.0f} ms{same} | Coqui `GlowTTS` | **{peer / ours:.2f}x** |"
        else:
            row += "– | Coqui not run | – |"
        lines.append(row)
        same = results.get("ours_same_torch")
        if same and "glow-tts" in c:
            ours2, peer = median(same["glow-tts"]["seconds"]), c["glow-tts"]["median_s"]
            lines.append(f"| the same, both on Coqui's PyTorch {c['torch']} | {ours2 * 1e3:.0f} ms | "
                         f"{peer * 1e3:.0f} ms | Coqui `GlowTTS` | **{peer / ours2:.2f}x** |")
    for key, name in (("waveglow", "WaveGlow base (87.9 M)"), ("flowavenet", "FloWaveNet base")):
        v = results.get(key)
        if v:
            s = median(v["seconds"])
            lines.append(f"| vocoder: {name}, {args.vocoder_frames} frames | {s:.2f} s "
                         f"({v['samples'] / s / 1e3:.1f} kHz, RTF {rtf(s, v['samples']):.2f}) | | | |")
    if "hifigan" in c:
        h = c["hifigan"]
        s = h["median_s"]
        lines.append(f"| vocoder reference: HiFi-GAN V1, {args.vocoder_frames} frames | – | {s:.2f} s "
                     f"({h['samples'] / s / 1e3:.1f} kHz, RTF {rtf(s, h['samples']):.2f}) | Coqui "
                     f"`HifiganGenerator` (GAN, not a flow: the speed a flow vocoder competes with) | – |")
    ns = results.get("naturalspeech")
    if ns or "vits" in c:
        row = f"| text to wave, 1 x {args.tokens} tokens | "
        if ns:
            s = median(ns["seconds"])
            row += f"NaturalSpeech base: {s:.2f} s (RTF {rtf(s, ns['samples']):.3f}) | "
        else:
            row += "– | "
        if "vits" in c:
            v = c["vits"]
            row += (f"{v['median_s']:.2f} s (RTF {rtf(v['median_s'], v['samples']):.3f}) | Coqui `Vits` "
                    f"(closest relative of NaturalSpeech) | ")
            # Per second of audio, in case the two made different lengths.
            row += (f"**{rtf(v['median_s'], v['samples']) / rtf(s, ns['samples']):.2f}x** |" if ns else "– |")
        else:
            row += "– | Coqui not run | – |"
        lines.append(row)
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    block = f"{START}\n{text}\n{END}"
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## Speed suite (`python -m benchmarks`)\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(doc)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coqui-python", default=os.environ.get("COQUI_PYTHON"),
                    help="Python of a venv with coqui-tts (benchmarks/setup_coqui.sh); "
                    "default $COQUI_PYTHON; without it the Coqui rows are skipped")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--frames-per-token", type=float, default=5.2)
    ap.add_argument("--vocoder-frames", type=int, default=86, help="mel frames for vocoders (86: 1 s)")
    ap.add_argument("--only", default="mas,glow-tts,vocoders,e2e")
    ap.add_argument("--write", type=Path, help="put the tables into this Markdown file")
    ap.add_argument("--json", action="store_true", help="print the raw timings as JSON only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(args.threads)
    except (ImportError, ValueError):
        pass
    torch.manual_seed(0)
    only = args.only.split(",")
    results: dict = {}
    if "mas" in only:
        results["mas"] = ours_mas(max(args.repeats, 10))
    if "glow-tts" in only:
        results["glow-tts"] = ours_glow_tts(args.tokens, args.frames_per_token, args.repeats)
    if "vocoders" in only:
        results["waveglow"] = ours_vocoder("waveglow-base", args.vocoder_frames, max(1, args.repeats // 2))
        results["flowavenet"] = ours_vocoder("flowavenet-base", args.vocoder_frames, max(1, args.repeats // 2))
    if "e2e" in only:
        results["naturalspeech"] = ours_naturalspeech(args.tokens, args.frames_per_token,
                                                      max(1, args.repeats // 2))
    if args.json:
        results["torch"] = torch.__version__
        print(json.dumps(results))
        return
    if args.coqui_python:
        if "glow-tts" in only:
            results["ours_same_torch"] = ours_under(args.coqui_python, args)
        peers = [k for k, on in (("glow-tts", "glow-tts" in only), ("hifigan", "vocoders" in only),
                                 ("vits", "e2e" in only)) if on]
        if peers:
            results["coqui"] = coqui(args.coqui_python, args, ",".join(peers))
    text = render(results, args)
    print(text)
    if args.write:
        write_section(args.write, text)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
