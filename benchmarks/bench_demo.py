"""Wall-clock of the README's first command on a fresh clone: `make demo` (budget: 12 minutes
on 2 cores, environment install included).

Clones the committed HEAD into a temporary folder, builds the environment (`make` of the venv
stamp) and runs the demo study, timing each part; prints one line per part and the total, and
exits non-zero if `make` fails. The pip cache of this machine is used as a new user's would be.

    python benchmarks/bench_demo.py [--cores 2] [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 12 * 60


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the clone (prints its path)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overlapseg-demo-"))
    clone = work / "overlapseg"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    install = timed(["make", ".venv/.installed"], clone)
    study = timed(["make", "demo", f"CORES={args.cores}"], clone)
    total = install + study
    print(f"environment install  {install:7.1f} s")
    print(f"demo study           {study:7.1f} s  ({args.cores} cores)")
    print(f"make demo total      {total:7.1f} s  (budget {BUDGET_S} s: "
          f"{'within' if total <= BUDGET_S else 'OVER'})")
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
