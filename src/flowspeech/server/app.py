"""The HTTP speech server: routes, request checks, audio encodings and metrics.

``POST /v1/audio/speech`` takes OpenAI's request (``model``, ``input``, ``voice``,
``response_format``, ``speed``) plus flowspeech's ``noise_scale``, ``length_scale``,
``sigma``, ``seed``; ``wav`` and ``pcm`` stream as the audio is made, other formats come
whole. ``stream_format: "sse"`` streams server-sent events instead (base64 PCM and, with
``timestamps: true``, each sentence's word and phoneme times), which the web page at ``/``
plays while highlighting the word being said. ``GET /v1/voices``, ``GET /health`` and
``GET /metrics`` (Prometheus text) complete it.

Every error is a JSON body in OpenAI's shape, ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import json
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowspeech import __version__
from flowspeech.audio import pcm16, resample, wav_stream_header
from flowspeech.errors import FlowspeechError, TextError
from flowspeech.inference.synthesizer import Synthesizer
from flowspeech.runtime import OnnxVoice
from flowspeech.server.engine import Busy, Expired, Job, SpeechEngine

STREAMED = ("wav", "pcm")
WHOLE = {"flac": ("FLAC", "PCM_16", "audio/flac"), "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
         "opus": ("OGG", "OPUS", "audio/ogg")}
MEDIA = {"wav": "audio/wav", "pcm": "audio/pcm"}


@dataclass
class ServerConfig:
    """How the server runs (``flowspeech serve``'s options)."""

    voices: dict[str, Synthesizer | OnnxVoice]   # name -> loaded voice; the first is the default
    workers: int = 2                 # chunks of audio computed at once
    streams: int = 8                 # requests synthesised at once, interleaved chunk by chunk
    queue: int = 16                  # requests that may wait for a stream; more get 503
    chunk_seconds: float = 1.5       # longest chunk after the first: how long a new request
                                     # may wait for a worker, against the context each recomputes
    max_chars: int = 5000            # longer input gets 413
    timeout: float = 60.0            # seconds a request may take; then it is cancelled
    api_key: str | None = None       # when set, every /v1 route and /metrics needs it


class SpeechRequest(BaseModel):
    """OpenAI's ``/v1/audio/speech`` body, and flowspeech's own controls."""

    model_config = ConfigDict(extra="ignore")  # other clients' extra fields are harmless

    model: str = Field("tts-1", max_length=200)
    input: str
    voice: str | None = Field(None, max_length=200)
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    noise_scale: float | None = Field(None, ge=0.0, le=10.0)
    length_scale: float | None = Field(None, ge=0.1, le=10.0)
    sigma: float | None = Field(None, ge=0.0, le=10.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream_format: Literal["audio", "sse"] = "audio"
    timestamps: bool = False


def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers)


class Metrics:
    """The Prometheus series the server keeps (one registry per app)."""

    def __init__(self, engine: SpeechEngine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("flowspeech_requests", "HTTP requests", ["route", "status"], registry=r)
        self.errors = Counter("flowspeech_errors", "Requests that failed", ["type"], registry=r)
        self.latency = Histogram("flowspeech_request_seconds", "Time to the last byte", ["route"],
                                 registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.ttfb = Histogram("flowspeech_time_to_first_byte_seconds", "Speech: time to the first audio",
                              registry=r, buckets=(0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5))
        self.rtf = Histogram("flowspeech_real_time_factor", "Speech: seconds of work per second of audio",
                             registry=r, buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
        self.audio = Counter("flowspeech_audio_seconds", "Seconds of audio made", registry=r)
        Gauge("flowspeech_queue_depth", "Requests waiting for a stream", registry=r).set_function(
            lambda: engine.waiting)
        Gauge("flowspeech_in_flight", "Requests being synthesised", registry=r).set_function(
            lambda: engine.running)
        Gauge("flowspeech_busy_workers", "Workers computing a chunk", registry=r).set_function(
            lambda: engine.scheduler.busy)


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app for ``config`` (``uvicorn.run(create_app(...))``)."""
    if not config.voices:
        raise FlowspeechError("the server needs at least one voice")
    engine = SpeechEngine(config.workers, config.streams, config.queue)
    metrics = Metrics(engine)
    default_voice = next(iter(config.voices))
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()  # after uvicorn has finished the requests in flight

    app = FastAPI(title="flowspeech", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.engine, app.state.metrics = engine, metrics

    def authorised(request: Request) -> bool:
        if config.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), config.api_key.encode())

    @app.middleware("http")
    async def count(request: Request, call_next):
        route = request.url.path if request.url.path in ("/", "/health", "/metrics", "/v1/voices",
                                                         "/v1/audio/speech") else "other"
        if route in ("/metrics", "/v1/voices", "/v1/audio/speech") and not authorised(request):
            response = error(401, "a valid API key is needed (Authorization: Bearer KEY)",
                             "authentication_error", {"WWW-Authenticate": "Bearer"})
        else:
            t0 = time.perf_counter()
            try:
                response = await call_next(request)
            except Exception:  # never a traceback to the client
                metrics.errors.labels("internal").inc()
                response = error(500, "internal error", "server_error")
            if not isinstance(response, StreamingResponse) or route != "/v1/audio/speech":
                metrics.latency.labels(route).observe(time.perf_counter() - t0)
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                             for e in exc.errors()[:5])
        metrics.errors.labels("invalid_request").inc()
        return error(422, f"invalid request: {problems}", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "voices": list(config.voices), "in_flight": engine.running,
                "queued": engine.waiting}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/voices")
    async def voices():
        return {"object": "list", "data": [describe(name, tts, name == default_voice)
                                           for name, tts in config.voices.items()]}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("flowspeech.server") / "page.html").read_text(encoding="utf-8")

    @app.post("/v1/audio/speech")
    async def speech(body: SpeechRequest, request: Request):
        t0 = time.perf_counter()
        if len(body.input) > config.max_chars:
            metrics.errors.labels("too_long").inc()
            return error(413, f"input is {len(body.input)} characters; this server takes at most "
                         f"{config.max_chars} per request", "invalid_request_error")
        name = body.voice or default_voice
        tts = config.voices.get(name)
        if tts is None:
            metrics.errors.labels("unknown_voice").inc()
            return error(404, f"no voice {name!r}; this server has {', '.join(config.voices)} "
                         f"(GET /v1/voices)", "invalid_request_error")
        if body.sigma is not None and not takes_sigma(tts):
            return error(422, "sigma is a neural vocoder's; this voice has none", "invalid_request_error")
        try:
            engine.admit()
        except Busy:
            metrics.errors.labels("busy").inc()
            return error(503, "the server is busy; try again shortly", "server_busy", {"Retry-After": "1"})
        job = Job(time.monotonic(), threading.Event())
        options = {"seed": body.seed, "noise_scale": body.noise_scale, "sigma": body.sigma,
                   "length_scale": min(10.0, max(0.1, (body.length_scale or tts.length_scale) / body.speed))}
        if isinstance(tts, Synthesizer):  # an ONNX voice streams sentence by sentence
            options["max_chunk_seconds"] = config.chunk_seconds
        chunks = engine.stream(tts, body.input, options, job, job.arrived + config.timeout)
        try:
            first = await chunks.__anext__()  # errors before any audio get a proper status
        except (TextError, FlowspeechError, ValueError) as err:
            engine.release()
            metrics.errors.labels("unspeakable").inc()
            return error(422, str(err), "invalid_request_error")
        except Expired:
            engine.release()
            metrics.errors.labels("timeout").inc()
            return error(504, f"synthesis took longer than {config.timeout:g} s", "timeout")
        except Exception:
            engine.release()
            metrics.errors.labels("internal").inc()
            return error(500, "internal error", "server_error")
        metrics.ttfb.observe(time.perf_counter() - t0)
        return respond(body, tts, first, chunks, t0, job)

    def respond(body, tts, first, chunks, t0: float, job: Job):
        sr = tts.sample_rate
        seconds = [0.0]

        async def audio():
            try:
                async for chunk in _prepend(first, chunks):
                    seconds[0] += len(chunk.samples) / sr
                    yield chunk
            except Expired:
                metrics.errors.labels("timeout").inc()
            except Exception:
                metrics.errors.labels("internal").inc()
            finally:
                job.close()
                engine.release()
                elapsed = time.perf_counter() - t0
                metrics.latency.labels("/v1/audio/speech").observe(elapsed)
                if seconds[0] > 0:
                    metrics.audio.inc(seconds[0])
                    metrics.rtf.observe(elapsed / seconds[0])

        headers = {"X-Sample-Rate": str(sr), "Cache-Control": "no-store"}
        if body.stream_format == "sse":
            async def events():
                async for chunk in audio():
                    if body.timestamps and chunk.timestamps is not None:
                        yield _event({"type": "speech.timestamps", **chunk.timestamps.to_dict()})
                    yield _event({"type": "speech.audio.delta",
                                  "audio": base64.b64encode(pcm16(chunk.samples)).decode()})
                yield _event({"type": "speech.audio.done", "sample_rate": sr,
                              "usage": {"input_characters": len(body.input), "audio_seconds": round(seconds[0], 3)}})
            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        if body.response_format in STREAMED:
            async def stream():
                if body.response_format == "wav":
                    yield wav_stream_header(sr)
                async for chunk in audio():
                    yield pcm16(chunk.samples)
            return StreamingResponse(stream(), media_type=MEDIA[body.response_format], headers=headers)

        async def whole():
            samples = np.concatenate([c.samples async for c in audio()] or [np.zeros(0, np.float32)])
            fmt, subtype, _ = WHOLE[body.response_format]
            rate = sr
            if body.response_format == "opus" and sr not in (8000, 12000, 16000, 24000, 48000):
                samples, rate = await asyncio.to_thread(resample, samples, sr, 24000), 24000
            out = io.BytesIO()
            await asyncio.to_thread(sf.write, out, samples, rate, subtype, None, fmt)
            yield out.getvalue()
        return StreamingResponse(whole(), media_type=WHOLE[body.response_format][2], headers=headers)

    return app


def takes_sigma(tts: Synthesizer | OnnxVoice) -> bool:
    """Whether the voice has a neural vocoder, whose temperature ``sigma`` sets."""
    if isinstance(tts, OnnxVoice):
        return tts.vocoder["type"] not in ("griffin-lim", "end-to-end")
    return tts.vocoder is not None and tts.vocoder.name != "griffin-lim"


def describe(name: str, tts: Synthesizer | OnnxVoice, default: bool) -> dict[str, Any]:
    if isinstance(tts, OnnxVoice):
        return {"id": name, "object": "voice", "default": default, "sample_rate": tts.sample_rate,
                "model": f"{tts.config.get('model_type', 'glow-tts')} (onnx)",
                "description": tts.config.get("description", ""), "vocoder": tts.vocoder["type"],
                "noise_scale": tts.noise_scale, "length_scale": tts.length_scale}
    info = tts.voice.info if tts.voice is not None else {}
    return {"id": name, "object": "voice", "default": default, "sample_rate": tts.sample_rate,
            "model": tts.model_type, "description": info.get("description", tts.config.get("description", "")),
            "vocoder": tts.describe_vocoder(), "noise_scale": tts.noise_scale,
            "length_scale": tts.length_scale}


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _prepend(first, rest):
    yield first
    async for item in rest:
        yield item
