"""Translate Bible verses between English and Japanese with a small T5 (v1.1: GEGLU, untied head),
trained from scratch on the 30,366 training verse pairs of the World English Bible and the 1887
Japanese Bible (whole books held out: validation Ruth, Jonah, Titus; test Esther, Amos, Philippians,
James), one joint sentencepiece vocabulary of 8,000 pieces.

    python -m bigmodel_jax.train --config configs/t5_translate.py:ja_en --workdir runs/t5_ja_en
    python -m bigmodel_jax.train --config configs/t5_translate.py:en_ja --workdir runs/t5_en_ja

Validation decodes 64 held-out verses greedily each evaluation (sacrebleu BLEU and chrF; Japanese
output's BLEU on characters); the test split (525 verses) is decoded once at the end.

Expected: not yet measured at this config's 6,000 steps. At 800 steps (ja_en, --config.train.num_steps=800,
2026-12-02, 2-core CPU) test BLEU 0.007 and chrF 0.144 (greedy; 4 beams 0.010 / 0.139), below the
retrieval baseline's 0.050 / 0.220 (python -m bigmodel_jax.seq2seq_eval): docs/t5.md. en_ja at 400
steps (a vocabulary shared with the plays; python -m experiments.span_pretraining, its random-init
arm, 2 seeds): test chrF 0.018, character BLEU 0.006, below retrieval's 0.088 / 0.075.
"""

import ml_collections

from bigmodel_jax.models.lora import lora_config


def get_config(variant: str = "ja_en") -> ml_collections.ConfigDict:
    if variant not in ("ja_en", "en_ja"):
        raise ValueError(f"unknown variant {variant!r} of t5_translate.py; valid: 'ja_en', 'en_ja'")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "seq2seq"
    c.init_from = ""  # a seq2seq workdir of ours
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the tokenizer
        width=256, num_layers=4, num_decoder_layers=4, num_heads=4, head_dim=64, mlp_dim=768,
        activation="geglu",  # "relu" with tie_embeddings=True is T5 v1.0
        tie_embeddings=False, rel_buckets=32, rel_max_distance=128, norm_eps=1e-6,
        dropout=0.1, label_smoothing=0.1, dtype="bfloat16", remat="none",
        attention_impl="plain",  # "xla" / "cudnn": jax.nn.dot_product_attention (cudnn: GPU flash attention)
        max_len=128,  # the decoder's KV cache when sampling: more than data.target_len (it holds the start token)
    ))
    c.model.lora = lora_config()  # LoRA adapters (models/lora.py): rank 0 = none
    c.data = ml_collections.ConfigDict(dict(
        dataset=f"bible_{variant}", tfds_dir="~/.cache/bigmodel_jax/tfds", path="", plays_dir="",
        train_file="", validation_file="", test_file="",
        tokenizer_dir="", vocab_size=8000, spm_model_type="unigram",
        vocab_also="",  # a dataset whose training texts a new vocabulary is also trained on (configs/t5_span.py:bible)
        source_len=64, target_len=64,  # ~97% of verses fit whole in both languages; longer ones are cut
        max_train_examples=0, eval_examples=64,
        on_bad_record="stop",  # a bad line of a user's pair file: "stop" (naming it) or "skip" (counted)
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, schedule="cosine", warmup_steps=300, min_lr_ratio=0.1,
        b1=0.9, b2=0.98, eps=1e-9, momentum=0.9, weight_decay=0.01, clip_norm=1.0, l1=0.0, l2=0.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=6000, batch_size=32, grad_accum_steps=1, log_every=50, eval_every=500, eval_batches=2,
        checkpoint_every=500, keep_checkpoints=2, eval_metric="chrf", patience=0, restore_best=True,
        on_nonfinite="stop", max_nonfinite_skips=10,  # a NaN/Inf step: stop there, or skip it (README: Faults)
    ))
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))
    return c
