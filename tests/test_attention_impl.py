"""model.attention_impl: "xla" (jax.nn.dot_product_attention) computes what the plain einsums do,
outputs and gradients, for every kind of attention the models use: causal with padding, bidirectional
with padding, grouped-query heads, T5's relative bias with cross-attention, and KV-cache decoding.
"cudnn" cannot run here (no GPU): its refusals are checked, and benchmarks/gpu.py is smoke-tested."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax import hf_t5
from bigmodel_jax.config import load_config_file, validate
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.generate import Sampling, generate
from bigmodel_jax.models import attention
from bigmodel_jax.models.bert import Bert
from bigmodel_jax.models.encdec import EncoderDecoder
from bigmodel_jax.models.gpt import GPT
from tests.conftest import ROOT
from tests.test_layers import VARIANTS, gpt_cfg

TOL = 1e-5  # f32: the two paths differ only in where the scale is applied and in the order of sums
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts traced calls of jax.nn.dot_product_attention: a fused model that silently took the
    plain path would make every comparison here vacuous."""
    calls = []
    real = jax.nn.dot_product_attention

    def counting(*args, **kw):
        calls.append(kw.get("implementation"))
        return real(*args, **kw)

    monkeypatch.setattr(jax.nn, "dot_product_attention", counting)
    return calls


def _with_impl(cfg: ml_collections.ConfigDict, impl: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.attention_impl = impl
    return cfg


def _twins(make, cfg: ml_collections.ConfigDict) -> tuple[nnx.Module, nnx.Module]:
    """The same model, weights and all, built plain and with "xla" (the second one abstract and
    then filled with the first's state: initializing eagerly costs seconds per model here)."""
    plain = make(_with_impl(cfg, "plain"), rngs=nnx.Rngs(0))
    fused = nnx.eval_shape(lambda: make(_with_impl(cfg, "xla"), rngs=nnx.Rngs(0)))
    nnx.update(fused, nnx.state(plain))
    return plain, fused


@pytest.fixture(scope="module")
def llama_twins() -> tuple[GPT, GPT]:
    """Llama-style GPT: RoPE, 4 query heads over 2 K/V heads (grouped-query attention)."""
    cfg = gpt_cfg(**VARIANTS["llama"], max_len=64, num_layers=1)
    assert cfg.num_kv_heads < cfg.num_heads
    return _twins(GPT, cfg)


@pytest.fixture(scope="module")
def t5_twins() -> tuple[EncoderDecoder, EncoderDecoder]:
    cfg = hf_t5.t5_config(dict(model_type="t5", vocab_size=60, d_model=32, d_kv=8, d_ff=48, num_layers=1,
                               num_decoder_layers=1, num_heads=4, feed_forward_proj="gated-gelu",
                               tie_word_embeddings=False, dropout_rate=0.0, relative_attention_num_buckets=8,
                               relative_attention_max_distance=20, n_positions=32))
    return _twins(EncoderDecoder, cfg)


def _output_and_grads(model: nnx.Module, forward) -> tuple[np.ndarray, dict]:
    """forward(model) and the gradients of a fixed random projection of it w.r.t. every parameter."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        y = forward(nnx.merge(graphdef, p, rest))
        return jnp.sum(y * jax.random.normal(jax.random.PRNGKey(1), y.shape)), y

    # LLVM's lowest optimization level: half the compile time of these one-off programs here
    (_, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=FAST_COMPILE)(params)
    return np.asarray(y), jax.tree.map(np.asarray, nnx.to_pure_dict(grads))


def _assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = max(float(np.abs(ref).max()), 1e-3)
    err = float(np.abs(got - ref).max())
    assert err <= TOL * scale, f"{what}: max |xla - plain| = {err:.3g} at a scale of {scale:.3g}"


def _assert_same_outputs_and_grads(plain, fused, forward) -> None:
    y_ref, g_ref = _output_and_grads(plain, forward)
    y, g = _output_and_grads(fused, forward)
    _assert_close(y, y_ref, "output")
    paths = jax.tree_util.tree_flatten_with_path(g_ref)[0]
    for (path, ref), got in zip(paths, jax.tree.leaves(g)):
        _assert_close(got, ref, "grad " + jax.tree_util.keystr(path))
    assert sum(float(np.abs(r).sum()) for _, r in paths) > 0


@pytest.mark.parametrize("variant", ["gpt2", "llama"], ids=["causal", "causal_gqa_rope"])
def test_causal_gpt_with_left_padding(variant, fused_calls, request):
    """Causal self-attention, GPT-2's and Llama's (grouped-query heads). Rows are left-padded as
    batched generation pads them (a padding row's queries see no key at all)."""
    if variant == "llama":
        plain, fused = request.getfixturevalue("llama_twins")
    else:
        plain, fused = _twins(GPT, gpt_cfg(max_len=16, num_layers=1))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, plain.cfg.vocab_size, (3, 16)))
    mask = jnp.asarray(np.arange(16)[None] >= np.array([0, 5, 11])[:, None])
    _assert_same_outputs_and_grads(plain, fused, lambda m: m(tokens, mask_bs=mask)[0])
    assert fused_calls and set(fused_calls) == {"xla"}


