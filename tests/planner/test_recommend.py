"""The recommendation: the strongest method that fits with headroom, and a rank; else the fewest GPUs."""

from fitplan.catalog import load_preset, resolve_gpu
from fitplan.recommend import HEADROOM, Goal, recommend
from fitplan.setup import TrainingSetup


def test_a_complex_task_on_a_small_model_gets_full_fine_tuning():
    rec = recommend(load_preset("llama-3.2-1b"), TrainingSetup(), resolve_gpu("a100-80"), goal=Goal("complex"))
    assert (rec.method, rec.lora_rank, rec.gpus) == ("full", None, 1)
    assert rec.reason.startswith("full fine-tuning fits one a100-80 with")


def test_the_recommendation_fits_with_headroom():
    gpu = resolve_gpu("a100-80")
    rec = recommend(load_preset("llama-3.3-70b"), TrainingSetup(), gpu)
    assert (rec.method, rec.lora_rank, rec.lora_targets) == ("qlora", 16, ("all-linear",))
    assert rec.estimate.peak_bytes <= HEADROOM * gpu.usable_memory_bytes
    assert "LoRA r=16 on every linear layer needs" in rec.reason


def test_nothing_fits_one_gpu_names_the_fewest():
    rec = recommend(load_preset("llama-3.1-405b"), TrainingSetup(seq_len=512), resolve_gpu("rtx-4090"))
    assert rec.gpus is None or rec.gpus > 1
    assert rec.to_dict()["method"] == rec.method
