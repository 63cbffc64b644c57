"""Load on `flowspeech serve`: concurrent clients on the loopback interface, a fixed number of
requests (it stops by itself), side by side with `flowspeech synthesize --text-file` on the
same sentences.

    python benchmarks/load_server.py [--clients 4] [--requests 1000] [--workers N]

Starts the server with the shipped voice on a free port of 127.0.0.1, sends one-sentence
requests (the LJSpeech transcripts of the shared sample, first sentence each, in turn) from
``--clients`` threads until ``--requests`` are done, and reports requests per second, p50/p95
latency and time to the first byte, errors by status, and the server's resident memory after
request 100 and after the last. Then it times `flowspeech synthesize --text-file` on the same
sentences (its synthesis time, the model's loading left out) for the throughput comparison.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from flowspeech.text import split_sentences

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "corpus" / "data" / "ljspeech_real_sample" / "metadata.csv"


def sentences(path: Path) -> list[str]:
    rows = csv.reader(path.open(encoding="utf-8"), delimiter="|", quoting=csv.QUOTE_NONE)
    return [split_sentences(row[2], max_chars=300)[0] for row in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def q(values: list[float], percent: int) -> float:
    """The ``percent``-th percentile."""
    return statistics.quantiles(values, n=100)[percent - 1] if len(values) > 1 else float("nan")


def one_request(port: int, text: str) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/audio/speech", json.dumps({"input": text, "response_format": "pcm", "seed": 1}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.read1(1)
    ttfb = time.perf_counter() - t0
    response.read()
    conn.close()
    return response.status, ttfb if first else float("nan"), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="the server's (default: its own choice)")
    parser.add_argument("--streams", type=int, default=None, help="the server's (default: its own choice)")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="the server's (default: its own)")
    parser.add_argument("--sentences", type=Path, default=SAMPLE, help="an LJSpeech metadata.csv")
    args = parser.parse_args()
    texts = sentences(args.sentences)
    port = free_port()
    cmd = [sys.executable, "-m", "flowspeech.cli.main", "serve", "--port", str(port)]
    for option in ("workers", "streams", "chunk_seconds"):
        if getattr(args, option) is not None:
            cmd += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    banner = server.stdout.readline().strip()
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    results: list[tuple[int, float, float]] = []
    lock, memory = threading.Lock(), {}
    counter = iter(range(args.requests))

    def client() -> None:
        for n in counter:  # a shared iterator: the loop is bounded by --requests
            status, ttfb, total = one_request(port, texts[n % len(texts)])
            with lock:
                results.append((status, ttfb, total))
                done = len(results)
            if done in (100, args.requests):
                memory[done] = rss_mb(server.pid)

    one_request(port, texts[0])  # warm-up (filterbank, first allocations)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    server.terminate()
    server.wait(timeout=120)
    ok = [r for r in results if r[0] == 200]
    statuses = Counter(r[0] for r in results)
    print(f"# {banner}")
    print(f"# {args.clients} clients, {len(results)} one-sentence requests, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"requests/s {len(results) / elapsed:.2f}; latency p50 {q([r[2] for r in ok], 50):.3f} s, "
          f"p95 {q([r[2] for r in ok], 95):.3f} s; time to first byte p50 {q([r[1] for r in ok], 50):.3f} s, "
          f"p95 {q([r[1] for r in ok], 95):.3f} s; statuses {dict(statuses)}; server memory "
          f"{memory.get(100, float('nan')):.0f} MB after 100 requests, "
          f"{memory.get(args.requests, float('nan')):.0f} MB after {args.requests} "
          f"({100 * (memory.get(args.requests, 0) / memory.get(100, 1) - 1):+.1f} %)")
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "lines.txt"
        listing.write_text("".join(f"s{i:04d}|{t}\n" for i, t in enumerate(texts)))
        # A first run loads the caches (librosa's filterbank, the CMU dictionary) from disk.
        subprocess.run([sys.executable, "-m", "flowspeech.cli.main", "synthesize", "--text-file", str(listing),
                        "--out", str(Path(tmp) / "wavs"), "--seed", "1", "--quiet"], capture_output=True, check=False)
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "flowspeech.cli.main", "synthesize", "--text-file",
                               str(listing), "--out", str(Path(tmp) / "wavs"), "--seed", "1"],
                              capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        synthesis = float(re.search(r"synthesis ([0-9.]+) s", done.stdout).group(1))
    print(f"flowspeech synthesize --text-file on the same {len(texts)} sentences: {len(texts) / synthesis:.2f} "
          f"sentences/s of synthesis ({synthesis:.1f} s; {wall:.1f} s with start-up); the server's "
          f"throughput is {100 * (len(results) / elapsed) / (len(texts) / synthesis):.0f} % of it")


if __name__ == "__main__":
    main()
