"""Scenario variants (seeds, ablations) and the mean ± std tables over seeds."""

import math

import pandas as pd
import pytest

from hiast import experiments as ex
from hiast.config import ConfigError


def test_names_and_variants():
    assert ex.split_name("synthetic_gta5_to_cityscapes") == ("synthetic_gta5_to_cityscapes", [])
    assert ex.split_name("s@nt+seed2") == ("s", ["nt", "seed2"])
    assert ex.group_of("s@nt+seed2") == "s@nt" and ex.group_of("s@seed1") == "s" and ex.group_of("s") == "s"
    raw = {"seed": 0, "rounds": [{"pseudo": {"alpha": 0.5}}, {}]}
    defined = {"nt": {"every_round": {"pseudo": {"policy": "NT"}}}, "fast": {"warmup": {"source_only": {"iterations": 5}}}}
    out = ex.apply_variants(raw, ["nt", "seed3", "fast"], defined)
    assert out["seed"] == 3 and out["warmup"]["source_only"]["iterations"] == 5
    assert out["rounds"] == [{"pseudo": {"alpha": 0.5, "policy": "NT"}}, {"pseudo": {"policy": "NT"}}]
    assert raw == {"seed": 0, "rounds": [{"pseudo": {"alpha": 0.5}}, {}]}      # the input is left alone
    with pytest.raises(ConfigError, match=r"variants\.nope: no such variant; defined: \['fast', 'nt'\]"):
        ex.apply_variants(raw, ["nope"], defined)


def _summary(path, name, rows):
    pd.DataFrame([{"scenario": name, "stage": s, "model": m, "mIoU-19": v} for s, m, v in rows]).to_csv(path, index=False)
    return path


def test_seed_table_means_stds_and_gap_closed(tmp_path):
    paths = [_summary(tmp_path / f"{k}.csv", name, [("warmup", "warmup", w), ("round_1", "student", r),
                                                     ("round_1", "teacher", 99.0)])
             for k, (name, w, r) in enumerate([("g", 40.0, 50.0), ("g@seed1", 42.0, 54.0), ("g@nt", 40.0, 41.0)])]
    oracle = tmp_path / "oracle.csv"
    pd.DataFrame([{"model": "oracle", "mIoU-19": 60.0}]).to_csv(oracle, index=False)
    table = ex.seed_table(paths, {"g": oracle})
    g = table[table.group == "g"].set_index("stage")
    assert g.loc["warmup", "mIoU-19 mean"] == 41.0 and g.loc["round_1", "mIoU-19 mean"] == 52.0
    assert g.loc["round_1", "mIoU-19 std"] == pytest.approx(math.sqrt(8))     # sample std of 50 and 54
    assert g.loc["round_1", "seeds"] == 2
    assert g.loc["round_1", "mIoU-19 gap closed"] == pytest.approx((52 - 41) / (60 - 41))
    nt = table[table.group == "g@nt"].set_index("stage")
    assert nt.loc["round_1", "mIoU-19 mean"] == 41.0 and math.isnan(nt.loc["round_1", "mIoU-19 std"])
    text = ex.write_seed_table(paths, tmp_path / "experiments.md", {"g": oracle})
    assert "| g | round_1 | 52.0 ± 2.8 | 2 | 60.0 | 58% |" in text
    assert "| g@nt | round_1 | 41.0 | 1 | – | – |" in text
    assert (tmp_path / "experiments.csv").is_file()


def test_resolve_run_and_shared_warmups(tmp_path):
    from pathlib import Path
    scenarios = Path(__file__).resolve().parents[1] / "config" / "scenarios"
    variants = {"nt": {"every_round": {"pseudo": {"policy": "NT"}}}, "short": {"warmup": {"source_only": {"iterations": 3}}}}
    smoke = {"every_round": {"train": {"iterations": 4}}}
    runs = {name: ex.resolve_run(scenarios, name, smoke, variants)
            for name in ("synthetic_gta5_to_cityscapes", "synthetic_gta5_to_cityscapes@nt",
                         "synthetic_gta5_to_cityscapes@nt+seed1", "synthetic_gta5_to_cityscapes@short")}
    raw, scenario = runs["synthetic_gta5_to_cityscapes@nt+seed1"]
    assert scenario.name == "synthetic_gta5_to_cityscapes@nt+seed1" and scenario.seed == 1
    assert all(r.pseudo.policy == "NT" and r.train.iterations == 4 for r in scenario.rounds)
    shared = ex.shared_warmups({name: raw for name, (raw, _) in runs.items()})
    # the NT ablation of seed 0 reuses the base's warm-up; another seed or warm-up budget trains its own
    assert shared == {"synthetic_gta5_to_cityscapes@nt": "synthetic_gta5_to_cityscapes"}
    with pytest.raises(ConfigError, match="no scenario file"):
        ex.resolve_run(scenarios, "nope@nt", None, variants)
