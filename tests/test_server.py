"""`flowspeech serve`: the OpenAI-compatible speech endpoint, its errors, limits and metrics,
streaming, cancellation, the API key, a graceful stop, and random input that never breaks it.
Servers listen on the loopback interface only; every request loop is bounded."""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowspeech import Synthesizer
from flowspeech.server import ServerConfig, create_app
from flowspeech.server.engine import ChunkScheduler

LONG = " ".join(["The quick brown fox jumps over the lazy dog, and then it runs far away."] * 6)


@pytest.fixture(scope="module")
def voice() -> Synthesizer:
    return Synthesizer()


@pytest.fixture
def client(voice):
    with TestClient(create_app(ServerConfig({"slt": voice}, workers=1, streams=1, queue=1))) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app under uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def post(self, body: dict, timeout: float = 120) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("POST", "/v1/audio/speech", json.dumps(body), {"Content-Type": "application/json"})
        return conn.getresponse()

    def get(self, path: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())


# --- the endpoint ----------------------------------------------------------------------------
def test_openai_requests_get_audio_in_each_format(client):
    voices = client.get("/v1/voices").json()["data"]
    assert voices[0]["id"] == "slt" and voices[0]["sample_rate"] == 22050 and voices[0]["model"] == "glow-tts"
    wav = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "slt",
                                                "response_format": "wav", "seed": 1})
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    pcm = client.post("/v1/audio/speech", json={"input": "Hello there.", "response_format": "pcm", "seed": 1})
    assert pcm.content == wav.content[44:]  # the same audio, without the streaming WAV header
    audio, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 22050 and 0.3 < len(audio) / rate < 3
    for fmt, kind in (("flac", "FLAC"), ("mp3", "MP3"), ("opus", "OGG")):
        r = client.post("/v1/audio/speech", json={"input": "Hello there.", "response_format": fmt, "seed": 1})
        assert r.status_code == 200 and sf.info(io.BytesIO(r.content)).format == kind, fmt
    slow = client.post("/v1/audio/speech", json={"input": "Hello there.", "response_format": "pcm", "speed": 0.5,
                                                  "seed": 1})
    assert len(slow.content) > 1.7 * len(pcm.content)  # speed 0.5: twice the length


def test_server_sent_events_carry_audio_and_timestamps(client):
    r = client.post("/v1/audio/speech", json={"input": "Hello. Good morning to you.", "stream_format": "sse",
                                              "timestamps": True, "seed": 2})
    events = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.timestamps" and kinds[-1] == "speech.audio.done"
    assert kinds.count("speech.timestamps") == 2 and "speech.audio.delta" in kinds
    words = [w["text"] for e in events if e["type"] == "speech.timestamps" for w in e["words"]]
    assert words == ["Hello.", "Good", "morning", "to", "you."]


@pytest.mark.parametrize("body, status, message", [
    ({"input": "x" * 5001}, 413, "at most 5000"),
    ({"input": "Hi", "voice": "alloy"}, 404, "no voice 'alloy'"),
    ({"input": "Hi", "speed": 9}, 422, "speed"),
    ({"input": "Hi", "response_format": "aac"}, 422, "response_format"),
    ({"voice": "slt"}, 422, "input"),
    ({"input": "!!!"}, 422, "empty after normalisation"),
    ({"input": "Hi", "sigma": 0.5}, 422, "sigma"),
    ([1, 2], 422, "invalid request"),
])
def test_bad_requests_get_a_json_error(client, body, status, message):
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == status and message in r.json()["error"]["message"], r.text


