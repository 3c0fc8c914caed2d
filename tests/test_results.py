"""Results records and the paper-layout tables."""

import json
import statistics

import pytest

from glad.engine.results import (
    base_to_novel_table,
    harmonic_mean,
    read_records,
    transfer_table,
    write_tables,
)


def _rec(protocol, method, train, evald, split, seed, acc):
    return {"protocol": protocol, "method": method, "train_dataset": train, "eval_dataset": evald,
            "split": split, "seed": seed, "accuracy": acc}


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_base_to_novel_hm_is_of_seed_means_and_average_row():
    recs = []
    data = {"pets": ([90.0, 92.0, 94.0], [70.0, 80.0, 75.0]), "dtd": ([60.0, 62.0, 64.0], [40.0, 50.0, 60.0])}
    for ds, (base, novel) in data.items():
        for seed, (b, n) in enumerate(zip(base, novel, strict=True), start=1):
            recs += [_rec("base-to-novel", "glad", ds, ds, "base", seed, b),
                     _rec("base-to-novel", "glad", ds, ds, "novel", seed, n)]
    table = base_to_novel_table(recs)
    assert table.header == ["Dataset", "Method", "Base", "Novel", "HM", "Seeds"]
    pets = table.rows[0]
    # population std (numpy's default, CoOp's parse script), not the sample std
    assert pets[0] == "pets" and pets[2] == f"92.00 ± {statistics.pstdev([90, 92, 94]):.2f}"
    assert f"{statistics.pstdev([90, 92, 94]):.2f}" != f"{statistics.stdev([90, 92, 94]):.2f}"
    assert float(pets[4]) == pytest.approx(harmonic_mean(92.0, 75.0), abs=5e-3)
    avg = table.rows[-1]
    mb, mn = (92.0 + 62.0) / 2, (75.0 + 50.0) / 2
    assert avg[0] == "Average" and float(avg[2]) == pytest.approx(mb) and float(avg[3]) == pytest.approx(mn)
    assert float(avg[4]) == pytest.approx(harmonic_mean(mb, mn), abs=5e-3)
    # The HM of the seed means is not the mean of per-seed HMs: the table uses the former.
    per_seed = statistics.fmean(harmonic_mean(b, n) for b, n in zip(*data["pets"], strict=True))
    assert abs(float(pets[4]) - per_seed) > 1e-3


def test_transfer_table_rows_and_target_average():
    recs = [_rec("cross-dataset", "lora", "imagenet", "imagenet", "all", 1, 70.0),
            _rec("cross-dataset", "lora", "imagenet", "dtd", "all", 1, 40.0),
            _rec("cross-dataset", "lora", "imagenet", "eurosat", "all", 1, 50.0)]
    table = transfer_table(recs, "cross-dataset")
    assert table.header == ["Method", "imagenet (source)", "dtd", "eurosat", "Target average"]
    assert table.rows == [["lora", "70.00 ± 0.00", "40.00 ± 0.00", "50.00 ± 0.00", "45.00"]]
    assert table.csv().splitlines()[1] == "lora,70.0000,0.0000,40.0000,0.0000,50.0000,0.0000,45.00"


def test_write_tables_and_truncated_last_line(tmp_path):
    recs = [_rec("domain-generalization", "glad", "imagenet", "imagenet_a", "all", 1, 30.0)]
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(recs[0]) + "\n" + '{"protocol": "dom')  # killed mid-write
    assert read_records(str(path)) == recs
    write_tables(recs, str(tmp_path))
    assert "imagenet_a" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results-domain-generalization.csv").read_text().startswith("Method,")


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("{bad\n{}\n")
    with pytest.raises(ValueError, match="line 1"):
        read_records(str(path))


def test_rows_grouped_by_dataset_in_ablation_order_and_csv_numbers():
    recs = []
    for method, shift in (("glad", 3.0), ("zeroshot", 0.0), ("lora", 1.0)):
        for ds in ("pets", "dtd"):
            for seed in (1, 2):
                extra = 0.0 if method == "zeroshot" else seed
                recs += [_rec("base-to-novel", method, ds, ds, "base", seed, 60 + shift + extra),
                         _rec("base-to-novel", method, ds, ds, "novel", seed, 50 + shift + extra)]
    table = base_to_novel_table(recs)
    assert [r[:2] for r in table.rows] == [
        ["pets", "zeroshot"], ["", "lora"], ["", "glad"], ["dtd", "zeroshot"], ["", "lora"], ["", "glad"],
        ["Average", "zeroshot"], ["", "lora"], ["", "glad"]]
    assert table.rows[0][2] == "60.00"  # zero-shot has no seeds: its accuracy alone
    assert table.rows[1][2] == "62.50 ± 0.50"
    import csv as csv_module
    import io

    rows = list(csv_module.reader(io.StringIO(table.csv())))
    assert rows[0] == ["Dataset", "Method", "Base", "Base std", "Novel", "Novel std", "HM", "Seeds"]
    lora = next(r for r in rows if r[:2] == ["pets", "lora"])
    assert float(lora[2]) == 62.5 and float(lora[3]) == 0.5 and "±" not in ",".join(lora)
    md = table.markdown()
    assert "population std" in md


def test_few_shot_table_by_dataset_and_shots():
    from glad.engine.results import few_shot_table

    recs = []
    for ds, base in (("dtd", 40.0), ("eurosat", 60.0)):
        for k in (1, 4, 16):
            for seed in (1, 2, 3):
                recs.append({**_rec("few-shot", "glad", ds, ds, "all", seed, base + k + seed), "shots": k})
            recs.append({**_rec("few-shot", "zeroshot", ds, ds, "all", 1, base), "shots": k})
    table = few_shot_table(recs)
    assert table.header == ["Dataset", "Method", "1 shot", "4 shots", "16 shots"]
    assert table.rows[0] == ["dtd", "zeroshot", "40.00", "40.00", "40.00"]
    assert table.rows[1][:3] == ["", "glad", f"43.00 ± {statistics.pstdev([42, 43, 44]):.2f}"]
    avg = [r for r in table.rows if r[0] == "Average" or (r[0] == "" and table.rows.index(r) > 3)]
    assert avg[-1][1] == "glad" and float(avg[-1][4]) == pytest.approx((58 + 78) / 2)
    assert table.csv().splitlines()[0] == ("Dataset,Method,1 shot,1 shot std,4 shots,4 shots std,16 shots,"
                                           "16 shots std")
