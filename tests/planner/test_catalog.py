"""The catalogs in data/: presets and GPUs, looked up by name or alias, checked on load."""

import json

import pytest
from fitplan.catalog import (
    _gpu_from,
    data_dir,
    gpu_catalog,
    gpu_listing,
    model_listing,
    resolve_gpu,
    resolve_model,
)
from fitplan.errors import PlanError


def test_presets_resolve_by_name_alias_and_hugging_face_id():
    assert resolve_model("llama-3.1-8b").name == "llama-3.1-8b"
    assert resolve_model("Llama-3.1-8B").name == "llama-3.1-8b"
    assert resolve_model("meta-llama/Llama-3.1-8B").name == "llama-3.1-8b"
    assert resolve_model("llama-70b").name == "llama-3.3-70b"


def test_an_unknown_model_suggests_close_names():
    with pytest.raises(PlanError, match="unknown model 'lama-3.1-8b'. Did you mean"):
        resolve_model("lama-3.1-8b")


def test_gpus_resolve_by_alias_and_carry_usable_memory():
    h100 = resolve_gpu("H100")
    assert h100.name == "h100-80"
    assert 0 < h100.usable_memory_bytes <= h100.memory_bytes == 80 * 2**30
    with pytest.raises(PlanError, match="unknown GPU 'h1000'"):
        resolve_gpu("h1000")


def test_every_gpu_file_is_named_after_its_gpu_and_listed():
    names = {g["name"] for g in gpu_listing()}
    assert names == set(gpu_catalog()) and "a100-80" in names
    assert all(p.stem in names for p in (data_dir() / "gpus").glob("*.json") if p.name != "aliases.json")


def test_a_gpu_file_with_an_unknown_field_names_it(tmp_path):
    raw = json.loads((data_dir() / "gpus" / "t4.json").read_text())
    path = tmp_path / "t4.json"
    with pytest.raises(PlanError, match="unknown field\\(s\\) colour"):
        _gpu_from({**raw, "colour": "green"}, path)
    with pytest.raises(PlanError, match="'memory_bytes' must be positive"):
        _gpu_from({**raw, "memory_bytes": 0}, path)


def test_model_listing_has_counts_and_short_aliases():
    rows = {r["name"]: r for r in model_listing()}
    assert rows["llama-3.2-3b"]["parameters"] == 3_212_749_824
    assert all("/" not in a for r in rows.values() for a in r["aliases"])


def test_a_variant_of_a_presets_architecture_resolves_to_it_and_says_so():
    from fitplan.planning import plan

    entry = resolve_model("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    assert entry.name == "llama-3.1-8b" and entry.resolved_from == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert resolve_model("meta-llama/Llama-3.1-8B").resolved_from is None
    notes = plan(model="deepseek-ai/DeepSeek-R1-Distill-Llama-8B").notes
    assert any("planned as the llama-3.1-8b preset" in n for n in notes)


def test_an_unknown_hugging_face_id_says_how_to_give_its_config():
    with pytest.raises(PlanError, match=r"fitplan downloads nothing; save its config.json .* Close presets: qwen/qwen2.5-7b"):
        resolve_model("Qwen/Qwen2.5-7B-Foo")
