"""benchmarks/run_benchmark.py and its modules: rows and grid order (_rows, _cells), the resumable cell cache
(_cells), the report from cells (_report), and where the shared folder is (_common)."""

from __future__ import annotations

import importlib
import json

import pytest

from hf_structguard.data import load_image_data
from hf_structguard.errors import UnlearningDiverged

from _scripts import load_script
from _unlearning_helpers import tiny_model


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/run_benchmark.py")


@pytest.fixture(scope="module")
def rows(bench):
    return importlib.import_module("_rows")  # the module run_benchmark.py imported (benchmarks/ is on the path)


@pytest.fixture(scope="module")
def cells(bench):
    return importlib.import_module("_cells")


@pytest.fixture(scope="module")
def report(bench):
    return importlib.import_module("_report")


@pytest.fixture(scope="module")
def common(bench):
    return importlib.import_module("_common")


def test_rows_grid_and_models(bench, rows, cells):
    selected = rows.select_rows(["neggrad", "structguard"], ["anchors"])
    assert selected == ["neggrad", "structguard", "structguard[visual]"]
    with pytest.raises(ValueError, match="unknown row"):
        rows.select_rows(["no-such-row"])
    with pytest.raises(ValueError, match="unknown ablation"):
        rows.select_rows(["neggrad"], ["nope"])
    rows.VARIANT_ROWS["test[bad-field]"] = ("l2ul", {"no_such_field": 1})
    try:
        with pytest.raises(ValueError, match="no_such_field"):
            rows.select_rows(["test[bad-field]"])
    finally:
        del rows.VARIANT_ROWS["test[bad-field]"]
    assert set(rows.DEFAULT_ROWS) <= set(rows.known_rows())
    assert rows.row_order(["structguard[-SA]", "l2ul", "before", "zzz", "fisher"]) == [
        "before", "fisher", "l2ul", "structguard[-SA]", "zzz"]
    # the two smallest k for every seed first, then the rest, seed-major
    assert cells.grid_order([128, 16, 64], [0, 1]) == [(0, 16), (0, 64), (1, 16), (1, 64), (0, 128), (1, 128)]
    assert cells.parse_models(["gen=local-dir:/a/b", "local-dir:/c/memorised/"]) == {
        "gen": "local-dir:/a/b", "memorised": "local-dir:/c/memorised/"}
    with pytest.raises(ValueError, match="share the tag"):
        cells.parse_models(["/a/x", "/b/x"])
    assert bench.PROFILES["cpu"]["max_steps"] == -1 and bench.PROFILES["cpu"]["ks"] == [16, 64, 128]


def test_shared_paths_are_read_where_the_variable_says_and_recorded_relative(common, tmp_path, monkeypatch):
    shared = tmp_path / "elsewhere"
    (shared / "checkpoints" / "resnet").mkdir(parents=True)
    monkeypatch.setenv(common.SHARED_ENV, str(shared))
    assert common.locate("local-dir:../shared/checkpoints/resnet") == f"local-dir:{shared}/checkpoints/resnet"
    assert common.locate("../shared") == str(shared)
    assert common.recorded(f"local-dir:{shared}/checkpoints/resnet") == "local-dir:../shared/checkpoints/resnet"
    assert common.recorded("../shared/checkpoints/resnet") == "../shared/checkpoints/resnet"
    assert common.recorded(str(common.REPOSITORY / "benchmarks" / "results")) == "benchmarks/results"
    assert common.recorded("org/model") == "org/model" and common.recorded(None) is None  # a Hub id; no dataset
    assert common.recorded(str(tmp_path)) == str(tmp_path)  # elsewhere: as given
    assert common.recorded("local-dir:../shared/missing") == "local-dir:../shared/missing"  # not there: as given
    monkeypatch.delenv(common.SHARED_ENV)
    assert common.shared_folder() == (common.REPOSITORY.parent / "shared").resolve()


@pytest.fixture(scope="module")
def before_dir(tmp_path_factory):
    data = load_image_data(None)
    model = tiny_model(num_labels=data.num_classes)
    folder = tmp_path_factory.mktemp("before")
    model.save_pretrained(folder)
    return folder


def _grid_args(before_dir, out, *extra):
    return ["--model_name_or_path", f"tiny={before_dir}", "--rows", "neggrad", "--ks", "2", "--seeds", "0",
            "--retain_eval_size", "48", "--test_eval_size", "40", "--probe_num_steps", "2",
            "--num_train_epochs", "3", "--drift_every_steps", "1", "--output_dir", str(out), *extra]


