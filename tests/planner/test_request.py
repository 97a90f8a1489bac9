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


def test_the_other_methods_options_are_request_options():
    from fitplan.methods import METHOD_OPTIONS
    from fitplan.setup import METHOD_FIELDS

    assert set(METHOD_FIELDS) <= set(Request._fields)
    assert set(METHOD_OPTIONS) <= set(Request._fields)
    assert Request().value("vera_rank") == 256 and Request().value("base") == "none"


def test_an_option_for_another_method_is_refused():
    from fitplan import plan

    with pytest.raises(PlanError, match="--vera-rank applies to vera; --method lora does not use it"):
        plan(model="llama-3.2-1b", method="lora", vera_rank=64)
    with pytest.raises(PlanError, match="--base applies to lora"):
        plan(model="llama-3.2-1b", method="dora", base="gptq-int4")


def test_the_other_methods_options_reach_the_estimate():
    from fitplan import plan

    p = plan(model="llama-3.2-1b", method="vera", vera_rank=64)
    assert p.methods["vera"].estimate.setup.vera_rank == 64
