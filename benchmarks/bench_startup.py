"""Start-up time: ``import flowspeech``, ``flowspeech --help`` and a cold one-sentence
``flowspeech synthesize`` with the shipped voice, each in a fresh process.

    python benchmarks/bench_startup.py                      # this checkout
    python benchmarks/bench_startup.py --compare acbbd29    # and another commit, side by side

``--compare REF`` checks REF out into a temporary git worktree and runs the same commands with
its ``src/`` first on ``PYTHONPATH``, alternating the two so that machine load hits both alike.
Reports the median and the best of ``--repeats`` runs per command (seconds of wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTENCE = "Flow based speech synthesis, on a laptop."


def commands(out_wav: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "flowspeech.cli.main"]
    return {
        "import flowspeech": [sys.executable, "-c", "import flowspeech"],
        "flowspeech --help": cli + ["--help"],
        "synthesize one sentence (cold)": cli + ["synthesize", "--text", SENTENCE, "--out", str(out_wav),
                                                 "--seed", "1"],
    }


def run_once(argv: list[str], src: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed with {src}:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REF", help="another commit to time side by side")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"this checkout": ROOT / "src"}
        if args.compare:
            other = Path(tmp) / "other"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other),
                            args.compare], check=True)
            sources = {args.compare: other / "src", **sources}
        try:
            table = {name: {label: [] for label in sources} for name in commands(Path(tmp) / "x.wav")}
            for name, argv in commands(Path(tmp) / "x.wav").items():
                for label, src in sources.items():
                    run_once(argv, src)  # warm the file cache
                for _ in range(args.repeats):
                    for label, src in sources.items():
                        table[name][label].append(run_once(argv, src))
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                               check=False)
    print(f"# {args.repeats} runs each, {os.cpu_count()} CPUs, load average "
          f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| command | " + " | ".join(f"{label} (median / best s)" for label in sources) + " |")
    print("|---|" + "---:|" * len(sources))
    for name, per_source in table.items():
        cells = [f"{statistics.median(v):.3f} / {min(v):.3f}" for v in per_source.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
