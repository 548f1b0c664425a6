"""overlapseg.study: profile + catalogue resolution, label truth, derivations, summary."""
import copy
from pathlib import Path

import pytest
import yaml

from overlapseg.study.config import derive_label, load_study, resolve_profile
from overlapseg.study.plan import StudyPlan
from overlapseg.study.summary import run_summary

ROOT = Path(__file__).resolve().parents[1]
PROFILE = {
    "seed": 0, "device": "cpu",
    "datasets": {"d": {"format": "isbi2014", "raw": "raw", "splits": {"val": 0.0, "test": 0.4}},
                 "edf": {"format": "isbi2014-edf", "raw": "missing_edf", "optional": True,
                         "splits": {"preset": "test-only", "val": 0.0, "test": 1.0}}},
    "defaults": {"dataset": "d", "test": ["d", "edf"], "max_seeds": 2},
    "budgets": {"maskrcnn": {"threads": 3, "params": {"iterations": 7, "depth": 18}},
                "pix2pix": {"n": 5, "threads": 1, "params": {"iterations": 3}}},
    "experiments": {"m_b": {"params": {"iterations": 9}}},
    "gan": {"p_small": {"n": 2}},
}
CATALOGUE = {
    "experiments": {"m_a": {"label": "Mask R-CNN (R{depth}-FPN)", "model": "maskrcnn", "seeds": [0, 1, 2]},
                    "m_b": {"label": "B", "model": "maskrcnn", "params": {"fpn_channels": 32}}},
    "gan": {"p": {"model": "pix2pix", "params": {"condition": "mask"}}, "p_small": {"reuse": "p"}},
    "tables": {"t": {"experiments": ["m_a", "m_b"]}},
}


@pytest.fixture
def profile(tmp_path):
    (tmp_path / "cat.yaml").write_text(yaml.safe_dump(CATALOGUE))
    return {**copy.deepcopy(PROFILE), "catalogue": str(tmp_path / "cat.yaml")}


def test_params_resolve_budget_then_catalogue_then_profile(profile):
    study = resolve_profile(profile)
    a, b = study["experiments"]["m_a"], study["experiments"]["m_b"]
    assert a["params"] == {"iterations": 7, "depth": 18} and a["threads"] == 3
    assert b["params"] == {"iterations": 9, "depth": 18, "fpn_channels": 32}
    assert a["train"] == {"dataset": "d"} and a["test"] == ["d", "edf"]
    assert a["seeds"] == [0, 1] and a["label"] == "Mask R-CNN (R18-FPN)"  # max_seeds, derived depth
    assert "catalogue" not in study and "budgets" not in study and "defaults" not in study
    assert study["report"]["tables"] == CATALOGUE["tables"]


def test_one_seed_is_a_plain_run(profile):
    profile["defaults"]["max_seeds"] = 1
    a = resolve_profile(profile)["experiments"]["m_a"]
    assert "seeds" not in a and a["seed"] == 0 and a["label"] == "Mask R-CNN (R18-FPN)"


def test_a_reused_generator_takes_the_trained_ones_model_and_params_with_its_own_n(profile):
    gan = resolve_profile(profile)["gan"]
    assert gan["p"] == {"model": "pix2pix", "params": {"iterations": 3, "condition": "mask"}, "n": 5,
                        "threads": 1, "dataset": "d"}
    assert gan["p_small"]["reuse"] == "p" and gan["p_small"]["n"] == 2
    assert gan["p_small"]["params"] == gan["p"]["params"] and gan["p_small"]["model"] == "pix2pix"


def test_a_label_that_contradicts_the_params_fails_at_load():
    resolve = lambda model, params: {"depth": 18, "iterations": 300, **params}  # noqa: E731
    assert derive_label("x", "Mask R-CNN (R{depth}-FPN)", "maskrcnn", {}, resolve) == "Mask R-CNN (R18-FPN)"
    with pytest.raises(ValueError, match="names R50 but the model's depth is 18"):
        derive_label("x", "Mask R-CNN (R50-FPN)", "maskrcnn", {}, resolve)
    with pytest.raises(ValueError, match="names 6000 iterations but it trains 300"):
        derive_label("x", "Mask R-CNN, 6000 iterations", "maskrcnn", {}, resolve)
    with pytest.raises(ValueError, match="unknown field"):
        derive_label("x", "Mask R-CNN ({lr})", "maskrcnn", {}, resolve)
    assert derive_label("x", "Mask R-CNN", "maskrcnn", {}, resolve) == "Mask R-CNN"


