"""experiments/sweep.py: the research log's table in experiments/README.md is the one the log prints, a
finished run's row is recorded from its files, and a configuration whose option was removed names its
commit."""

import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import sweep  # noqa: E402

README = os.path.join(ROOT, "experiments", "README.md")


def table_in_readme(which):
    with open(README) as f:
        text = f.read()
    start = text.index(f"<!-- {which} table")
    return text[text.index("\n", start) + 1:text.index(f"<!-- end of {which} table -->")].strip()


def test_the_research_logs_tables_are_the_ones_sweep_prints():
    """A row edited by hand in experiments/README.md, or recorded and not pasted, fails here."""
    assert table_in_readme("sweep") == sweep.table(sweep.read_results())
    assert table_in_readme("rooms") == sweep.rooms_table(sweep.read_results(sweep.ROOMS_RESULTS))


def test_every_row_either_runs_now_or_names_the_commit_it_reproduces_at():
    rows = sweep.read_results()
    assert len(rows) > 50
    for row in rows:
        assert row["name"] in sweep.CONFIGS or row["reproduce_at"], row["name"]
    removed = sweep.removed_configurations(rows)
    assert "fine_long_frustum_2000" in removed and "fine_demo_b8_480_s240" not in removed


def test_a_removed_configuration_is_refused_naming_its_commit(capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--run", "fine_demo_b8_480_s240_viewnet"])
    assert "reproduces at commit 49db708" in str(e.value.code) and "\n" not in str(e.value.code)


def test_record_adds_a_finished_runs_row_from_its_files(tmp_path):
    run = tmp_path / "fine_demo_b8_480_s240"
    run.mkdir()
    final = dict(scenes=200, mse_generation=0.006, mse_mean_context=0.012, iou_generation=0.77,
                 colour_error_generation=0.13, kl=26.0, iou_reconstruction=0.79,
                 colour_error_reconstruction=0.12)
    (run / "final.json").write_text(json.dumps(final))
    rows = (json.dumps(dict(step=s, seconds=s * 0.75)) + "\n" for s in range(1, 481))
    (run / "metrics.jsonl").write_text("".join(rows))
    log = tmp_path / "results.jsonl"
    log.write_text("")
    sweep.record("fine_demo_b8_480_s240", str(tmp_path), str(log))
    row, = sweep.read_results(str(log))
    assert row["steps"] == 480 and row["minutes"] == 6.0 and row["mse_ratio"] == pytest.approx(0.5)
    assert sweep.format_row(row).startswith("| `fine_demo_b8_480_s240`: ") and row["reproduce_at"] is None
