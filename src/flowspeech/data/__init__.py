"""Datasets, feature cache, batch samplers and collate functions.

Typical use (Glow-TTS)::

    from flowspeech.audio import MelConfig
    from flowspeech.data import (BucketBatchSampler, TextMelDataset, collate_text_mel,
                                 load_manifest, precompute_features)

    manifest = load_manifest("data/LJSpeech-1.1", split="train")
    precompute_features(manifest, MelConfig.glow_tts(), workers=8)     # optional, once
    dataset = TextMelDataset(manifest, frontend, MelConfig.glow_tts())
    sampler = BucketBatchSampler(dataset.lengths, batch_size=32, seed=1234)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_text_mel)

See ``docs/data.md`` for the supported layouts, the cache and batching.
"""

from flowspeech.data.collate import (
    collate_audio_mel,
    collate_text_audio,
    collate_text_mel,
    pad_1d,
    pad_2d,
)
from flowspeech.data.datasets import AudioMelDataset, TextAudioDataset, TextMelDataset
from flowspeech.data.features import (
    FeatureCache,
    config_hash,
    default_cache_dir,
    precompute_features,
)
from flowspeech.data.manifest import Manifest, SkippedRow, Utterance, load_manifest
from flowspeech.data.sampler import BucketBatchSampler
from flowspeech.data.speakers import SpeakerTable

__all__ = [
    "AudioMelDataset",
    "BucketBatchSampler",
    "FeatureCache",
    "Manifest",
    "SkippedRow",
    "SpeakerTable",
    "TextAudioDataset",
    "TextMelDataset",
    "Utterance",
    "collate_audio_mel",
    "collate_text_audio",
    "collate_text_mel",
    "config_hash",
    "default_cache_dir",
    "load_manifest",
    "pad_1d",
    "pad_2d",
    "precompute_features",
]
