"""``flowspeech serve``: the HTTP speech server (docs/serving.md)."""

from __future__ import annotations

import os
import signal


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="an HTTP speech server: OpenAI-compatible /v1/audio/speech and a web page",
        description="Serve named voices over HTTP: POST /v1/audio/speech (the OpenAI request; "
        "wav and pcm stream as they are made), GET /v1/voices, /health, /metrics (Prometheus), "
        "and a web page at /. Binds 127.0.0.1 unless told otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5002)
    p.add_argument("--voice", action="append", default=[], metavar="NAME",
                   help="a registered voice, or an ONNX voice folder (`flowspeech export --onnx`), to serve "
                   "(repeatable; the first is the default; default: the shipped voice); see `flowspeech voices`")
    p.add_argument("--workers", type=int, default=None,
                   help="chunks of audio computed at once, each on CPUs / workers threads "
                   "(default: one per CPU)")
    p.add_argument("--streams", type=int, default=None,
                   help="requests synthesised at once, interleaved chunk by chunk (default: 4 per worker)")
    p.add_argument("--queue", type=int, default=None,
                   help="requests that may wait for a stream before 503 (default: 2 per stream)")
    p.add_argument("--chunk-seconds", type=float, default=1.5,
                   help="longest piece of audio computed in one go after the first (default 1.5): "
                   "shorter lets new requests start sooner, longer recomputes less context")
    p.add_argument("--max-chars", type=int, default=5000, help="longest input per request (413 beyond)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take")
    p.add_argument("--api-key", default=None,
                   help="require this key (Authorization: Bearer KEY); default: $FLOWSPEECH_API_KEY, if set")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    import torch
    import uvicorn

    from flowspeech.cli.common import resolve_device
    from flowspeech.errors import ConfigError
    from flowspeech.inference.synthesizer import Synthesizer
    from flowspeech.runtime import OnnxVoice, is_onnx_voice
    from flowspeech.server import ServerConfig, create_app
    from flowspeech.voices import default_voice

    cpus = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else cpus
    streams = args.streams if args.streams is not None else 4 * workers
    queue = args.queue if args.queue is not None else 2 * streams
    if workers < 1 or streams < 1 or queue < 0 or args.max_chars < 1 or not args.timeout > 0:
        raise ConfigError("--workers and --streams must be >= 1, --queue >= 0, --max-chars >= 1 "
                          "and --timeout > 0")
    if not 0.1 <= args.chunk_seconds <= 60:
        raise ConfigError(f"--chunk-seconds {args.chunk_seconds:g}: use 0.1-60")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: use 1-65535")
    device = resolve_device(args.device)
    # Each worker's torch ops use their share of the cores: workers x threads = CPUs.
    torch.set_num_threads(max(1, cpus // workers))
    names = args.voice or [default_voice().name]
    voices = {}
    for name in dict.fromkeys(names):
        if is_onnx_voice(name):  # a folder from `flowspeech export --onnx`, served by onnxruntime
            voices[Path(name).name] = OnnxVoice(name, threads=max(1, cpus // workers))
        else:
            voices[name] = Synthesizer(voice=name, device=device)
    api_key = args.api_key if args.api_key is not None else os.environ.get("FLOWSPEECH_API_KEY") or None
    app = create_app(ServerConfig(voices, workers=workers, streams=streams, queue=queue,
                                  chunk_seconds=args.chunk_seconds, max_chars=args.max_chars,
                                  timeout=args.timeout, api_key=api_key))
    print(f"flowspeech serve: http://{args.host}:{args.port}/ with {', '.join(voices)}; {workers} "
          f"worker(s) for {streams} stream(s), {queue} queued at most"
          f"{', API key required' if api_key else ''}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=int(args.timeout) + 5))
    # SIGTERM (a service manager's stop): uvicorn stops accepting, finishes the requests in
    # flight, then raises the signal again under the handler it found, which is this no-op,
    # so that a drained server exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    return 0
