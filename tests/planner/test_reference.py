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
    "FMS-A100-47": "Llama-2-70B LoRA on the GPTQ int4 checkpoint under FSDP x2, as FMS-A100-23 (21% low)",
}
# PEFT MetaMathQA rows of the methods beyond the seeds still outside 5% (cause not found yet)
PEFT_OFF = {
    "PEFT-MMQA-08": "AdaLoRA +5.2%: the planner keeps more of the SVD triplets' step than the run shows",
    "PEFT-MMQA-20": "BOFT +8.1%: the butterfly factors' forward and backward hold less than the planner's "
                    "three weight-sized products",
}


def test_median_error_within_5_percent():
    errors = [abs(c.error_percent) for c in COMPARISONS]
    assert len(errors) >= 40
    assert statistics.median(errors) <= 5.0


def test_every_method_of_the_metamathqa_runs_is_planned():
    peft = [c for c in COMPARISONS if c.source == "PEFT"]
    assert len(peft) == 21          # the seven seeds' 9 rows and 12 of the other methods' 18
    assert {c.method for c in peft} >= {"dora", "ia3", "vera", "loha", "oft", "boft", "adalora", "ln-tuning",
                                        "trainable-tokens", "fourierft", "miss", "llama-adapter"}


@pytest.mark.parametrize(
    "comparison",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=PEFT_OFF[c.id])] if c.id in PEFT_OFF
                  else []) for c in COMPARISONS if c.source == "PEFT"],
)
def test_peft_rows_within_5_percent(comparison):
    assert abs(comparison.error_percent) <= 5.0, (comparison.settings, comparison.error_percent)


@pytest.mark.parametrize(
    "comparison",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=OFF[c.id])] if c.id in OFF else [])
     for c in COMPARISONS],
)
def test_row_within_12_percent(comparison):
    assert abs(comparison.error_percent) <= 12.0, (comparison.settings, comparison.error_percent)


def test_skipped_rows_name_their_reason():
    assert len(SKIPPED) == 6
    assert all("not one the planner models" in why or "do not reproduce its" in why for _, why in SKIPPED)


# ---- the training stacks' published rows (data/reference/published_memory_stacks.csv) ------------
STACKS_AFTER, STACKS_SKIPPED = reference.compare(reference.stacks_path())
STACKS_BEFORE, _ = reference.compare(reference.stacks_path(), with_stacks=False)


def _median(rows):
    return statistics.median(abs(c.error_percent) for c in rows)


def test_stacks_rows_are_planned_or_say_why_not():
    assert len(STACKS_AFTER) + len(STACKS_SKIPPED) == 83
    assert len(STACKS_AFTER) >= 50
    assert all(why for _, why in STACKS_SKIPPED)
    assert {c.stack for c in STACKS_AFTER} == {"torchtune", "litgpt", "unsloth", "axolotl", "hf"}


def test_the_stacks_options_bring_the_published_rows_closer():
    assert [c.id for c in STACKS_BEFORE] == [c.id for c in STACKS_AFTER]
    assert _median(STACKS_AFTER) < 0.7 * _median(STACKS_BEFORE)
    tt = lambda rows: [c for c in rows if c.stack == "torchtune"]  # noqa: E731
    assert _median(tt(STACKS_AFTER)) <= 10.0 < _median(tt(STACKS_BEFORE))


@pytest.mark.parametrize("row", ["TTUNE-04", "TTUNE-07", "TTUNE-12", "UNSLOTH-03", "UNSLOTH-10", "ISSUE-01"])
def test_rows_each_stack_mechanism_decides_are_within_6_percent(row):
    c = next(c for c in STACKS_AFTER if c.id == row)
    assert abs(c.error_percent) <= 6.0, (c.settings, c.error_percent)
