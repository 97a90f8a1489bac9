"""Properties that hold for every configuration (hypothesis)."""

from fitplan.catalog import load_preset, model_names
from fitplan.estimate import estimate
from fitplan.frozen import replace
from fitplan.memory.weights import weights
from fitplan.methods import REGISTRY
from fitplan.setup import TrainingSetup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SMALL_PRESETS = [n for n in model_names() if load_preset(n).shape.parameter_count < 4 * 10**9]
METHODS = ["full", "lora", "qlora", "adapter", "prompt", "ptuning"]

setups = st.fixed_dictionaries(
    {
        "method": st.sampled_from(METHODS + ["prefix"]),
        "seq_len": st.integers(1, 4096),
        "batch_size": st.integers(1, 8),
        "lora_rank": st.integers(1, 128),
        "precision": st.sampled_from(["bf16", "fp16", "fp32", "bf16-mixed"]),
        "optimizer": st.sampled_from(["adamw", "adamw-8bit", "sgd", "sgd-momentum", "adafactor", "lion", "paged-adamw"]),
        "grad_ckpt": st.sampled_from([None, False, True]),
        "attention": st.sampled_from(["eager", "sdpa"]),
        "device": st.sampled_from(["cuda", "cpu"]),
    }
)


def _setup(d):
    d = dict(d)
    if d["method"] == "qlora" and d["precision"] == "fp32":
        d["precision"] = "bf16"
    if d["method"] == "prefix":
        d["grad_ckpt"] = False
    return TrainingSetup(**d)


def _shrunk(name, layers):
    entry = load_preset(name)
    shape = replace(entry.shape, num_layers=layers)
    return replace(entry, shape=shape)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(name=st.sampled_from(SMALL_PRESETS), d=setups)
def test_parts_add_up(name, d):
    est = estimate(load_preset(name), _setup(d))
    for phase in est.phases.values():
        assert phase.total == sum(phase.parts().values())
        assert all(isinstance(v, int) and v >= 0 for v in phase.parts().values())
    assert est.peak_bytes == max(p.total for p in est.phases.values())


@SETTINGS
@given(name=st.sampled_from(SMALL_PRESETS), d=setups, field=st.sampled_from(["seq_len", "batch_size", "lora_rank"]),
       grow=st.integers(1, 512))
def test_memory_never_falls_as_sizes_grow(name, d, field, grow):
    setup = _setup(d)
    model = load_preset(name)
    small = estimate(model, setup)
    big = estimate(model, setup.with_(**{field: getattr(setup, field) + grow}))
    assert big.peak_bytes >= small.peak_bytes


@SETTINGS
@given(name=st.sampled_from(SMALL_PRESETS), d=setups, layers=st.integers(1, 40), more=st.integers(1, 40))
def test_memory_never_falls_as_layers_grow(name, d, layers, more):
    setup = _setup(d)
    assert estimate(_shrunk(name, layers + more), setup).peak_bytes >= estimate(_shrunk(name, layers), setup).peak_bytes


@SETTINGS
@given(name=st.sampled_from(model_names()), rank=st.integers(1, 256))
def test_qlora_stores_fewer_weight_bytes_than_lora(name, rank):
    shape = load_preset(name).shape
    setup = TrainingSetup(method="lora", lora_rank=rank)
    lora = weights(REGISTRY["lora"].tensors(shape, setup))
    qlora = weights(REGISTRY["qlora"].tensors(shape, setup.with_(method="qlora")))
    if shape.num_experts:
        return  # transformers 5 keeps fused experts unquantized and qlora upcasts them to fp32
    assert qlora < lora


@SETTINGS
@given(name=st.sampled_from(model_names()), method=st.sampled_from(METHODS[1:] + ["prefix"]),
       rank=st.integers(1, 64), tokens=st.integers(1, 100))
def test_other_methods_train_fewer_parameters_than_full(name, method, rank, tokens):
    shape = load_preset(name).shape
    setup = TrainingSetup(method=method, lora_rank=rank, num_virtual_tokens=tokens)
    full = REGISTRY["full"].trainable_params(shape, setup.with_(method="full"))
    assert REGISTRY[method].trainable_params(shape, setup) < full
