"""What a reader of the tables can trust: the bold rule, one number format per metric family,
the two markers, dropped empty columns, captions (dataset, split, budgets, smoke tests,
nuclei-only ground truth) and the HTML rendering the report shows. Metrics dicts written by
hand: no training, no evaluation."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from overlapseg.report.captions import caption_rows, format_init, table_caption
from overlapseg.report.figures import image_title
from overlapseg.report.study import write_study_table
from overlapseg.report.tables import (NOT_PREDICTED, NOT_PREDICTED_MARK, PRESETS, UNDEFINED, UNDEFINED_MARK,
                                      metrics_table, number_format, pixel_table, to_html, to_latex,
                                      to_markdown)
from overlapseg.utils.io import write_json


def _cat(v, n_gt=5, n_pred=4, **extra) -> dict:
    keys = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP70", "boundary_AP", "AJI", "Dice", "F1", "ISBI_Dice",
            "TPp", "pixel_seg_F1", "instance_seg_F1", "AP_TP_boundary@0.5", "AP_TP_boundary@0.7"}
    return {**{k: v for k in keys}, "FNo": 1 - v, "FPp": v / 100, "n_gt": n_gt, "n_pred": n_pred, **extra}


def _run(cyto, nuc=None, pixel=None, n_gt_cyto=5, nuc_pred=4) -> dict:
    nuc = cyto if nuc is None else nuc
    out = {"cytoplasm": _cat(cyto, n_gt_cyto), "nucleus": _cat(nuc, 5, nuc_pred), "mean": _cat((cyto + nuc) / 2),
           "params": {"categories": ["cytoplasm", "nucleus"]}, "provenance": {"id": "p"}}
    if pixel is not None:
        out["pixel"] = pixel
    return out


def _pix(acc, f1, recall=0.5) -> dict:
    return {"accuracy": acc, "precision": 0.5, "recall": recall, "F1": f1, "IoU": None if f1 is None else f1 / 2}


# ----------------------------------------------------------------------------- bold rule
def test_bold_only_a_strict_best_among_two_or_more_meaningful_values():
    col = 0  # cytoplasm/AP
    tie = metrics_table([_run(0.3), _run(0.3), _run(0.1)], ["a", "b", "c"])
    assert not any(row[col] for row in tie.bold)  # tie at the best: nobody bold
    zeros = metrics_table([_run(0.0), _run(0.0)], ["a", "b"])
    assert not any(any(row) for row in zeros.bold)  # every model at 0: nothing bold
    # equal once printed (1 decimal): 30.04 vs 30.01 is a tie as the reader sees it
    printed_tie = metrics_table([_run(0.3004), _run(0.3001)], ["a", "b"])
    assert printed_tie.cell(0, col) == printed_tie.cell(1, col) and not printed_tie.bold[0][col]
    strict = metrics_table([_run(0.3), _run(0.31), _run(0.1)], ["a", "b", "c"])
    assert [row[col] for row in strict.bold] == [False, True, False]
    alone = metrics_table([_run(0.3)], ["a"])
    assert not any(alone.bold[0])  # a lone value is not "best"
    # one value against a not-predicted row is a lone value too
    lone = metrics_table([_run(0.3, 0.2), _run(0.5, 0.0, nuc_pred=0)], ["a", "b"])
    j = lone.column_names.index("nucleus/AP")
    assert lone.cell(1, j) == NOT_PREDICTED_MARK and not lone.bold[0][j]
    isbi = metrics_table([_run(0.6), _run(0.7)], ["a", "b"], "isbi")  # FNo = 1 - v: lower is better
    k = isbi.column_names.index("cytoplasm/FNo")
    assert [row[k] for row in isbi.bold] == [False, True]


def test_degenerate_pixel_values_are_never_bold_and_no_ground_truth_is_undefined():
    # accuracy ~ background fraction: printed, never bold, even when strictly higher
    t = pixel_table([_run(0.3, pixel={"cytoplasm": _pix(0.95, 0.4)}),
                     _run(0.3, pixel={"cytoplasm": _pix(0.97, 0.6)})], ["a", "b"])
    acc, f1 = t.column_names.index("cytoplasm/accuracy"), t.column_names.index("cytoplasm/F1")
    assert t.cell(1, acc) == "97.0" and not t.bold[1][acc] and t.bold[1][f1]
    # no ground-truth cytoplasm pixel (recall 0/0): 100 % accuracy of an empty prediction is
    # no result; the class is undefined, so its columns drop out, and the caption says why
    edf = pixel_table([_run(0.3, pixel={"cytoplasm": _pix(1.0, None, recall=None), "nucleus": _pix(0.9, 0.5)}),
                       _run(0.3, pixel={"cytoplasm": _pix(1.0, None, recall=None), "nucleus": _pix(0.9, 0.7)})],
                      ["a", "b"])
    assert not any(c.startswith("cytoplasm/") for c in edf.column_names)
    assert ("cytoplasm/accuracy", UNDEFINED) in edf.dropped
    assert "Columns omitted (undefined in every row): cytoplasm/{accuracy, precision, recall, F1, IoU}." \
        in to_markdown(edf)
    # instance metrics of a category the test images do not annotate (n_gt 0) are undefined
    inst = metrics_table([_run(0.0, 0.4, n_gt_cyto=0), _run(0.0, 0.5, n_gt_cyto=0)], ["a", "b"], "irnet")
    assert inst.column_names == ["nucleus/AJI", "nucleus/F1"] and inst.gt_categories == ["nucleus"]


# ----------------------------------------------------------------------------- formats and markers
def test_one_number_format_per_metric_family_in_every_preset():
    seen: dict[str, str] = {}
    for preset in PRESETS:
        if "by" in PRESETS[preset]:
            continue
        t = metrics_table([_run(0.123456)], ["a"], preset)
        for j, (_, key) in enumerate(t.columns):
            seen.setdefault(key, t.cell(0, j))
            assert t.cell(0, j) == seen[key], (preset, key)  # same key, same text, every table
    assert seen["AP"] == seen["AJI"] == seen["F1"] == seen["ISBI_Dice"] == "12.3"
    assert seen["FNo"] == "87.65" and seen["FPp"] == "0.12"  # error rates: percent, 2 decimals
    assert number_format("Dice") == (100, 1) and number_format("FPp") == (100, 2)


def test_not_predicted_and_undefined_have_distinct_markers_explained_in_the_legend():
    runs = [_run(0.4, 0.0, nuc_pred=0), _run(0.5, 0.2), _run(0.5, 0.3)]
    runs[1]["nucleus"]["AJI"] = None  # predicted, but nothing to score
    t = metrics_table(runs, ["a", "b", "c"], "irnet")
    j = t.column_names.index("nucleus/AJI")
    assert (t.cell(0, j), t.status[0][j]) == (NOT_PREDICTED_MARK, NOT_PREDICTED)
    assert (t.cell(1, j), t.status[1][j]) == (UNDEFINED_MARK, UNDEFINED)
    assert NOT_PREDICTED_MARK != UNDEFINED_MARK
    md = to_markdown(t)
    assert f"{NOT_PREDICTED_MARK}: not predicted by this model" in md and f"{UNDEFINED_MARK}: undefined" in md
    assert "---" in to_latex(t).split(r"\midrule")[1]  # the em dash in LaTeX


# ----------------------------------------------------------------------------- captions
def test_caption_names_dataset_split_test_images_budgets_and_smoke_rows(tmp_path):
    splits = tmp_path / "splits.json"
    write_json(splits, {"train": ["train_001", "train_002", "train_003"], "val": ["train_004"],
                        "test": ["train_009", "train_010"]})
    experiments = {
        "mrcnn": {"model": "maskrcnn", "label": "Mask R-CNN (R18-FPN)", "train": {"dataset": "demo"},
                  "params": {"iterations": 100, "batch_size": 2, "init": "scratch"}, "seed": 0},
        "donet": {"model": "donet", "label": "DoNet", "train": {"dataset": "demo"},
                  "params": {"iterations": 30, "batch_size": 2, "init": {"from": "mrcnn", "part": "all"}},
                  "seeds": [0, 1, 2]},
        "irnet": {"model": "irnet", "label": "IRNet", "train": {"dataset": "demo"},
                  "params": {"iterations": 30, "batch_size": 2, "init": {"from": "mrcnn", "part": "all"}},
                  "seeds": [0, 1, 2]},
    }
    rows = caption_rows(experiments, ["mrcnn", "donet", "irnet"], smoke={"irnet"})
    assert rows[1]["seeds"] == [0, 1, 2] and rows[2]["smoke"] and not rows[0]["smoke"]
    table = metrics_table([_run(0.4), _run(0.5), _run(0.3)], list(experiments), "donet")
    info = {"dataset": "demo", "format": "isbi2014", "splits": str(splits), "preset": None, "rows": rows,
            "notes": ["DoNet's effect needs paper budgets."]}
    text = " ".join(table_caption("DoNet modules", table, info))
    assert text.startswith("DoNet modules. Test images: 2 of demo; stratified random split, "
                           "train/val/test 3/1/2 images.")
    assert "'Mask R-CNN (R18-FPN)': maskrcnn, 100 iterations, batch 2, from scratch, seed 0" in text
    assert ("'IRNet': irnet, 30 iterations, batch 2, warm start from 'Mask R-CNN (R18-FPN)', "
            "3 seeds (0, 1, 2; mean ± std)") in text and "trained on" not in text  # tested where trained
    assert "Smoke test ('IRNet'): a budget that only proves the stage runs; these numbers are not results." in text
    assert text.endswith("DoNet's effect needs paper budgets.")
    same = [{**r, "model": "seunet", "init": "scratch", "seeds": [0], "iterations": 40} for r in rows]
    assert "Training (every row): seunet, 40 iterations, batch 2, from scratch, seed 0, trained on demo." in \
        table_caption("T", table, {"rows": same, "dataset": "edf"})
    assert format_init("imagenet") == "ImageNet backbone" and format_init({"file": "a/b.pth"}) == "weights file b.pth"
    # a model that sees resampled images says so; one iteration is singular
    shrunk = [{**r, "model": "sparse_seunet", "init": "scratch", "seeds": [0], "iterations": 1,
               "input_scale": 0.25} for r in rows]
    assert ("Training (every row): sparse_seunet, 1 iteration, batch 2, images resampled x0.25, "
            "from scratch, seed 0, trained on demo.") in table_caption("T", table, {"rows": shrunk, "dataset": "edf"})
    sparse = {"model": "sparse_seunet", "label": "S", "params": {"iterations": 3, "input_scale": 0.5}}
    assert caption_rows({"s": sparse}, ["s"])[0]["input_scale"] == 0.5


def test_nuclei_only_ground_truth_is_said_from_the_metrics_not_the_name(tmp_path):
    splits = tmp_path / "splits.json"
    write_json(splits, {"train": [], "val": [], "test": ["edf_0", "edf_1", "edf_2"]})
    nuclei_only = metrics_table([_run(0.0, 0.4, n_gt_cyto=0), _run(0.0, 0.5, n_gt_cyto=0)], ["a", "b"], "irnet")
    info = {"dataset": "whatever", "format": "isbi2014-edf", "splits": str(splits), "preset": "test-only"}
    line = table_caption("IRNet", nuclei_only, info)[1]
    assert line == ("Test images: 3 of whatever (real EDF images, nuclei only: the ground truth annotates no "
                    "cytoplasm); split protocol test-only, train/val/test 0/0/3 images.")
    # the protocol splits.json records wins over the configured preset
    write_json(splits, {"train": ["a"], "val": [], "test": ["b"], "protocol": "subsets (auto)"})
    assert "; split protocol subsets (auto), train/val/test 1/0/1 images." in \
        table_caption("IRNet", nuclei_only, {**info, "preset": "auto", "format": "isbi2014"})[1]
    both = metrics_table([_run(0.3), _run(0.5)], ["a", "b"], "irnet")
    assert "nuclei only" not in " ".join(table_caption("IRNet", both, {**info, "dataset": "edf"}))
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": 3}')
    with pytest.raises(ValueError, match="bad.json: not a splits file"):
        table_caption("T", both, {"splits": str(bad)})


# ----------------------------------------------------------------------------- HTML
class _Cells(HTMLParser):
    """Rows of <th>/<td> texts, with whether each cell is <strong>."""

    def __init__(self):
        super().__init__()
        self.rows, self.caption, self.notes, self._in, self._strong = [], "", [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "caption", "p"):
            self._in, self._strong = tag, False
            if tag in ("td", "th"):
                self.rows[-1].append(["", False])
            if tag == "p":
                self.notes.append("")
        elif tag == "strong":
            self._strong = True

    def handle_endtag(self, tag):
        if tag in ("td", "th", "caption", "p"):
            self._in = None

    def handle_data(self, data):
        if self._in in ("td", "th"):
            self.rows[-1][-1][0] += data
            self.rows[-1][-1][1] |= self._strong
        elif self._in == "caption":
            self.caption += data
        elif self._in == "p":
            self.notes[-1] += data


def test_html_table_is_a_real_table_with_bold_markers_and_caption(tmp_path):
    paths = []
    for k, run in enumerate((_run(0.4, 0.0, nuc_pred=0), _run(0.5, 0.2), _run(0.45, 0.1))):
        paths.append(tmp_path / f"m{k}.json")
        write_json(paths[-1], run)
    write_json(tmp_path / "splits.json", {"train": ["x"], "val": [], "test": ["y", "z"]})
    written = write_study_table(paths, ["a", "b", "c"], tmp_path / "study_t", title="Heads <&>",
                                labels=["A & co", "B", "C"], caption_info={
                                    "dataset": "demo", "splits": str(tmp_path / "splits.json")},
                                kind="instance", preset="irnet")
    assert [p.suffix for p in written] == [".csv", ".md", ".tex", ".html"]
    page = _Cells()
    page.feed((tmp_path / "study_t.html").read_text(encoding="utf-8"))
    assert page.caption == "Heads <&>."
    header, sub, *body = page.rows
    assert [c[0] for c in header] == ["", "cytoplasm", "nucleus", "", ""]
    assert [c[0] for c in sub] == ["method", "AJI", "F1", "AJI", "F1", "experiment", "provenance"]
    assert [[c[0] for c in row] for row in body] == [
        ["A & co", "40.0", "40.0", NOT_PREDICTED_MARK, NOT_PREDICTED_MARK, "a", "p"],
        ["B", "50.0", "50.0", "20.0", "20.0", "b", "p"],
        ["C", "45.0", "45.0", "10.0", "10.0", "c", "p"]]
    assert [[c[1] for c in row[1:5]] for row in body] == [[False] * 4, [True] * 4, [False] * 4]
    assert page.notes[0] == "Test images: 2 of demo; stratified random split, train/val/test 1/0/2 images."
    assert any(n.startswith(f"{NOT_PREDICTED_MARK}: not predicted") for n in page.notes)
    md = (tmp_path / "study_t.md").read_text(encoding="utf-8")
    assert "Test images: 2 of demo" in md and r"\caption{Heads <\&>. Test images: 2 of demo" in \
        (tmp_path / "study_t.tex").read_text(encoding="utf-8")
    assert "Test images" not in (tmp_path / "study_t.csv").read_text(encoding="utf-8")  # CSV: data only


def test_html_of_an_empty_table_says_so():
    t = metrics_table([_run(0.0, 0.0, n_gt_cyto=0, nuc_pred=0)], ["a"], "cc")  # cytoplasm only, no gt
    assert t.columns == [] and "(no metrics for this table)" in to_html(t)


# ----------------------------------------------------------------------------- figure titles
def test_figure_titles_give_the_split_role_before_the_raw_name():
    gt = {"images": [{"id": 4, "name": "train_001"}, {"id": 9, "name": "train_009"}, {"id": 2, "name": "img7"}]}
    assert image_title(gt, gt["images"][1]) == "test image 2/3: train_009 (raw train subset)"
    assert image_title(gt, gt["images"][2]) == "test image 3/3: img7"
    assert image_title({"images": [{"id": 1, "name": "test-3"}]}, {"id": 1, "name": "test-3"}) == \
        "test image 1/1: test-3"


# ----------------------------------------------------------------------------- the report, end to end
@pytest.mark.slow
def test_report_after_a_targeted_run_shows_html_tables_and_the_workflow_page(tmp_path):
    """`snakemake --report` with the run's targets and --configfile (targets before it) works,
    holds every table as HTML and the workflow description; in headless Chromium when present."""
    import importlib.util
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = root / "tests" / "configs" / "tiny_study.yaml"
    targets = ["table_heads", "table_base", "results/demo/tables/metrics.html"]

    def snakemake(*args):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), "-d", str(tmp_path),
               *args, "--configfile", str(config)]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    snakemake("--cores", "2", *targets)
    snakemake("--report", "results/report.zip", *targets)
    with zipfile.ZipFile(tmp_path / "results/report.zip") as z:
        names = z.namelist()
        page = z.read(next(n for n in names if n.endswith("report.html"))).decode()
    assert {Path(n).name for n in names} >= {"study_heads.html", "study_base.html", "metrics.html", "pixel.html"}
    assert not any(n.endswith(".csv") for n in names)  # tables are shown, not offered as downloads
    assert "instance segmentation of overlapping cells" in page  # workflow.rst on the first page
    md = (tmp_path / "results/demo/tables/study_heads.md").read_text(encoding="utf-8")
    assert "Test images: 2 of demo; stratified random split, train/val/test 3/0/2 images." in md
    assert "Training (every row): seunet, 2 iterations, batch 2, from scratch, seed 0." in md
    if shutil.which("chromium") is None:
        pytest.skip("no chromium: the browser check needs it (apt-get install chromium)")
    spec = importlib.util.spec_from_file_location("check_report", root / "benchmarks" / "check_report.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main([str(tmp_path / "results/report.zip"), "--table", "study_heads",
                       "--out", str(tmp_path / "shots")]) == 0
    assert (tmp_path / "shots" / "table_study_heads.png").stat().st_size > 10_000
