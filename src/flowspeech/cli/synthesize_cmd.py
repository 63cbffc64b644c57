"""``flowspeech synthesize``: text to a wav file."""

from __future__ import annotations

from flowspeech.cli.common import PRECISION_CHOICES, add_seed_arg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synthesize", help="speak text into a wav (or .npy) file",
        description="Synthesise TEXT with a Glow-TTS acoustic model and a vocoder, or with an "
        "end-to-end NaturalSpeech model (--model). Without "
        "--voice or --acoustic the voice shipped with the package is used.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text to speak (long text is split into sentences); '-' reads "
                     "standard input line by line and speaks each line as it arrives")
    src.add_argument("--text-file", help="file with one utterance per line (optionally ID|text)")
    p.add_argument("--out", required=True, help="output .wav / .npy; '-' streams audio to standard "
                   "output as it is made; with --text-file, a folder gets one file per line "
                   "(ID.wav), a file gets all lines joined")
    p.add_argument("--format", choices=("wav", "raw"), default="wav",
                   help="with --out -: a WAV stream (default) or raw 16-bit little-endian PCM")
    p.add_argument("--timestamps", metavar="FILE", help="also write when each sentence, word and "
                   "phoneme is spoken: .json, or .srt / .vtt subtitles (one cue per sentence)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--voice", help="a named voice (see `flowspeech voices`; default: the shipped voice)")
    model.add_argument("--acoustic", help="Glow-TTS checkpoint (instead of a named voice)")
    model.add_argument("--model", help="any text-input checkpoint: Glow-TTS (with --vocoder) or an "
                       "end-to-end NaturalSpeech model (no vocoder)")
    p.add_argument("--vocoder", default="griffin-lim",
                   help="griffin-lim or a vocoder checkpoint (WaveGlow, FloWaveNet); default: the "
                   "voice's own vocoder if it has one, else griffin-lim")
    p.add_argument("--noise-scale", type=float, default=None,
                   help="prior temperature (default: the voice's setting, else 0.667 as the authors' "
                   "code; the paper's listening tests used 0.333)")
    p.add_argument("--length-scale", type=float, default=None,
                   help="speaking rate: > 1 is slower (default: the voice's setting, else 1.0)")
    p.add_argument("--sigma", type=float, default=None, help="vocoder sampling temperature (WaveGlow: 0.6)")
    p.add_argument("--denoise", type=float, default=0.0,
                   help="WaveGlow denoiser strength, 0 (off, default) to 1; try 0.1")
    p.add_argument("--vocoder-precision", choices=PRECISION_CHOICES, default="float32",
                   help="arithmetic of the waveform generator (default float32): a neural "
                   "vocoder's coupling networks (the audio and the invertible layers stay in "
                   "float32), or NaturalSpeech's decoder; bfloat16 is about twice as fast on CPUs "
                   "with AVX512-BF16/AMX, float16 is for GPUs")
    p.add_argument("--speaker", help="speaker name or id (multi-speaker models)")
    p.add_argument("--save-mel", help="also save the acoustic model's mel as .npy [n_mels, frames]")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (default) or onnx: the voice's ONNX export on onnxruntime, without "
                   "PyTorch (--voice NAME exports it once, or --voice FOLDER from `flowspeech export "
                   "--onnx`; docs/onnx.md)")
    p.add_argument("--threads", type=int, default=None, help="with --backend onnx: threads (default: all cores)")
    add_seed_arg(p)
    p.set_defaults(run=run)


def _read_lines(path: str) -> list[tuple[str, str]]:
    """``(id, text)`` of every non-empty line (``ID|text`` or plain text, whose ID is its line
    number); IDs are checked as file names and must be unique."""
    from pathlib import Path

    from flowspeech.cli.common import check_file_stem
    from flowspeech.errors import FlowspeechError

    try:
        raw = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FlowspeechError(f"cannot read --text-file {path}: {err}") from None
    rows, first_line = [], {}
    for n, line in enumerate(raw, 1):
        if not line.strip():
            continue
        if "|" in line:
            uid, _, text = line.partition("|")
            uid, text = uid.strip(), text.split("|")[-1]
        else:
            uid, text = f"{n:04d}", line
        check_file_stem(uid, f"{path}:{n}")
        if uid in first_line:
            raise FlowspeechError(f"{path}:{n}: the ID {uid!r} is already used on line "
                                  f"{first_line[uid]}; each line needs its own ID (file name)")
        first_line[uid] = n
        rows.append((uid, text.strip()))
    if not rows:
        raise FlowspeechError(f"--text-file {path} has no text")
    return rows


