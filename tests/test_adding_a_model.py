"""Adding a model (docs/architecture.md): a toy text-to-mel model joins through the public
registry, from this file alone, then trains and speaks through the command line.

The toy holds one learned mel frame per token and says each token for ``frames_per_token``
frames; training stretches the tokens evenly over the recording and minimises the L1
distance. It is not a speech model, only the smallest thing that fills the role.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import soundfile as sf
import torch
import yaml
from conftest import make_ljspeech
from torch import nn

from flowspeech.cli.main import main
from flowspeech.config import mel_config
from flowspeech.data import TextMelDataset, collate_text_mel
from flowspeech.models import registry
from flowspeech.models.registry import ModelSpec, Role
from flowspeech.models.roles import MelSynthesis, TextToMel
from flowspeech.text import TextFrontend
from flowspeech.training.recipe import Recipe, TrainConfig
from flowspeech.utils.masks import length_mask


class ToyTTS(TextToMel):
    def __init__(self, n_vocab: int, n_mels: int, frames_per_token: int = 4):
        super().__init__()
        self.frames_per_token = frames_per_token
        self.frames = nn.Embedding(n_vocab, n_mels)

    @classmethod
    def from_config(cls, config):
        return cls(TextFrontend(**config.get("text", {})).n_vocab, mel_config(config).n_mels,
                   **config.get("model_args", {}))

    def forward(self, tokens, token_lengths, mels, mel_lengths):
        """L1 between the recording and the tokens stretched evenly over it."""
        frame = torch.arange(mels.size(2))[None]
        which = (frame * token_lengths[:, None] // mel_lengths[:, None]).clamp_max(tokens.size(1) - 1)
        predicted = self.frames(torch.gather(tokens, 1, which)).transpose(1, 2)
        mask = length_mask(mel_lengths, mels.size(2), mels.dtype)
        return ((predicted - mels).abs() * mask).sum() / (mask.sum() * mels.size(1))

    @torch.no_grad()
    def infer(self, tokens, token_lengths, *, speakers=None, noise_scale=0.667, length_scale=1.0,
              generator=None, max_frames=None):
        n = max(1, round(self.frames_per_token * length_scale))
        durations = n * length_mask(token_lengths, tokens.size(1), tokens.dtype)[:, 0]
        mel_lengths = durations.sum(1)
        mels = self.frames(tokens).repeat_interleave(n, dim=1).transpose(1, 2)
        mels = mels * length_mask(mel_lengths, mels.size(2), mels.dtype)
        return MelSynthesis(mels, mel_lengths, durations)


@dataclass
class ToyTrainConfig(TrainConfig):
    learning_rate: float = 0.05


class ToyRecipe(Recipe):
    model_type = "toy-tts"
    train_config_class = ToyTrainConfig

    def __init__(self, config):
        super().__init__(config)
        self.frontend = TextFrontend(**config.get("text", {}))
        self.mel_config = mel_config(config)

    def build_datasets(self, data, val_data, cache_dir):
        train, val = self.manifests(data, val_data)
        return (TextMelDataset(train, self.frontend, self.mel_config, cache_dir),
                TextMelDataset(val, self.frontend, self.mel_config, cache_dir) if val else None)

    def collate(self, items):
        return collate_text_mel(items)

    def training_step(self, ctx, batch):
        with ctx.autocast():
            loss = ctx.model(batch["tokens"], batch["token_lengths"], batch["mels"], batch["mel_lengths"])
        ctx.optimize(loss, "main")
        return {"l1": loss.detach()}

    @torch.no_grad()
    def validate(self, model, batch):
        return {"l1": float(model(batch["tokens"], batch["token_lengths"], batch["mels"],
                                  batch["mel_lengths"]))}


TOY = ModelSpec("toy-tts", Role.TEXT_TO_MEL, ToyTTS, recipe=ToyRecipe,
                description="a toy: one learned frame per token")


@pytest.fixture
def toy_registered():
    registry.register_model(TOY)
    yield TOY
    registry.unregister_model(TOY.name)


def test_a_model_registered_from_outside_trains_and_speaks_through_the_command_line(
        toy_registered, tmp_path, capsys):
    config = {"model": "toy-tts", "description": "toy", "audio": {"preset": "glow_tts"},
              "text": {"symbol_set": "glow-tts", "phonemizer": "none"},
              "model_args": {"frames_per_token": 3},
              "train": {"batch_size": 2, "num_workers": 0, "log_every": 1, "eval_every": 2,
                        "checkpoint_every": 2, "max_steps": 2}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    data = make_ljspeech(tmp_path / "data", n=4)
    assert main(["presets"]) == 0 and "toy-tts" not in capsys.readouterr().out  # no preset: fine
    assert main(["train", "toy-tts", "--config", str(tmp_path / "toy.yaml"), "--data", str(data),
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    assert checkpoint.is_file()
    out = tmp_path / "hello.wav"
    assert main(["synthesize", "--model", str(checkpoint), "--text", "Hello there.",
                 "--out", str(out), "--seed", "1"]) == 0
    audio, sr = sf.read(out)
    assert sr == 22050 and len(audio) > 0
    assert "toy-tts" in capsys.readouterr().out  # the report names the model that spoke


def test_the_registry_refuses_a_second_model_of_the_same_name(toy_registered):
    from flowspeech.errors import ConfigError

    with pytest.raises(ConfigError, match="already registered"):
        registry.register_model(TOY)
    with pytest.raises(ConfigError, match="unknown model type 'no-such-model'"):
        registry.get_spec("no-such-model")


def test_a_package_adds_a_model_through_an_entry_point(tmp_path, monkeypatch):
    """What an installed package declares (``[project.entry-points."flowspeech.models"]``)."""
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[flowspeech.models]\ntoy = test_adding_a_model:TOY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "toy-tts" in registry.load_plugins()
        assert registry.get_spec("toy-tts") is TOY
        assert "toy-tts" in [s.name for s in registry.model_specs(role=Role.TEXT_TO_MEL)]
    finally:
        registry.unregister_model("toy-tts")


class CountingRecipe(ToyRecipe):
    """Validation reports the mean utterance number it saw, to show what was averaged."""

    def validate(self, model, batch):
        return {"utterance": sum(int(i.split("-")[1]) for i in batch["ids"]) / len(batch["ids"])}


@pytest.mark.parametrize("bound, expected", [(None, (1 + 2 + 3 + 4 + 5) / 5), (3, (1 + 2 + 3) / 3)])
def test_validation_averages_the_whole_split_unless_bounded(bound, expected, tmp_path):
    spec = ModelSpec("toy-counting", Role.TEXT_TO_MEL, ToyTTS, recipe=CountingRecipe)
    registry.register_model(spec)
    try:
        data = make_ljspeech(tmp_path / "data", n=5)
        rows = (data / "filelists" / "ljs_audio_text_train_filelist.txt").read_text()
        (data / "filelists" / "ljs_audio_text_val_filelist.txt").write_text(rows)  # all five
        config = {"model": "toy-counting", "text": {"phonemizer": "none"}, "model_args": {},
                  "train": {"batch_size": 2, "num_workers": 0, "eval_every": 1, "max_steps": 1,
                            "checkpoint_every": 1, "val_max_utterances": bound}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        assert main(["train", "toy-counting", "--config", str(tmp_path / "c.yaml"), "--data", str(data),
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 0
        line = next(x for x in (tmp_path / "run" / "train.log").read_text().splitlines() if "validation" in x)
        values = dict(part.split("=") for part in line.split("validation ")[1].split())
        assert float(values["utterance"]) == pytest.approx(expected)
        assert float(values["utterances"]) == (bound or 5)
    finally:
        registry.unregister_model(spec.name)
