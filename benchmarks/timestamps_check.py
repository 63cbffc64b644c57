"""Do the word timestamps a synthesis reports agree with a forced alignment of its audio?

    python benchmarks/timestamps_check.py [--metadata ../shared/corpus/data/ljspeech_real_sample/metadata.csv]
        [--limit 32] [--seed 1]

Each transcript is synthesised as one sentence with the shipped voice; the words' start and end
times it reports (from the model's own durations) are compared with those of ``flowspeech
align`` run on the produced audio with the same model (Monotonic Alignment Search on the audio's
mel), both mapped to written words the same way (``TextFrontend.word_tokens``). Prints the
median and 95th percentile of |reported - aligned| over every word boundary.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from flowspeech import Synthesizer
from flowspeech.audio import save_wav
from flowspeech.cli.main import main as cli

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path,
                        default=ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "metadata.csv")
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [r for r in csv.reader(args.metadata.open(encoding="utf-8"), delimiter="|", quoting=csv.QUOTE_NONE)]
    rows = rows[:args.limit]
    tts = Synthesizer()
    reported = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "wavs").mkdir(parents=True)
        lines = []
        for uid, _, text in rows:
            result = tts.synthesize_sentences([text], seed=args.seed)
            save_wav(data / "wavs" / f"{uid}.wav", result.waveform, result.sample_rate)
            reported[uid] = (text, result.timestamps.words)
            lines.append(f"{uid}|{text}|{text}\n")
        (data / "metadata.csv").write_text("".join(lines))
        out = Path(tmp) / "align.jsonl"
        assert cli(["align", "--acoustic", str(tts.acoustic_path), "--data", str(data),
                    "--out", str(out)]) == 0
        aligned = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    diffs, words = [], 0
    for uid, (text, spans) in reported.items():
        line = aligned[uid]
        word_list, labels = tts.frontend.word_tokens(text)
        first, last = {}, {}
        for label, start, end in zip(labels, line["start"], line["end"]):
            if label is not None:
                first.setdefault(label, start)
                last[label] = end
        by_text = {}
        for label in sorted(first):
            by_text.setdefault(word_list[label].text, []).append((first[label], last[label]))
        for span in spans:
            start, end = by_text[span.text].pop(0)
            diffs += [abs(span.start - start), abs(span.end - end)]
            words += 1
    d = np.array(diffs) * 1000
    print(f"{len(reported)} utterances, {words} words, {len(d)} boundaries: |reported - aligned| "
          f"median {np.median(d):.1f} ms, 95th percentile {np.percentile(d, 95):.1f} ms, "
          f"max {d.max():.1f} ms (one mel frame is {1000 * 256 / 22050:.1f} ms)")


if __name__ == "__main__":
    main()
