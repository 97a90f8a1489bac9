"""Published, measured peaks (data/reference/published_memory.csv) reproduced by the planner.

Target: median |error| at most 5% over every expressible row, and every row within 12%. Rows still
outside are strict xfails with what was found about them.
"""

import statistics

import pytest
from fitplan import reference

COMPARISONS, SKIPPED = reference.compare()

OFF = {
    "FMS-A100-01": "santacoder (gpt_bigcode, transformers 4.48): full fine-tuning +19..33% and QLoRA -19..22% at the stated 4096 tokens; no single setting explains both (2048 tokens fits full fine-tuning and breaks QLoRA)",
    "FMS-A100-02": "santacoder, as FMS-A100-01",
    "FMS-A100-03": "santacoder, as FMS-A100-01",
    "FMS-A100-04": "santacoder, as FMS-A100-01",
    "FMS-A100-24": "santacoder, as FMS-A100-01",
    "FMS-A100-25": "santacoder, as FMS-A100-01",
    "FMS-A100-26": "santacoder, as FMS-A100-01",
    "FMS-A100-27": "santacoder, as FMS-A100-01",
    "FMS-A100-23": "Llama-2-70B QLoRA under FSDP x2 is 21% low: FSDP's own buffers (root unit, prefetch, reduce-scatter) are not modelled yet",
    "FMS-A100-37": "Llama-2-70B QLoRA under FSDP x2, as FMS-A100-23 (25% low)",
}


def test_median_error_within_5_percent():
    errors = [abs(c.error_percent) for c in COMPARISONS]
    assert len(errors) >= 40
    assert statistics.median(errors) <= 5.0


def test_peft_rows_all_within_5_percent():
    peft = [c for c in COMPARISONS if c.source == "PEFT"]
    assert len(peft) == 9
    assert all(abs(c.error_percent) <= 5.0 for c in peft), [(c.id, c.error_percent) for c in peft]


@pytest.mark.parametrize(
    "comparison",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=OFF[c.id])] if c.id in OFF else [])
     for c in COMPARISONS],
)
def test_row_within_12_percent(comparison):
    assert abs(comparison.error_percent) <= 12.0, (comparison.settings, comparison.error_percent)


def test_skipped_rows_name_their_reason():
    assert len(SKIPPED) == 28
    assert all("not one the planner models" in why for _, why in SKIPPED)
