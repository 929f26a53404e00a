"""results/summary.md from per-scenario summary.csv files: last round, warm-up, and the marked 'best'."""

from __future__ import annotations

import pandas as pd

from hiast import stages


def _summary(path, scenario, metrics, values):
    rows = [{"scenario": scenario, "stage": stage, "model": model, **dict(zip(metrics, vals))}
            for stage, model, vals in values]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_results_table_reports_the_last_student_and_marks_the_target_selected_best(tmp_path):
    gta = _summary(tmp_path / "a.csv", "gta", ["mIoU-19"], [
        ("warmup", "warmup", [40.0]),
        ("round_1", "student", [50.0]), ("round_1", "teacher", [53.25]),
        ("round_2", "student", [52.0]), ("round_2", "teacher", [51.0])])
    syn = _summary(tmp_path / "b.csv", "syn", ["mIoU-16", "mIoU-13"], [
        ("warmup", "warmup", [30.0, 35.0]),
        ("round_1", "student", [33.0, 38.0]), ("round_1", "teacher", [34.0, 37.0])])
    text = stages.results_table([gta, syn], tmp_path / "summary.md")
    assert (tmp_path / "summary.md").read_text() == text
    lines = text.splitlines()
    assert "| gta | 52.0 | – | – | – |" == lines[4]          # round 2's student, not the better teacher
    assert "| syn | – | 33.0 | 38.0 | – |" == lines[5]
    best = lines[lines.index(next(l for l in lines if "SELECTED ON TARGET-VAL LABELS" in l)):]
    assert "| gta | 53.2 | – | – | – | round_1 teacher |" in best  # the maximum over every evaluated model
    assert "| syn | – | 34.0 | 37.0 | – | round_1 teacher |" in best  # chosen on the first metric (mIoU-16)
