# Apply a study's trained model to new, unannotated images (config `segment:`): one folder of
# lab-ready outputs per entry (COCO JSON, 16-bit label layers, ImageJ ROIs, GeoJSON, overlays,
# per-cell CSV; docs/segment.md), with the model's sha256 in segment_summary.json.
#   snakemake --cores 2 segment_<name> --configfile ...


rule segment:
    input:
        model=lambda wc: STUDY.model_file(SEGMENT[wc.name]["model"]),
        images=lambda wc: SEGMENT[wc.name]["images"],
    output:
        directory(paths.SEGMENT),
    log:
        "logs/segment_{name}.log",
    params:
        save=lambda wc: SEGMENT[wc.name].get("save"),
        scale=lambda wc: SEGMENT[wc.name].get("scale"),
        min_score=lambda wc: SEGMENT[wc.name].get("min_score", 0.0),
        device=config["device"],
    wildcard_constraints:
        name=_alternatives(SEGMENT),
    threads: lambda wc: EXPERIMENTS[SEGMENT[wc.name]["model"]]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=PREDICT_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/segment.py"


for _name in SEGMENT:

    rule:
        name:
            f"segment_{_name}"
        input:
            paths.SEGMENT.format(name=_name),

    workflow.get_rule(f"segment_{_name}").docstring = (
        f"segment {SEGMENT[_name]['images']} with the model of experiment {SEGMENT[_name]['model']!r}")
