"""Wall-clock of the README's first command on a fresh clone: `make demo` (budget: 10 minutes
on 2 cores, environment install included), and where the minutes go (job time per rule, from
Snakemake's log).

Clones the committed HEAD into a temporary folder, builds the environment (`make` of the venv
stamp) and runs the demo study, timing each part; prints one line per part and the total, and
exits non-zero if `make` fails. The pip cache of this machine is used as a new user's would be.

    python benchmarks/bench_demo.py [--cores 2] [--keep]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 10 * 60
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def rule_minutes(log: Path) -> dict[str, tuple[int, float]]:
    """{rule: (jobs, summed job seconds)} from a Snakemake log: each job's "rule X:" block and
    its "Finished jobid: N (Rule: X)" line follow a [timestamp] line."""
    starts, out, stamp, pending = {}, {}, None, None
    for line in log.read_text().splitlines():
        m = STAMP.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            pending = (m.group(1), stamp)
            continue
        m = re.match(r"^\s+jobid: (\d+)$", line)
        if m and pending:
            starts[m.group(1)] = pending
            pending = None
            continue
        m = re.match(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$", line)
        if m and m.group(1) in starts:
            rule, start = starts.pop(m.group(1))
            jobs, secs = out.get(rule, (0, 0.0))
            out[rule] = (jobs + 1, secs + (stamp - start).total_seconds())
    return out


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
    logs = sorted((clone / ".snakemake" / "log").glob("*.snakemake.log"))
    if logs:
        per_rule = rule_minutes(logs[-1])
        print("\nrule                  jobs   job minutes (summed over jobs; 2 run at a time)")
        for rule, (jobs, secs) in sorted(per_rule.items(), key=lambda kv: -kv[1][1]):
            print(f"{rule:20s} {jobs:5d}   {secs / 60:6.2f}")
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
