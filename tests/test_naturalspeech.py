"""NaturalSpeech (flowspeech.models.naturalspeech): shapes, the prior/posterior flow, the
differentiable durator's gradients, the ablation switches, losses that fall on tiny data,
synthesis controls, the paper-size preset, and train -> synthesize from the command line."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from flowspeech.config import load_config
from flowspeech.models.naturalspeech import NaturalSpeech, random_segments
from flowspeech.training.recipes.naturalspeech import NaturalSpeechRecipe

torch.set_num_threads(1)

TINY_ARGS = {
    "latent_channels": 8,
    "phoneme_encoder": {"channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 1},
    "posterior_encoder": {"hidden_channels": 8, "n_layers": 2},
    "flow": {"hidden_channels": 8, "n_layers": 1, "n_flows": 2},
    "durator": {"predictor": {"filter_channels": 8}},
    "memory": {"size": 12, "n_heads": 2},
    "decoder": {"upsample_initial_channel": 16, "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3]], "init_std": None},
    "segment_frames": 4,
}


def tiny_config(**switches) -> dict:
    config = load_config("naturalspeech-small")
    config["text"] = {"symbol_set": "ipa", "phonemizer": "none", "add_blank": False}
    args = copy.deepcopy(TINY_ARGS)
    args.update(switches)
    config["model_args"] = args
    config["discriminator_args"] = {"periods": [2, 3], "n_scales": 1, "channels_scale": 0.0625}
    config["train"].update({"batch_size": 2, "num_workers": 0, "log_every": 1, "eval_every": 1000,
                            "checkpoint_every": 2, "max_steps": 2})
    config["train"]["durator_warmup_steps"] = 0
    return config


def tiny_batch(n_tok=(7, 5), n_frames=(20, 14), seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(n_tok)
    tokens = torch.zeros(b, max(n_tok), dtype=torch.long)
    for i, n in enumerate(n_tok):
        tokens[i, :n] = torch.randint(1, 30, (n,), generator=g)
    specs = torch.rand(b, 513, max(n_frames), generator=g)
    for i, n in enumerate(n_frames):
        specs[i, :, n:] = 0
    return tokens, torch.tensor(n_tok), specs, torch.tensor(n_frames)


def build(**switches) -> NaturalSpeech:
    torch.manual_seed(0)
    return NaturalSpeech.from_config(tiny_config(**switches))


def test_forward_shapes_and_finite_losses():
    model = build()
    tokens, n_tok, specs, n_frm = tiny_batch()
    out = model(tokens, n_tok, specs, n_frm)
    hop = model.hop_length
    assert out.wav.shape == (2, 1, 4 * hop)
    assert out.wav_e2e.shape == (2, 1, 4 * hop)
    assert out.z.shape == out.z_p.shape == out.prior_mean.shape == (2, 8, 20)
    # MAS durations cover every frame exactly.
    assert out.durations.sum(1).tolist() == [20.0, 14.0]
    for value in (NaturalSpeech.kl_backward(out), NaturalSpeech.duration_loss(out), out.kl_forward,
                  out.align_nll):
        assert torch.isfinite(value)


def test_flow_inverts_and_preserves_volume():
    model = build()
    z = torch.randn(2, 8, 11)
    mask = torch.ones(2, 1, 11)
    mask[1, :, 7:] = 0
    z = z * mask
    z_p = model.flow(z, mask)
    assert torch.allclose(model.flow.inverse(z_p, mask), z, atol=1e-5)
    _, logdet = model.flow.flows(z, mask)
    assert torch.allclose(logdet, torch.zeros(2))


def test_upsampler_gradients_reach_the_duration_predictor():
    model = build(end_to_end_loss=False)
    tokens, n_tok, specs, n_frm = tiny_batch()
    out = model(tokens, n_tok, specs, n_frm)
    out.kl_forward.backward()
    grads = [p.grad for p in model.durator.duration_predictor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0

    hard = build(differentiable_durator=False, end_to_end_loss=False)
    out = hard(tokens, n_tok, specs, n_frm)
    out.kl_forward.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0
               for p in hard.durator.duration_predictor.parameters())


def test_learnable_upsampling_weights_are_a_soft_monotonic_alignment():
    from flowspeech.models.durator import LearnableUpsampling

    torch.manual_seed(0)
    up = LearnableUpsampling(16)
    h = torch.randn(1, 16, 4)
    durations = torch.tensor([[2.0, 3.0, 1.0, 4.0]], requires_grad=True)
    mask = torch.ones(1, 1, 4)
    frames, frame_mask, weights = up(h, durations, mask, torch.tensor([10]))
    assert frames.shape == (1, 16, 10)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 4, 10), atol=1e-5)
    frames.sum().backward()
    assert float(durations.grad.abs().sum()) > 0


@pytest.mark.parametrize("switch", ["memory_vae", "bidirectional_flow", "end_to_end_loss",
                                    "differentiable_durator", "phoneme_pretraining"])
def test_ablation_switches_change_the_graph(switch):
    on, off = build(n_sup_vocab=9), build(n_sup_vocab=9, **{switch: False})
    names_on = {n for n, _ in on.named_parameters()}
    names_off = {n for n, _ in off.named_parameters()}
    tokens, n_tok, specs, n_frm = tiny_batch()
    sup = torch.randint(0, 9, tokens.shape)
    out_off = off(tokens, n_tok, specs, n_frm, sup_tokens=sup)
    if switch == "memory_vae":
        assert off.memory is None and not any(n.startswith("memory.") for n in names_off)
        assert any(n.startswith("memory.") for n in names_on)
    elif switch == "bidirectional_flow":
        assert out_off.kl_forward is None and out_off.wav_e2e is not None
    elif switch == "end_to_end_loss":
        assert out_off.wav_e2e is None and out_off.kl_forward is not None
    elif switch == "differentiable_durator":
        assert not any(n.startswith("durator.upsampler.") for n in names_off)
        assert any(n.startswith("durator.upsampler.") for n in names_on)
    else:
        assert not any("sup" in n for n in names_off) and any("sup" in n for n in names_on)


def test_memory_bank_started_from_latents_reproduces_them():
    """A random bank answers every frame alike; one started from k-means of the latents
    answers each frame with a blend of the centres near it."""
    from flowspeech.models.naturalspeech import MemoryBank

    torch.manual_seed(0)
    centres = torch.randn(64, 16)
    latents = centres[torch.randint(0, 64, (4000,))] + 0.3 * torch.randn(4000, 16)
    z = latents[:200].t().unsqueeze(0)                                   # [1, 16, 200]
    memory = MemoryBank(16, size=64, n_heads=2)

    def relative_error(out):
        return float(((out - z) ** 2).sum() / ((z - z.mean(2, keepdim=True)) ** 2).sum())

    with torch.no_grad():
        assert relative_error(memory(z)) > 0.95        # the random start: no information
        memory.in_use.fill_(False)
        stats = memory.init_from_latents(latents, seed=0)
        assert bool(memory.in_use)
        # Hard assignment to the nearest centre would give 0.085 here; dot-product attention
        # favours long keys, so the blend is coarser (0.15).
        assert relative_error(memory(z)) < 0.25
        assert stats["relative_error"] < 0.25 and stats["entropy"] < 0.6 * math.log(64)
    # Gradients reach the bank and every projection through the sharpened attention.
    memory(z).pow(2).sum().backward()
    for name, param in memory.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    with pytest.raises(ValueError, match="cannot start a bank of 64"):
        memory.init_from_latents(latents[:10])


def test_decoder_reads_z_until_the_memory_is_in_use():
    model = build()
    tokens, n_tok, specs, n_frm = tiny_batch()
    model.memory.in_use.fill_(False)
    out = model(tokens, n_tok, specs, n_frm, use_forward_loss=False, use_e2e=False)
    out.wav.sum().backward()
    assert all(p.grad is None for p in model.memory.parameters())
    model.zero_grad(set_to_none=True)
    model.memory.in_use.fill_(True)
    out = model(tokens, n_tok, specs, n_frm, use_forward_loss=False, use_e2e=False)
    out.wav.sum().backward()
    assert all(p.grad is not None for p in model.memory.parameters())


def test_reconstruct_is_copy_synthesis_through_the_posterior():
    model = build().eval()
    _, _, specs, n_frm = tiny_batch()
    hop = model.hop_length
    torch.manual_seed(1)
    wav = model.reconstruct(specs, n_frm, noise_scale=0.0)
    assert wav.shape == (2, 20 * hop)
    assert float(wav[1, 14 * hop:].abs().max()) == 0.0 and float(wav[1, :14 * hop].abs().max()) > 0
    torch.manual_seed(2)   # the posterior mean: no noise drawn into the result
    assert torch.equal(wav, model.reconstruct(specs, n_frm, noise_scale=0.0))


def test_checkpoints_without_the_memory_flag_load_with_the_memory_in_use():
    from flowspeech.checkpoints import load_state_dict_checked

    old = build().state_dict()
    del old["memory.in_use"]
    model = build()
    model.memory.in_use.fill_(False)
    load_state_dict_checked(model, old, "old.pt")
    assert bool(model.memory.in_use)
    old["memory.bank"] = old["memory.bank"][:3]
    with pytest.raises(Exception, match="shape mismatch: memory.bank"):
        load_state_dict_checked(model, old, "old.pt")


def test_training_starts_the_memory_bank_at_memory_start(tmp_path):
    import yaml
    from conftest import make_ljspeech

    data = make_ljspeech(tmp_path / "data", n=4)
    config = tiny_config()
    config["train"].update({"checkpoint_every": 1, "n_buckets": 1})
    config["train"].update(durator_warmup_steps=0, memory_start=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    _train(path, data, tmp_path / "run", 2)
    from flowspeech.checkpoints import load_checkpoint

    first, second = (load_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{n:08d}.pt")["model"]
                     for n in (1, 2))
    assert not bool(first["generator.memory.in_use"]) and bool(second["generator.memory.in_use"])
    assert not torch.equal(first["generator.memory.bank"], second["generator.memory.bank"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 1: memory bank started from k-means of" in log
    config["train"]["memory_init"] = "nearest"
    path.write_text(yaml.safe_dump(config))
    from flowspeech.cli.main import main

    assert main(["train", "naturalspeech", "--config", str(path), "--data", str(data), "--out",
                 str(tmp_path / "bad"), "--device", "cpu", "--no-progress", "--max-steps", "1"]) != 0


def test_given_durations_replace_mas():
    model = build()
    tokens, n_tok, specs, n_frm = tiny_batch()
    durations = torch.tensor([[3, 3, 3, 3, 3, 3, 2], [3, 3, 3, 3, 2, 0, 0]], dtype=torch.float32)
    out = model(tokens, n_tok, specs, n_frm, durations=durations)
    assert torch.equal(out.durations, durations)
    assert float(out.align_nll) == 0.0
    with pytest.raises(ValueError, match="durations must be"):
        model(tokens, n_tok, specs, n_frm, durations=durations[:, :3])


def test_random_segments_pad_short_items():
    x = torch.arange(10.0).view(1, 1, 10).repeat(2, 1, 1)
    seg, starts = random_segments(x, torch.tensor([10, 3]), 5, torch.tensor([4, 0]))
    assert seg[0, 0].tolist() == [4, 5, 6, 7, 8]
    assert seg[1, 0].tolist() == [0, 1, 2, 0, 0]


def test_inference_controls():
    model = build().prepare_for_inference()
    tokens, n_tok, _, _ = tiny_batch()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    wav, lengths, durations = model.infer(tokens, n_tok, generator=g())
    assert wav.shape[0] == 2 and lengths.tolist() == [int(x) for x in lengths]
    assert int(lengths.max()) == wav.shape[1]
    assert lengths.tolist() == [model.hop_length * int(torch.clamp_min(torch.round(d.sum()), 1))
                                for d in durations]
    again, _, _ = model.infer(tokens, n_tok, generator=g())
    assert torch.equal(wav, again)
    slow, slow_lengths, _ = model.infer(tokens, n_tok, length_scale=2.0, generator=g())
    assert (slow_lengths >= 2 * lengths - 2 * model.hop_length).all()
    with pytest.raises(ValueError, match="over the limit"):
        model.infer(tokens, n_tok, length_scale=50.0, max_frames=10)


def test_validation_reports_collapsed_mas_alignments(tmp_path):
    from conftest import make_ljspeech

    data = make_ljspeech(tmp_path / "data", n=2)
    config = tiny_config()
    recipe = NaturalSpeechRecipe(config)
    train, _ = recipe.build_datasets(str(data), None, None)
    torch.manual_seed(0)
    model = recipe.build_model().eval()
    batch = recipe.collate([train[0], train[1]])
    values = recipe.validate(model, batch)
    assert 0.0 <= values["mas_one_frame"] <= 1.0 and 0.0 <= values["mas_diagonal"] <= 1.0
    assert recipe.validate_samples(model, batch, step=1, writer=None)["length_ratio"] > 0
    batch["durations"] = torch.ones_like(batch["tokens"], dtype=torch.float32)
    batch["durations"][:, 0] = batch["spec_lengths"] - batch["token_lengths"] + 1
    assert "mas_one_frame" not in recipe.validate(model, batch)


@pytest.mark.parametrize("alignment_prior", ["token", "head"])
def test_losses_fall_on_a_fixed_batch(plain_step_context, alignment_prior):
    config = tiny_config(alignment_prior=alignment_prior)
    recipe = NaturalSpeechRecipe(config)
    torch.manual_seed(0)
    model = recipe.build_model()
    optimizers = recipe.build_optimizers(model)
    g = torch.Generator().manual_seed(0)
    tokens, n_tok, _, _ = tiny_batch(n_frames=(24, 24))
    audio = 0.3 * torch.sin(torch.arange(24 * 256).float() * 0.05).repeat(2, 1)
    audio = audio + 0.01 * torch.randn(audio.shape, generator=g)
    from flowspeech.audio.features import LinearSpectrogram

    linears = LinearSpectrogram(recipe.mel_config)(audio)
    mels = recipe.mel(audio.unsqueeze(1))
    batch = {"tokens": tokens, "token_lengths": n_tok, "linears": linears, "mels": mels,
             "spec_lengths": torch.tensor([24, 24]), "audio": audio,
             "audio_lengths": torch.tensor([24 * 256] * 2)}
    history = []
    for step in range(25):
        ctx = plain_step_context(model, optimizers, step=step)
        history.append({k: float(v) for k, v in recipe.training_step(ctx, batch).items()})
    first, last = history[:3], history[-3:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    # kl_fwd is a one-sample estimate on a soft alignment: noisy, and not monotone over 25 steps.
    # The term that trains what MAS does not: the frame prior (token) or the head (head).
    own = {"token": "kl_frame", "head": "align_nll"}[alignment_prior]
    assert ({"kl_frame", "align_nll"} - {own}).isdisjoint(history[0])
    for key in ("mel_l1", "kl_bwd", "duration", own):
        assert mean(last, key) < mean(first, key), (key, history[0][key], history[-1][key])
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in history)


def test_base_preset_matches_the_paper_size():
    config = load_config("naturalspeech-base")
    config["model_args"]["n_sup_vocab"] = 0
    with torch.device("meta"):
        model = NaturalSpeech.from_config(config)
    n = model.inference_parameters()
    # The paper reports 28.7 M parameters for synthesis (without the sup-phoneme table of the
    # pre-training vocabulary and the training-only posterior encoder).
    assert abs(n - 28.7e6) / 28.7e6 < 0.05, n


def test_train_then_synthesize_from_the_command_line(tmp_path, capsys):
    import yaml
    from conftest import make_ljspeech

    from flowspeech.cli.main import main

    data = make_ljspeech(tmp_path / "data", n=4)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config()))
    run = tmp_path / "run"
    assert main(["train", "naturalspeech", "--config", str(config_path), "--data", str(data),
                 "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    checkpoints = sorted((run / "checkpoints").glob("*.pt"))
    assert checkpoints
    wav = tmp_path / "out.wav"
    assert main(["synthesize", "--model", str(checkpoints[-1]), "--text", "Hello there.",
                 "--out", str(wav), "--seed", "0"]) == 0
    import soundfile as sf

    audio, sr = sf.read(wav)
    assert sr == 22050 and audio.size > 0
    # The decoder in bfloat16: the same length, nearly the same waveform.
    wav_bf16 = tmp_path / "out_bf16.wav"
    assert main(["synthesize", "--model", str(checkpoints[-1]), "--text", "Hello there.",
                 "--out", str(wav_bf16), "--seed", "0", "--vocoder-precision", "bfloat16"]) == 0
    audio_bf16, _ = sf.read(wav_bf16)
    assert audio_bf16.shape == audio.shape
    assert np.abs(audio_bf16 - audio).max() < 0.05 * max(np.abs(audio).max(), 1e-3)
    # The mel of the waveform is computed only when asked for.
    from flowspeech.inference.synthesizer import Synthesizer

    tts = Synthesizer(checkpoints[-1])
    assert tts.synthesize_full("Hello there.", seed=0, with_mels=False).mels == []
    mel_path = tmp_path / "mel.npy"
    assert main(["synthesize", "--model", str(checkpoints[-1]), "--text", "Hello there.",
                 "--out", str(wav), "--seed", "0", "--save-mel", str(mel_path)]) == 0
    saved = np.load(mel_path)
    assert saved.shape[0] == tts.mel_config.n_mels and abs(saved.shape[1] - len(audio) / 256) <= 1

    # As a named voice, stored in float16 without the discriminators.
    assert main(["voices", "add", "ns-tiny", "--acoustic", str(checkpoints[-1]), "--half"]) == 0
    assert main(["synthesize", "--voice", "ns-tiny", "--text", "Hello there.", "--out", str(wav),
                 "--seed", "0"]) == 0
    from flowspeech.checkpoints import load_checkpoint
    from flowspeech.voices import get_voice

    stored = load_checkpoint(get_voice("ns-tiny").acoustic)["model"]
    assert not any(k.startswith(("discriminator.", "generator.")) for k in stored)
    capsys.readouterr()
    assert main(["voices", "add", "ns-tiny-2", "--acoustic", str(checkpoints[-1]), "--vocoder",
                 str(checkpoints[-1])]) != 0
    assert "needs no vocoder" in capsys.readouterr().err


def test_prior_stays_finite_for_long_utterances_at_initialisation():
    # Token-frame offsets of hundreds of frames once overflowed the prior's log-scale.
    model = build()
    tokens, n_tok, specs, n_frm = tiny_batch(n_tok=(150, 120), n_frames=(900, 700))
    out = model(tokens, n_tok, specs, n_frm, use_e2e=False)
    assert out.prior_log_scale.abs().max() < 10
    assert torch.isfinite(NaturalSpeech.kl_backward(out)) and torch.isfinite(out.kl_forward)


def test_pretrained_phoneme_encoder_starts_the_model_and_its_sup_phonemes_reach_synthesis(tmp_path):
    import yaml
    from conftest import SENTENCES, make_ljspeech

    from flowspeech.cli.main import main
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.models.phoneme_encoder import load_pretrained_phoneme_encoder

    config = tiny_config()
    lm_config = {"model": "phoneme-lm", "text": config["text"],
                 "model_args": {"bpe_vocab_size": 200,
                                "phoneme_encoder": config["model_args"]["phoneme_encoder"]},
                 "train": {"batch_size": 4, "num_workers": 0, "checkpoint_every": 2, "log_every": 1}}
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(lm_config))
    (tmp_path / "text.txt").write_text("\n".join(SENTENCES * 3) + "\n")
    assert main(["pretrain-phonemes", "--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "lm"),
                 "--config", str(tmp_path / "lm.yaml"), "--max-steps", "2", "--no-progress",
                 "--device", "cpu"]) == 0
    lm_checkpoint = sorted((tmp_path / "lm" / "checkpoints").glob("*.pt"))[-1]
    encoder_state, tokenizer, _ = load_pretrained_phoneme_encoder(lm_checkpoint)

    config["model_args"]["alignment_encoder"] = True
    untrained = NaturalSpeechRecipe(copy.deepcopy(config)).build_model()  # nothing pre-trained
    assert untrained.generator.align_encoder is None
    config["train"]["phoneme_encoder_checkpoint"] = str(lm_checkpoint)
    recipe = NaturalSpeechRecipe(config)
    model = recipe.build_model()
    assert model.generator.encoder.sup_emb.num_embeddings == tokenizer.vocab_size
    assert model.generator.align_encoder is not None  # MAS reads it, not the pre-trained encoder
    for key, value in encoder_state.items():  # the encoder starts from the pre-trained weights
        assert torch.equal(model.generator.encoder.state_dict()[key], value), key

    data = make_ljspeech(tmp_path / "data", n=4)
    (tmp_path / "ns.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "ns"
    assert main(["train", "naturalspeech", "--config", str(tmp_path / "ns.yaml"), "--data", str(data),
                 "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    checkpoint = sorted((run / "checkpoints").glob("*.pt"))[-1]
    tts = Synthesizer(checkpoint)
    assert tts.model.sup_tokenizer is not None and tts.end_to_end
    wav, sr = tts.synthesize("The cat sat.", seed=0)
    assert sr == 22050 and wav.size > 0

    bad = copy.deepcopy(config)
    bad["model_args"]["phoneme_encoder"]["channels"] = 32
    from flowspeech.errors import ConfigError

    with pytest.raises(ConfigError, match="pre-trained phoneme encoder does not fit"):
        NaturalSpeechRecipe(bad).build_model()


def _train(config_path, data, run, max_steps, resume=False):
    from flowspeech.cli.main import main

    argv = ["train", "naturalspeech", "--config", str(config_path), "--data", str(data), "--out",
            str(run), "--device", "cpu", "--no-progress", "--max-steps", str(max_steps)]
    assert main(argv + (["--resume"] if resume else [])) == 0
    from flowspeech.checkpoints import load_checkpoint

    return load_checkpoint(sorted((run / "checkpoints").glob("*.pt"))[-1])


def test_resume_is_exact_with_two_optimisers(tmp_path):
    import yaml
    from conftest import make_ljspeech

    data = make_ljspeech(tmp_path / "data", n=4)
    config = tiny_config()
    config["train"].update({"checkpoint_every": 1, "n_buckets": 1})
    config["train"]["durator_warmup_steps"] = 1   # the resumed steps cross into full training
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    straight = _train(path, data, tmp_path / "straight", 3)
    _train(path, data, tmp_path / "split", 1)
    resumed = _train(path, data, tmp_path / "split", 3, resume=True)
    assert resumed["step"] == straight["step"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for name in ("generator", "discriminator"):
        assert name in resumed["optimizers"]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    import os
    import subprocess
    import sys

    import yaml
    from conftest import make_ljspeech

    data = make_ljspeech(tmp_path / "data", n=4)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "flowspeech.cli.main", "train", "naturalspeech", "--config", str(path),
           "--data", str(data), "--out", str(run), "--max-steps", "2", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from flowspeech.checkpoints import load_checkpoint

    payload = load_checkpoint(sorted((run / "checkpoints").glob("*.pt"))[-1])
    assert payload["step"] == 2 and payload["trainer"]["world_size"] == 2


def test_durations_from_an_align_file_reach_the_batch(tmp_path):
    import json

    from conftest import make_ljspeech

    from flowspeech.errors import DatasetError

    data = make_ljspeech(tmp_path / "data", n=2)
    config = tiny_config()
    recipe = NaturalSpeechRecipe(config)
    train, _ = recipe.build_datasets(str(data), None, None)
    items = [train[0], train[1]]

    def write(lines):
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        recipe = NaturalSpeechRecipe(config)
        recipe.build_datasets(str(data), None, None)
        return recipe

    def even_split(item, extra=0):
        n, frames = len(item["tokens"]), item["linear"].size(-1) + extra
        return [frames // n + (i < frames % n) for i in range(n)]

    path = tmp_path / "durations.jsonl"
    config["train"]["durations"] = str(path)
    # One frame more than the spectrogram has (centred framing): the last token gives it up.
    lines = [{"id": item["id"], "durations": even_split(item, extra)} for item, extra in zip(items, (0, 1))]
    batch = write(lines).collate(items)
    assert batch["durations"].shape == batch["tokens"].shape
    for i, (item, line) in enumerate(zip(items, lines)):
        n = len(item["tokens"])
        assert batch["durations"][i, :n].sum() == item["linear"].size(-1)
        assert batch["durations"][i, :n - 1].tolist() == line["durations"][:n - 1]
    lines[1]["durations"] = [2, 2]   # tokens of another front end
    with pytest.raises(DatasetError, match="durations but"):
        write(lines).collate(items)
    with pytest.raises(DatasetError, match="every utterance, validation included"):
        write(lines[:1]).collate(items)
    lines[1]["durations"] = even_split(items[1], 5)   # other audio, or another hop length
    with pytest.raises(DatasetError, match="another hop length"):
        write(lines).collate(items)
