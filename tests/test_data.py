"""Tests of flowspeech.data: readers, feature cache, datasets, sampler, collate, speakers.

All data is made here: short sines with a little noise written with soundfile, and the
metadata.csv / filelists around them. A tiny feature configuration keeps everything fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from flowspeech.audio import MelConfig, MelSpectrogram, load_wav
from flowspeech.data import (
    AudioMelDataset,
    BucketBatchSampler,
    FeatureCache,
    SpeakerTable,
    TextAudioDataset,
    TextMelDataset,
    collate_audio_mel,
    collate_text_audio,
    collate_text_mel,
    default_cache_dir,
    load_manifest,
    precompute_features,
)
from flowspeech.errors import ConfigError, DatasetError, TextError
from flowspeech.utils.masks import length_mask

torch.set_num_threads(1)

SR = 8000
CONFIG = MelConfig(sample_rate=SR, n_fft=256, hop_length=64, win_length=256, n_mels=20, fmax=4000.0)
REAL_SAMPLE = Path("/work/shared/corpus/data/ljspeech_real_sample")


def write_wav(path: Path, seconds: float, freq: float = 440.0, sr: int = SR, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_ljspeech(root: Path, n: int = 6, durations=None) -> Path:
    """A dataset folder: wavs/, metadata.csv, filelists/ljs_audio_text_{train,val}_filelist.txt."""
    durations = durations or [0.15 + 0.05 * i for i in range(n)]
    rows = []
    for i, d in enumerate(durations):
        utt = f"LJ001-{i + 1:04d}"
        write_wav(root / "wavs" / f"{utt}.wav", d, freq=200 + 50 * i, seed=i)
        rows.append(f"{utt}|Raw text {i}.|normalised text {i}.")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    lists = root / "filelists"
    lists.mkdir()
    ids = [r.split("|")[0] for r in rows]
    (lists / "ljs_audio_text_train_filelist.txt").write_text(
        "".join(f"DUMMY/{u}.wav|train text {u}\n" for u in ids[:-2])
    )
    (lists / "ljs_audio_text_val_filelist.txt").write_text(
        "".join(f"DUMMY/{u}.wav|val text {u}\n" for u in ids[-2:])
    )
    return root


class CharFrontend:
    """Stand-in text front end: lowercase letters and space, ids 1..27; rejects the rest."""

    def encode(self, text: str) -> list[int]:
        text = text.lower()
        if "reject" in text:
            raise TextError(f"cannot encode {text!r}")
        ids = [ord(c) - 96 for c in text if "a" <= c <= "z"] + [27 for c in text if c == " "]
        if not ids:
            raise TextError("text is empty after normalisation")
        return ids


# ----------------------------------------------------------------------------- readers


def test_ljspeech_folder(tmp_path):
    root = make_ljspeech(tmp_path / "LJ")
    manifest = load_manifest(root)
    assert manifest.format == "ljspeech" and len(manifest) == 6 and not manifest.skipped
    first = manifest[0]
    assert first.id == "LJ001-0001" and first.text == "normalised text 0."
    assert first.audio_path == (root / "wavs" / "LJ001-0001.wav").absolute()
    assert first.speaker is None and first.sample_rate == SR and first.num_samples == int(0.15 * SR)
    assert manifest.root == root and manifest.speakers == []
    # Same rows through the metadata.csv path itself.
    assert [u.id for u in load_manifest(root / "metadata.csv")] == [u.id for u in manifest]


def test_ljspeech_columns_and_bad_rows(tmp_path, caplog):
    root = make_ljspeech(tmp_path / "LJ", n=3)
    (root / "wavs" / "garbage.wav").write_bytes(b"this is not a wav file at all" * 10)
    (root / "metadata.csv").write_text(
        "LJ001-0001|Raw \"quoted\" text.|\n"        # empty normalised column -> raw text
        "LJ001-0002|only two columns\n"             # id|text
        "LJ001-0003|a|b|c\n"                        # 4 fields
        "\n"                                        # blank lines are not rows
        "missing|some text|some text\n"             # no wav
        "garbage|some text|some text\n"             # unreadable wav
        "LJ001-0003| |  \n"                         # empty text
    )
    with caplog.at_level(logging.WARNING, logger="flowspeech.data"):
        manifest = load_manifest(root)
    assert [(u.id, u.text) for u in manifest] == [
        ("LJ001-0001", 'Raw "quoted" text.'),
        ("LJ001-0002", "only two columns"),
    ]
    csv = root / "metadata.csv"
    reasons = {s.line: s.reason for s in manifest.skipped}
    assert set(reasons) == {3, 5, 6, 7} and all(s.source == csv for s in manifest.skipped)
    assert "4 fields" in reasons[3]
    assert "does not exist" in reasons[5] and "missing.wav" in reasons[5]
    assert "unreadable" in reasons[6] and "garbage.wav" in reasons[6]
    assert reasons[7] == "empty text"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for line in (3, 5, 6, 7):
        assert f"{csv}:{line}:" in logged


def test_filelists_dummy_relative_absolute_and_audio_root(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=3)
    other = write_wav(tmp_path / "elsewhere" / "abs.wav", 0.2)
    write_wav(tmp_path / "lists" / "clips" / "rel.wav", 0.2)
    filelist = tmp_path / "lists" / "mine.txt"
    filelist.write_text(
        f"DUMMY/LJ001-0001.wav|dummy resolves to wavs\n"
        f"{other}|absolute path\n"
        f"clips/rel.wav|relative to the filelist's folder\n"
    )
    # Without audio_root, DUMMY/ means <filelist folder>/wavs: missing here, reported.
    manifest = load_manifest(filelist)
    assert manifest.format == "filelist"
    assert [u.id for u in manifest] == ["abs", "rel"]
    assert manifest.skipped[0].line == 1 and "LJ001-0001.wav" in manifest.skipped[0].reason
    # With audio_root, DUMMY/ (and VITS's DUMMY1/) resolve to <audio_root>/wavs.
    filelist.write_text("DUMMY/LJ001-0001.wav|a\nDUMMY1/LJ001-0002.wav|b\nwavs/LJ001-0003.wav|c\n")
    manifest = load_manifest(filelist, audio_root=root)
    assert [u.audio_path for u in manifest] == [(root / "wavs" / f"LJ001-000{i}.wav").absolute() for i in (1, 2, 3)]
    assert manifest.root == root
    # audio_root may also be the wav folder itself (glow-tts's DUMMY link target).
    assert len(load_manifest(filelist, audio_root=root / "wavs")) == 2


def test_dataset_folder_with_split(tmp_path):
    root = make_ljspeech(tmp_path / "LJ")
    train = load_manifest(root, split="train")
    val = load_manifest(root, split="val")
    assert train.source.name == "ljs_audio_text_train_filelist.txt"
    assert [u.id for u in train] == [f"LJ001-000{i}" for i in range(1, 5)]
    assert [u.id for u in val] == ["LJ001-0005", "LJ001-0006"]
    assert train[0].text == "train text LJ001-0001"
    assert train[0].audio_path == (root / "wavs" / "LJ001-0001.wav").absolute()
    assert train.root == root
    with pytest.raises(DatasetError, match="no filelist for split 'test'.*ljs_audio_text_train"):
        load_manifest(root, split="test")
    with pytest.raises(DatasetError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_multi_speaker_filelist(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=4)
    lists = root / "filelists"
    (lists / "ljs_audio_sid_text_train_filelist.txt").write_text(
        "DUMMY/LJ001-0001.wav|3|first\n"
        "DUMMY/LJ001-0002.wav|0|second\n"
        "DUMMY/LJ001-0003.wav|third without speaker\n"  # wrong field count for this file
        "DUMMY/LJ001-0004.wav|3|fourth\n"
    )
    (lists / "ljs_audio_text_train_filelist.txt").unlink()
    manifest = load_manifest(root, split="train")
    assert manifest.format == "filelist-speaker"
    assert [(u.id, u.speaker, u.text) for u in manifest] == [
        ("LJ001-0001", "3", "first"), ("LJ001-0002", "0", "second"), ("LJ001-0004", "3", "fourth"),
    ]
    assert manifest.skipped[0].line == 3 and "'path|speaker|text'" in manifest.skipped[0].reason
    table = SpeakerTable.from_labels(u.speaker for u in manifest)
    assert table.names == ["0", "1", "2", "3"] and table.id("3") == 3  # VITS sids kept


def test_all_rows_bad_raises(tmp_path):
    root = tmp_path / "LJ"
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("a|text|text\nb|text|text\n")
    with pytest.raises(DatasetError, match="no usable utterance.*2 rows skipped"):
        load_manifest(root)
    (root / "metadata.csv").write_text("")
    with pytest.raises(DatasetError, match="no usable utterance"):
        load_manifest(root)


def test_duplicate_ids_and_bad_encoding(tmp_path):
    write_wav(tmp_path / "a" / "x.wav", 0.1)
    write_wav(tmp_path / "b" / "x.wav", 0.1)
    filelist = tmp_path / "list.txt"
    filelist.write_bytes(b"a/x.wav|one\nb/x.wav|two\na/x.wav|one again\na/x.wav|bad \xff byte\n")
    manifest = load_manifest(filelist)
    assert [u.text for u in manifest] == ["one"]  # one clip, one transcript
    assert [s.line for s in manifest.skipped] == [2, 3, 4]
    assert "duplicate id 'x': line 1 already has it" in manifest.skipped[0].reason
    assert "for the same audio" in manifest.skipped[1].reason
    assert "UTF-8" in manifest.skipped[2].reason


def test_a_repeated_id_in_metadata_csv_trains_one_transcript_and_says_so(tmp_path, caplog):
    root = make_ljspeech(tmp_path / "data", n=2)
    rows = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_text(rows + "LJ001-0001|Another text.|another text.\n")
    manifest = load_manifest(root / "metadata.csv")
    assert [u.id for u in manifest] == ["LJ001-0001", "LJ001-0002"]
    assert manifest.skipped[0].line == 3 and "line 1 already has it" in manifest.skipped[0].reason
    assert any("duplicate id 'LJ001-0001'" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not (REAL_SAMPLE / "metadata.csv").is_file(), reason="shared corpus sample not present")
def test_real_ljspeech_sample():
    folder = load_manifest(REAL_SAMPLE)
    listed = load_manifest(REAL_SAMPLE / "filelist.txt")  # DUMMY/ -> wavs/ next to the filelist
    assert len(folder) == len(listed) > 0 and not folder.skipped and not listed.skipped
    assert folder[0].audio_path == listed[0].audio_path and folder[0].sample_rate == 22050


# ----------------------------------------------------------------------------- feature cache


def test_cache_computes_once_and_matches_fresh_mel(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=2)
    utt = load_manifest(root)[0]
    cache = FeatureCache(CONFIG, root=root)
    assert cache.dir == default_cache_dir(root, CONFIG) and cache.dir.parent.name == ".flowspeech_cache"
    mel = cache.mel(utt)
    assert cache.misses == 1 and cache.hits == 0
    path = cache.path(utt, "mel")
    mtime = path.stat().st_mtime_ns
    again = FeatureCache(CONFIG, root=root).mel(utt)  # a new process would see the same file
    assert cache.mel(utt) is not None and cache.misses == 1 and cache.hits == 1
    assert path.stat().st_mtime_ns == mtime
    fresh = MelSpectrogram(CONFIG)(torch.from_numpy(load_wav(utt.audio_path, SR)[0])).numpy()
    assert mel.dtype == np.float32 and mel.shape == (20, CONFIG.n_frames(utt.num_samples))
    np.testing.assert_array_equal(mel, fresh)
    np.testing.assert_array_equal(again, fresh)
    # A different configuration lives in a different folder.
    other = MelConfig(sample_rate=SR, n_fft=256, hop_length=32, win_length=256, n_mels=20, fmax=4000.0)
    assert FeatureCache(other, root=root).dir != cache.dir
    assert not list(cache.dir.glob("*.tmp"))


def test_cache_recomputes_when_wav_changes_or_file_is_corrupt(tmp_path, caplog):
    root = make_ljspeech(tmp_path / "LJ", n=1)
    utt = load_manifest(root)[0]
    cache = FeatureCache(CONFIG, tmp_path / "cache")
    old = cache.mel(utt)
    old_path = cache.path(utt)
    write_wav(utt.audio_path, 0.3, freq=1000)  # new content, new size and mtime
    new = cache.mel(utt)
    assert cache.misses == 2 and new.shape[1] > old.shape[1]
    assert not old_path.exists() and cache.path(utt).exists()  # stale entry replaced
    # Corrupt (truncated) and wrong-shaped entries are recomputed, with a warning.
    data = cache.path(utt).read_bytes()
    cache.path(utt).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="flowspeech.data"):
        np.testing.assert_array_equal(cache.mel(utt), new)
        np.save(cache.path(utt), np.zeros((3, 4), dtype=np.float32))
        np.testing.assert_array_equal(FeatureCache(CONFIG, tmp_path / "cache").mel(utt), new)
    assert cache.misses == 3 and "corrupt" in caplog.text and "recomputing" in caplog.text
    np.testing.assert_array_equal(np.load(cache.path(utt)), new)


def test_cache_linear_and_resampled_audio(tmp_path):
    write_wav(tmp_path / "wavs" / "hi.wav", 0.2, sr=16000)
    (tmp_path / "metadata.csv").write_text("hi|text\n")
    utt = load_manifest(tmp_path)[0]
    cache = FeatureCache(CONFIG, root=tmp_path)
    audio = cache.audio(utt)
    assert audio.shape == (int(0.2 * SR),) and cache.misses == 1  # resampled, so cached
    np.testing.assert_array_equal(cache.audio(utt), audio)
    linear = cache.linear(utt)
    assert linear.shape == (CONFIG.n_freqs, CONFIG.n_frames(len(audio))) and (linear >= 0).all()


def test_unwritable_cache_warns_and_still_computes(tmp_path, caplog):
    root = make_ljspeech(tmp_path / "LJ", n=1)
    utt = load_manifest(root)[0]
    (tmp_path / "not_a_folder").write_text("")
    cache = FeatureCache(CONFIG, tmp_path / "not_a_folder" / "cache")
    with caplog.at_level(logging.WARNING, logger="flowspeech.data"):
        first, second = cache.mel(utt), cache.mel(utt)
    np.testing.assert_array_equal(first, second)
    assert cache.misses == 2 and caplog.text.count("cannot write the feature cache") == 1


def test_precompute_features_fills_cache(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=4)
    manifest = load_manifest(root)
    result = precompute_features(manifest, CONFIG, workers=0, kinds=("mel", "linear"), progress=False)
    assert result["computed"] == 4 and result["cached"] == 0 and not result["failed"]
    dataset = TextMelDataset(manifest, CharFrontend(), CONFIG)
    for i in range(len(dataset)):
        dataset[i]
    assert dataset.cache.misses == 0 and dataset.cache.hits == 4
    os.remove(manifest[0].audio_path)  # decoding fails now: reported, not fatal
    write_wav(manifest[1].audio_path, 0.4)
    result = precompute_features(manifest, CONFIG, workers=0, progress=False)
    assert (result["computed"], result["cached"], len(result["failed"])) == (1, 2, 1)
    assert "metadata.csv:1" in result["failed"][0][0]


def test_precompute_features_in_parallel(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=6)
    manifest = load_manifest(root)
    result = precompute_features(manifest, CONFIG, workers=2, progress=False)
    assert result["computed"] == 6 and not result["failed"]
    again = precompute_features(manifest, CONFIG, workers=0, progress=False)
    assert again["cached"] == 6


# ----------------------------------------------------------------------------- datasets


def test_text_mel_dataset(tmp_path, caplog):
    root = make_ljspeech(tmp_path / "LJ", n=4)
    text = (root / "metadata.csv").read_text().replace("normalised text 2.", "reject this")
    (root / "metadata.csv").write_text(text)
    with caplog.at_level(logging.WARNING, logger="flowspeech.data"):
        dataset = TextMelDataset(load_manifest(root), CharFrontend(), CONFIG, cache_dir=tmp_path / "c")
    assert dataset.ids == ["LJ001-0001", "LJ001-0002", "LJ001-0004"]
    assert dataset.skipped[0].line == 3 and "text rejected" in dataset.skipped[0].reason
    assert "metadata.csv:3" in caplog.text
    item = dataset[0]
    assert item["id"] == "LJ001-0001" and item["speaker"] == 0
    assert item["tokens"].dtype == torch.long and item["tokens"].tolist() == CharFrontend().encode("normalised text 0.")
    assert item["mel"].dtype == torch.float32 and item["mel"].shape == (20, dataset.lengths[0])
    assert [dataset[i]["mel"].shape[1] for i in range(3)] == dataset.lengths.tolist()

    class RejectAll:
        def encode(self, text):
            raise TextError("nothing representable")

    with pytest.raises(DatasetError, match="no usable utterance"):
        TextMelDataset(load_manifest(root), RejectAll(), CONFIG)


def test_text_mel_dataset_with_text_frontend(tmp_path):
    text = pytest.importorskip("flowspeech.text")
    frontend = text.TextFrontend(symbol_set="glow-tts", phonemizer="cmudict")
    root = make_ljspeech(tmp_path / "LJ", n=3)
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in the only sense.|Printing, in the only sense.\n"
        "LJ001-0002|{HH AH0 L OW1} there|{HH AH0 L OW1} there\n"
        "LJ001-0003|{XX1} bad phone|{XX1} bad phone\n"
    )
    dataset = TextMelDataset(load_manifest(root), frontend, CONFIG, cache_dir=tmp_path / "c")
    assert dataset.ids == ["LJ001-0001", "LJ001-0002"]
    assert "XX1" in dataset.skipped[0].reason and dataset.skipped[0].line == 3
    assert dataset[1]["tokens"].tolist() == frontend.encode("{HH AH0 L OW1} there")


def test_speakers_in_dataset(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=3)
    filelist = root / "filelists" / "ms.txt"
    filelist.write_text("DUMMY/LJ001-0001.wav|bob|hello\nDUMMY/LJ001-0002.wav|alice|hi\nDUMMY/LJ001-0003.wav|carol|hey\n")
    manifest = load_manifest(filelist)
    dataset = TextMelDataset(manifest, CharFrontend(), CONFIG, cache_dir=tmp_path / "c")
    assert dataset.speakers.names == ["alice", "bob", "carol"]
    assert [dataset[i]["speaker"] for i in range(3)] == [1, 0, 2]
    fixed = SpeakerTable(["bob", "alice"])
    dataset = TextMelDataset(manifest, CharFrontend(), CONFIG, cache_dir=tmp_path / "c", speakers=fixed)
    assert dataset.ids == ["LJ001-0001", "LJ001-0002"] and "unknown speaker 'carol'" in dataset.skipped[0].reason


def test_audio_mel_dataset_alignment_and_determinism(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=3, durations=[0.5, 0.7, 0.05])  # last one is short
    size, hop = 2000, CONFIG.hop_length
    dataset = AudioMelDataset(load_manifest(root), CONFIG, segment_length=size, cache_dir=tmp_path / "c", seed=3)
    assert dataset.lengths.tolist() == [4000, 5600, 400]
    mel_of = MelSpectrogram(CONFIG)
    starts = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        item = dataset[1]
        audio, mel = item["audio"], item["mel"]
        assert audio.shape == (size,) and mel.shape == (20, size // hop)
        full = torch.from_numpy(load_wav(root / "wavs" / "LJ001-0002.wav", SR)[0])
        start = next(s for s in range(0, len(full) - size + 1, hop) if torch.equal(full[s:s + size], audio))
        starts.add(start)
        np.testing.assert_array_equal(mel.numpy(), dataset.cache.mel(dataset.utterances[1])[:, start // hop:start // hop + size // hop])
        # Away from the segment's edges, the mel of the segment itself agrees.
        edge = CONFIG.n_fft // hop
        own = mel_of(audio)[:, : size // hop]
        torch.testing.assert_close(mel[:, edge:-edge], own[:, edge:-edge], atol=1e-4, rtol=0)
        assert torch.equal(dataset[1]["audio"], audio)  # same (seed, epoch, index): same item
    assert len(starts) > 1  # epochs differ
    dataset.set_epoch(2)
    twin = AudioMelDataset(load_manifest(root), CONFIG, segment_length=size, cache_dir=tmp_path / "c", seed=3)
    twin.set_epoch(2)
    assert torch.equal(twin[0]["audio"], dataset[0]["audio"])
    # The short clip is zero-padded and its mel computed on the padded segment.
    short = dataset[2]
    assert short["audio"].shape == (size,) and torch.all(short["audio"][400:] == 0)
    torch.testing.assert_close(short["mel"], mel_of(short["audio"])[:, : size // hop])
    batch = collate_audio_mel([dataset[i] for i in range(3)])
    assert batch["audio"].shape == (3, size) and batch["mels"].shape == (3, 20, size // hop)


def test_text_audio_dataset(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=2)
    config = MelConfig(sample_rate=SR, n_fft=256, hop_length=64, win_length=256, n_mels=20, fmax=None,
                       padding="vits", magnitude_eps=1e-6)
    dataset = TextAudioDataset(load_manifest(root), CharFrontend(), config, cache_dir=tmp_path / "c")
    item = dataset[1]
    frames = dataset.lengths[1]
    assert frames == int(0.2 * SR) // 64
    assert item["audio"].shape == (int(0.2 * SR),)
    assert item["linear"].shape == (129, frames) and item["mel"].shape == (20, frames)
    batch = collate_text_audio([dataset[0], dataset[1]])
    assert batch["audio"].shape == (2, int(0.2 * SR)) and batch["linears"].shape == (2, 129, frames)
    assert batch["spec_lengths"].tolist() == dataset.lengths.tolist()
    assert batch["audio_lengths"].tolist() == [int(0.15 * SR), int(0.2 * SR)]


def test_dataloader_end_to_end(tmp_path):
    root = make_ljspeech(tmp_path / "LJ", n=6)
    dataset = TextMelDataset(load_manifest(root), CharFrontend(), CONFIG, cache_dir=tmp_path / "c")
    sampler = BucketBatchSampler(dataset.lengths, batch_size=2, boundaries=3, seed=1)
    # One worker process: the dataset (and its cache) must survive pickling.
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_text_mel, num_workers=1
    )
    seen = []
    for batch in loader:
        seen += batch["ids"]
        assert batch["mels"].shape[2] == batch["mel_lengths"].max()
        assert batch["mel_lengths"].tolist() == [dataset.lengths[dataset.ids.index(i)] for i in batch["ids"]]
    assert sorted(seen) == dataset.ids
    # Without the header check at load time, lengths still come from the headers.
    unchecked = TextMelDataset(load_manifest(root, check_audio=False), CharFrontend(), CONFIG,
                               cache_dir=tmp_path / "c")
    assert unchecked.lengths.tolist() == dataset.lengths.tolist()


# ----------------------------------------------------------------------------- collate


def test_collate_text_mel_shapes_and_padding():
    items = [
        {"id": "a", "tokens": torch.tensor([5, 6, 7]), "mel": torch.randn(4, 5), "speaker": 2},
        {"id": "b", "tokens": torch.tensor([1]), "mel": torch.randn(4, 9), "speaker": 0},
    ]
    batch = collate_text_mel(items)
    assert batch["tokens"].tolist() == [[5, 6, 7], [1, 0, 0]]
    assert batch["token_lengths"].tolist() == [3, 1] and batch["mel_lengths"].tolist() == [5, 9]
    assert batch["mels"].shape == (2, 4, 9) and batch["speakers"].tolist() == [2, 0]
    assert batch["ids"] == ["a", "b"]  # order kept, not sorted
    assert torch.equal(batch["mels"][0, :, :5], items[0]["mel"]) and torch.all(batch["mels"][0, :, 5:] == 0)
    mask = length_mask(batch["mel_lengths"])
    assert mask.shape == (2, 1, 9) and torch.all(batch["mels"] * (1 - mask) == 0)
    assert batch["tokens"].dtype == torch.long and batch["mel_lengths"].dtype == torch.long


# ----------------------------------------------------------------------------- sampler


def lengths_for_sampler(n=203, seed=0):
    return np.random.default_rng(seed).integers(20, 1000, size=n)


def padding(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_ranks_partition_the_epoch(drop_last):
    lengths = lengths_for_sampler()
    ranks = [BucketBatchSampler(lengths, 8, boundaries=5, seed=7, num_replicas=2, rank=r, drop_last=drop_last)
             for r in range(2)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == len(ranks[1])
        flat = [i for batches in per_rank for b in batches for i in b]
        assert len(flat) == len(set(flat))  # never twice
        if drop_last:
            assert all(len(b) == 8 for batches in per_rank for b in batches)
            assert len(flat) == 8 * 2 * (len(lengths) // 8 // 2)
        else:
            assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
            assert all(1 <= len(b) <= 8 for batches in per_rank for b in batches)


def test_sampler_equal_counts_when_batches_do_not_divide():
    # 9 items, batch 4 -> 3 batches, 2 ranks: one batch is split so both ranks get 2.
    ranks = [list(BucketBatchSampler(list(range(9)), 4, num_replicas=2, rank=r)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert sorted(i for r in ranks for b in r for i in b) == list(range(9))
    with pytest.raises(ConfigError, match="cannot fill batches"):
        BucketBatchSampler([1, 2, 3], 4, num_replicas=4, rank=0)
    with pytest.raises(ConfigError, match="rank"):
        BucketBatchSampler([1, 2, 3], 1, num_replicas=2, rank=2)


def test_sampler_buckets_reduce_padding():
    lengths = lengths_for_sampler(400)
    bucketed = BucketBatchSampler(lengths, 16, boundaries=8, seed=0)
    plain = BucketBatchSampler(lengths, 16, n_buckets=1, seed=0)  # DistributedSampler-like
    assert plain.n_buckets == 1 and bucketed.n_buckets == 8
    assert padding(list(bucketed), lengths) < 0.25 * padding(list(plain), lengths)
    explicit = BucketBatchSampler(lengths, 16, boundaries=[200, 400, 600, 800], seed=0)
    assert explicit.n_buckets == 5
    for batch in explicit:  # a batch holds at most two neighbouring buckets
        buckets = {int(np.searchsorted([200, 400, 600, 800], lengths[i], side="right")) for i in batch}
        assert max(buckets) - min(buckets) <= 1


def test_sampler_determinism_per_seed_and_epoch():
    lengths = lengths_for_sampler()
    a, b = BucketBatchSampler(lengths, 8, seed=1), BucketBatchSampler(lengths, 8, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(BucketBatchSampler(lengths, 8, seed=2)) != first
    unshuffled = BucketBatchSampler(lengths, 8, shuffle=False)
    order = [i for b in unshuffled for i in b]  # by bucket, then by index
    assert order == sorted(range(len(lengths)), key=lambda i: (unshuffled.bucket_of[i], i))
    assert all(np.diff(unshuffled.bucket_of[order]) >= 0) and unshuffled.n_buckets == 10


def test_sampler_resume_mid_epoch():
    lengths = lengths_for_sampler()
    sampler = BucketBatchSampler(lengths, 8, seed=5, num_replicas=2, rank=1)
    sampler.set_epoch(3)
    full = list(sampler)
    it = iter(sampler)
    taken = [next(it) for _ in range(4)]
    state = sampler.state_dict()
    assert state["epoch"] == 3 and state["batches_yielded"] == 4 and taken == full[:4]
    resumed = BucketBatchSampler(lengths, 8, seed=5, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a training loop calls this again: the position is kept
    assert len(resumed) == len(full) - 4
    assert list(resumed) == full[4:]
    assert len(resumed) == len(full)  # the next iteration is a whole epoch again
    resumed.set_epoch(4)
    assert list(resumed) == list(sampler.__class__(lengths, 8, seed=5, num_replicas=2, rank=1).batches(4)[1::2])
    # An explicit count (DataLoader prefetching runs ahead of the loop) overrides; the
    # minimal state a training loop keeps is enough.
    assert sampler.state_dict(batches_yielded=2)["batches_yielded"] == 2
    resumed.load_state_dict({"epoch": 3, "batches_yielded": 2})
    assert list(resumed) == full[2:]
    # A state saved with other settings cannot be resumed exactly: the epoch restarts.
    resumed.load_state_dict({**state, "seed": 6})
    assert list(resumed) == full


# ----------------------------------------------------------------------------- speakers


def test_speaker_table():
    table = SpeakerTable.from_labels(["carol", "alice", None, "bob", "alice"])
    assert table.names == ["alice", "bob", "carol"] and len(table) == 3
    assert table.id("bob") == 1 and table.name(2) == "carol" and table.id(None) == 0
    assert SpeakerTable.from_dict(table.to_dict()) == table
    with pytest.raises(ConfigError, match="unknown speaker 'dave'; known speakers: alice, bob, carol"):
        table.id("dave")
    with pytest.raises(ConfigError, match="out of range"):
        table.name(3)
    with pytest.raises(ConfigError, match="unknown"):
        SpeakerTable.from_dict({"names": ["a"], "extra": 1})
    with pytest.raises(ConfigError, match="unique"):
        SpeakerTable(["a", "a"])
    assert SpeakerTable.from_labels(["01", "1"]).names == ["01", "1"]  # not numeric ids
