"""Mixed-phoneme pre-training (NaturalSpeech Sec. 3.1, Mixed-Phoneme BERT): sup-phoneme BPE,
whole-unit masking, the phoneme encoder, the loss, the recipe and the CLI end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from flowspeech.cli.main import main
from flowspeech.errors import CheckpointError, DatasetError
from flowspeech.models.phoneme_encoder import (
    IGNORE_INDEX,
    MixedPhonemeLM,
    PhonemeEncoder,
    load_pretrained_phoneme_encoder,
    mask_sup_phonemes,
    units_from_spans,
)
from flowspeech.text import TextFrontend
from flowspeech.text.sup_phonemes import (
    FIRST_UNIT_ID,
    SupPhonemeTokenizer,
    word_boundary_ids,
)
from flowspeech.training.checkpoint import CheckpointManager
from flowspeech.checkpoints import load_state_dict_checked
from flowspeech.training.recipes.phoneme_lm import PhonemeLMRecipe

TEXT = {"symbol_set": "ipa", "phonemizer": "none"}  # no espeak needed
LINES = [
    "the cat sat on the mat.",
    "the rat ate the hat, then the cat sat.",
    "that is the thing the other one said!",
    "a hat on a mat, a cat on a hat.",
    "then the rat ran to the other mat?",
    "the thing is that the cat ate.",
]
TINY_ENCODER = {"channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 1,
                "kernel_size": 3, "dropout": 0.0, "window_size": 2}


@pytest.fixture(scope="module")
def frontend():
    return TextFrontend(**TEXT)


@pytest.fixture(scope="module")
def tokenizer(frontend):
    corpus = [frontend.encode(line) for line in LINES * 4]
    return SupPhonemeTokenizer.train(corpus, 400, word_boundary_ids(frontend),
                                     n_phonemes=frontend.n_vocab)


def test_word_boundaries_are_space_and_punctuation(frontend):
    symbols = {frontend.symbols[i] for i in word_boundary_ids(frontend)}
    assert {" ", ",", ".", "!", "?", "_"} <= symbols
    assert not symbols & {"a", "t", "ˈ", "'", "ə"}


def test_units_merge_frequent_pairs_within_words(frontend, tokenizer):
    assert FIRST_UNIT_ID + frontend.n_vocab < tokenizer.vocab_size <= 400
    the = frontend.encode("the")
    unit = tokenizer.unit_id(the)
    assert unit is not None and tokenizer.unit_phonemes(unit) == tuple(the)
    ids = frontend.encode("the cat, the mat.")
    assert tokenizer.sup_ids(ids)[:3] == [unit] * 3  # "the" is one unit
    boundaries = set(word_boundary_ids(frontend))
    for start, end, sup in tokenizer.units(ids):
        inside = ids[start:end]
        assert tokenizer.unit_phonemes(sup) == tuple(inside)
        # a unit is a boundary on its own or lies inside one word
        assert len(inside) == 1 or not boundaries & set(inside)
    # no unit in the whole vocabulary spans a boundary
    for sup in range(FIRST_UNIT_ID, tokenizer.vocab_size):
        phonemes = tokenizer.unit_phonemes(sup)
        assert len(phonemes) == 1 or not boundaries & set(phonemes)


def test_sup_ids_cover_the_input_and_round_trip_through_json(frontend, tokenizer):
    for text in ["the cat sat on the mat.", "zebras quiz, jovial!", "x"]:
        ids = frontend.encode(text)
        sup = tokenizer.sup_ids(ids)
        assert len(sup) == len(ids)
        spans = tokenizer.spans(ids)
        assert spans[0][0] == 0 and spans[-1][1] == len(ids)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))
        assert all(FIRST_UNIT_ID <= s < tokenizer.vocab_size for s in sup)  # never [UNK]
    restored = SupPhonemeTokenizer.from_json(tokenizer.to_json())
    assert restored == tokenizer and restored.vocab_size == tokenizer.vocab_size
    ids = frontend.encode("the other cat ran.")
    assert restored.units(ids) == tokenizer.units(ids)
    with pytest.raises(CheckpointError):
        SupPhonemeTokenizer.from_json("{not json")
    with pytest.raises(CheckpointError):
        SupPhonemeTokenizer.from_json('{"format": "something else"}')


def test_blanks_join_the_unit_before_them():
    fe = TextFrontend(symbol_set="glow-tts", phonemizer="none", add_blank=True)
    corpus = [fe.encode(line) for line in LINES * 4]
    tok = SupPhonemeTokenizer.train(corpus, 400, word_boundary_ids(fe), n_phonemes=fe.n_vocab,
                                    blank_id=fe.blank_id)
    ids = fe.encode("the cat.")
    plain = TextFrontend(symbol_set="glow-tts", phonemizer="none").encode("the cat.")
    units = tok.units(ids)
    assert units[0][0] == 0 and units[-1][1] == len(ids) and len(tok.sup_ids(ids)) == len(ids)
    # the same units as without blanks: blanks are transparent to BPE
    assert [tok.unit_phonemes(s) for *_, s in units] == \
        [tuple(i for i in ids[a:b] if i != fe.blank_id) for a, b, _ in units]
    assert sum(len(tok.unit_phonemes(s)) for *_, s in units) == len(plain)


def test_empty_corpus_is_a_clear_error(frontend):
    with pytest.raises(DatasetError, match="empty corpus"):
        SupPhonemeTokenizer.train([[], []], 100, word_boundary_ids(frontend))


def _batch(frontend, tokenizer, lines):
    from flowspeech.data import pad_1d

    seqs = [frontend.encode(line) for line in lines]
    tokens, lengths = pad_1d([torch.tensor(s) for s in seqs])
    sup, _ = pad_1d([torch.tensor(tokenizer.sup_ids(s)) for s in seqs])
    units = units_from_spans([tokenizer.spans(s) for s in seqs], tokens.size(1))
    return tokens, lengths, sup, units


def test_masking_takes_whole_units_at_the_ratio_and_never_padding(frontend, tokenizer):
    tokens, lengths, sup, units = _batch(frontend, tokenizer, LINES)
    n_vocab, n_sup = frontend.n_vocab, tokenizer.vocab_size
    chosen_units = total_units = 0
    actions = {"mask": 0, "random": 0, "keep": 0}
    for seed in range(60):
        m = mask_sup_phonemes(tokens, sup, units, phoneme_mask_id=n_vocab, sup_mask_id=n_sup,
                              n_phonemes=n_vocab, n_sup_phonemes=n_sup, ratio=0.15,
                              generator=torch.Generator().manual_seed(seed))
        assert not m.selected[units < 0].any()  # padding is never chosen
        assert torch.equal(m.selected, m.phoneme_targets != IGNORE_INDEX)
        assert torch.equal(m.phoneme_targets[m.selected], tokens[m.selected])
        assert torch.equal(m.sup_targets[m.selected], sup[m.selected])
        assert torch.equal(m.tokens[~m.selected], tokens[~m.selected])
        for b in range(tokens.size(0)):
            n_units = int(units[b].max()) + 1
            total_units += n_units
            for k in range(n_units):
                where = units[b] == k
                sel = m.selected[b, where]
                assert sel.all() or not sel.any()  # a unit is chosen whole
                if sel.all():
                    chosen_units += 1
                    if (m.tokens[b, where] == n_vocab).all():
                        assert (m.sup_tokens[b, where] == n_sup).all()
                        actions["mask"] += 1
                    elif torch.equal(m.tokens[b, where], tokens[b, where]) and \
                            torch.equal(m.sup_tokens[b, where], sup[b, where]):
                        actions["keep"] += 1
                    else:
                        actions["random"] += 1
                        assert (m.tokens[b, where] < n_vocab).all()
                        assert (m.sup_tokens[b, where] < n_sup).all()
    assert 0.12 < chosen_units / total_units < 0.18
    share = {k: v / chosen_units for k, v in actions.items()}
    assert 0.7 < share["mask"] < 0.9
    assert 0.04 < share["random"] < 0.17 and 0.04 < share["keep"] < 0.17


def test_encoder_shapes_and_padding(frontend, tokenizer):
    torch.manual_seed(0)
    tokens, lengths, sup, _ = _batch(frontend, tokenizer, LINES[:3])
    enc = PhonemeEncoder(frontend.n_vocab + 1, tokenizer.vocab_size + 1, **TINY_ENCODER).eval()
    h, mask = enc(tokens, lengths, sup)
    assert h.shape == (3, 16, tokens.size(1)) and mask.shape == (3, 1, tokens.size(1))
    assert torch.all(h * (1 - mask) == 0)
    # the first sequence alone gives the same states: padding does not leak in
    n = int(lengths[0])
    alone, _ = enc(tokens[:1, :n], lengths[:1], sup[:1, :n])
    assert torch.allclose(alone, h[:1, :, :n], atol=1e-5)
    phoneme_only = PhonemeEncoder(frontend.n_vocab, **TINY_ENCODER)
    assert phoneme_only(tokens, lengths)[0].shape == h.shape


def test_mlm_loss_decreases(frontend, tokenizer):
    torch.manual_seed(0)
    tokens, lengths, sup, units = _batch(frontend, tokenizer, LINES)
    model = MixedPhonemeLM.build(frontend.n_vocab, tokenizer.vocab_size, **TINY_ENCODER)
    assert model.phoneme_mask_id == frontend.n_vocab and model.sup_mask_id == tokenizer.vocab_size
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = mask_sup_phonemes(tokens, sup, units, phoneme_mask_id=model.phoneme_mask_id,
                              sup_mask_id=model.sup_mask_id, n_phonemes=frontend.n_vocab,
                              n_sup_phonemes=tokenizer.vocab_size, ratio=0.3,
                              generator=torch.Generator().manual_seed(123))

    def evaluate():
        with torch.no_grad():
            logits = model(fixed.tokens, lengths, fixed.sup_tokens)
            return MixedPhonemeLM.loss(*logits, fixed.phoneme_targets, fixed.sup_targets)

    before, before_ph, before_sup = evaluate()
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        m = mask_sup_phonemes(tokens, sup, units, phoneme_mask_id=model.phoneme_mask_id,
                              sup_mask_id=model.sup_mask_id, n_phonemes=frontend.n_vocab,
                              n_sup_phonemes=tokenizer.vocab_size, ratio=0.3, generator=g)
        loss, _, _ = MixedPhonemeLM.loss(*model(m.tokens, lengths, m.sup_tokens), m.phoneme_targets,
                                         m.sup_targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, after_ph, after_sup = evaluate()
    assert torch.isclose(before, before_ph + before_sup)
    assert after < 0.75 * before and after_ph < before_ph and after_sup < before_sup


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "model": "phoneme-lm", "text": TEXT,
        "model_args": {"phoneme_encoder": TINY_ENCODER},
        "train": {"batch_size": 4, "log_every": 1, "eval_every": 1000, "checkpoint_every": 2,
                  "scheduler": "none", "learning_rate": 1e-3},
    }))
    return path


def test_cli_end_to_end_and_loading_the_encoder(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LINES[:3]) + "\n\n!!! ...\n" + "\n".join(LINES[3:]) + "\n")
    run = tmp_path / "run"
    argv = ["pretrain-phonemes", "--text", str(corpus), "--out", str(run), "--config",
            str(_write_config(tmp_path)), "--bpe-vocab", "300", "--max-steps", "3", "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr()
    # the line the front end rejects is skipped, and said so
    assert "skipped 1 line" in out.out and "corpus.txt:5" in out.out  # the file's line number
    assert (run / "sup_phoneme_tokenizer.json").is_file() and (run / "train.log").is_file()
    steps = [s for s, _ in CheckpointManager(run).list()]
    assert steps == [2, 3]
    ckpt = CheckpointManager(run).path_for(3)

    state, tok, text_options = load_pretrained_phoneme_encoder(ckpt)
    assert text_options["symbol_set"] == "ipa" and text_options["phonemizer"] == "none"
    fe = TextFrontend.from_dict(text_options)
    assert tok == SupPhonemeTokenizer.from_json((run / "sup_phoneme_tokenizer.json").read_text())
    # the [MASK] rows are dropped: the weights fit the downstream model's sizes
    assert state["emb.weight"].shape[0] == fe.n_vocab
    assert state["sup_emb.weight"].shape[0] == tok.vocab_size
    encoder = PhonemeEncoder(fe.n_vocab, tok.vocab_size, **TINY_ENCODER)
    load_state_dict_checked(encoder, state, str(ckpt))
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert torch.equal(encoder.emb.weight, trained["encoder.emb.weight"][:-1])
    assert torch.equal(encoder.encoder.attn_layers[0].conv_q.weight,
                       trained["encoder.encoder.attn_layers.0.conv_q.weight"])
    ids = fe.encode("the cat sat.")
    h, _ = encoder(torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([tok.sup_ids(ids)]))
    assert h.shape == (1, 16, len(ids)) and torch.isfinite(h).all()

    # resume continues with the stored tokenizer and config
    assert main(["pretrain-phonemes", "--text", str(corpus), "--out", str(run), "--resume",
                 "--max-steps", "4", "--no-progress", "--device", "cpu"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [s for s, _ in CheckpointManager(run).list()][-1] == 4


def test_wrong_checkpoint_type_is_refused(tmp_path):
    from flowspeech.checkpoints import save_checkpoint

    path = tmp_path / "glow.pt"
    save_checkpoint(path, {"model_type": "glow-tts", "config": {}, "model": {}, "step": 1})
    with pytest.raises(CheckpointError, match="pretrain-phonemes"):
        load_pretrained_phoneme_encoder(path)
    with pytest.raises(CheckpointError):
        load_pretrained_phoneme_encoder(tmp_path / "missing.pt")


def test_recipe_reads_an_ljspeech_folder_and_skips_bad_lines(tmp_path, caplog):
    data = tmp_path / "LJSpeech"
    data.mkdir()
    rows = [f"LJ001-{i:04d}|{t}|{t}" for i, t in enumerate(LINES + ["{HH AH0 L OW1}"], 1)]
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")  # no audio needed
    recipe = PhonemeLMRecipe({"model": "phoneme-lm", "text": TEXT,
                              "model_args": {"bpe_vocab_size": 300,
                                             "phoneme_encoder": TINY_ENCODER}})
    with caplog.at_level("WARNING", logger="flowspeech.data"):
        train, val = recipe.build_datasets(str(data), None, None)
    assert len(train) == len(LINES) and val is None
    assert len(recipe.skipped) == 1 and "braces" in recipe.skipped[0][1]
    assert "skipped 1 of 7 lines" in caplog.text
    batch = recipe.collate([train[i] for i in range(3)])
    model = recipe.build_model()
    assert model.encoder.n_sup_vocab == recipe.tokenizer.vocab_size + 1
    values = recipe.validate(model.eval(), batch)
    assert 0.0 <= values["phoneme_accuracy"] <= 1.0 and 0.0 <= values["sup_phoneme_accuracy"] <= 1.0
    extras = recipe.inference_extras()
    assert SupPhonemeTokenizer.from_json(extras["sup_phoneme_tokenizer"]) == recipe.tokenizer
    assert extras["text"] == TextFrontend(**TEXT).to_dict()


def test_a_corpus_with_no_usable_line_is_a_clear_error(tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_text("...\n!!!\n")
    recipe = PhonemeLMRecipe({"model": "phoneme-lm", "text": TEXT, "model_args": {}})
    with pytest.raises(DatasetError, match="no line"):
        recipe.build_datasets(str(corpus), None, None)