def run(args) -> int:
    if args.backend == "onnx":
        return _run_onnx(args)
    if args.threads is not None:
        from flowspeech.errors import ConfigError

        raise ConfigError("--threads goes with --backend onnx (PyTorch: set OMP_NUM_THREADS)")
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from flowspeech.audio import save_wav
    from flowspeech.cli.common import (
        check_audio_output,
        check_distinct,
        check_output,
        resolve_device,
    )
    from flowspeech.errors import FlowspeechError
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.inference.timestamps import Timestamps
    from flowspeech.utils.files import atomic_save_npy

    to_stdout = args.out == "-"
    out = Path(args.out)
    per_line_folder = args.text_file is not None and out.suffix == "" and not to_stdout
    inputs = [args.text_file, args.acoustic, args.model, args.vocoder]
    if args.format == "raw" and not to_stdout:
        raise FlowspeechError("--format raw is for --out - (a file's format follows its name)")
    if per_line_folder:
        if args.save_mel:
            raise FlowspeechError("--save-mel writes one file; with a folder for --out, leave it out")
        rows = _read_lines(args.text_file)
        check_output(out / f"{rows[0][0]}.wav", inputs, "--out")
    elif not to_stdout:
        check_audio_output(str(out), inputs, "--out")
    if args.save_mel:
        if to_stdout or args.text == "-":
            raise FlowspeechError("--save-mel needs the whole text at once: not with --out - or --text -")
        if not args.save_mel.endswith(".npy"):
            raise FlowspeechError(f"--save-mel {args.save_mel}: mel spectrograms are written as .npy")
        check_output(args.save_mel, inputs, "--save-mel")
        check_distinct(out=args.out, save_mel=args.save_mel)
    if args.timestamps:
        if Path(args.timestamps).suffix.lower() not in (".json", ".srt", ".vtt"):
            raise FlowspeechError(f"--timestamps {args.timestamps}: use a .json, .srt or .vtt file name")
        check_output(args.timestamps, inputs, "--timestamps")
        if not to_stdout and not per_line_folder:
            check_distinct(out=args.out, timestamps=args.timestamps)
    device = resolve_device(args.device)
    report = sys.stderr if to_stdout else sys.stdout  # standard output carries only audio then
    t0 = time.perf_counter()
    tts = Synthesizer(args.acoustic or args.model, voice=args.voice, vocoder=args.vocoder, device=device,
                      noise_scale=args.noise_scale, length_scale=args.length_scale, sigma=args.sigma,
                      denoise=args.denoise, vocoder_precision=args.vocoder_precision)
    t_load = time.perf_counter() - t0
    options = {"seed": args.seed, "speaker": args.speaker}
    progress = _progress(args)
    t1 = time.perf_counter()
    stamps = Timestamps()
    if to_stdout or args.text == "-":
        total, count = _stream(tts, args, options, stamps, progress)
        summary = f"{'standard output' if to_stdout else out}: {total:.2f} s of audio, {count} line(s)"
    elif per_line_folder:
        total = 0.0
        for uid, text in progress(rows, unit="line"):
            result = tts.synthesize_full(text, with_mels=False, **options)
            save_wav(out / f"{uid}.wav", result.waveform, result.sample_rate)
            total += len(result.waveform) / result.sample_rate
            stamps.extend(_shifted(result.timestamps, uid))
        summary = f"{out}/: {total:.2f} s of audio in {len(rows)} files"
    else:
        kwargs = dict(options, with_mels=args.save_mel is not None)
        sentences = ([t for _, t in _read_lines(args.text_file)] if args.text_file is not None
                     else tts.split(args.text))
        bar = progress(total=len(sentences), unit="sentence")
        result = tts.synthesize_sentences(sentences, progress=bar.update, **kwargs)
        bar.close()
        save_wav(out, result.waveform, result.sample_rate)
        if args.save_mel:
            atomic_save_npy(args.save_mel, np.concatenate(result.mels, axis=1).astype(np.float32))
        stamps = result.timestamps
        total = len(result.waveform) / result.sample_rate
        summary = f"{out}: {total:.2f} s of audio, {len(result.sentences)} sentence(s)"
    if args.timestamps:
        stamps.save(args.timestamps)
    t_synth = time.perf_counter() - t1
    if not args.quiet:
        voice = f"voice {tts.voice.name!r}: " if tts.voice is not None else ""
        print(f"{summary}; {voice}acoustic model {tts.acoustic_path} ({tts.model_type}: "
              f"{tts.config.get('description', '')}), vocoder {tts.describe_vocoder()}; load "
              f"{t_load:.2f} s, synthesis {t_synth:.2f} s (real-time factor "
              f"{t_synth / max(total, 1e-9):.2f})", file=report)
    return 0


