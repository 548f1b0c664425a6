"""Rule verify: rerun some experiments from scratch in a separate folder and compare with the main run.

snakemake.input:  the main run's files that are compared (models, predictions, metrics, tables)
snakemake.output: [0] {out}/report.json (written only when everything matches)
snakemake.params: out, tolerance, experiments, files (overlapseg.verify.compare_runs), config
                  (the rerun's config), snakefile
On a mismatch: {out}/mismatch.json, one line per differing file on stderr, exit status 1.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from overlapseg.utils.io import atomic_path
from overlapseg.utils.workflow import log_to_file
from overlapseg.verify import compare_runs, finish, training_threads

log_to_file(snakemake)  # noqa: F821
par = snakemake.params  # noqa: F821
out = Path(par.out)
run_dir = out / "run"
if run_dir.exists():
    shutil.rmtree(run_dir)  # from scratch
run_dir.mkdir(parents=True)

# Inputs the workflow does not build (raw data, local weights) are linked into the rerun folder
# under the same relative paths, so the rerun's config (and provenance hashes) stay identical.
cfg = par.config
links = {"resources"} | {Path(ds["raw"]).parts[0] for ds in cfg["datasets"].values()
                         if "demo" not in ds and not Path(ds["raw"]).is_absolute()}
for top in sorted(links - {"results"}):
    if Path(top).exists():
        os.symlink(Path(top).resolve(), run_dir / top)

config_file = out / "config.yaml"
with atomic_path(config_file) as tmp:
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))

files = {k: list(v) for k, v in dict(par.files).items()}
targets = sorted({p for k in ("models", "metrics", "tables", "table_cells") for p in files[k]})
cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(Path(par.snakefile).resolve()),
       "--directory", str(run_dir), "--cores", str(snakemake.threads), *targets,  # noqa: F821
       "--configfile", str(config_file.resolve())]
print("verify: rerun:", " ".join(cmd), file=sys.stderr, flush=True)
proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.STDOUT)
if proc.returncode != 0:
    msg = (f"verify: the rerun of {', '.join(par.experiments)} in {run_dir} failed (exit "
           f"{proc.returncode}); its log: {snakemake.log[0]}")  # noqa: F821
    print(msg, file=sys.__stderr__)
    sys.exit(1)

report = compare_runs(".", run_dir, files, list(par.experiments), float(par.tolerance))
report["training_threads"] = {"main": training_threads(".", files["models"]),
                              "rerun": training_threads(run_dir, files["models"])}
for line in report["notes"]:
    print("verify: note:", line, file=sys.stderr)
ok, message = finish(report, out, snakemake.output[0])  # noqa: F821
print(message, file=sys.stderr)
if not ok:
    print(message, file=sys.__stderr__)
    sys.exit(1)