def test_unknown_budget_family_and_defaults_key_fail(profile):
    with pytest.raises(ValueError, match="budgets.maskrcn: unknown model type"):
        resolve_profile({**profile, "budgets": {"maskrcn": {}}})
    with pytest.raises(ValueError, match="budgets.pix2pix: unknown keys \\['seeds'\\]"):
        resolve_profile({**profile, "budgets": {"pix2pix": {"seeds": [1]}}})
    with pytest.raises(ValueError, match="defaults: unknown keys \\['datset'\\]"):
        resolve_profile({**profile, "defaults": {"datset": "d"}})


def test_plan_scopes_params_to_what_each_job_reads(profile):
    study = resolve_profile(profile)
    study["synth"] = {"ccce": {"n": 3, "max_cells_discrete": 2, "max_overlap_ratio": 0.1, "th": 0.3},
                      "copypaste": {"n": 4, "overlap": [0.0, 0.2]}}
    study["maps"] = {"background": 0.1, "overlap_sigma": 8.0, "log_scale": 1.0, "max_distance": None}
    study["experiments"]["m_pool"] = {**study["experiments"]["m_b"], "inputs": {"pool": "discrete"}}
    plan = StudyPlan(study, exists=lambda p: False, warn=lambda m: None)
    assert plan.skipped == {"edf": "missing_edf not found"}
    assert all(exp["test"] == ["d"] for exp in plan.experiments.values())
    assert plan.pool_options("m_b") == {}
    assert plan.pool_options("m_pool") == {"max_cells_discrete": 2, "max_overlap_ratio": 0.1}
    assert plan.maps_params("v2") == {"background": 0.1, "overlap_sigma": 8.0}
    assert plan.maps_params("v4") == {"background": 0.1, "log_scale": 1.0, "max_distance": None}
    assert plan.generator_layout_params("p") == {"overlap": [0.0, 0.2]}
    prov = plan.provenance_config("m_b")
    assert set(prov) == {"experiment", "datasets", "evaluate", "seed"}  # no synth/maps it does not read
    assert plan.gan_model("p_small") == "results/d/gan/p/model.pt"
    assert plan.training_generators() == ["p"]
    assert plan.runs == ["m_a_seed0", "m_a_seed1", "m_b", "m_pool"]


def test_captions_state_the_training_mix_of_rows_with_several_sources(profile):
    study = resolve_profile(profile)
    study["experiments"]["m_mix"] = {**study["experiments"]["m_b"], "label": "B + gen",
                                     "inputs": {"sources": ["original", "p"], "mix": [1, 1]}}
    plan = StudyPlan(study, exists=lambda p: False, warn=lambda m: None)
    notes = plan.caption_info("d", ["m_b", "m_mix"])["notes"]
    assert notes[0] == f"Training mix (images drawn per source): 'B + gen' {plan.mix_caption('m_mix')}."
    assert plan.mix_caption("m_mix").endswith("1:1")
    assert plan.caption_info("d", ["m_b"])["notes"] == []  # one source: nothing to say


def test_run_summary_lists_outputs_skipped_data_and_wall_time(profile, tmp_path, monkeypatch):
    study = resolve_profile(profile)
    plan = StudyPlan(study, exists=lambda p: False, warn=lambda m: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/d/tables").mkdir(parents=True)
    (tmp_path / "results/d/tables/study_t.csv").write_text("x\n")
    text = run_summary(plan, started=100.0, ok=True, now=100.0 + 125)
    assert "finished after 2 min 5 s" in text
    assert "tables (1, .csv/.md/.tex): results/d/tables" in text
    assert "skipped optional dataset 'edf': missing_edf not found" in text
    failed = run_summary(plan, started=0.0, ok=False, log=["a.log"], now=3.0)
    assert "FAILED after 3 s" in failed and "full log: a.log" in failed


def test_repository_profiles_resolve_and_check():
    for files in (["config.yaml"], ["config/study.yaml"], ["config/study.yaml", "config/study-cpu.yaml"]):
        study = load_study([ROOT / f for f in files], ROOT)
        plan = StudyPlan(study, exists=lambda p: True, warn=lambda m: None)
        plan.check()
        assert set(study["report"]["tables"]) == set(yaml.safe_load((ROOT / "config/catalogue.yaml").read_text())["tables"])