def _shifted(stamps, uid: str):
    """A per-line file's timestamps, each sentence labelled with the line's ID."""
    from dataclasses import replace

    from flowspeech.inference.timestamps import Timestamps

    return Timestamps([replace(s, text=f"{uid}: {s.text}") for s in stamps.sentences],
                      stamps.words, stamps.phonemes)


def _progress(args):
    """tqdm on standard error when it is a terminal and not --quiet; a silent stand-in else."""
    import sys

    from tqdm import tqdm

    enabled = not args.quiet and sys.stderr.isatty()

    def make(iterable=None, **kwargs):
        return tqdm(iterable, disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)

    return make


def _stream(tts, args, options: dict, stamps, progress) -> tuple[float, int]:
    """Speak ``--text`` (or each line of standard input, as it arrives) in chunks, to standard
    output (``--out -``, written as each chunk is ready) or into the ``--out`` file."""
    import sys
    import warnings

    import numpy as np

    from flowspeech.audio import save_wav
    from flowspeech.errors import FlowspeechWarning, TextError

    writer = _AudioWriter(sys.stdout.buffer, tts.sample_rate, args.format) if args.out == "-" else None
    kept, seconds, count, sentences = [], 0.0, 0, 0
    lines = ((n, line) for n, line in enumerate(sys.stdin, 1)) if args.text == "-" else [(None, args.text)]
    pause = np.zeros(int(tts.sentence_pause * tts.sample_rate), np.float32)
    bar = progress(unit="line" if args.text == "-" else "chunk")

    def emit(samples) -> None:
        nonlocal seconds
        if writer is not None:
            writer.write(samples)
        else:
            kept.append(samples)
        seconds += len(samples) / tts.sample_rate

    for number, line in lines:
        if not line.strip():
            continue  # an empty line in a stream: nothing to say
        try:
            for k, chunk in enumerate(tts.stream(line, **options)):
                if k == 0 and count:  # lines are paused between like sentences
                    emit(pause)
                if chunk.timestamps is not None:
                    stamps.extend(_offset(chunk.timestamps, seconds - chunk.start, sentences))
                emit(chunk.samples)
            sentences = len(stamps.sentences)
            count += 1
        except TextError as err:
            if number is None:
                raise
            warnings.warn(f"line {number}: {err}; skipped", FlowspeechWarning, stacklevel=1)
        bar.update(1)
    bar.close()
    if writer is None:
        if not kept:
            raise TextError("nothing to say: every line was empty or unspeakable")
        save_wav(args.out, np.concatenate(kept), tts.sample_rate)
    return seconds, count


def _offset(stamps, seconds: float, sentences: int):
    """``stamps`` moved ``seconds`` later and ``sentences`` sentences on (a line of standard
    input after the earlier ones)."""
    from dataclasses import replace

    from flowspeech.inference.timestamps import Timestamps

    def move(spans):
        return [replace(s, start=s.start + seconds, end=s.end + seconds, sentence=s.sentence + sentences)
                for s in spans]

    return Timestamps(move(stamps.sentences), move(stamps.words), move(stamps.phonemes))


class _AudioWriter:
    """16-bit PCM to a byte stream as it comes, after a streaming WAV header unless ``fmt`` is
    ``"raw"``; flushed at every chunk, for a reader on the other end of a pipe."""

    def __init__(self, stream, sample_rate: int, fmt: str):
        from flowspeech.audio import wav_stream_header

        self.stream = stream
        if fmt == "wav":
            self.stream.write(wav_stream_header(sample_rate))
            self.stream.flush()

    def write(self, samples) -> None:
        from flowspeech.audio import pcm16

        self.stream.write(pcm16(samples))
        self.stream.flush()


