"""How predicted durations become whole frames (flowspeech.utils.durations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowspeech.errors import ConfigError
from flowspeech.models.glow_tts import GlowTTS
from flowspeech.utils.durations import DurationRounding


def _predictions(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    log_durations = 1.0 + 0.6 * torch.randn(3, 1, 40, generator=g)  # about 1 to 10 frames
    mask = torch.ones(3, 1, 40)
    mask[1, :, 25:] = 0
    mask[2, :, 7:] = 0
    return log_durations, mask


def test_the_default_is_the_authors_ceiling_to_the_bit():
    log_durations, mask = _predictions()
    for length_scale in (1.0, 0.8, 1.37):
        got = DurationRounding().frames(log_durations, mask, length_scale, torch)
        assert torch.equal(got, torch.ceil(torch.exp(log_durations) * mask * length_scale))


def test_rounding_to_the_nearest_frame_keeps_every_real_token_and_drops_the_padding():
    log_durations, mask = _predictions(1)
    rule = DurationRounding("round", 1.1)
    d = rule.frames(log_durations, mask, 1.0, torch)
    assert bool((d[mask.bool()] >= 1).all()) and bool((d[~mask.bool()] == 0).all())
    expected = torch.clamp_min(torch.round(torch.exp(log_durations) * 1.1), 1) * mask
    assert torch.equal(d, expected)
    # Rounding to the nearest frame neither adds nor takes away on average, the ceiling adds.
    continuous = float((torch.exp(log_durations) * 1.1 * mask).sum())
    assert abs(float(d.sum()) - continuous) < 0.1 * continuous
    assert float(DurationRounding("ceil", 1.1).frames(log_durations, mask, 1.0, torch).sum()) > float(d.sum())


def test_the_numpy_rule_of_the_runtime_is_the_torch_rule_of_the_model():
    log_durations, mask = _predictions(2)
    for rule in (DurationRounding(), DurationRounding("round", 1.099)):
        for length_scale in (1.0, 1.25):
            a = rule.frames(log_durations, mask, length_scale, torch).numpy()
            b = rule.frames(log_durations.numpy(), mask.numpy(), length_scale, np)
            assert np.array_equal(a, b)


@pytest.mark.parametrize("bad", [{"rule": "floor"}, {"rule": "round", "scale": 0.0},
                                 {"rule": "round", "scale": float("nan")}, {"rule": "round", "step": 2},
                                 "round"])
def test_a_bad_setting_is_refused_with_a_message_that_names_it(bad):
    with pytest.raises(ConfigError, match="duration rounding|duration_rounding"):
        DurationRounding.from_dict(bad)


def test_glow_tts_speaks_the_frames_of_its_rounding_rule():
    torch.manual_seed(0)
    model = GlowTTS(n_vocab=20, n_mels=16, hidden_channels=16, filter_channels=32, filter_channels_dp=16,
                    n_heads=2, n_layers_enc=1, n_blocks_dec=2, n_block_layers=1, n_split=2).eval()
    tokens, lengths = torch.randint(1, 20, (1, 30)), torch.tensor([30])
    with torch.no_grad():
        _, _, log_durations, mask = model.encoder(tokens, lengths, None)
    for rule in (DurationRounding(), DurationRounding("round", 1.5)):
        model.duration_rounding = rule
        out = model.infer(tokens, lengths, generator=torch.Generator().manual_seed(0))
        frames = rule.frames(log_durations, mask, 1.0, torch)[0, 0]
        # The path is cut to a multiple of the squeeze factor (2), at the last token.
        assert int(out.mel_lengths[0]) == int(frames.sum()) // 2 * 2
        assert torch.equal(out.durations[0, :-1], frames[:-1].long())


def test_the_shipped_voice_speaks_with_the_rounding_its_voice_json_states():
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.voices import default_voice

    stated = (default_voice().info.get("inference") or {}).get("duration_rounding")
    tts = Synthesizer()
    assert tts.model.duration_rounding == DurationRounding.from_dict(stated)
    other = Synthesizer(duration_rounding={"rule": "ceil", "scale": 1.0})
    assert other.duration_rounding == DurationRounding()
