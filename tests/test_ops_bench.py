"""`glad bench ops` end to end on tiny sizes: the report's shape and arithmetic, not speed."""

import json
import math

import pytest
from click.testing import CliRunner
from glad_cli.main import cli

from glad.bench.ops import Config, adapter_shapes, run, shapes_for, table
from glad.bench.report import write


def test_adapter_size_is_glads_vit_b16_adapter():
    shapes = adapter_shapes()
    assert len(shapes) == 150
    assert sum(math.prod(s) for s in shapes) == 1_098_624


def test_scaled_sizes_keep_150_tensors_and_the_exact_count():
    for size, total in (("1000", 1000), ("2k", 2048), ("1.5M", 1_572_864)):
        shapes = shapes_for(size)
        assert len(shapes) == 150 and sum(s[0] for s in shapes) == total
    with pytest.raises(ValueError, match="value count"):
        shapes_for("big")


def test_report_rows_and_ratios(tmp_path):
    report = run(Config(sizes=("3000",), backends=("reference",), repeat=3, warmup=0))
    rows = {(r["op"], r["provider"]): r for r in report["results"]}
    assert set(rows) == {("copy", "copy")} | {(op, p) for op in ("project", "perturb", "restore")
                                              for p in ("reference", "naive")}
    copy = rows[("copy", "copy")]
    assert copy["copy_fraction"] == 1.0 and copy["min_bytes"] == 2 * 3000 * 4
    project = rows[("project", "reference")]
    assert project["min_bytes"] == 5 * 3000 * 4 and project["speedup_vs_reference"] == 1.0
    assert project["gbps"] == pytest.approx(project["min_bytes"] / project["time_ms"] / 1e6, rel=1e-2)
    text = table(report)
    assert "| project | 3000 |" in text and "clock: wall time" in text
    path = tmp_path / "out" / "r.json"
    write(report, str(path))
    assert json.loads(path.read_text())["config"]["sizes"] == ["3000"]


def test_a_faster_row_never_shows_a_smaller_ratio():
    # Both ratios come from the best times shown: ordering rows by time orders their ratios.
    report = run(Config(sizes=("adapter",), backends=("reference",), repeat=3, warmup=0))
    for op in ("project", "perturb", "restore"):
        rows = sorted((r for r in report["results"] if r["op"] == op), key=lambda r: r["time_ms"])
        fractions = [r["copy_fraction"] for r in rows]
        speedups = [r["speedup_vs_reference"] for r in rows]
        assert fractions == sorted(fractions, reverse=True) and speedups == sorted(speedups, reverse=True)
        copy = next(r for r in report["results"] if r["op"] == "copy")
        for r in rows:  # of copy = GB/s over the best copy's GB/s
            assert r["copy_fraction"] == pytest.approx(r["gbps"] / copy["gbps"], rel=5e-3)  # 3 and 4 digits kept


def test_cli_prints_json_and_rejects_bad_sizes():
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "ops", "--sizes", "2k", "--repeat", "1", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # progress lines go to stderr
    assert {r["provider"] for r in report["results"]} >= {"reference", "naive", "copy"}
    bad = runner.invoke(cli, ["bench", "ops", "--sizes", "huge"])
    assert bad.exit_code != 0 and "value count" in bad.output
