"""The comparison of several runs' reports (README's DAT-vs-standard table)."""
import json
import os

import pytest

from robust_jax.tools import compare


def _report(path, clean, corr, *, data_name="digits"):
    os.makedirs(path, exist_ok=True)
    rep = {"model": "small_cnn", "method": os.path.basename(path),
           "data": {"name": data_name, "split": "test", "num_examples": "all"},
           "accuracy": {"clean": clean, "corruptions": corr},
           "corruptions": {"errors": {"fog": {"1": 0.1, "2": 0.3}, "snow": {"1": 0.2, "2": 0.4}}}}
    with open(os.path.join(path, "report.json"), "w") as f:
        json.dump(rep, f)


def test_table_plot_and_per_corruption_rows(tmp_path, capsys):
    _report(tmp_path / "standard", 0.9, 0.5)
    _report(tmp_path / "dat", 0.91, 0.6)
    out = tmp_path / "cmp"
    assert compare.main([str(tmp_path / "standard"), str(tmp_path / "dat"), "--output", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    assert "| clean | 90.00 | 91.00 |" in md and "| corruptions | 50.00 | 60.00 |" in md
    assert "| fog | 80.00 | 80.00 |" in md  # 1 - mean(0.1, 0.3)
    assert "Warning" not in md
    assert (out / "comparison.png").stat().st_size > 1000


def test_different_evaluation_data_is_flagged_and_missing_reports_fail(tmp_path):
    _report(tmp_path / "a", 0.9, 0.5)
    _report(tmp_path / "b", 0.9, 0.5, data_name="cifar10")
    lines, _ = compare.comparison({"a": compare.load_report(str(tmp_path / "a")),
                                   "b": compare.load_report(str(tmp_path / "b"))})
    assert any("Warning" in line for line in lines)
    with pytest.raises(FileNotFoundError, match="--mode eval"):
        compare.load_report(str(tmp_path / "nothing"))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "nothing"), "--output", str(tmp_path)]) == 1
