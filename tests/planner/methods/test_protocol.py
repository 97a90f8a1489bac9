"""Methods own their behaviour: the registry's protocol, and no method-name comparisons elsewhere."""

import re
from pathlib import Path

import pytest
from fitplan.catalog import load_preset
from fitplan.methods import NAMES, REGISTRY, Method, method
from fitplan.setup import TrainingSetup

ROOT = Path(__file__).resolve().parents[3]
SHAPE = load_preset("llama-3.2-1b").shape


def test_every_method_is_one_registry_entry_with_its_facts():
    assert NAMES == ("full", "lora", "qlora", "adapter", "prefix", "ptuning", "prompt")
    for name, m in REGISTRY.items():
        assert isinstance(m, Method) and m.name == name and m.title
        assert method(name.upper()) is m
    assert sorted(m.strength for m in REGISTRY.values()) == list(range(7))


def test_what_each_method_declares():
    assert REGISTRY["full"].trains_base and REGISTRY["full"].saved_kind == "full checkpoint"
    assert REGISTRY["qlora"].quantized_base and REGISTRY["qlora"].checkpointing_default
    assert REGISTRY["prefix"].checkpointing_refused
    assert {"lora_rank", "lora_targets"} <= REGISTRY["qlora"].options
    assert REGISTRY["prompt"].input_requires_grad and not REGISTRY["lora"].input_requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_added_tensors_are_what_the_adapter_file_holds(name):
    setup = TrainingSetup(method=name)
    groups = REGISTRY[name].tensors(SHAPE, setup)
    added = [g for g in groups if g.added]
    assert all(g.trainable for g in added)
    if not REGISTRY[name].trains_base:
        assert sum(g.elements for g in groups if g.trainable) == sum(g.elements for g in added) > 0


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
