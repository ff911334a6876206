"""Masked-LM pretraining of a small BERT on the Shakespeare plays (WordPiece trained on the train split).

    python -m bigmodel_jax.train --config configs/bert_mlm.py --workdir runs/bert_mlm
    python -m bigmodel_jax.embed --model runs/bert_mlm "To be, or not to be" "Whether 'tis nobler in the mind"

Expected (2-core CPU, 17.5 min, ~5,000 tokens/s in bf16): validation masked-token loss 6.05 and
masked-token accuracy 0.137 at step 1200 (measured 2026-11-29: 6.0541 / 0.1369; 4.8 M tokens seen,
4.3 passes over the 1.12 M WordPiece tokens of the training plays). That is early in BERT's
training curve: the budget is what a laptop affords, not what BERT-mini was trained with.
"""

import ml_collections

from bigmodel_jax.models.lora import lora_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "mlm"
    c.init_from = ""  # a workdir of ours or a Hugging Face BERT directory (its shape wins over model.*)
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"

    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the tokenizer
        num_layers=4, width=256, num_heads=4, mlp_dim=1024, max_len=128, type_vocab_size=2,
        activation="gelu", norm_eps=1e-12,
        dropout=0.1,  # BERT's: embeddings, attention probabilities, each residual branch
        dtype="bfloat16",
        remat="none",  # "full" or "dots_saveable": recompute activations in the backward pass to save memory
        attention_impl="plain",  # "xla" / "cudnn": jax.nn.dot_product_attention (cudnn: GPU flash attention)
        scan_layers=False,  # True: one lax.scan over the stacked blocks (docs/speed.md: its compile and step cost)
        num_outputs=0,  # finetuning heads: 0 = from the labeled data
    ))
    c.model.lora = lora_config()  # LoRA adapters (models/lora.py): rank 0 = none
    c.data = ml_collections.ConfigDict(dict(
        plays_dir="", tfds_dir="~/.cache/bigmodel_jax/tfds",
        tokenizer_dir="",  # "" = the init_from source's, else a WordPiece vocabulary trained here
        vocab_size=8192,  # of a trained WordPiece vocabulary
        seq_len=128, mask_rate=0.15,
        # finetuning datasets (unused by MLM)
        dataset="", path="", train_file="", validation_file="", test_file="", max_train_examples=0,
        on_bad_record="stop",  # a bad line of a user's CoNLL / SQuAD file: "stop" (naming it) or "skip" (counted)
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, schedule="cosine", warmup_steps=150, min_lr_ratio=0.1,
        b1=0.9, b2=0.98, eps=1e-6, momentum=0.9, weight_decay=0.01, clip_norm=1.0, l1=0.0,
        l2=0.0,  # penalties on matrices in the loss: l1 * sum|p|, (l2/2) * sum(p^2) (coupled L2)
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=1200, batch_size=32, grad_accum_steps=1,
        log_every=50, eval_every=200, eval_batches=20,
        checkpoint_every=400, keep_checkpoints=2,
        eval_metric="loss", patience=0, restore_best=False,
        on_nonfinite="stop", max_nonfinite_skips=10,  # a NaN/Inf step: stop there, or skip it (README: Faults)
    ))
    # mode "jit": one SPMD program over Mesh(data, fsdp, tensor), or "pmap": data parallel only.
    # The sizes multiply to the device count; one may be -1 = the rest (README: Scaling out).
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))
    if variant:
        raise ValueError(f"unknown variant {variant!r} of bert_mlm.py")
    return c
