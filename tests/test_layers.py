import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax.models import attention, blocks, layers
from bigmodel_jax.models.gpt import GPT, count_params


def gpt_cfg(**kw):
    base = dict(vocab_size=50, num_layers=2, width=32, num_heads=4, num_kv_heads=0, mlp_dim=64, max_len=24,
                positions="learned", rope_theta=10000.0, norm="layernorm", activation="gelu", use_bias=True,
                tie_embeddings=True, dropout=0.0, dtype="float32")
    base.update(kw)
    return ml_collections.ConfigDict(base)


VARIANTS = {
    "gpt2": {},
    "llama": dict(positions="rope", norm="rmsnorm", activation="swiglu", use_bias=False, tie_embeddings=False,
                  num_kv_heads=2),
    "bf16": dict(dtype="bfloat16"),
}


def test_layer_shapes():
    rngs = nnx.Rngs(0)
    x = jnp.ones((2, 5, 32))
    assert layers.Dense(32, 7, ("embed", "mlp"), rngs=rngs)(x).shape == (2, 5, 7)
    for kind in ("layernorm", "rmsnorm"):
        y = layers.Norm(32, kind)(jax.random.normal(jax.random.PRNGKey(0), x.shape) * 3 + 1)
        assert y.shape == x.shape and y.dtype == jnp.float32
        np.testing.assert_allclose(np.sqrt(np.mean(np.square(np.asarray(y)), -1)), 1.0, rtol=1e-3)
    for act in ("gelu", "swiglu"):
        assert blocks.MLP(32, 64, act, rngs=rngs)(x).shape == x.shape
    attn = attention.Attention(32, 4, 2, rngs=rngs, causal=True, use_rope=True)
    y, cache = attn(x, jnp.broadcast_to(jnp.arange(5), (2, 5)))
    assert y.shape == x.shape and cache is None
    blk = blocks.Block(32, 4, 4, 64, rngs=rngs, causal=False)
    assert blk(x, jnp.zeros((2, 5), jnp.int32))[0].shape == x.shape
    emb = layers.Embed(50, 32, ("vocab", "embed"), rngs=rngs)
    assert emb(jnp.zeros((2, 5), jnp.int32)).shape == (2, 5, 32)
    assert emb.attend(x, jnp.float32).shape == (2, 5, 50)


