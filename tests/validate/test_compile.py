"""torch.compile's saved tensors, measured: each decoder layer compiled as torchtune and unsloth do
(``layer.compile()``), one forward under ``saved_tensors_hooks`` on real CPU tensors, every saved
storage counted once. The backend is AOTAutograd's min-cut partitioner without Inductor's code
generation (``aot_eager_decomp_partition``): the partitioner decides what is saved, and on these
layers it saves to the byte what Inductor's does (checked with ``backend="inductor"`` for the same
cases: 6,440, 11,752, 7,752 and 15,464 bytes per token), in a tenth of the time."""

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import fitplan  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "data" / "sweeps" / "configs" / "tiny-llama.json"
B, S = 2, 128


def _saved_per_layer(method: str, dtype) -> int:
    import peft
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**json.loads(TINY.read_text()))
    cfg._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    if method == "lora":
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    else:
        model.requires_grad_(True)
    base = model.get_base_model() if method == "lora" else model
    for layer in base.model.layers:
        layer.compile(backend="aot_eager_decomp_partition")
    ids = torch.randint(0, cfg.vocab_size, (B, S))
    model(input_ids=ids, labels=ids).loss.backward()            # compile outside the hooks
    skip = {p.untyped_storage()._cdata for p in model.parameters()} | \
           {b.untyped_storage()._cdata for b in model.buffers()}
    names = {id(m): n for n, m in model.named_modules()}
    stack, seen, per = [], set(), {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in skip and key not in seen:
            seen.add(key)
            layer = next((int(m.group(1)) for n in reversed(stack) if (m := re.search(r"layers\.(\d+)", n))), None)
            per[layer] = per.get(layer, 0) + t.untyped_storage().nbytes()
        return t

    pre = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, a: stack.append(names.get(id(mod), "")))
    post = torch.nn.modules.module.register_module_forward_hook(lambda mod, a, o: (stack.pop(), None)[1],
                                                               always_call=True)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=ids, labels=ids).loss
    finally:
        pre.remove()
        post.remove()
    loss.backward()
    return per[1]          # a later layer (layer 0's input needs no gradient under LoRA)


@pytest.mark.parametrize(("method", "dtype", "precision"), [("lora", "float32", "fp32"), ("full", "float32", "fp32")])
def test_compiled_layer_saves_what_the_planner_says(method, dtype, precision):
    measured = _saved_per_layer(method, getattr(torch, dtype))
    extra = {"lora_rank": 8} if method == "lora" else {}
    est = fitplan.plan(model=str(TINY), method=method, precision=precision, device="cpu", seq_len=S, batch_size=B,
                       compile=True, **extra).method.estimate
    assert est.layer_activation_bytes[1] == measured
    eager = fitplan.plan(model=str(TINY), method=method, precision=precision, device="cpu", seq_len=S, batch_size=B,
                         **extra).method.estimate
    assert eager.layer_activation_bytes[1] > measured          # compile saves less
