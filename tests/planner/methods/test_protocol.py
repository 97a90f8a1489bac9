"""Methods own their behaviour: the registry's protocol, and no method-name comparisons elsewhere."""

import re
from pathlib import Path

import pytest
from fitplan.catalog import load_preset
from fitplan.errors import PlanError
from fitplan.methods import NAMES, REGISTRY, SEEDS, Method, method
from fitplan.setup import TrainingSetup

ROOT = Path(__file__).resolve().parents[3]
SHAPE = load_preset("llama-3.2-1b").shape


def test_every_method_is_one_registry_entry_with_its_facts():
    assert NAMES[:7] == SEEDS == ("full", "lora", "qlora", "adapter", "prefix", "ptuning", "prompt")
    assert NAMES[7:] == ("dora", "ia3", "vera", "loha", "lokr", "adalora", "oft", "boft", "ln-tuning",
                         "trainable-tokens", "llama-adapter", "fourierft", "hra", "miss", "c3a", "road", "shira",
                         "delora", "gralora", "waveft")
    for name, m in REGISTRY.items():
        assert isinstance(m, Method) and m.name == name and m.title
        assert method(name.upper()) is m
    assert sorted(m.strength for m in REGISTRY.values()) == list(range(len(REGISTRY)))


def test_what_each_method_declares():
    assert REGISTRY["full"].trains_base and REGISTRY["full"].saved_kind == "full checkpoint"
    assert REGISTRY["qlora"].quantized_base and REGISTRY["qlora"].checkpointing_default
    assert REGISTRY["prefix"].checkpointing_refused
    assert {"lora_rank", "lora_targets"} <= REGISTRY["qlora"].options
    assert REGISTRY["prompt"].input_requires_grad and not REGISTRY["lora"].input_requires_grad


# frozen tensors a method adds: VeRA's shared projections (in the file), OFT's index buffers, BOFT's
# permutations (not), trainable tokens' originals (not), DeLoRA's column norms (in the file)
FROZEN_ADDED = {"vera": {"vera_A", "vera_B"}, "oft": {"q_proj.oft_R.rows_cols", "v_proj.oft_R.rows_cols"},
                "boft": {"q_proj.boft_P", "v_proj.boft_P"},
                "trainable-tokens": {"embed_tokens.trainable_tokens_original"},
                "delora": {"q_proj.delora_w_norm", "v_proj.delora_w_norm"}}


@pytest.mark.parametrize("name", NAMES)
def test_added_tensors_are_what_the_adapter_file_holds(name):
    setup = TrainingSetup(method=name, c3a_block_size=512, road_group_size=64)
    groups = REGISTRY[name].tensors(SHAPE, setup)
    added = [g for g in groups if g.added]
    assert {g.label for g in added if not g.trainable} == FROZEN_ADDED.get(name, set())
    if not REGISTRY[name].trains_base:
        trained = [g for g in added if g.trainable]
        assert sum(g.elements for g in groups if g.trainable) == sum(g.elements for g in trained) > 0


def test_no_method_name_is_compared_outside_the_methods_own_files():
    names = "|".join(NAMES)
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?["']({names})["']""")
    offenders = []
    for folder in ("planner", "validate"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.parent.name == "methods":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("name", [n for n in NAMES if n not in SEEDS])
def test_new_methods_declare_their_options_and_read_only_setup_fields(name):
    m = REGISTRY[name]
    fields = set(TrainingSetup._fields)
    assert m.options <= fields, m.options - fields
    assert not m.trains_base and m.saved_kind == "adapter file"


@pytest.mark.parametrize("name", ["loha", "lokr", "oft", "boft", "hra", "miss", "c3a", "road", "shira", "delora"])
def test_methods_without_conv1d_refuse_gpt2_as_peft_does(name):
    gpt2 = load_preset("gpt2").shape
    with pytest.raises(PlanError, match="Conv1D"):
        REGISTRY[name].trainable_params(gpt2, TrainingSetup(method=name, lora_targets=("q",)))


def test_method_options_are_every_methods_options():
    """The methods beyond the seeds are imported when first named; METHOD_OPTIONS (the seeds' options and
    the setup's METHOD_FIELDS) must still be what every method reads."""
    from fitplan.methods import METHOD_OPTIONS

    assert set(METHOD_OPTIONS) == {o for m in REGISTRY.values() for o in m.options}


def test_the_main_job_imports_only_the_seed_methods():
    import subprocess
    import sys

    code = ("import sys, fitplan; fitplan.plan(model='llama-70b', gpu='a100-80'); "
            "print(sorted(k.rsplit('.', 1)[1] for k in sys.modules if k.startswith('fitplan.methods.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    loaded = set(eval(out))  # noqa: S307 - our own printed list
    assert not loaded & {"dora", "ia3", "vera", "adalora", "boft", "waveft"}, loaded
