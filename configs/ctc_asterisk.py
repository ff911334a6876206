"""A CTC speech recognizer on the Asterisk PBX's English prompts (one speaker, 8 kHz), split by utterance.

    python -m bigmodel_jax.data.asterisk fetch
    python -m bigmodel_jax.train --config configs/ctc_asterisk.py --workdir runs/ctc_asterisk

80 log-mel channels every 10 ms (25 ms windows), computed in the step; Whisper's convolutional front
(the second conv halves the frame rate: 20 ms per position), 4 pre-LN blocks of width 144; a linear head
over 38 characters and CTC's blank; SpecAugment (2 bands of up to 15 channels, 2 spans of up to 5% of the
utterance) in training. Utterances longer than 20 s are left out of every split.

Expected (seed 0, 2026-12-04; docs/speech.md): best validation CER 0.546 at step 1,750; test CER 0.569,
WER 0.992 (nearest training utterance 0.822 / 0.980, a constant transcript 0.926 / 1.054); 38 min on 2 busy cores.
"""

import ml_collections

from bigmodel_jax.models.lora import lora_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "ctc"
    c.init_from = ""
    c.compilation_cache_dir = "~/.cache/bigmodel_jax/jax_cache"
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0,  # 0 = from the task: CTC's blank and 37 characters
        sample_rate=8000, n_fft=200, hop=80, num_mels=80,
        num_layers=4, width=144, num_heads=4, mlp_dim=576, max_frames=1000, conv_stride=2, norm_eps=1e-5,
        dropout=0.1, dtype="float32", remat="none", attention_impl="plain", scan_layers=False,
        spec_augment=ml_collections.ConfigDict(dict(freq_masks=2, freq_width=15, time_masks=2, time_ratio=0.05)),
    ))
    c.model.lora = lora_config()
    c.data = ml_collections.ConfigDict(dict(
        tfds_dir="~/.cache/bigmodel_jax/tfds",
        path="",  # "" = where `python -m bigmodel_jax.data.asterisk fetch` unpacks; "/" after apt-get install
        max_seconds=20.0,
    ))
    c.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, schedule="cosine", warmup_steps=200, min_lr_ratio=0.05,
        b1=0.9, b2=0.98, eps=1e-8, momentum=0.9, weight_decay=0.01, clip_norm=1.0, l1=0.0, l2=0.0,
        dp_clip=0.0, dp_noise=0.0, dp_delta=0.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=2000, batch_size=16, grad_accum_steps=1,
        log_every=50, eval_every=250, eval_batches=1,  # unused: every validation utterance is decoded
        checkpoint_every=250, keep_checkpoints=2,
        eval_metric="cer", patience=0, restore_best=True,
        on_nonfinite="stop", max_nonfinite_skips=10,
    ))
    c.parallel = ml_collections.ConfigDict(dict(mode="jit", data=-1, fsdp=1, tensor=1))
    if variant == "tiny":  # the tests' end-to-end run
        c.model.update(num_layers=1, width=32, num_heads=2, mlp_dim=64)
        c.data.max_seconds = 4.0
        c.train.update(num_steps=30, batch_size=8, eval_every=30, checkpoint_every=30, log_every=10)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of ctc_asterisk.py; valid: '', 'tiny'")
    return c
