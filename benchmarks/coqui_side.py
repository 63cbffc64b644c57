"""The Coqui TTS half of the speed suite; run by ``python -m benchmarks`` with the Python of
the venv that ``benchmarks/setup_coqui.sh`` makes (Coqui TTS needs torchaudio, hence its own
PyTorch). Imports nothing from flowspeech. Prints one JSON object.

Every model has random weights (speed does not depend on training) and the architecture of
the paper's LJSpeech configuration (Coqui's config defaults, which are those). Glow-TTS and
VITS get their duration predictors' output bias set so that each token lasts
``--frames-per-token`` frames, as flowspeech's half does, so both synthesise the same
number of frames from the same token count.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch
from _timing import repeat_timed as timed


def glow_tts(tokens: int, fpt: float, repeats: int) -> dict:
    from TTS.tts.configs.glow_tts_config import GlowTTSConfig
    from TTS.tts.models.glow_tts import GlowTTS

    config = GlowTTSConfig()
    model = GlowTTS(config).eval()
    model.store_inverse()  # what Coqui's load_checkpoint(eval=True) does
    # Coqui's Glow-TTS: w = (exp(log_w) - 1) * mask * length_scale, then ceil
    with torch.no_grad():
        proj = model.encoder.duration_predictor.proj
        proj.weight.zero_()
        proj.bias.fill_(math.log(fpt + 1))
    n_vocab = model.encoder.emb.num_embeddings  # Coqui sets it from its character table
    x = torch.randint(1, n_vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([tokens])
    frames = {}

    def run():
        with torch.inference_mode():
            out = model.inference(x, aux_input={"x_lengths": lengths})
        frames["n"] = int(out["model_outputs"].shape[1])

    times = timed(run, repeats)
    return {"seconds": times, "frames": frames["n"],
            "parameters": sum(p.numel() for p in model.parameters())}


def vits(tokens: int, fpt: float, repeats: int) -> dict:
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits

    config = VitsConfig()
    config.model_args.use_sdp = False  # deterministic durations: the plain duration predictor
    model = Vits(config).eval()
    # Coqui's VITS: w = exp(log_w) * mask * length_scale, then ceil
    with torch.no_grad():
        proj = model.duration_predictor.proj
        proj.weight.zero_()
        proj.bias.fill_(math.log(fpt))
    n_vocab = model.text_encoder.emb.num_embeddings
    x = torch.randint(1, n_vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([tokens])
    samples = {}

    def run():
        with torch.inference_mode():
            out = model.inference(x, aux_input={"x_lengths": lengths})
        samples["n"] = int(out["model_outputs"].shape[-1])

    times = timed(run, repeats)
    return {"seconds": times, "samples": samples["n"],
            "parameters": sum(p.numel() for p in model.parameters())}


def hifigan(frames: int, repeats: int) -> dict:
    from TTS.vocoder.models.hifigan_generator import HifiganGenerator

    # HiFi-GAN V1 (Kong et al. 2020), 22.05 kHz, hop 256.
    model = HifiganGenerator(80, 1, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]] * 3,
                             resblock_kernel_sizes=[3, 7, 11], upsample_kernel_sizes=[16, 16, 4, 4],
                             upsample_initial_channel=512, upsample_factors=[8, 8, 2, 2]).eval()
    model.remove_weight_norm()
    mel = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(1))
    samples = {}

    def run():
        with torch.inference_mode():
            samples["n"] = int(model.inference(mel).shape[-1])

    times = timed(run, repeats)
    return {"seconds": times, "samples": samples["n"],
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--frames-per-token", type=float, default=5.2)
    ap.add_argument("--vocoder-frames", type=int, default=430)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="glow-tts,vits,hifigan")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from importlib.metadata import version

    result = {"coqui_tts": version("coqui-tts"), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    only = args.only.split(",")
    if "glow-tts" in only:
        result["glow-tts"] = glow_tts(args.tokens, args.frames_per_token, args.repeats)
    if "vits" in only:
        result["vits"] = vits(args.tokens, args.frames_per_token, args.repeats)
    if "hifigan" in only:
        result["hifigan"] = hifigan(args.vocoder_frames, args.repeats)
    for key in ("glow-tts", "vits", "hifigan"):
        if key in result:
            result[key]["median_s"] = statistics.median(result[key]["seconds"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
