"""The shared training loop: end to end through the CLI, checkpoints, exact resume, NaN
guards, clear errors, and DDP with two CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch
from conftest import latest_glow_tts_checkpoint, train_glow_tts

from flowspeech.checkpoints import load_checkpoint, load_state_dict_checked
from flowspeech.cli.main import main
from flowspeech.config import load_config
from flowspeech.errors import CheckpointError, ConfigError
from flowspeech.training.checkpoint import CheckpointManager

train = train_glow_tts
latest_state = latest_glow_tts_checkpoint


def assert_same_weights(a: dict, b: dict, prefix: str = "") -> None:
    """Every tensor of state dict ``a`` whose name starts with ``prefix`` is equal in ``b``."""
    for key, value in a.items():
        if key.startswith(prefix):
            assert torch.equal(value, b[key]), key


def test_train_writes_run_folder_and_rotates_checkpoints(tiny_glow_tts_config, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "8") == 0
    steps = [s for s, _ in CheckpointManager(run).list()]
    assert steps == [4, 6, 8]  # every 2 steps, keep 3
    assert (run / "config.yaml").is_file() and (run / "train.log").is_file()
    assert any((run / "tensorboard").iterdir())
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
    # Written through private temp files, but readable as the umask says (a shared cluster).
    from flowspeech.utils.files import FILE_MODE

    for path in [run / "config.yaml", *(run / "checkpoints").iterdir()]:
        assert path.stat().st_mode & 0o777 == FILE_MODE, path
    payload = latest_state(run)
    assert payload["step"] == 8 and payload["model_type"] == "glow-tts"
    log = (run / "train.log").read_text()
    assert "step 8" in log and "nll=" in log


def test_resume_is_exact(tiny_glow_tts_config, tiny_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_glow_tts_config, tiny_dataset, straight, "--max-steps", "6") == 0
    # Stop at step 3 (mid-epoch: 2 batches per epoch), then continue to 6.
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "3",
                 "--set", "train.checkpoint_every=3") == 0
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "6", "--resume",
                 "--set", "train.checkpoint_every=3") == 0
    a, b = latest_state(straight), latest_state(resumed)
    assert a["step"] == b["step"] == 6
    assert_same_weights(a["model"], b["model"])
    opt_a, opt_b = a["optimizers"]["main"]["state"], b["optimizers"]["main"]["state"]
    for k in opt_a:
        assert torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"])


def test_a_voice_warm_started_with_absolute_positions_trains_only_its_text_encoder(
        tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    # The recipe for teaching a trained voice sentence positions: the new projection starts
    # fresh (at 0), the flow decoder stays exactly as it was, and the run resumes exactly.
    from flowspeech.models.glow_tts import GlowTTS

    base = tmp_path / "base"
    assert train(tiny_glow_tts_config, tiny_dataset, base, "--max-steps", "2") == 0
    start = latest_state(base)["model"]
    placed = ["--set", "model_args.absolute_positions=true", "--set", "train.trainable=text-encoder",
              "--set", "train.checkpoint_every=3", "--set", "train.learning_rate=5.0"]
    warm = ["--init-from", str(CheckpointManager(base).list()[-1][1]), "--init-partial"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_glow_tts_config, tiny_dataset, straight, "--max-steps", "6", *placed, *warm) == 0
    assert "kept fresh: encoder.positions.proj.weight, encoder.positions.proj.bias" in capsys.readouterr().out
    after = latest_state(straight)
    assert_same_weights(start, after["model"], "decoder.")
    assert not torch.equal(after["model"]["encoder.proj_m.weight"], start["encoder.proj_m.weight"])
    assert float(after["model"]["encoder.positions.proj.weight"].abs().max()) > 0.0
    # Adam holds only the text encoder's tensors (its duration predictor's among them).
    config = load_config(tiny_glow_tts_config)
    config["model_args"]["absolute_positions"] = True
    names = [n for n, _ in GlowTTS.from_config(config).named_parameters()]
    adam = after["optimizers"]["main"]
    assert len(adam["param_groups"][0]["params"]) == sum(n.startswith("encoder.") for n in names)
    assert len(adam["state"]) == sum(n.startswith("encoder.") for n in names)
    # Stopped at step 3 and resumed, the same weights at step 6.
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "3", *placed, *warm) == 0
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "6", "--resume", *placed) == 0
    again = latest_state(resumed)
    assert_same_weights(after["model"], again["model"])


def test_cached_latents_come_from_the_eval_mode_decoder_once_per_clip_even_across_a_resume(
        tiny_glow_tts_config, tiny_dataset, tmp_path, monkeypatch):
    from flowspeech.models.glow_tts import GlowTTS

    base = tmp_path / "base"
    assert train(tiny_glow_tts_config, tiny_dataset, base, "--max-steps", "2") == 0
    start = latest_state(base)["model"]
    cached = ["--set", "train.trainable=text-encoder", "--set", "train.cache_latents=true",
              "--set", "train.checkpoint_every=3", "--set", "train.learning_rate=5.0"]
    warm = ["--init-from", str(CheckpointManager(base).list()[-1][1])]
    decoded = []  # (clips, decoder in training mode) for each decoder pass
    original = GlowTTS.mel_latents

    def counting(model, mels, mel_lengths, speakers=None):
        decoded.append((mels.size(0), model.decoder.training))
        return original(model, mels, mel_lengths, speakers)

    monkeypatch.setattr(GlowTTS, "mel_latents", counting)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(tiny_glow_tts_config, tiny_dataset, straight, "--max-steps", "6", *cached, *warm) == 0
    # Training passes (one clip each, in eval mode) only in the first epoch: 8 clips; the
    # validation passes run on the whole model, in eval mode too.
    training_passes = [d for d in decoded if d[0] == 1]
    assert len(training_passes) == 8 and not any(mode for _, mode in decoded)
    after = latest_state(straight)
    assert_same_weights(start, after["model"], "decoder.")
    assert not torch.equal(after["model"]["encoder.proj_m.weight"], start["encoder.proj_m.weight"])
    decoded.clear()
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "3", *cached, *warm) == 0
    assert len([d for d in decoded if d[0] == 1]) == 8  # steps 1-3 saw every clip
    # The resumed run reads the 8 latents from the run folder instead of the decoder, and
    # ends where the uninterrupted run did.
    decoded.clear()
    assert train(tiny_glow_tts_config, tiny_dataset, resumed, "--max-steps", "6", "--resume", *cached) == 0
    assert not [d for d in decoded if d[0] == 1]
    assert "latent cache: 8 clips read from" in (resumed / "train.log").read_text()
    again = latest_state(resumed)
    assert_same_weights(after["model"], again["model"])


def test_a_latent_cache_is_read_only_by_its_own_decoder_and_a_damaged_shard_only_costs_time(
        tiny_glow_tts_config, tiny_dataset, tmp_path, monkeypatch):
    from flowspeech.models.glow_tts import GlowTTS

    bases = []
    for name, seed in (("base_a", 1), ("base_b", 2)):
        bases.append(tmp_path / name)
        assert train(tiny_glow_tts_config, tiny_dataset, bases[-1], "--max-steps", "1",
                     "--set", f"train.seed={seed}", "--set", "train.checkpoint_every=1") == 0
    cached = ["--set", "train.trainable=text-encoder", "--set", "train.cache_latents=true",
              "--set", "train.checkpoint_every=2"]
    decoded = []
    original = GlowTTS.mel_latents

    def counting(model, mels, mel_lengths, speakers=None):
        decoded.append(mels.size(0))
        return original(model, mels, mel_lengths, speakers)

    monkeypatch.setattr(GlowTTS, "mel_latents", counting)
    run = tmp_path / "run"
    warm_a = ["--init-from", str(CheckpointManager(bases[0]).list()[-1][1])]
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "2", *cached, *warm_a) == 0
    (folder_a,) = (run / "latent_cache").iterdir()
    assert decoded.count(1) == 8 and len(list(folder_a.glob("*.pt"))) == 1
    # A second run of the same decoder sharing the folder reads its latents; one of another
    # decoder gets its own fingerprint and computes its own.
    shared = ["--set", f"train.latent_cache_dir={run / 'latent_cache'}"]
    decoded.clear()
    assert train(tiny_glow_tts_config, tiny_dataset, tmp_path / "same", "--max-steps", "2",
                 *cached, *shared, *warm_a) == 0
    assert decoded.count(1) == 0
    warm_b = ["--init-from", str(CheckpointManager(bases[1]).list()[-1][1])]
    assert train(tiny_glow_tts_config, tiny_dataset, tmp_path / "other", "--max-steps", "2",
                 *cached, *shared, *warm_b) == 0
    assert decoded.count(1) == 8
    assert len(list((run / "latent_cache").iterdir())) == 2
    assert len(list(folder_a.glob("*.pt"))) == 1  # the second run added nothing
    # A clip whose audio changed (another length) is computed again, into a new shard.
    (shard,) = folder_a.glob("*.pt")
    wav = tiny_dataset / "wavs" / "LJ001-0003.wav"
    audio, rate = sf.read(wav)
    sf.write(wav, audio[: len(audio) - rate // 5], rate, subtype="PCM_16")
    decoded.clear()
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4", "--resume", *cached) == 0
    assert decoded.count(1) == 1 and len(list(folder_a.glob("*.pt"))) == 2
    # A damaged shard is reported, and only its clips are computed again; the changed clip's
    # new latent, in the newer shard, is kept.
    shard.write_bytes(shard.read_bytes()[:100])
    decoded.clear()
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "6", "--resume", *cached) == 0
    assert decoded.count(1) == 7
    assert "latent cache: skipping unreadable" in (run / "train.log").read_text()


def test_a_frozen_decoder_keeps_the_speaker_embedding_that_conditions_it_frozen_too(
        tiny_glow_tts_config):
    from flowspeech.training.recipes.glow_tts import GlowTTSRecipe, LatentCache

    config = load_config(tiny_glow_tts_config)
    config["model_args"].update(n_speakers=3, gin_channels=8)
    config.setdefault("train", {})["trainable"] = "text-encoder"
    model = GlowTTSRecipe(config).build_model()
    assert not model.emb_g.weight.requires_grad and not any(
        p.requires_grad for p in model.decoder.parameters())
    assert any(p.requires_grad for p in model.encoder.parameters())
    # The latent cache's fingerprint covers the embedding as well as the decoder.
    before = LatentCache.fingerprint(model)
    with torch.no_grad():
        model.emb_g.weight[0, 0] += 1.0
    assert LatentCache.fingerprint(model) != before


def test_cached_latents_without_a_frozen_decoder_are_refused(tiny_glow_tts_config):
    from flowspeech.training.recipes.glow_tts import GlowTTSRecipe

    config = load_config(tiny_glow_tts_config)
    config.setdefault("train", {})["cache_latents"] = True
    with pytest.raises(ConfigError, match="cache_latents needs train.trainable: text-encoder"):
        GlowTTSRecipe(config).build_model()


def test_existing_run_needs_resume(tiny_glow_tts_config, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "2") == 0
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4") == 1  # refused
    assert [s for s, _ in CheckpointManager(run).list()] == [2]  # nothing lost


def test_resume_skips_a_corrupt_newest_checkpoint(tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4") == 0
    newest = CheckpointManager(run).path_for(4)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash mid-copy
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "6", "--resume") == 0
    out = capsys.readouterr().out
    assert "skipping unreadable checkpoint" in out and "resumed from" in out and "step_00000002" in out
    assert latest_state(run)["step"] == 6


def test_resume_with_a_different_model_is_refused(tiny_glow_tts_config, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "2") == 0
    code = train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "4", "--resume",
                 "--set", "model_args.hidden_channels=48")
    assert code == 1


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "iteration": 3}, foreign)
    with pytest.raises(CheckpointError, match="flowspeech import"):
        load_checkpoint(foreign)
    module = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="shape mismatch.*weight"):
        load_state_dict_checked(module, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "x.pt")
    with pytest.raises(CheckpointError, match="missing: bias"):
        load_state_dict_checked(module, {"weight": torch.zeros(2, 3)}, "x.pt")


def test_nan_steps_are_skipped_without_touching_weights(tiny_glow_tts_config, tiny_dataset, tmp_path, capsys):
    from flowspeech.training.recipes.glow_tts import GlowTTSRecipe
    from flowspeech.training.trainer import Trainer

    class NaNAtStep3(GlowTTSRecipe):
        def training_step(self, ctx, batch):
            if ctx.step == 2:  # the third step (0-based)
                self.before = {k: v.clone() for k, v in ctx.raw_model.state_dict().items()}
                out = ctx.model(*self._inputs(batch))
                loss = out.z.sum() * float("nan")
                ctx.optimize(loss)
                self.after = {k: v.clone() for k, v in ctx.raw_model.state_dict().items()}
                return {"loss": loss}
            return super().training_step(ctx, batch)

    recipe = NaNAtStep3(load_config(tiny_glow_tts_config))
    trainer = Trainer(recipe, tmp_path / "run", str(tiny_dataset), max_steps=5, device="cpu",
                      progress=False, tensorboard=False)
    trainer.fit()
    assert trainer.step == 5
    for k in recipe.before:
        assert torch.equal(recipe.before[k], recipe.after[k]), k
    assert "step 3: skipped" in capsys.readouterr().out
    assert all(torch.isfinite(v).all() for v in trainer.raw_model.state_dict().values()
               if v.is_floating_point())


def test_unknown_train_key_is_an_error(tiny_dataset, tmp_path):
    from flowspeech.training.recipes import recipe_for

    config = load_config("glow-tts-small", {"train": {"learning_rat": 1.0}})
    with pytest.raises(ConfigError, match="learning_rat"):
        recipe_for(config)


def test_validation_logs_images_and_audio(tiny_glow_tts_config, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert train(tiny_glow_tts_config, tiny_dataset, run, "--max-steps", "2", "--set", "train.eval_every=2") == 0
    log = (run / "train.log").read_text()
    assert "validation nll=" in log
    events = list((run / "tensorboard").glob("events.*"))
    assert events and sum(p.stat().st_size for p in events) > 50_000  # figures + audio


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_glow_tts_config, tiny_dataset, tmp_path):
    """torchrun with the gloo backend: two ranks train in lockstep and rank 0 checkpoints."""
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "flowspeech.cli.main", "train", "glow-tts", "--config", str(tiny_glow_tts_config),
           "--data", str(tiny_dataset), "--out", str(run), "--max-steps", "4", "--no-progress",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = latest_state(run)
    assert payload["step"] == 4
    assert payload["trainer"]["world_size"] == 2
    assert len(payload["trainer"]["rng"]) == 2  # every rank's random state, for exact resume


@pytest.mark.parametrize("model", ["glow-tts", "waveglow", "flowavenet", "naturalspeech"])
def test_bf16_autocast_trains_every_model_on_the_cpu(model, tiny_glow_tts_config, tmp_path, monkeypatch):
    """precision bf16 on a CPU runs the forward passes under CPU autocast (not silently in
    float32), and every recipe trains through it: finite losses, a checkpoint."""
    import math
    import re

    import yaml
    from conftest import make_ljspeech
    from test_flowavenet_training import TINY_FLOWAVENET
    from test_naturalspeech import tiny_config as tiny_naturalspeech
    from test_waveglow_training import TINY_WAVEGLOW

    from flowspeech.training import trainer as trainer_module

    config = {"glow-tts": yaml.safe_load(tiny_glow_tts_config.read_text()), "waveglow": TINY_WAVEGLOW,
              "flowavenet": TINY_FLOWAVENET, "naturalspeech": tiny_naturalspeech()}[model]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    seen = []
    autocast = trainer_module.Trainer.autocast

    def spy(self):
        ctx = autocast(self)
        seen.append((getattr(ctx, "device", None), getattr(ctx, "fast_dtype", None)))
        return ctx

    monkeypatch.setattr(trainer_module.Trainer, "autocast", spy)
    run = tmp_path / "run"
    data = make_ljspeech(tmp_path / "data", n=4)
    assert main(["train", model, "--config", str(path), "--data", str(data), "--out", str(run),
                 "--no-progress", "--device", "cpu", "--max-steps", "2",
                 "--set", "train.precision=bf16", "--set", "train.checkpoint_every=2"]) == 0
    assert seen and all(s == ("cpu", torch.bfloat16) for s in seen), seen[:3]
    assert [s for s, _ in CheckpointManager(run).list()] == [2]
    losses = re.findall(r"step 2 epoch \d+ (\S+)=(\S+)", (run / "train.log").read_text())
    assert losses and all(math.isfinite(float(v)) for _, v in losses), losses
