"""One generator per utterance: an utterance's noise depends on its own generator and length,
never on the batch it is synthesised in (what streaming relies on)."""

from __future__ import annotations

import torch
from test_flowavenet import tiny as tiny_flowavenet
from test_naturalspeech import tiny_config as tiny_naturalspeech
from test_waveglow import tiny as tiny_waveglow

from flowspeech.models.glow_tts import GlowTTS
from flowspeech.models.registry import build_model
from flowspeech.utils.noise import randn, utterance_generators


def _tokens():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 30, (3, 9), generator=g)
    lengths = torch.tensor([9, 4, 6])
    tokens[1, 4:] = tokens[2, 6:] = 0
    return tokens, lengths


def _alone_and_batched(infer, tokens, lengths):
    batched = infer(tokens, lengths, utterance_generators(7, 3))
    alone = [infer(tokens[i:i + 1, :n], lengths[i:i + 1], utterance_generators(7, 1, start=i))
             for i, n in enumerate(lengths.tolist())]
    return batched, alone


def test_text_models_draw_each_utterance_from_its_own_generator():
    torch.manual_seed(0)
    glow = GlowTTS(n_vocab=40, hidden_channels=16, filter_channels=32, filter_channels_dp=16,
                   n_layers_enc=1, n_blocks_dec=2, n_block_layers=2, hidden_channels_dec=16).eval()
    tokens, lengths = _tokens()
    batched, alone = _alone_and_batched(
        lambda t, n, g: glow.infer(t, n, generator=g), tokens, lengths)
    for i, one in enumerate(alone):
        n = int(one.mel_lengths[0])
        assert int(batched.mel_lengths[i]) == n
        assert (batched.mels[i, :, :n] - one.mels[0, :, :n]).abs().max() < 1e-4
    torch.manual_seed(0)
    ns = build_model(tiny_naturalspeech()).prepare_for_inference()
    batched, alone = _alone_and_batched(lambda t, n, g: ns.infer(t, n, generator=g), tokens, lengths)
    for i, one in enumerate(alone):
        n = int(one.waveform_lengths[0])
        assert (batched.waveforms[i, :n] - one.waveforms[0, :n]).abs().max() < 1e-4


def test_vocoders_draw_each_utterance_from_its_own_generator():
    for model, n_mels, mel in ((tiny_waveglow(), 3, torch.randn), (tiny_flowavenet(), 4, torch.rand)):
        model.prepare_for_inference()
        mels, lengths = mel(2, n_mels, 12), torch.tensor([12, 7])
        batched = model.infer(mels, lengths, generator=utterance_generators(3, 2))
        for i, n in enumerate(lengths.tolist()):
            alone = model.infer(mels[i:i + 1, :, :n], generator=utterance_generators(3, 1, start=i))
            hop_n = n * model.hop_length
            assert torch.allclose(batched.waveforms[i, :hop_n], alone.waveforms[0], atol=1e-5)


def test_one_seed_gives_every_utterance_an_independent_stream():
    a, b = utterance_generators(1, 2)
    assert not torch.equal(randn(5, generator=a), randn(5, generator=b))
    assert torch.equal(randn(5, generator=utterance_generators(1, 2)[1]),
                       randn(5, generator=utterance_generators(1, 1, start=1)[0]))


def test_vocoder_and_end_to_end_streams_join_to_infer():
    for model, n_mels, mel in ((tiny_waveglow(), 3, torch.randn), (tiny_flowavenet(), 4, torch.rand)):
        model.prepare_for_inference()
        mels = mel(1, n_mels, 37)
        whole = model.infer(mels, generator=torch.Generator().manual_seed(1)).waveforms
        pieces = list(model.stream(mels, chunk_frames=5, generator=torch.Generator().manual_seed(1)))
        assert [p.size(1) for p in pieces] == [5 * model.hop_length] * 7 + [2 * model.hop_length]
        assert (torch.cat(pieces, 1) - whole).abs().max() < 1e-5
    torch.manual_seed(0)
    ns = build_model(tiny_naturalspeech()).prepare_for_inference()
    tokens, lengths = torch.randint(1, 30, (1, 11)), torch.tensor([11])
    whole = ns.infer(tokens, lengths, generator=torch.Generator().manual_seed(2))
    durations, _, pieces = ns.stream(tokens, lengths, chunk_frames=4, generator=torch.Generator().manual_seed(2))
    joined = torch.cat(list(pieces), 1)
    assert torch.equal(durations, whole.durations) and joined.size(1) == int(whole.waveform_lengths[0])
    assert (joined - whole.waveforms[:, :joined.size(1)]).abs().max() < 1e-5
