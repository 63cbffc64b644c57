"""Pre-training NaturalSpeech's phoneme encoder on text: Mixed-Phoneme BERT (Zhang et al.,
Interspeech 2022; NaturalSpeech, Tan et al., 2022, Sec. 3.1).

Data is text only: a plain text file with one sentence per line, or an LJSpeech-layout
folder (its ``metadata.csv`` normalised-text column). Each line goes through the config's
``text`` front end; lines it rejects are skipped and counted. A sup-phoneme BPE tokenizer
(:class:`~flowspeech.text.sup_phonemes.SupPhonemeTokenizer`) is learnt on the training lines
and stored in every checkpoint (``inference.sup_phoneme_tokenizer``) together with the
front-end options (``inference.text``); when the recipe knows its run folder
(``run_dir``, set by ``flowspeech pretrain-phonemes``) it also keeps the tokenizer in
``RUN/sup_phoneme_tokenizer.json`` and reuses it on resume.

Config::

    model: phoneme-lm
    text: {symbol_set: ipa, phonemizer: espeak}
    model_args:
      bpe_vocab_size: 30000            # sup-phoneme vocabulary (the papers' 30k)
      phoneme_encoder: {channels: 192, filter_channels: 768, n_heads: 2, n_layers: 6,
                        kernel_size: 3, dropout: 0.1, window_size: 4}
    train: {mask_ratio: 0.15, ...}     # plus every TrainConfig field

Masks are drawn in ``training_step`` from a generator seeded by the step, so a resumed run
masks exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowspeech.data import load_manifest, pad_1d
from flowspeech.errors import ConfigError, DatasetError, TextError
from flowspeech.models.phoneme_encoder import (
    ENCODER_OPTIONS,
    MODEL_TYPE,
    MixedPhonemeLM,
    mask_sup_phonemes,
    masked_accuracy,
    units_from_spans,
)
from flowspeech.text import TextFrontend
from flowspeech.text.sup_phonemes import (
    DEFAULT_VOCAB_SIZE,
    FIRST_UNIT_ID,
    SupPhonemeTokenizer,
    frontend_blank_id,
    word_boundary_ids,
)
from flowspeech.training.recipe import Recipe, TrainConfig
from flowspeech.training.schedules import build_scheduler
from flowspeech.utils.files import atomic_write

logger = logging.getLogger("flowspeech.data")

TOKENIZER_FILE = "sup_phoneme_tokenizer.json"
#: Lines shown one by one when they are skipped; the rest are only counted.
MAX_REPORTED_LINES = 10


@dataclass
class PhonemeLMTrainConfig(TrainConfig):
    mask_ratio: float = 0.15  # share of sup-phoneme units masked per sequence


class PhonemeTextDataset(torch.utils.data.Dataset):
    """Encoded sentences: ``tokens`` (phoneme ids), ``sup`` (sup-phoneme id per phoneme) and
    ``spans`` (the units), all computed once. ``lengths[i]`` is the phoneme count."""

    def __init__(self, sequences: list[list[int]], tokenizer: SupPhonemeTokenizer):
        units = tokenizer.units_batch(sequences)
        self.items = []
        for ids, seq_units in zip(sequences, units):
            sup = [s for start, end, s in seq_units for _ in range(end - start)]
            self.items.append((ids, sup, [(start, end) for start, end, _ in seq_units]))
        self.lengths = [len(ids) for ids in sequences]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids, sup, spans = self.items[index]
        return {"tokens": torch.tensor(ids, dtype=torch.long),
                "sup": torch.tensor(sup, dtype=torch.long), "spans": spans}


def read_text_lines(source: str | Path) -> tuple[list[tuple[str, str]], str]:
    """The sentences of a text file (one per non-empty line) or of an LJSpeech folder's
    ``metadata.csv`` (normalised column), each as ``("file:line", text)``; also the file
    that was read.

    Raises:
        DatasetError: the path does not exist, cannot be read, or holds no text.
    """
    path = Path(source).expanduser()
    if path.is_dir():

        manifest = load_manifest(path, check_audio=False)  # reads metadata.csv
        return [(u.origin, u.text) for u in manifest.utterances], str(manifest.source)
    if not path.is_file():
        raise DatasetError(f"text corpus {path} does not exist: give a text file with one "
                           "sentence per line or an LJSpeech-layout folder")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not UTF-8 text ({err}); convert it first") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    lines = [(f"{path}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1)
             if line.strip()]
    if not lines:
        raise DatasetError(f"{path} holds no text: write one sentence per line")
    return lines, str(path)


class PhonemeLMRecipe(Recipe):
    """Masked-language-model pre-training of
    :class:`~flowspeech.models.phoneme_encoder.PhonemeEncoder` (see the module doc).
    ``skipped`` lists ``(origin, reason)`` of the lines left out."""

    model_type = MODEL_TYPE
    train_config_class = PhonemeLMTrainConfig

    def __init__(self, config: dict[str, Any], run_dir: str | Path | None = None):
        super().__init__(config)

        self.frontend = TextFrontend.from_dict(config.get("text") or {})
        args = config.get("model_args") or {}
        unknown = sorted(set(args) - {"bpe_vocab_size", "phoneme_encoder"})
        if unknown:
            raise ConfigError(f"unknown key(s) in model_args of a phoneme-lm config: "
                              f"{', '.join(unknown)}; known: bpe_vocab_size, phoneme_encoder")
        self.encoder_args = dict(args.get("phoneme_encoder") or {})
        unknown = sorted(set(self.encoder_args) - set(ENCODER_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown key(s) in model_args.phoneme_encoder: "
                              f"{', '.join(unknown)}; "
                              f"known: {', '.join(ENCODER_OPTIONS)}")
        self.bpe_vocab_size = args.get("bpe_vocab_size", DEFAULT_VOCAB_SIZE)
        if isinstance(self.bpe_vocab_size, bool) or not isinstance(self.bpe_vocab_size, int) \
                or self.bpe_vocab_size < 1:
            raise ConfigError(f"model_args.bpe_vocab_size must be a positive integer, got "
                              f"{self.bpe_vocab_size!r}")
        if not 0.0 < self.train.mask_ratio <= 1.0:
            raise ConfigError(f"train.mask_ratio must be in (0, 1], got {self.train.mask_ratio}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tokenizer: SupPhonemeTokenizer | None = None
        self.skipped: list[tuple[str, str]] = []
        self._steps = 0

    # --- data ----------------------------------------------------------------------------
    def _encode_lines(self, lines: list[tuple[str, str]], origin: str) -> list[list[int]]:
        out, skipped = [], []
        for where, line in lines:
            try:
                out.append(self.frontend.encode(line))
            except TextError as err:
                skipped.append((where, str(err)))
        for where, reason in skipped[:MAX_REPORTED_LINES]:
            logger.warning("skipped %s: %s", where, reason)
        if skipped:
            logger.warning("skipped %d of %d lines of %s that the text front end rejects",
                           len(skipped), len(lines), origin)
        self.skipped += skipped
        if not out:
            raise DatasetError(f"no line of {origin} can be encoded by the text front end "
                               f"({self.frontend.symbol_set}/{self.frontend.phonemizer}); the "
                               f"first problem: {skipped[0][1] if skipped else 'no text'}")
        return out

    def _tokenizer_for(self, sequences: list[list[int]]) -> SupPhonemeTokenizer:
        settings = {"word_boundary_ids": tuple(word_boundary_ids(self.frontend)),
                    "blank_id": frontend_blank_id(self.frontend),
                    "n_phonemes": self.frontend.n_vocab,
                    "target_vocab_size": self.bpe_vocab_size}
        stored = self.run_dir / TOKENIZER_FILE if self.run_dir is not None else None
        if stored is not None and stored.is_file():
            tokenizer = SupPhonemeTokenizer.from_json(stored.read_text())
            if all(getattr(tokenizer, k) == v for k, v in settings.items()):
                return tokenizer  # resume: the very units the checkpoints were trained with
            logger.warning("%s was learnt with other settings: learning the sup-phonemes again",
                           stored)
        tokenizer = SupPhonemeTokenizer.train(
            sequences, self.bpe_vocab_size, settings["word_boundary_ids"],
            n_phonemes=self.frontend.n_vocab, blank_id=settings["blank_id"])
        if stored is not None and _is_main_process():

            text = tokenizer.to_json()
            atomic_write(stored, lambda tmp: Path(tmp).write_text(text))
        return tokenizer

    def build_datasets(self, data, val_data, cache_dir):
        """``data``: a text file (one sentence per line) or an LJSpeech folder. Without
        ``val_data``, a corpus of 100 lines or more holds out its last 1% (at most 200
        lines) for validation."""
        lines, origin = read_text_lines(data)
        val_lines, val_origin = (read_text_lines(val_data) if val_data is not None else ([], ""))
        if val_data is None and len(lines) >= 100:
            n_val = min(200, len(lines) // 100)
            lines, val_lines = lines[:-n_val], lines[-n_val:]
            val_origin = f"{origin} (last {n_val} lines)"
        train_seqs = self._encode_lines(lines, origin)
        self.tokenizer = self._tokenizer_for(train_seqs)
        train = PhonemeTextDataset(train_seqs, self.tokenizer)
        val = PhonemeTextDataset(self._encode_lines(val_lines, val_origin), self.tokenizer) \
            if val_lines else None
        return train, val

    def collate(self, items):
        tokens, lengths = pad_1d([item["tokens"] for item in items])
        sup, _ = pad_1d([item["sup"] for item in items])
        return {"tokens": tokens, "token_lengths": lengths, "sup_tokens": sup,
                "units": units_from_spans([item["spans"] for item in items], tokens.size(1))}

    # --- model ---------------------------------------------------------------------------
    def build_model(self) -> MixedPhonemeLM:
        if self.tokenizer is None:
            raise RuntimeError("build_datasets must run first: the sup-phoneme vocabulary "
                               "size comes from the training text")
        return MixedPhonemeLM.build(self.frontend.n_vocab, self.tokenizer.vocab_size,
                                    **self.encoder_args)

    def build_schedulers(self, optimizers):
        t = self.train
        channels = self.encoder_args.get("channels", 192)
        return {name: build_scheduler(opt, t.scheduler, warmup_steps=t.warmup_steps,
                                      gamma=t.lr_gamma, d_model=channels)
                for name, opt in optimizers.items()}

    # --- training ------------------------------------------------------------------------
    def _mask(self, model: MixedPhonemeLM, batch: dict, generator: torch.Generator):
        return mask_sup_phonemes(
            batch["tokens"], batch["sup_tokens"], batch["units"],
            phoneme_mask_id=model.phoneme_mask_id, sup_mask_id=model.sup_mask_id,
            n_phonemes=model.phoneme_mask_id, n_sup_phonemes=model.sup_mask_id,
            ratio=self.train.mask_ratio, generator=generator, first_random_sup=FIRST_UNIT_ID)

    def training_step(self, ctx, batch):
        step = getattr(ctx, "step", None)
        if step is None:  # a bare context (tests): count steps here
            step = self._steps
        self._steps += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        generator = torch.Generator().manual_seed(
            (self.train.seed * 1_000_003 + step) * 1009 + rank)
        raw = getattr(ctx, "raw_model", ctx.model)
        masked = self._mask(raw, batch, generator)
        with ctx.autocast():
            logits = ctx.model(masked.tokens, batch["token_lengths"], masked.sup_tokens)
        loss, phoneme_loss, sup_loss = MixedPhonemeLM.loss(*logits, masked.phoneme_targets,
                                                           masked.sup_targets)
        ctx.optimize(loss, "main")
        return {"loss": loss.detach(), "phoneme": phoneme_loss.detach(),
                "sup_phoneme": sup_loss.detach()}

    @torch.no_grad()
    def validate(self, model, batch):
        """Losses and accuracies at the masked positions of the validation batch, under one
        fixed mask (so values are comparable between steps)."""
        masked = self._mask(model, batch, torch.Generator().manual_seed(0))
        phoneme_logits, sup_logits = model(masked.tokens, batch["token_lengths"], masked.sup_tokens)
        loss, phoneme_loss, sup_loss = MixedPhonemeLM.loss(
            phoneme_logits, sup_logits, masked.phoneme_targets, masked.sup_targets)
        return {"loss": float(loss), "phoneme": float(phoneme_loss), "sup_phoneme": float(sup_loss),
                "phoneme_accuracy": masked_accuracy(phoneme_logits, masked.phoneme_targets),
                "sup_phoneme_accuracy": masked_accuracy(sup_logits, masked.sup_targets)}

    def inference_extras(self):
        tokenizer = self.tokenizer.to_json() if self.tokenizer is not None else None
        return {"sup_phoneme_tokenizer": tokenizer, "text": self.frontend.to_dict()}


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
