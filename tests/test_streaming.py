"""Streaming synthesis, timestamps and the command line as a pipe.

The stream joins to synthesize() of the same text and seed (to float rounding with a flow
vocoder or NaturalSpeech, within a log-spectral distance with Griffin-Lim); timestamps tile
the audio in order; ``--text -`` speaks each line as it arrives and ``--out -`` writes audio
as it is made; a reader that goes away ends the process quietly.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from test_flowavenet import tiny as tiny_flowavenet
from test_vocode import make_waveglow_checkpoint

from flowspeech import Synthesizer
from flowspeech.audio import log_spectral_distance
from flowspeech.inference.timestamps import Timestamps
from flowspeech.inference.vocoders import NeuralVocoder, load_vocoder
from flowspeech.utils.noise import utterance_generators

TEXT = ("Dr. Smith paid $5 at 3:30 pm. The quick brown fox jumps over the lazy dog, twice. "
        "Then it rested.")
GRIFFIN_LIM_LSD_DB = 0.5  # streamed against whole Griffin-Lim (0.03-0.2 dB measured)


@pytest.fixture(scope="module")
def shipped() -> Synthesizer:
    return Synthesizer()


def _joined(tts, text, **kwargs):
    chunks = list(tts.stream(text, **kwargs))
    return chunks, np.concatenate([c.samples for c in chunks])


def test_the_stream_joins_to_synthesize_with_griffin_lim(shipped):
    whole = shipped.synthesize_full(TEXT, seed=4)
    chunks, joined = _joined(shipped, TEXT, seed=4, chunk_seconds=0.1, max_chunk_seconds=0.5)
    assert len(joined) == len(whole.waveform) and len(chunks) > len(whole.sentences)
    assert log_spectral_distance(whole.waveform, joined) < GRIFFIN_LIM_LSD_DB
    # Chunks are in order, contiguous, and each sentence's first one carries its timestamps.
    assert chunks[0].start == 0 and all(a.end == pytest.approx(b.start) for a, b in zip(chunks, chunks[1:]))
    firsts = [c for c in chunks if c.timestamps is not None]
    assert [c.sentence for c in firsts] == [0, 1, 2]
    streamed = Timestamps()
    for c in firsts:
        streamed.extend(c.timestamps)
    assert [w.text for w in streamed.words] == [w.text for w in whole.timestamps.words]
    assert max(abs(a.start - b.start) for a, b in zip(streamed.words, whole.timestamps.words)) < 1e-9


def test_the_stream_joins_to_synthesize_with_waveglow_to_float_rounding(tmp_path):
    tts = Synthesizer(vocoder=make_waveglow_checkpoint(tmp_path / "wg.pt"))
    whole = tts.synthesize(TEXT, seed=2)[0]
    _, joined = _joined(tts, TEXT, seed=2, chunk_seconds=0.1, max_chunk_seconds=0.4)
    assert len(joined) == len(whole) and np.abs(joined - whole).max() < 1e-4


def test_every_vocoder_streams_what_it_vocodes(tmp_path, shipped):
    mel = torch.randn(1, 80, 45) - 4
    waveglow = load_vocoder(make_waveglow_checkpoint(tmp_path / "wg.pt"), None)
    flowavenet = NeuralVocoder(tiny_flowavenet().prepare_for_inference(),
                               {"model": "flowavenet", "audio": {"preset": "flowavenet", "n_mels": 4,
                                                                 "hop_length": 16}})
    for vocoder, m in ((waveglow, mel), (flowavenet, torch.rand(1, 4, 45))):
        whole = vocoder.vocode(m, torch.tensor([45]), utterance_generators(5, 1)).waveforms[0].numpy()
        pieces = list(vocoder.stream(m, utterance_generators(5, 1), chunk_frames=7, max_chunk_frames=16))
        assert len(pieces) == 4 and np.abs(np.concatenate(pieces) - whole).max() < 1e-4
    griffin = shipped.vocoder
    whole = griffin.vocode(mel, torch.tensor([45]), utterance_generators(5, 1)).waveforms[0].numpy()
    joined = np.concatenate(list(griffin.stream(mel, utterance_generators(5, 1), 8, 16)))
    assert len(joined) == 44 * 256 and log_spectral_distance(whole[:len(joined)], joined) < GRIFFIN_LIM_LSD_DB


def test_timestamps_are_ordered_and_tile_each_sentence(shipped):
    result = shipped.synthesize_full(TEXT, seed=1)
    stamps, total = result.timestamps, len(result.waveform) / result.sample_rate
    assert [s.text for s in stamps.sentences] == result.sentences
    assert [w.text for w in stamps.words] == ["Dr.", "Smith", "paid", "$5", "at", "3:30", "pm.", "The", "quick",
                                              "brown", "fox", "jumps", "over", "the", "lazy", "dog,", "twice.",
                                              "Then", "it", "rested."]
    for kind in (stamps.sentences, stamps.words, stamps.phonemes):
        assert all(0 <= s.start < s.end <= total + 1e-9 for s in kind)
        assert all(a.end <= b.start + 1e-9 for a, b in zip(kind, kind[1:]))  # in order, no overlap
    for sentence in stamps.sentences:
        words = [w for w in stamps.words if w.sentence == stamps.sentences.index(sentence)]
        phones = [p for p in stamps.phonemes if p.sentence == stamps.sentences.index(sentence)]
        assert sentence.start <= words[0].start and words[-1].end <= sentence.end + 1e-9
        spoken = sum(w.end - w.start for w in words)
        assert spoken > 0.6 * (sentence.end - sentence.start)  # words cover most of the sentence
        for w in words:  # every phoneme of a word lies inside it
            inside = [p for p in phones if w.start - 1e-9 <= p.start and p.end <= w.end + 1e-9]
            assert inside, w
    srt, vtt = stamps.to_srt(), stamps.to_vtt()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and "Dr. Smith paid $5 at 3:30 pm." in srt
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    data = json.loads(stamps.to_json())
    assert set(data) == {"sentences", "words", "phonemes"} and data["words"][3]["text"] == "$5"


# --- the command line ------------------------------------------------------------------------
def _cli(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "flowspeech.cli.main", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _read_some(stream, n: int, timeout: float) -> bytes:
    data, end = b"", time.monotonic() + timeout
    while len(data) < n and time.monotonic() < end:
        ready, _, _ = select.select([stream], [], [], 0.5)
        if ready:
            more = os.read(stream.fileno(), n - len(data))
            if not more:
                break
            data += more
    return data


def test_text_from_standard_input_is_spoken_line_by_line_as_it_arrives():
    proc = _cli("synthesize", "--text", "-", "--out", "-", "--seed", "3", "--quiet")
    proc.stdin.write(b"Hello there.\n")
    proc.stdin.flush()
    head = _read_some(proc.stdout, 44 + 4000, timeout=120)  # before the input ends
    assert len(head) == 44 + 4000, "no audio before standard input was closed"
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and head[36:40] == b"data"
    assert struct.unpack("<I", head[24:28])[0] == 22050
    out, err = proc.communicate(b"\n\x01\x02\nSecond line.\n", timeout=300)
    lines = err.decode().splitlines()
    assert proc.returncode == 0, err.decode()
    assert any("line 3:" in x and "skipped" in x for x in lines), lines  # the unspeakable line
    samples = np.frombuffer(head[44:] + out, dtype="<i2")
    assert len(samples) > 22050  # two lines of speech


def test_raw_output_and_timestamps_from_the_command_line(tmp_path):
    stamps = tmp_path / "t.vtt"
    proc = _cli("synthesize", "--text", TEXT, "--out", "-", "--format", "raw", "--timestamps", str(stamps),
                "--seed", "3")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "standard output:" in err.decode()  # the summary goes to standard error
    assert len(out) % 2 == 0 and out[:4] != b"RIFF" and len(out) > 2 * 22050
    vtt = stamps.read_text()
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == 3


def test_a_closed_pipe_ends_the_process_quietly():
    proc = subprocess.run(f"{sys.executable} -m flowspeech.cli.main synthesize --text '{TEXT}' --out - "
                          f"--quiet | head -c 100 > /dev/null; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
