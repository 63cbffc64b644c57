"""Checkpoint files a user may hold: empty, truncated, foreign, pickled objects, and the
temporary files of killed writes. Every reader gives one clear error, never PyTorch's advice
to unpickle anyway."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

from flowspeech.checkpoints import ForeignObjectsError, load_checkpoint, read_torch_file, save_checkpoint
from flowspeech.errors import CheckpointError
from flowspeech.models.flowavenet_import import import_flowavenet
from flowspeech.models.glow_tts_import import import_glow_tts
from flowspeech.models.waveglow_import import import_waveglow
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.utils.files import atomic_write, remove_stale_temp_files

READERS = {
    "load_checkpoint": load_checkpoint,
    "import glow-tts": lambda p: import_glow_tts(p, p.parent / "out.pt"),
    "import waveglow": lambda p: import_waveglow(p, p.parent / "out.pt"),
    "import flowavenet": lambda p: import_flowavenet(p, p.parent / "out.pt"),
}


class Gadget:
    """A class a malicious or careless checkpoint might pickle."""


@pytest.mark.parametrize("reader", READERS)
def test_an_empty_file_is_named_as_empty(reader, tmp_path):
    path = tmp_path / "zero.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"zero.pt is empty \(0 bytes\)"):
        READERS[reader](path)


@pytest.mark.parametrize("reader", READERS)
def test_truncated_and_garbage_files_get_one_clear_error(reader, tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model_type": "glow-tts", "config": {}, "model": {"w": torch.zeros(1000)}})
    for name, data in (("cut.pt", good.read_bytes()[:300]), ("text.pt", b"not a checkpoint\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            READERS[reader](tmp_path / name)
        message = str(err.value)
        assert name in message and "weights_only" not in message and "\n" not in message


@pytest.mark.parametrize("reader", READERS)
def test_pickled_objects_are_refused_without_advice_to_unpickle_them(reader, tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"model": OrderedDict(w=torch.zeros(2)), "extra": Gadget()}, path)
    with pytest.raises(CheckpointError) as err:
        READERS[reader](path)
    message = str(err.value)
    assert "weights_only" not in message and "trusted" not in message
    assert "Gadget" in message or "not part of a WaveGlow checkpoint" in message


def test_numpy_scalars_load_but_objects_do_not(tmp_path):
    import numpy as np

    path = tmp_path / "numbers.pt"
    torch.save({"lr": np.float64(0.5), "n": np.int64(3), "f": np.float32(1.5)}, path)
    assert read_torch_file(path) == {"lr": 0.5, "n": 3, "f": 1.5}
    torch.save({"x": Gadget()}, path)
    with pytest.raises(ForeignObjectsError, match="test_checkpoint_files.Gadget"):
        read_torch_file(path)


def test_resume_passes_over_an_empty_newest_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, {"model_type": "glow-tts", "config": {}, "model": {}, "step": 1})
    manager.path_for(2).write_bytes(b"")
    messages = []
    payload = manager.load_latest("glow-tts", log=messages.append)
    assert payload["step"] == 1 and "empty (0 bytes)" in messages[0]


def test_temporary_files_of_killed_writes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".step_00000007.pt.{dead_pid}.k2j3h4.tmp"
    live = tmp_path / f".step_00000008.pt.{os.getpid()}.a8b9c0.tmp"
    other = tmp_path / ".hidden.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
    # A checkpoint write into a folder sweeps it first.
    stale.write_bytes(b"x")
    sub = tmp_path / "run"
    sub.mkdir()
    moved = sub / stale.name
    stale.rename(moved)
    atomic_write(sub / "config.yaml", lambda tmp: open(tmp, "w").write("a: 1\n"))
    assert not moved.exists() and (sub / "config.yaml").read_text() == "a: 1\n"


def test_averaging_a_gan_checkpoint_averages_the_generator_it_speaks_with(tmp_path):
    from flowspeech.checkpoints import average_checkpoints

    config = {"model": "gan-tts", "model_args": {"width": 2}, "audio": {}, "text": {}}
    paths = []
    for step, value in ((100, 1.0), (200, 2.0), (300, 6.0)):
        model = {"generator.weight": torch.full((2, 2), value, dtype=torch.float16),
                 "generator.memory_in_use": torch.tensor(True),
                 "generator.sign": torch.tensor([1.0, -1.0]),
                 "discriminator.weight": torch.full((3,), value)}
        paths.append(tmp_path / f"step_{step}.pt")
        save_checkpoint(paths[-1], {"model_type": "gan-tts", "config": config, "model": model,
                                    "step": step, "inference": {"duration_scale": step / 100},
                                    "optimizers": {}})

    def generator(model_type, state):  # what a GAN's inference_state keeps
        return {k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")}

    mean = average_checkpoints(paths, lambda config: {"weight", "sign"}, generator)
    assert set(mean["model"]) == {"weight", "memory_in_use", "sign"}
    assert mean["model"]["weight"].dtype == torch.float16
    assert torch.equal(mean["model"]["weight"], torch.full((2, 2), 3.0, dtype=torch.float16))
    assert torch.equal(mean["model"]["sign"], torch.tensor([1.0, -1.0]))  # equal values stay exact
    assert mean["step"] == 300 and mean["inference"] == {"duration_scale": 3.0}
    assert "optimizers" not in mean
    assert [e["step"] for e in mean["averaged_from"]] == [100, 200, 300]
