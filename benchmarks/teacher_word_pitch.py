"""How much of a Festival teacher's word pitch its own prosodic labels explain, beyond what the
text shows.

    python benchmarks/teacher_word_pitch.py --corpus data/slt_hts --fit 1700 --held-out 300

Festival (the corpus's teacher, ``voice_cmu_us_slt_arctic_hts``; Debian ``festival
festvox-us-slt-hts``) reads lines of the corpus's filelists again, as ``make_corpus.py`` had it
read them (``tts_file``: one utterance per sentence it finds), and for every utterance keeps its
wave and, for every word, what its text analysis decided: part of speech (``pos``, its HMM
tagger), the phrase break after the word (``pbreak``, its part-of-speech phrasing model), the
pitch accents and boundary tones on its syllables (``Intonation``, ToBI), with the word's start
and end in the wave.

A word's pitch is its mean log-F0 (dio + StoneMask, as the evaluation, voiced frames inside the
word) about the utterance's mean. Gradient boosting (scikit-learn) predicts it from nested sets
of features, fitted on the first ``--fit`` training lines and scored, frame-weighted, on the next
``--held-out`` lines and on the validation split:

* text: what a text encoder can read from words, punctuation and a pronouncing dictionary: the
  word and its two neighbours (the most frequent words by name, the rest pooled), syllables and
  stressed syllables, the position of the primary stress, Festival's function-word class
  (``gpos``: a fixed word list), the word's place in the utterance and in its punctuation
  phrase, the punctuation after it and after the word before;
* + the part of speech of the word and its neighbours;
* + the phrase breaks after the word and the word before, and the place in Festival's phrase;
* + the accents: the word's pitch accent and boundary tone, and whether its neighbours carry an
  accent.

If the labels Festival's front end adds carry the words' pitch, the error falls with each set;
a front end that predicts them (a part-of-speech tagger, a phrase-break model) would then give
a voice's text encoder what it cannot read from the text.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyworld
import soundfile as sf
from sklearn.ensemble import HistGradientBoostingRegressor

from flowspeech.evaluation.inputs import read_transcripts

BREAKS = ("B", "BB")
BOUNDARY_TONES = ("L-L%", "L-H%", "H-H%", "H-L%")

# For each utterance tts_file makes: its wave, then a line per word
# ``W name pos gpos pbreak punc start end stress:accent ...`` (fields separated by one space).
FESTIVAL_SCRIPT = r"""
(%s)
(define (word_pitch_dump utt)
  (set! word_pitch_k (+ word_pitch_k 1))
  (utt.save.wave utt (format nil "%%s/%%s_%%d.wav" word_pitch_dir word_pitch_uid word_pitch_k)
                 'riff)
  (format t "U %%s_%%d\n" word_pitch_uid word_pitch_k)
  (mapcar
    (lambda (w)
      (format t "W %%s %%s %%s %%s %%s %%s %%s" (item.name w) (item.feat w "pos")
              (item.feat w "gpos") (item.feat w "pbreak") (item.feat w "R:Token.parent.punc")
              (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")
              (item.feat w "R:SylStructure.daughtern.daughtern.end"))
      (mapcar (lambda (s) (format t " %%s:%%s" (item.feat s "stress")
                                  (item.feat s "R:Intonation.daughter1.name")))
              (item.relation.daughters w 'SylStructure))
      (format t "\n"))
    (utt.relation.items utt 'Word))
  utt)
(set! tts_hooks (list utt.synth word_pitch_dump))
"""


def scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_festival(lines: list[tuple[str, str]], voice: str, workdir: Path) -> Path:
    """Synthesise ``(uid, text)`` lines; returns the dump (waves beside it in ``workdir``)."""
    script = [FESTIVAL_SCRIPT % voice, f"(set! word_pitch_dir {scheme_string(str(workdir))})"]
    for uid, text in lines:
        path = workdir / f"{uid}.txt"
        path.write_text(text + "\n", encoding="utf-8")
        script.append(f"(set! word_pitch_uid {scheme_string(uid)})(set! word_pitch_k 0)"
                      f"(tts_file {scheme_string(str(path))} nil)")
    (workdir / "dump.scm").write_text("\n".join(script) + "\n", encoding="utf-8")
    dump = workdir / "dump.txt"
    with open(dump, "wb") as out:
        subprocess.run(["festival", "-b", str(workdir / "dump.scm")], stdout=out,
                       stderr=subprocess.DEVNULL, check=True)
    return dump


def parse_dump(path: Path) -> list[tuple[str, list[dict]]]:
    utterances: list[tuple[str, list[dict]]] = []
    for line in path.read_text(encoding="latin-1").splitlines():
        fields = line.split(" ")
        if fields[0] == "U":
            utterances.append((fields[1], []))
        elif fields[0] == "W" and utterances and len(fields) >= 8:
            name, pos, gpos, pbreak, punc, start, end = fields[1:8]
            utterances[-1][1].append({
                "name": name.lower(), "pos": pos, "gpos": gpos, "pbreak": pbreak,
                "punc": punc or "'", "start": float(start), "end": float(end),
                "syllables": [tuple(s.split(":", 1)) for s in fields[8:]]})
    return [(uid, words) for uid, words in utterances if words]


def word_pitch(wav: Path, words: list[dict]) -> list[tuple[float, int]]:
    """(log-F0 about the utterance's mean, voiced frames) of each word; (nan, 0) if unvoiced."""
    x, rate = sf.read(wav, dtype="float64")
    f0, t = pyworld.dio(x, rate, f0_floor=71.0, f0_ceil=800.0, frame_period=5.0)
    f0 = pyworld.stonemask(x, f0, t, rate)
    voiced = f0 > 0
    if not voiced.any():
        return [(np.nan, 0)] * len(words)
    log_f0 = np.log(np.where(voiced, f0, 1.0))
    mean = log_f0[voiced].mean()
    out = []
    for w in words:
        frames = voiced & (t >= w["start"]) & (t < w["end"])
        n = int(frames.sum())
        out.append((float(log_f0[frames].mean() - mean) if n else np.nan, n))
    return out


def pitch_accents(word: dict) -> list[str]:
    """The ToBI pitch accents on the word's syllables (boundary tones left out)."""
    return [a for _, a in word["syllables"] if a not in ("0",) + BOUNDARY_TONES]


def phrase_spans(words: list[dict], ends) -> tuple[list[int], list[int]]:
    """First and one-past-last word index of the phrase each word is in, phrases ending after
    the words where ``ends(word)``."""
    n = len(words)
    start, stop, first = [0] * n, [n] * n, 0
    for i, w in enumerate(words):
        start[i] = first
        if ends(w):
            first = i + 1
    last = n
    for i in range(n - 1, -1, -1):
        if ends(words[i]):
            last = i + 1
        stop[i] = last
    return start, stop


def word_features(words: list[dict], vocabulary: dict[str, int]) -> list[tuple[dict, ...]]:
    """The four feature groups (text, part of speech, breaks, accents) of each word."""
    n = len(words)
    pp_start, pp_stop = phrase_spans(words, lambda w: w["punc"] not in ("0", "'"))
    fp_start, fp_stop = phrase_spans(words, lambda w: w["pbreak"] in BREAKS)
    name = [vocabulary.get(w["name"], 0) for w in words]

    def near(j: int, key: str):
        return words[j][key] if 0 <= j < n else "<none>"

    def accented(j: int) -> str:
        return str(bool(pitch_accents(words[j]))) if 0 <= j < n else "<none>"

    rows = []
    for i, w in enumerate(words):
        stress = [s for s, _ in w["syllables"]]
        accents = pitch_accents(w)
        tones = [a for _, a in w["syllables"] if a in BOUNDARY_TONES]
        text = {"word": name[i], "word_before": name[i - 1] if i else -1,
                "word_after": name[i + 1] if i + 1 < n else -1,
                "syllables": len(stress), "stressed": stress.count("1"),
                "primary": stress.index("1") if "1" in stress else -1, "gpos": w["gpos"],
                "index": i, "from_end": n - 1 - i, "words": n, "in_phrase": i - pp_start[i],
                "to_phrase_end": pp_stop[i] - 1 - i, "punc": w["punc"],
                "punc_before": near(i - 1, "punc")}
        pos = {"pos": w["pos"], "pos_before": near(i - 1, "pos"), "pos_after": near(i + 1, "pos")}
        breaks = {"pbreak": w["pbreak"], "pbreak_before": near(i - 1, "pbreak"),
                  "in_festival_phrase": i - fp_start[i],
                  "to_festival_phrase_end": fp_stop[i] - 1 - i}
        accent = {"accent": accents[0] if accents else "0", "tone": tones[0] if tones else "0",
                  "accent_before": accented(i - 1), "accent_after": accented(i + 1)}
        rows.append((text, pos, breaks, accent))
    return rows


def features(utterances, workdir: Path, vocabulary: dict[str, int]):
    """Feature rows, word pitch and voiced frames of every word with voiced frames."""
    rows, targets, weights = [], [], []
    for uid, words in utterances:
        for row, (value, frames) in zip(word_features(words, vocabulary),
                                        word_pitch(workdir / f"{uid}.wav", words)):
            if frames:
                rows.append(row)
                targets.append(value)
                weights.append(frames)
    return rows, np.array(targets), np.array(weights, dtype=float)


CATEGORICAL_INTS = {"word", "word_before", "word_after"}


def design(rows, groups: tuple[int, ...], codes: dict[str, dict[str, int]]):
    keys = [(g, k) for g in groups for k in sorted(rows[0][g])]
    matrix = np.zeros((len(rows), len(keys)))
    categorical = []
    for c, (g, k) in enumerate(keys):
        values = [r[g][k] for r in rows]
        if isinstance(values[0], str):
            table = codes.setdefault(k, {})
            matrix[:, c] = [table.setdefault(v, len(table)) for v in values]
        else:
            matrix[:, c] = values
        categorical.append(isinstance(values[0], str) or k in CATEGORICAL_INTS)
    return matrix, np.array(categorical)


def weighted_rms(error: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sqrt(np.sum(weights * error ** 2) / np.sum(weights)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True,
                        help="the corpus's folder (its filelists)")
    parser.add_argument("--fit", type=int, default=1700, help="training lines to fit on")
    parser.add_argument("--held-out", type=int, default=300,
                        help="training lines after those, to score on")
    parser.add_argument("--val-limit", type=int, default=100, help="validation lines to score on")
    parser.add_argument("--vocabulary", type=int, default=150,
                        help="words told apart by name (the most frequent in the fitted lines)")
    parser.add_argument("--festival-voice", default="voice_cmu_us_slt_arctic_hts")
    args = parser.parse_args()
    if shutil.which("festival") is None:
        sys.exit("festival not found: apt-get install festival festvox-us-slt-hts")

    def lines(split: str, start: int, count: int) -> list[tuple[str, str]]:
        texts = read_transcripts(args.corpus / "filelists" / f"ljs_audio_text_{split}_filelist.txt")
        return list(texts.items())[start:start + count]

    sets = {"fit": lines("train", 0, args.fit),
            "held-out training lines": lines("train", args.fit, args.held_out),
            "validation": lines("val", 0, args.val_limit)}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        utterances = {name: parse_dump(run_festival(chosen, args.festival_voice, workdir))
                      for name, chosen in sets.items()}
        counts = collections.Counter(w["name"] for _, ws in utterances["fit"] for w in ws)
        vocabulary = {w: k + 1 for k, (w, _) in enumerate(counts.most_common(args.vocabulary))}
        data = {name: features(u, workdir, vocabulary) for name, u in utterances.items()}
    scored = [name for name in sets if name != "fit"]
    print(f"{len(data['fit'][1])} words fitted; "
          + ", ".join(f"{len(data[n][1])} {n} words" for n in scored))
    print("\n| features | " + " | ".join(scored) + " |\n|---|" + "---:|" * len(scored))
    print("| none (the words' spread about the utterance's mean) | "
          + " | ".join(f"{weighted_rms(data[n][1], data[n][2]):.4f}" for n in scored) + " |")
    for label, groups in (("text", (0,)), ("text + part of speech", (0, 1)),
                          ("text + part of speech + phrase breaks", (0, 1, 2)),
                          ("text + part of speech + phrase breaks + accents", (0, 1, 2, 3)),
                          ("text + phrase breaks", (0, 2)), ("text + accents", (0, 3))):
        codes: dict[str, dict[str, int]] = {}
        rows, targets, weights = data["fit"]
        matrix, categorical = design(rows, groups, codes)
        model = HistGradientBoostingRegressor(
            max_iter=600, learning_rate=0.05, l2_regularization=1.0,
            categorical_features=categorical, random_state=0)
        model.fit(matrix, targets, sample_weight=weights)
        errors = []
        for name in scored:
            rows, targets, weights = data[name]
            errors.append(weighted_rms(model.predict(design(rows, groups, codes)[0]) - targets,
                                       weights))
        print(f"| {label} | " + " | ".join(f"{e:.4f}" for e in errors) + " |", flush=True)


if __name__ == "__main__":
    main()
