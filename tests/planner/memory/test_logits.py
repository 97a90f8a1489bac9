"""The loss's bytes per logit, by stack (transformers 5 and 4) and dtype."""

from fitplan.catalog import load_preset
from fitplan.memory.logits import loss_coefficients
from fitplan.setup import TrainingSetup


def test_bf16_upcasts_logits_for_the_loss():
    c = loss_coefficients(load_preset("llama-3.1-8b").shape, TrainingSetup())
    assert c == {"loss_bytes": 4, "loss_forward": 2 + 4, "loss_backward": 8}


def test_fp32_logits_need_no_copy_and_transformers_4_makes_one_more():
    shape = load_preset("llama-3.1-8b").shape
    assert loss_coefficients(shape, TrainingSetup(method="qlora"))["loss_forward"] == 4
    assert loss_coefficients(shape, TrainingSetup(transformers_major=4))["loss_forward"] == 2 + 4 + 4


def test_softcapping_and_the_legacy_bigcode_loss():
    assert loss_coefficients(load_preset("gemma-2-9b").shape, TrainingSetup())["loss_bytes"] == 4 + 2
    legacy = loss_coefficients(load_preset("santacoder").shape, TrainingSetup(transformers_major=4))
    assert legacy == {"loss_bytes": 2, "loss_forward": 4, "loss_backward": 4}


# ---- the stacks' losses (fitplan.memory.logits.loss_model) --------------------------------------
from fitplan.memory.logits import loss_model  # noqa: E402

L8 = load_preset("llama-3.1-8b").shape     # h 4096, V 128256
B, S, V, H = 2, 4096, 128256, 4096
TV = B * S * V


def _bytes(**setup):
    return loss_model(L8, TrainingSetup(**setup)).bytes(B, S, V)


def test_standard_is_the_transformers_coefficients():
    held, forward, backward, head = _bytes()
    assert (held, forward, backward, head) == (4 * TV, 6 * TV, 8 * TV, 4 * TV)


def test_chunked_keeps_every_log_softmax_but_one_chunk_of_upcast_and_of_gradients():
    held, forward, backward, _ = _bytes(loss="chunked:8")
    chunk = B * (S // 8) * V
    assert held == 4 * TV                         # eager cross_entropy saves each chunk's fp32 log-softmax
    assert forward == 2 * TV + 4 * chunk          # the bf16 logits list, one chunk's fp32 copy
    assert backward == 8 * chunk                  # nll and log-softmax gradients of one chunk at a time
    assert _bytes(loss="chunked")[2] == backward  # torchtune's 8 chunks by default


def test_compile_saves_the_compute_dtype_logits_and_two_fp32_statistics_per_row():
    held, forward, backward, _ = _bytes(compile=True)
    assert held == 2 * TV + 8 * B * S and forward == 0 and backward == 2 * TV
    held_c, _, backward_c, _ = _bytes(compile=True, loss="chunked:8")
    assert held_c == held and backward_c == 2 * B * (S // 8) * V


def test_fused_losses_hold_no_logits():
    T = B * S
    # Liger: chunks of next_power_of_2(T / ceil(V / h)) rows; grad_input (T x h) held from the forward
    m = loss_model(L8, TrainingSetup(loss="liger"))
    assert m.chunk_tokens(B, S, V) == 256
    held, forward, backward, _ = m.bytes(B, S, V)
    assert held == 2 * T * H and forward == 2 * 256 * V + 4 * T and backward == 0
    # unsloth: at least 512 rows (512 x 151936 logits), fp32 chunk logits
    u = loss_model(L8, TrainingSetup(loss="unsloth"))
    assert u.chunk_tokens(B, S, V) == 512 and u.bytes(B, S, V)[1] == 4 * 512 * V + 4 * T
    # Cut Cross-Entropy: the hidden states it was given and an fp32 LSE; their gradient in backward
    held, forward, backward, _ = _bytes(loss="cce")
    assert held == (2 * H + 4) * T + 4 * V and backward == 2 * H * T
    # TRL 1.16: tiles of 4096 tokens x 32768 columns in the compute dtype, fp32 gradient of the hidden states
    held, forward, backward, _ = _bytes(loss="trl")
    tile = 4096 * 32768 * 2
    assert held == (2 * H + 16) * T and forward == tile + 28 * T and backward == tile + (4 * H + 2 * H) * T


def test_a_trained_head_adds_its_gradient_to_a_fused_loss():
    base = loss_model(L8, TrainingSetup(loss="liger")).bytes(B, S, V)[0]
    trained = loss_model(L8, TrainingSetup(loss="liger", method="full"), head_trains=True).bytes(B, S, V)[0]
    assert trained - base == V * H * 2
