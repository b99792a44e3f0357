"""Solver overhead of this tree against an earlier commit, measured in the same run.

Runs `benchmarks/overhead.py` of both trees (the earlier one extracted with `git archive`
into a temporary folder), alternating a few rounds of each, so that drift in the machine's
speed hits both alike; prints each sampler's median "x floor" ratio (its time over the
near-free floor loop measured in the same process) for both, and new / old.

Run: python benchmarks/overhead_vs_rev.py [--rev HEAD~1] [--repeats 4] [--rounds 4]
     [--shapes 1,4,8,8 4,4,64,64]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+(\S+)\s*$")


def extract(rev: str, into: Path) -> Path:
    """The tree of `rev` (src/ and benchmarks/) under `into`."""
    archive = into / "tree.tar"
    with open(archive, "wb") as f:
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src", "benchmarks"], stdout=f, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def ratios(tree: Path, shapes: list[str], rounds: int) -> dict[tuple[str, str], float]:
    """(shape, sampler) -> 'x floor' of one run of that tree's overhead.py."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, str(tree / "benchmarks" / "overhead.py"), "--rounds", str(rounds)]
    out = subprocess.run(
        [*cmd, "--shapes", *shapes], env=env, capture_output=True, text=True, check=True
    ).stdout
    found: dict[tuple[str, str], float] = {}
    shape = ""
    for line in out.splitlines():
        if line.startswith("shape "):
            shape = line.removeprefix("shape ").split("), ")[0] + ")"
        elif shape and (m := ROW.match(line)) and m.group(1) != "sampler":
            found[(shape, m.group(1))] = float(m.group(3))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD~1", help="the earlier commit (default HEAD~1)")
    parser.add_argument("--repeats", type=int, default=4, help="alternations of the two trees")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per overhead.py run")
    parser.add_argument("--shapes", nargs="+", default=["1,4,8,8", "4,4,64,64"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = extract(args.rev, Path(tmp))
        runs: dict[str, list[dict[tuple[str, str], float]]] = {"old": [], "new": []}
        for _ in range(args.repeats):
            runs["old"].append(ratios(old_tree, args.shapes, args.rounds))
            runs["new"].append(ratios(ROOT, args.shapes, args.rounds))
    keys = [k for k in runs["new"][0] if all(k in r for r in runs["old"] + runs["new"])]
    print(f"x floor (median of {args.repeats} alternating runs): {args.rev} vs this tree")
    print(f"{'shape':14s} {'sampler':38s} {'old':>7s} {'new':>7s} {'new/old':>8s}")
    for key in keys:
        old = statistics.median(r[key] for r in runs["old"])
        new = statistics.median(r[key] for r in runs["new"])
        print(f"{key[0]:14s} {key[1]:38s} {old:7.2f} {new:7.2f} {new / old:8.3f}")


if __name__ == "__main__":
    main()