def test_cells_are_cached_skipped_and_recomputed_on_a_changed_setting(bench, cells, before_dir, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "bench"
    bench.main(_grid_args(before_dir, out))
    before_cell = json.loads((out / "cells" / "tiny" / "before" / "k2-s0.json").read_text())
    cell = json.loads((out / "cells" / "tiny" / "neggrad" / "k2-s0.json").read_text())
    assert before_cell["steps"] == 0 and {"A_test", "A_r", "A_f"} <= set(before_cell["final"])
    assert cell["steps"] <= 3 and cell["reached_zero"] == (cell["final"]["A_f"] == 0.0)
    assert cell["levels"]["start"]["step"] == 0 and {"A_test", "A_r", "A_f"} <= set(cell["levels"]["start"])
    assert {"probes", "importance_setup", "unlearning", "evaluation"} <= set(cell["seconds_phases"])
    assert cell["probes"]["num"] == 40 and 0 <= cell["probes"]["target_hit_rate"] <= 100
    assert cell["settings"]["config"]["max_steps"] == -1 and cell["settings"]["config"]["num_train_epochs"] == 3

    calls = []
    real = cells.run_method_cell
    monkeypatch.setattr(cells, "run_method_cell", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    bench.main(_grid_args(before_dir, out))
    assert calls == []  # same settings: skipped
    assert json.loads((out / "cells" / "tiny" / "neggrad" / "k2-s0.json").read_text()) == cell
    bench.main(_grid_args(before_dir, out, "--probe_num_steps", "3"))
    assert calls == ["neggrad"]  # a changed setting recomputes the cell
    changed = json.loads((out / "cells" / "tiny" / "neggrad" / "k2-s0.json").read_text())
    assert changed["fingerprint"] != cell["fingerprint"] and changed["settings"]["config"]["probe_num_steps"] == 3


def test_added_config_field_at_its_legacy_value_keeps_old_fingerprints(cells):
    from hf_structguard.trainer import UnlearningConfig

    config = UnlearningConfig(output_dir="/tmp/unused", method="structguard", **cells.ADDED_CONFIG_FIELDS)
    settings = cells.config_settings(config)
    assert all(name not in settings for name in cells.ADDED_CONFIG_FIELDS)  # as in cells written before them
    changed = cells.config_settings(config.for_method("structguard", importance_normalization="max"))
    assert changed["importance_normalization"] == "max"


def test_renamed_config_field_keeps_its_old_name_in_fingerprints(cells):
    from hf_structguard.trainer import UnlearningConfig

    settings = cells.config_settings(UnlearningConfig(output_dir="/tmp/unused", method="structguard", preset="reference"))
    assert settings["structguard_preset"] == "reference" and "preset" not in settings  # as cells written before


def test_every_registered_method_and_preset_is_a_row(rows):
    from hf_structguard.methods import METHOD_REGISTRY

    known = rows.known_rows()
    assert set(METHOD_REGISTRY) <= set(known) and known["structguard[reference]"] == ("structguard", {"preset": "reference"})
    assert rows.select_rows(["structguard[reference]", "l2ul[frozen-bn]"]) == ["structguard[reference]", "l2ul[frozen-bn]"]


def test_probe_step_of_older_cells_is_resolved_from_their_config(report):
    cell = _cell("structguard", 0, 80.0, 90.0, 0.0)
    del cell["probes"]["step_size"]
    assert report._probe_step(cell) == pytest.approx(2.5 * 4.0 / 10)  # auto: 2.5·ε/iterations
    cell["settings"]["config"]["probe_step_size"] = 0.1
    assert report._probe_step(cell) == 0.1  # the reference preset's fixed step
    cell["probes"]["step_size"] = 0.5
    assert report._probe_step(cell) == 0.5  # recorded with the probes: that one


def _cell(row, seed, a_test, a_r, a_f, k=16, levels=None, seconds=1.0, model="gen"):
    cell = {"model": model, "row": row, "k": k, "seed": seed, "steps": 0 if row == "before" else 10, "passes": 2.5,
            "final": {"A_test": a_test, "A_r": a_r, "A_f": a_f}, "reached_zero": a_f == 0.0,
            "seconds_phases": {"evaluation": seconds},
            "settings": {"eval": {"retain_eval_size": None, "test_eval_size": 2000, "eval_seed": 0}, "k": k,
                         "seed": seed}}
    if row != "before":
        cell["levels"] = levels or {}
        cell["probes"] = {"epsilon": 4.0, "step_size": 1.0, "target_hit_rate": 90.0 + seed, "num": 320, "seconds": 0.0}
        cell["settings"]["config"] = {"num_train_epochs": 100.0, "max_steps": -1, "probe_num_steps": 10,
                                      "importance_num_samples": 2000}
    return cell


def test_report_from_hand_made_cells(bench, cells, report, common, tmp_path):
    lv = lambda step, a_f, a_test: {"step": step, "A_f": a_f, "A_test": a_test, "A_r": a_test + 5}  # noqa: E731
    made = [
        _cell("before", 0, 81.0, 99.0, 90.0), _cell("before", 1, 81.0, 99.0, 95.0),
        _cell("l2ul", 0, 70.0, 72.0, 0.0, seconds=10.0,
              levels={"start": lv(0, 90.0, 80.0), "75": lv(3, 60.0, 78.0), "50": lv(3, 40.0, 78.0),
                      "25": lv(5, 20.0, 74.0), "0": lv(9, 0.0, 70.0)}),
        _cell("l2ul", 1, 80.0, 84.0, 12.5, seconds=20.0,  # stopped at the cap
              levels={"start": lv(0, 95.0, 81.0), "75": lv(2, 75.0, 79.0), "50": lv(4, 50.0, 76.0),
                      "25": lv(8, 12.5, 71.0)}),
        _cell("structguard", 0, 60.0, 65.0, 0.0, seconds=30.0), _cell("structguard", 1, 62.0, 66.0, 0.0, seconds=30.0),
    ]
    for cell in made:
        common.write_json_atomic(cells.cell_path(tmp_path, cell["model"], cell["row"], cell["k"], cell["seed"]), cell)
    text = bench.main(["--report", "--output_dir", str(tmp_path)])
    lines = text.splitlines()
    row = lambda label, method: next(x for x in lines if x.startswith(f"| {label} | {method} |"))  # noqa: E731
    assert row("A_test (↑)", "before") == "| A_test (↑) | before | 81.00 ± 0.00 |"
    assert lines.index(row("A_test (↑)", "before")) < lines.index(row("", "l2ul"))  # Before first
    l2ul = [x for x in lines if x.startswith("|  | l2ul |") or x.startswith("| A_r (↑) | l2ul |")]
    assert "| 75.00 ± 7.07 † |" in l2ul[0]  # A_test of the two seeds; one stopped at the cap
    assert row("100−A_f (↑)", "before").endswith("| 7.50 ± 3.54 |")
    assert any(x.endswith("| l2ul | 93.75 ± 8.84 [1/2] |") for x in lines)
    assert any(x.endswith("| structguard | 100.00 ± 0.00 [2/2] |") for x in lines)
    # trade-off: mean over the seeds that reached each level, (n/m) when not all did
    tradeoff = next(x for x in lines if x.startswith("| gen | 16 | l2ul |") and "80.5 / 85.5" in x)
    assert tradeoff.endswith("| 80.5 / 85.5 | 78.5 / 83.5 | 77.0 / 82.0 | 72.5 / 77.5 | 70.0 / 75.0 (1/2) |")
    assert "| gen | 16 | 4 | 1 | 90.5 ± 0.7 | 2 | l2ul, structguard |" in text  # hit rate over the two seeds
    cost = next(x for x in lines if x.startswith("| gen | 16 | structguard | 10 |"))
    assert cost.endswith("| 30.0 | 2.00 |")  # 30 s against L2UL's mean 15 s
    caption = lines[0]
    assert "10 PGD iterations" in caption and "100.0 passes" in caption and "2000 test images" in caption
    assert "eval seed 0)" in caption and "subsample of all retain images" in caption  # 0 is a seed, None is all
    assert (tmp_path / "report.md").read_text() == text
    assert "Warning" not in text and "Diverged" not in text
    made[5]["diverged_step"] = 7  # a structguard seed whose loss stopped being finite
    common.write_json_atomic(cells.cell_path(tmp_path, "gen", "structguard", 16, 1), made[5])
    assert "**Diverged** (loss or gradients not finite; the run ends before that step): gen / structguard k = 16 " \
           "seed 1: step 7." in bench.main(["--report", "--output_dir", str(tmp_path)])
    made[2]["settings"]["config"]["learning_rate"] = 0.5  # one l2ul cell from other settings
    assert report.mixed_settings(made) == ["- gen / l2ul: cells differ in learning_rate"]
    assert (tmp_path / "plots" / "tradeoff.png").stat().st_size > 0


def test_tradeoff_points_keep_levels_passed_together_once(report):
    lv = {"step": 0, "A_f": 87.5, "A_test": 8.0, "A_r": 7.0}  # e.g. a fresh projector: levels met at step 0
    runs = [_cell("structguard", 0, 70.0, 80.0, 25.0, levels={"start": lv, "75": lv, "50": lv, "25": lv}),
            _cell("structguard", 1, 72.0, 82.0, 12.5, levels={"start": lv, "75": lv, "50": lv, "25": lv})]
    assert report.tradeoff_points(runs) == [(12.5, 8.0), (81.25, 71.0)]
    assert report.tradeoff_points([_cell("before", 0, 81.0, 99.0, 90.0)]) == [(10.0, 81.0)]


def test_a_diverged_run_is_recorded_where_it_ended(bench, rows, before_dir, tmp_path, monkeypatch):
    def diverge(model, config, *args, **kwargs):  # as the trainer does: before the update of step 3
        raise UnlearningDiverged(f"method {config.method!r} diverged at step 3: non-finite loss.", step=3)

    monkeypatch.setattr(rows, "run_unlearning", diverge)
    text = bench.main(_grid_args(before_dir, tmp_path))
    before = json.loads((tmp_path / "cells" / "tiny" / "before" / "k2-s0.json").read_text())
    cell = json.loads((tmp_path / "cells" / "tiny" / "neggrad" / "k2-s0.json").read_text())
    assert (cell["diverged_step"], cell["steps"], cell["stopped_at_zero"]) == (3, 2, False)
    assert cell["final"]["A_test"] == before["final"]["A_test"]  # evaluated as the run left the model
    assert "mia" in before["final"] and "mia" not in cell["final"]  # no membership attack on a diverged model
    assert "**Diverged** (loss or gradients not finite; the run ends before that step): tiny / neggrad k = 2 " \
           "seed 0: step 3." in text
