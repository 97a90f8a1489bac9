"""Text views: the tables and lines a person reads agree with the Plan's numbers."""

import fitplan
from fitplan.render import fit_cell, render, tabulate
from fitplan.units import gib


def test_tabulate_pads_columns_and_rules_the_header():
    assert tabulate([["a", 1], ["bbb", 22]], ["x", "y"]).splitlines() == ["x    y", "---  --", "a    1", "bbb  22"]


def test_fit_cell_plain_without_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert (fit_cell(True, 1), fit_cell(False, 8), fit_cell(False, None)) == ("✓", "needs 8", "✗")


def test_the_main_table_shows_the_plan_numbers():
    p = fitplan.plan(model="llama-70b", gpu="a100-80")
    text = render(p)
    qlora = next(line for line in text.splitlines() if line.startswith("* qlora"))
    assert gib(p.methods["qlora"].peak_bytes_per_gpu) in qlora.split()
    assert f"Recommended: qlora r={p.recommendation.lora_rank} ({p.recommendation.reason})" in text
    assert "  [1] sequence length 2048 (--seq-len)" in text


def test_one_method_shows_its_phases_and_the_three_figures():
    p = fitplan.plan(model="llama-3.1-8b", gpu="h100-80", method="lora")
    est = p.method.estimate
    text = render(p)
    assert f"allocated {gib(est.allocated_bytes)} GiB" in text
    assert f"On h100-80: peak {gib(est.peak_bytes)} GiB of {gib(p.gpu.usable_memory_bytes)} GiB usable: fits" in text
