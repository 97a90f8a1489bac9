"""Request: every option, None meaning "not given"; the defaults and what counts as assumed."""

import pytest
from fitplan.errors import PlanError
from fitplan.request import ASSUMED, DEFAULTS, OPTIONS, Request


def test_every_option_is_a_request_field_with_a_default():
    fields = set(Request._fields)
    assert {o.field for o in OPTIONS} == fields
    assert set(DEFAULTS) == fields - {"model", "gpu"}
    assert set(ASSUMED) <= set(DEFAULTS)


def test_values_fall_back_to_the_defaults():
    r = Request(model="gpt2", seq_len=512)
    assert r.value("seq_len") == 512 and r.value("batch_size") == 1 and r.value("mfu") == 0.40
    assert r.given("seq_len") and not r.given("batch_size")
    assert r.assumed == ("batch_size", "precision", "optimizer", "attention")


def test_of_refuses_unknown_keywords():
    with pytest.raises(PlanError, match="unknown option"):
        Request.of(model="gpt2", rank=8)
    assert Request.of(model="gpt2", lora_rank=8).lora_rank == 8