def test_bidirectional_bert_on_a_padded_batch(fused_calls):
    cfg = ml_collections.ConfigDict(dict(vocab_size=50, num_layers=1, width=32, num_heads=4, mlp_dim=64, max_len=16,
                                         type_vocab_size=2, activation="gelu", norm_eps=1e-12, dropout=0.0,
                                         dtype="float32"))
    plain, fused = _twins(Bert, cfg)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50, (3, 16)))
    mask = jnp.asarray(np.arange(16)[None] < np.array([16, 9, 3])[:, None], jnp.int32)
    _assert_same_outputs_and_grads(plain, fused, lambda m: m(ids, attention_mask_bt=mask))
    # without a mask (no mask reaches the kernel) they agree too, and the mask matters: agreeing
    # under it is not agreeing on nothing
    masked, unmasked, unmasked_ref = (np.asarray(x) for x in nnx.jit(
        lambda f, p: (f(ids, attention_mask_bt=mask), f(ids), p(ids)))(fused, plain))
    _assert_close(unmasked, unmasked_ref, "unmasked output")
    assert np.abs(masked[2] - unmasked[2]).max() > 100 * TOL
    assert fused_calls


def test_t5_relative_bias_padded_sources_and_cross_attention(t5_twins, fused_calls):
    """Unscaled scores plus a learned bias (its table's gradient flows through the fused path),
    padded sources in the encoder and in the decoder's cross-attention."""
    plain, fused = t5_twins
    rng = np.random.default_rng(3)
    src = jnp.asarray(rng.integers(2, 60, (3, 10)))
    src_mask = jnp.asarray(np.arange(10)[None] < np.array([10, 6, 2])[:, None])
    tgt = jnp.asarray(rng.integers(2, 60, (3, 7)))
    _assert_same_outputs_and_grads(plain, fused, lambda m: m(src, src_mask, tgt))
    assert len(fused_calls) >= 3  # encoder self-attention, decoder self- and cross-attention


def test_kv_cache_prefill_and_decode_logits(llama_twins, fused_calls):
    """A left-padded prefill into a longer cache, then one decode step at a traced slot."""
    plain, fused = llama_twins
    tokens = jnp.asarray(np.random.default_rng(4).integers(1, plain.cfg.vocab_size, (2, 6)))
    mask = np.zeros((2, 16), bool)
    mask[0, :6], mask[1, 3:6] = True, True
    mask[:, 6] = True

    def run(model):
        graphdef, state = nnx.split(model)

        @jax.jit
        def steps(tokens, mask, index):
            m = nnx.merge(graphdef, state)
            positions = jnp.maximum(jnp.cumsum(mask, 1) - 1, 0)
            first, cache = m(tokens, cache=m.init_cache(2, 16), prefill=True, positions_bt=positions[:, :6],
                             mask_bs=mask)
            nxt = jnp.argmax(first[:, -1], -1)[:, None]
            second, _ = m(nxt, cache=cache, cache_index=index, positions_bt=positions[:, 6:7], mask_bs=mask)
            return first, second
        return [np.asarray(x) for x in steps(tokens, jnp.asarray(mask), jnp.asarray(6))]

    for got, ref in zip(run(fused), run(plain)):
        _assert_close(got, ref, "cached logits")
    assert fused_calls