def test_malformed_json_is_422_and_health_and_metrics_answer(client):
    r = client.post("/v1/audio/speech", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/health").json()["status"] == "ok"
    client.post("/v1/audio/speech", json={"input": "Hello.", "seed": 1})
    text = client.get("/metrics").text
    for series in ("flowspeech_requests_total", "flowspeech_time_to_first_byte_seconds_bucket",
                   "flowspeech_request_seconds_bucket", "flowspeech_real_time_factor_bucket",
                   "flowspeech_queue_depth", "flowspeech_errors_total"):
        assert series in text, series
    assert 'flowspeech_requests_total{route="/v1/audio/speech",status="422"} 1.0' in text


def test_an_api_key_is_required_when_set(voice):
    with TestClient(create_app(ServerConfig({"slt": voice}, api_key="s3cret"))) as c:
        assert c.post("/v1/audio/speech", json={"input": "Hi."}).status_code == 401
        assert c.get("/v1/voices", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/voices", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


# --- load, time limits, cancellation -----------------------------------------------------------
def test_the_chunk_scheduler_gives_the_earliest_deadline_the_next_worker():
    scheduler, order, release = ChunkScheduler(workers=1), [], threading.Event()

    def chunk(deadline: float) -> None:
        with scheduler.turn(deadline):
            order.append(deadline)  # one worker: the chunks run one at a time
            release.wait(5)

    holder = threading.Thread(target=chunk, args=(100.0,))
    holder.start()
    while scheduler.busy < 1:
        time.sleep(0.01)
    waiters = [threading.Thread(target=chunk, args=(d,)) for d in (5.0, 3.0, 9.0, 1.0)]
    for t in waiters:  # they queue behind the holder, in no particular order
        t.start()
    for _ in range(500):
        if len(scheduler._waiting) == 4:
            break
        time.sleep(0.01)
    release.set()
    for t in [holder, *waiters]:
        t.join(10)
    assert order == [100.0, 1.0, 3.0, 5.0, 9.0] and scheduler.busy == 0


def test_the_chunk_scheduler_runs_at_most_its_workers_at_once():
    scheduler, lock, running, most = ChunkScheduler(workers=2), threading.Lock(), [0], [0]

    def chunk(deadline: float) -> None:
        with scheduler.turn(deadline):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=chunk, args=(float(i % 3),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 2 and scheduler.busy == 0


def test_the_first_bytes_leave_before_the_text_is_done(voice):
    with LiveServer(create_app(ServerConfig({"slt": voice}, workers=1, streams=1, queue=0))) as server:
        t0 = time.perf_counter()
        response = server.post({"input": LONG, "response_format": "pcm", "seed": 1})
        assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
        first = response.read1(1024)
        t_first = time.perf_counter() - t0
        rest = response.read()
        t_all = time.perf_counter() - t0
    assert first and len(first) + len(rest) > 10 * 22050 * 2  # more than 10 s of audio
    assert t_first < 0.5 * t_all, (t_first, t_all)


def test_a_full_queue_gets_503_with_retry_after_and_a_client_that_leaves_stops_its_work(voice):
    app = create_app(ServerConfig({"slt": voice}, workers=1, streams=1, queue=0))
    with LiveServer(app) as server:
        busy = server.post({"input": LONG, "response_format": "pcm", "seed": 1})
        assert busy.status == 200 and busy.read1(1024)
        refused = server.post({"input": "Hello."})
        assert refused.status == 503 and refused.getheader("Retry-After") == "1"
        assert json.loads(refused.read())["error"]["type"] == "server_busy"
        busy.close()  # the client goes away mid-stream
        for _ in range(100):  # its synthesis stops within a chunk, and its place is free again
            health = server.get("/health")
            if health["in_flight"] == 0 and app.state.engine.pending == 0:
                break
            time.sleep(0.1)
        assert app.state.engine.pending == 0 and health["in_flight"] == 0
        again = server.post({"input": "Hello.", "seed": 1})
        assert again.status == 200 and again.read()


def test_a_request_past_its_time_limit_is_cancelled(voice):
    with TestClient(create_app(ServerConfig({"slt": voice}, timeout=0.01))) as c:
        r = c.post("/v1/audio/speech", json={"input": LONG})
        assert r.status_code == 504 and "longer than" in r.json()["error"]["message"]
        assert c.app.state.engine.pending == 0


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flowspeech.cli.main", "serve", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "flowspeech serve: http://127.0.0.1" in proc.stdout.readline()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/audio/speech", json.dumps({"input": LONG, "response_format": "pcm"}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and response.read1(1024)
        proc.send_signal(signal.SIGTERM)
        body = response.read()  # the response in flight is completed, not cut
        assert len(body) > 10 * 22050 * 2
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# --- random input ----------------------------------------------------------------------------
_json = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=12)
_fields = st.fixed_dictionaries({}, optional={
    "input": st.text(max_size=40), "voice": st.one_of(st.just("slt"), st.text(max_size=8)),
    "model": st.text(max_size=8), "speed": st.floats(allow_nan=True, allow_infinity=True),
    "response_format": st.sampled_from(["wav", "pcm", "flac", "mp3", "opus", "aac", ""]),
    "noise_scale": st.floats(), "length_scale": st.floats(), "sigma": st.floats(),
    "seed": st.integers(), "stream_format": st.sampled_from(["audio", "sse", "x"]), "timestamps": _json})
_headers = st.dictionaries(st.sampled_from(["Authorization", "X-API-Key", "Content-Type", "Accept", "X-Whatever"]),
                           st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                           max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_fields, _json), headers=_headers,
       path=st.sampled_from(["/v1/audio/speech", "/v1/voices", "/health", "/metrics", "/", "/nope"]))
def test_random_requests_never_get_a_500(client, body, headers, path):
    if path == "/v1/audio/speech":
        r = client.post(path, content=json.dumps(body, allow_nan=True), headers=headers)
    else:
        r = client.get(path, headers=headers)
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json()
    assert client.app.state.engine.pending == 0


def test_an_onnx_voice_is_served_beside_a_pytorch_one(voice, tmp_path_factory):
    from flowspeech.inference.onnx_export import export_onnx
    from flowspeech.runtime import OnnxVoice

    folder = tmp_path_factory.mktemp("onnx") / "slt-onnx"
    export_onnx(voice, folder)
    app = create_app(ServerConfig({"slt": voice, "slt-onnx": OnnxVoice(folder, threads=1)}))
    with TestClient(app) as c:
        listed = {v["id"]: v for v in c.get("/v1/voices").json()["data"]}
        assert listed["slt-onnx"]["model"] == "glow-tts (onnx)" and listed["slt"]["model"] == "glow-tts"
        first = c.post("/v1/audio/speech", json={"input": "Hello there. Goodbye.", "voice": "slt-onnx", "seed": 3})
        again = c.post("/v1/audio/speech", json={"input": "Hello there. Goodbye.", "voice": "slt-onnx", "seed": 3})
        assert first.status_code == 200 and first.content == again.content
        audio, sr = sf.read(io.BytesIO(first.content), dtype="float32")
        assert sr == 22050 and len(audio) > 0.5 * sr
        assert c.post("/v1/audio/speech", json={"input": "Hi.", "voice": "slt-onnx", "sigma": 0.5}).status_code == 422
        pcm = c.post("/v1/audio/speech", json={"input": "Hello there. Goodbye.", "voice": "slt-onnx", "seed": 3,
                                               "response_format": "pcm"})
        assert pcm.status_code == 200 and len(pcm.content) == 2 * len(audio)