def _run_onnx(args) -> int:
    """``--backend onnx``: the same outputs from an ONNX voice, with no PyTorch imported (unless
    a registered voice has to be exported first, once)."""
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from flowspeech.audio.io import save_wav
    from flowspeech.cli.common import check_audio_output, check_output
    from flowspeech.errors import ConfigError, FlowspeechError
    from flowspeech.inference.timestamps import Timestamps
    from flowspeech.runtime import OnnxVoice, is_onnx_voice
    from flowspeech.voices import default_voice, get_voice, onnx_cache_folder

    fixed = [flag for flag, given in (
        ("--acoustic", args.acoustic), ("--model", args.model), ("--vocoder", args.vocoder != "griffin-lim"),
        ("--denoise", args.denoise), ("--vocoder-precision", args.vocoder_precision != "float32"),
        ("--save-mel", args.save_mel), ("--device", args.device != "cpu"),
        ("--speaker", args.speaker), ("--text -", args.text == "-")) if given]
    if fixed:
        raise ConfigError(f"{', '.join(fixed)}: not with --backend onnx (an ONNX voice carries its own "
                          f"vocoder and runs on the CPU; export another voice for other models)")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: use 1 or more")
    to_stdout = args.out == "-"
    report = sys.stderr if to_stdout else sys.stdout
    t0 = time.perf_counter()
    if args.voice is not None and is_onnx_voice(args.voice):
        folder = Path(args.voice)
    else:
        if args.voice is not None and Path(args.voice).is_dir():
            raise FlowspeechError(f"--voice {args.voice}: this folder is not an ONNX voice (no "
                                  f"voice.onnx.json); make one with flowspeech export --onnx")
        voice = get_voice(args.voice) if args.voice is not None else default_voice()
        folder = onnx_cache_folder(voice)
        if not is_onnx_voice(folder):
            from flowspeech.inference.onnx_export import export_voice_to_cache  # lazy: torch, once per voice

            print(f"exporting voice {voice.name!r} to ONNX, once: {folder}", file=sys.stderr)
            folder, _ = export_voice_to_cache(voice.name)
    per_line_folder = args.text_file is not None and Path(args.out).suffix == "" and not to_stdout
    if args.format == "raw" and not to_stdout:
        raise FlowspeechError("--format raw is for --out - (a file's format follows its name)")
    if args.text_file is not None:
        rows = _read_lines(args.text_file)
    else:
        rows = [("", args.text)]
    if per_line_folder:
        check_output(Path(args.out) / f"{rows[0][0]}.wav", [args.text_file], "--out")
    elif not to_stdout:
        check_audio_output(args.out, [args.text_file], "--out")
    if args.timestamps:
        if Path(args.timestamps).suffix.lower() not in (".json", ".srt", ".vtt"):
            raise FlowspeechError(f"--timestamps {args.timestamps}: use a .json, .srt or .vtt file name")
        check_output(args.timestamps, [args.text_file], "--timestamps")
    voice = OnnxVoice(folder, threads=args.threads)
    t_load = time.perf_counter() - t0
    options = {"noise_scale": args.noise_scale, "length_scale": args.length_scale, "sigma": args.sigma,
               "seed": args.seed}
    t1 = time.perf_counter()
    pause = np.zeros(int(voice.sentence_pause * voice.sample_rate), np.float32)
    stamps, total, pieces = Timestamps(), 0.0, []
    writer = _AudioWriter(sys.stdout.buffer, voice.sample_rate, args.format) if to_stdout else None
    for n, (uid, text) in enumerate(rows):
        line_stamps, line = Timestamps(), []
        for k, chunk in enumerate(voice.stream(text, **options)):
            samples = np.concatenate([pause, chunk.samples]) if n and k == 0 and not per_line_folder else chunk.samples
            line_stamps.extend(chunk.timestamps)
            if writer is not None:  # written as each sentence is made
                writer.write(samples)
            line.append(samples)
        lead = 0.0 if per_line_folder or not n else len(pause) / voice.sample_rate
        if per_line_folder:
            audio = np.concatenate(line)
            save_wav(Path(args.out) / f"{uid}.wav", audio, voice.sample_rate)
            stamps.extend(_shifted(line_stamps, uid))
        else:
            pieces += line
            stamps.extend(_offset(line_stamps, total + lead, len(stamps.sentences)))
        total += sum(len(x) for x in line) / voice.sample_rate
    if to_stdout:
        summary = f"standard output: {total:.2f} s of audio, {len(rows)} line(s)"
    elif per_line_folder:
        summary = f"{args.out}/: {total:.2f} s of audio in {len(rows)} files"
    else:
        save_wav(args.out, np.concatenate(pieces), voice.sample_rate)
        summary = f"{args.out}: {total:.2f} s of audio"
    if args.timestamps:
        stamps.save(args.timestamps)
    t_synth = time.perf_counter() - t1
    if not args.quiet:
        print(f"{summary}; ONNX voice {voice.name!r} ({folder}), onnxruntime, vocoder {voice.vocoder['type']}; "
              f"load {t_load:.2f} s, synthesis {t_synth:.2f} s (real-time factor "
              f"{t_synth / max(total, 1e-9):.3f})", file=report)
    return 0