def test_greedy_generation_is_the_same(llama_twins, t5_twins, fused_calls):
    """generate: bucketed left-padded prefill, then the while-loop decode over the KV cache."""
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]
    plain, fused = llama_twins
    greedy = Sampling(greedy=True)
    out = generate(fused, prompts, 10, sampling=greedy)
    assert out == generate(plain, prompts, 10, sampling=greedy)
    assert fused_calls
    # an encoder-decoder: cross-attention keys in the cache, the decoder's bias at each decode step
    t5_plain, t5_fused = t5_twins
    sources = [[5, 17, 42, 8, 3], [3, 9], [20, 21, 22, 23, 24, 25, 26, 27]]
    starts = [[0]] * 3
    assert (generate(t5_fused, starts, 6, sampling=greedy, source=sources)
            == generate(t5_plain, starts, 6, sampling=greedy, source=sources))


def test_attention_dropout_in_training_falls_back_to_plain(fused_calls):
    """jax.nn.dot_product_attention has no attention dropout: a training call with dropout > 0
    runs the plain path (the same masks from the same rngs); evaluation runs the fused one."""
    cfg = gpt_cfg(dropout=0.2, max_len=8, num_layers=1)
    plain, fused = _twins(GPT, cfg)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 8)))

    @nnx.jit
    def outputs(plain, fused):
        train = [m(tokens, rngs=nnx.Rngs(dropout=7))[0] for m in (plain, fused)]
        calls_in_training = len(fused_calls)
        return train, [m(tokens)[0] for m in (plain, fused)], calls_in_training

    (train_plain, train_fused), (eval_plain, eval_fused), calls_in_training = outputs(plain, fused)
    np.testing.assert_array_equal(np.asarray(train_fused), np.asarray(train_plain))
    assert calls_in_training == 0 and fused_calls
    _assert_close(np.asarray(eval_fused), np.asarray(eval_plain), "evaluation")


def test_attention_refuses_what_it_cannot_run():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        attention.Attention(32, 4, 4, rngs=rngs, causal=True, use_rope=False, attention_impl="flash")
    with pytest.raises(ValueError, match="bfloat16"):
        attention.Attention(32, 4, 4, rngs=rngs, causal=True, use_rope=False, attention_impl="cudnn")
    with pytest.raises(ValueError, match="multiple of 8"):
        attention.Attention(36, 4, 4, rngs=rngs, causal=True, use_rope=False, attention_impl="cudnn",
                         dtype=jnp.bfloat16)
    attention.Attention(32, 4, 4, rngs=rngs, causal=True, use_rope=False, attention_impl="cudnn", dtype=jnp.bfloat16)


@pytest.mark.parametrize("config", ["gpt_char.py", "bert_mlm.py", "vit_digits.py", "t5_translate.py"])
def test_config_validation_refuses_cudnn_off_gpu(config):
    assert jax.default_backend() != "gpu"
    cfg = load_config_file(str(ROOT / "configs" / config))
    assert cfg.model.attention_impl == "plain"
    cfg.model.attention_impl = "cudnn"
    with pytest.raises(ConfigError, match=r"model\.attention_impl.*'xla' or 'plain' off GPU") as e:
        validate(cfg, 1)
    assert e.value.key == "model.attention_impl"
    cfg.model.attention_impl = "flash"
    with pytest.raises(ConfigError, match=r"model\.attention_impl.*one of \['plain', 'xla', 'cudnn'\]"):
        validate(cfg, 1)


def test_config_validation_accepts_xla_on_cpu():
    cfg = load_config_file(str(ROOT / "configs" / "gpt_char.py"))
    cfg.model.attention_impl = "xla"
    validate(cfg, 1)


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny_on_cpu():
    """benchmarks/gpu.py --tiny: the whole script (the trainer's step with FSDP over 4 fake CPU
    devices, SmolLM2 generation at batch 1 and 16) here, so a GPU session does not die on a typo."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert rows[0] == "| what | tok/s | MFU | notes |" and len(rows) == 5 and "FAILED" not in run.stdout
    train, batch1, batch16 = rows[2:]
    assert train.startswith("| train: GPT ") and " tok/s | " in train and "% |" in train
    assert "batch 1," in batch1 and "batch 16," in batch16 and " tok/s | " in batch16