def test_params_carry_logical_axes():
    model = GPT(gpt_cfg(), rngs=nnx.Rngs(0))
    specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    assert tuple(specs["token_embed"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["blocks"][0]["mlp"]["up"]["kernel"]) == ("embed", "mlp")
    assert tuple(specs["blocks"][0]["attn"]["out"]["kernel"]) == ("heads", "embed")


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_count_matches_model(variant):
    cfg = gpt_cfg(**VARIANTS[variant])
    model = GPT(cfg, rngs=nnx.Rngs(0))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == count_params(cfg)


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant):
    """Changing a future token never changes an earlier logit."""
    model = GPT(gpt_cfg(**VARIANTS[variant]), rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 50)
    changed = tokens.at[:, 10:].set((tokens[:, 10:] + 7) % 50)
    a, _ = model(tokens)
    b, _ = model(changed)
    np.testing.assert_array_equal(np.asarray(a[:, :10]), np.asarray(b[:, :10]))
    assert not np.allclose(np.asarray(a[:, 10:]), np.asarray(b[:, 10:]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_decoding_matches_full_forward(variant):
    cfg = gpt_cfg(**VARIANTS[variant])
    model = GPT(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 50)
    full, _ = model(tokens)
    cache = model.init_cache(2, 16, dtype=jnp.float32)
    logits, cache = model(tokens[:, :5], cache=cache, cache_index=jnp.asarray(0))  # prefill
    steps = [logits]
    for i in range(5, 12):  # one token at a time
        logits, cache = model(tokens[:, i:i + 1], cache=cache, cache_index=jnp.asarray(i))
        steps.append(logits)
    tol = 2e-2 if cfg.dtype == "bfloat16" else 1e-5
    np.testing.assert_allclose(np.concatenate(steps, axis=1), np.asarray(full), atol=tol, rtol=tol)
    # a prefill gives the same logits and cache whether it is told (prefill=True: it attends over
    # its own 5 keys) or writes at index 0 given as a Python int or as an array (over all 16 slots)
    outs = [model(tokens[:, :5], cache=model.init_cache(2, 16, dtype=jnp.float32), **kw)
            for kw in ({"prefill": True}, {"cache_index": 0}, {"cache_index": jnp.asarray(0)})]
    for logits, cache in outs[1:]:
        np.testing.assert_allclose(logits, outs[0][0], atol=tol, rtol=tol)
        np.testing.assert_allclose(cache[-1]["k"], outs[0][1][-1]["k"], atol=tol, rtol=tol)


@pytest.mark.parametrize("d_in,d_out", [(8, 5), (8, 8), (5, 8)], ids=["narrow-out", "square", "wide-out"])
@pytest.mark.parametrize("w_transposed", [False, True], ids=["w", "wT"])
def test_matmul_gradients_match_autodiff(d_in, d_out, w_transposed):
    """The custom VJP gives the plain dot's gradients in f32, on both of its dW layouts (Xᵀ·G when
    the input is at most as wide as the output, Gᵀ·X otherwise) and for both weight layouts."""
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k[0], (2, 3, d_in))
    w = jax.random.normal(k[1], (d_in, d_out))
    g = jax.random.normal(k[2], (2, 3, d_out))
    w_stored = w.T if w_transposed else w
    ours = jax.grad(lambda x, w: jnp.sum(layers.matmul(x, w, jnp.float32, w_transposed=w_transposed) * g),
                    argnums=(0, 1))(x, w_stored)
    ref = jax.grad(lambda x, w: jnp.sum(jnp.einsum("bti,io->bto", x, w.T if w_transposed else w,
                                                   precision="highest") * g), argnums=(0, 1))(x, w_stored)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d_in,d_out", [(64, 48), (64, 64), (48, 64)], ids=["narrow-out", "square", "wide-out"])
@pytest.mark.parametrize("w_transposed", [False, True], ids=["w", "wT"])
def test_bf16_matmul_forward_and_gradients_are_close_to_f32(d_in, d_out, w_transposed):
    """In bf16 the forward and both gradients stay within bf16's precision of the f32 result
    (relative error of the whole tensor ~ 2^-8 per operand rounding); dX comes back in bf16, dW
    in f32 (it updates f32 params)."""
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    x = jax.random.normal(k[0], (4, 16, d_in))
    w = jax.random.normal(k[1], (d_out, d_in) if w_transposed else (d_in, d_out)) / np.sqrt(d_in)
    g = jax.random.normal(k[2], (4, 16, d_out))

    def run(dtype):
        def f(x, w):
            return jnp.sum(layers.matmul(x.astype(dtype), w, dtype, w_transposed=w_transposed) * g)
        y = layers.matmul(x.astype(dtype), w, dtype, w_transposed=w_transposed)
        return (y, *jax.grad(f, argnums=(0, 1))(x.astype(dtype), w))

    (y16, dx16, dw16), (y32, dx32, dw32) = run(jnp.bfloat16), run(jnp.float32)
    assert y16.dtype == jnp.float32 and dx16.dtype == jnp.bfloat16 and dw16.dtype == jnp.float32
    for low, high in ((y16, y32), (dx16, dx32), (dw16, dw32)):
        low, high = np.asarray(low, np.float32), np.asarray(high)
        rel = np.linalg.norm(low - high) / np.linalg.norm(high)
        assert rel < 1e-2, rel  # measured 2.3e-3 to 3.0e-3 (bf16 keeps 8 bits of mantissa: 2^-8 = 3.9e-3)


def test_gqa_matches_repeated_kv_heads():
    """Grouped-query attention equals full MHA whose K/V heads are the GQA heads repeated."""
    rngs = nnx.Rngs(0)
    gqa = attention.Attention(32, 4, 2, rngs=rngs, causal=True, use_rope=False)
    mha = attention.Attention(32, 4, 4, rngs=nnx.Rngs(1), causal=True, use_rope=False)
    for name in ("query", "out"):
        getattr(mha, name).kernel[...] = getattr(gqa, name).kernel[...]
        getattr(mha, name).bias[...] = getattr(gqa, name).bias[...]
    for name in ("key", "value"):
        k = getattr(gqa, name).kernel[...].reshape(32, 2, 8)
        b = getattr(gqa, name).bias[...].reshape(2, 8)
        getattr(mha, name).kernel[...] = jnp.repeat(k, 2, axis=1).reshape(32, 32)
        getattr(mha, name).bias[...] = jnp.repeat(b, 2, axis=0).reshape(32)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 32))
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
    np.testing.assert_allclose(gqa(x, pos)[0], mha(x, pos)[0], rtol=1e-5, atol=1e-5)


def test_padding_mask_hides_keys():
    attn = attention.Attention(32, 4, 4, rngs=nnx.Rngs(0), causal=False, use_rope=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 32))
    pos = jnp.zeros((1, 6), jnp.int32)
    mask = jnp.array([[True] * 4 + [False] * 2])[:, None, :]  # [B, 1(query), S]
    y1, _ = attn(x, pos, mask_bts=mask)
    y2, _ = attn(x.at[:, 4:].set(5.0), pos, mask_bts=mask)
    np.testing.assert_allclose(y1[:, :4], y2[:, :4], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_bf16_gradients_run_with_a_wide_vocab(tie):
    """XLA:CPU has no bf16 x bf16 -> f32 dot outside its fast path; the weight-gradient layouts
    must keep every dot on it (a vocab wider than the model once hit the slow path and failed)."""
    cfg = gpt_cfg(dtype="bfloat16", vocab_size=2048, width=64, mlp_dim=256, tie_embeddings=tie)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (4, 24), 0, 2048)

    @jax.jit
    def grads(p):
        def loss(p):
            logits, _ = nnx.merge(graphdef, p)(tokens)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0])
        return jax.grad(loss)(p)

    g = grads(params)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(g))
