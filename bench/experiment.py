"""Candidate optimizations, measured without touching alertd/: patched copies of the package.

    python -m bench.experiment build head NAME [NAME ...]  # /tmp/alertd-exp/NAME/alertd = HEAD's alertd/ + patches
    python -m bench.experiment save NAME                   # bench/experiments/NAME.patch from an edited copy
    python -m bench.run --base /tmp/alertd-exp/head --variant NAME=/tmp/alertd-exp/NAME --stages micro,ingest,batch

Copies come from the committed alertd/ (git archive HEAD), not the working tree, which its owner may be
editing: `head` is that copy unpatched, the base every variant is compared with in the same run.
A NAME may join patches with `+` (`json-decoder+metric-children`): they are applied in order.
Each patch is a unified diff against HEAD's alertd/ (paths a/alertd/..., b/alertd/...), the exact text
to apply with `git apply bench/experiments/NAME.patch` once the figures justify it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from bench.procs import ROOT

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"
SCRATCH = Path("/tmp/alertd-exp")  # noqa: S108 - a scratch copy we create and own


def build(name: str) -> Path:
    """A fresh copy of alertd/ with NAME's patches applied; returns the folder to put on PYTHONPATH."""
    target = SCRATCH / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", "alertd"], cwd=ROOT, capture_output=True, check=True)  # noqa: S607
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)  # noqa: S603, S607
    if name == "head":
        return target
    for part in name.split("+"):
        patch = EXPERIMENTS / f"{part}.patch"
        subprocess.run(["patch", "-p1", "--quiet", "-d", str(target), "-i", str(patch)], check=True)  # noqa: S603, S607
    return target


def save(name: str) -> Path:
    """Write the diff of /tmp/alertd-exp/NAME/alertd against /tmp/alertd-exp/head/alertd as NAME.patch."""
    diff = subprocess.run(  # noqa: S603
        ["git", "diff", "--no-index", "--", "head/alertd", f"{name}/alertd"],  # noqa: S607
        cwd=SCRATCH,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    diff = diff.replace("a/head/alertd/", "a/alertd/").replace(f"b/{name}/alertd/", "b/alertd/")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    EXPERIMENTS.mkdir(exist_ok=True)
    out = EXPERIMENTS / f"{name}.patch"
    out.write_text(f"Candidate optimization {name}, against alertd/ at commit {commit}.\n\n{diff}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("build", "save"))
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    for name in args.names:
        print(build(name) if args.action == "build" else save(name))


if __name__ == "__main__":
    main()
