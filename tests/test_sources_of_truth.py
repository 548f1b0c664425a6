"""Lists the schema repeats for validation must equal the code's own (one source of truth)."""
from pathlib import Path

import yaml

from overlapseg.maps.overlap_maps import VARIANTS
from overlapseg.report.tables import PRESETS

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas" /
                         "config.schema.yaml").read_text())["properties"]


def test_table_presets_match_the_report_code():
    spec = SCHEMA["report"]["properties"]["tables"]["additionalProperties"]["properties"]
    assert sorted(spec["preset"]["enum"]) == sorted(PRESETS)


def test_map_variants_match_the_maps_code():
    inputs = SCHEMA["experiments"]["additionalProperties"]["properties"]["inputs"]["properties"]
    assert tuple(inputs["maps"]["enum"]) == VARIANTS


def test_training_pools_match_the_synthesis_code():
    from overlapseg.synth.sources import POOLS

    inputs = SCHEMA["experiments"]["additionalProperties"]["properties"]["inputs"]["properties"]
    assert tuple(inputs["pool"]["enum"]) == POOLS
