"""A table of bad configs across every family: each is refused before anything compiles with a
ConfigError naming the key (and saying what would be valid), never a traceback."""

import pytest

from bigmodel_jax.config import parse_config_args, validate
from bigmodel_jax.errors import ConfigError
from tests.conftest import ROOT

GPT, BPE = "gpt_char.py", "gpt_bpe.py"
# (config file[:variant], overrides, the key the error must name[, devices: 1 unless given])
BAD = [
    # GPT: shapes, choices, ranges, types, unknown keys, the mesh
    (GPT, ["model.num_layers=0"], "model.num_layers"),
    (GPT, ["model.width=-8"], "model.width"),
    (GPT, ["model.num_heads=7"], "model.num_heads"),
    (GPT, ["model.num_kv_heads=3"], "model.num_kv_heads"),
    (GPT, ["model.dropout=1.0"], "model.dropout"),
    (GPT, ["model.dropout=-0.1"], "model.dropout"),
    (GPT, ["model.dtype=float16"], "model.dtype"),
    (GPT, ["model.norm=batchnorm"], "model.norm"),
    (GPT, ["model.activation=tanh"], "model.activation"),
    (GPT, ["model.positions=alibi"], "model.positions"),
    (GPT, ["model.remat=some"], "model.remat"),
    (GPT, ["model.max_len=0"], "model.max_len"),
    (GPT, ["model.num_layers=two"], "model.num_layers"),
    (GPT, ["model.nope=1"], "model.nope"),
    (GPT, ["modle.width=64"], "modle.width"),
    (GPT, ["data.tokenizer=word"], "data.tokenizer"),
    (GPT, ["data.seq_len=0"], "data.seq_len"),
    (GPT, ["data.seq_len=4096"], "data.seq_len"),
    (GPT, ["data.plays_dir=/no/such/plays"], "data.plays_dir"),
    (BPE, ["data.bpe_vocab_size=10"], "data.bpe_vocab_size"),
    (GPT, ["optim.name=lamb"], "optim.name"),
    (GPT, ["optim.lr=0"], "optim.lr"),
    (GPT, ["optim.lr=-0.001"], "optim.lr"),
    (GPT, ["optim.lr=fast"], "optim.lr"),
    (GPT, ["optim.warmup_steps=-1"], "optim.warmup_steps"),
    (GPT, ["optim.schedule=linear"], "optim.schedule"),
    (GPT, ["optim.l1=-0.1"], "optim.l1"),
    (GPT, ["optim.l2=-1.0"], "optim.l2"),
    (GPT, ["train.num_steps=0"], "train.num_steps"),
    (GPT, ["train.batch_size=0"], "train.batch_size"),
    (GPT, ["train.batch_size=7", "train.grad_accum_steps=1"], "train.batch_size", 8),  # 8 data shards
    (GPT, ["train.grad_accum_steps=5"], "train.grad_accum_steps"),
    (GPT, ["train.eval_every=0"], "train.eval_every"),
    (GPT, ["train.log_every=0"], "train.log_every"),
    (GPT, ["train.checkpoint_every=0"], "train.checkpoint_every"),
    (GPT, ["train.keep_checkpoints=0"], "train.keep_checkpoints"),
    (GPT, ["train.eval_batches=0"], "train.eval_batches"),
    (GPT, ["train.eval_metric=accuracy"], "train.eval_metric"),
    (GPT, ["train.eval_metric=bleu_score"], "train.eval_metric"),
    (GPT, ["train.patience=-1"], "train.patience"),
    (GPT, ["train.on_nonfinite=ignore"], "train.on_nonfinite"),
    (GPT, ["train.max_nonfinite_skips=0"], "train.max_nonfinite_skips"),
    (GPT, ["parallel.mode=pmap2"], "parallel.mode"),
    (GPT, ["parallel.data=3"], "parallel", 8),
    (GPT, ["parallel.data=3", "parallel.fsdp=-1"], "parallel.fsdp", 8),
    (GPT, ["parallel.mode=pmap", "parallel.data=4", "parallel.tensor=2"], "parallel.mode", 8),
    (GPT, ["init_from=/no/such/run"], "init_from"),
    (GPT + ":nope", [], "--config"),
    ("nope.py", [], "--config"),
    # BERT
    ("bert_cls.py", ["data.dataset=imdb"], "data.dataset"),
    ("bert_cls.py", ["data.tokenizer_dir=/no/such/dir"], "data.tokenizer_dir"),
    ("bert_cls.py", ["train.eval_metric=mse"], "train.eval_metric"),
    ("bert_cls.py", ["train.loss=hinge"], "train.loss"),
    ("bert_cls.py", ["debias.adversary_weight=-1.0"], "debias.adversary_weight"),
    # recommenders
    # speech
    ("ctc_asterisk.py", ["data.max_seconds=60"], "data.max_seconds"),
    ("ctc_asterisk.py", ["model.sample_rate=16000"], "model.sample_rate"),
    ("ctc_asterisk.py", ["data.path=/no/such/dir"], "data.path"),
    ("ctc_asterisk.py", ["model.spec_augment.freq_width=80"], "model.spec_augment"),
    ("ctc_asterisk.py", ["model.hop=400"], "model.hop"),
    ("ctc_asterisk.py", ["train.eval_metric=bleu"], "train.eval_metric"),
    ("sasrec_ml100k.py", ["data.num_negatives=0"], "data.num_negatives"),
    ("sasrec_ml100k.py", ["data.path=/no/such/u.data"], "data.path"),
    ("sasrec_ml100k.py", ["data.seq_len=80"], "data.seq_len"),
    ("sasrec_ml100k.py", ["model.tie_embeddings=False"], "model.tie_embeddings"),
    ("sasrec_ml100k.py", ["train.eval_metric=accuracy"], "train.eval_metric"),
    ("bert4rec_ml100k.py", ["data.mask_rate=1.5"], "data.mask_rate"),
    ("bert_cls.py", ["init_from=/no/such/run"], "init_from"),
    ("bert_mlm.py", ["data.mask_rate=1.5"], "data.mask_rate"),
    ("bert_mlm.py", ["data.seq_len=256"], "data.seq_len"),
    ("bert_mlm.py", ["model.num_heads=3"], "model.num_heads"),
    ("bert_tag.py", ["data.dataset=conll"], "data.train_file"),
    ("bert_regress.py", ["train.eval_metric=accuracy"], "train.eval_metric"),
    ("bert_qa.py", ["train.eval_metric=bleu"], "train.eval_metric"),
    # ViT
    ("vit_digits.py", ["model.patch_size=3"], "model.patch_size"),
    ("vit_digits.py", ["model.image_size=0"], "model.image_size"),
    ("vit_digits.py", ["train.loss=hinge"], "train.loss"),
    ("vit_digits.py", ["train.eval_metric=f1"], "train.eval_metric"),
    ("vit_digits.py", ["model.dropout=2.0"], "model.dropout"),
    ("vit_mnist.py", ["data.path=/no/such/mnist"], "data.path"),
    # T5
    ("t5_translate.py:xx", [], "--config"),
    ("t5_translate.py", ["data.dataset=wmt"], "data.dataset"),
    ("t5_translate.py", ["train.eval_metric=per"], "train.eval_metric"),
    ("t5_translate.py", ["data.target_len=128"], "data.target_len"),
    ("t5_translate.py", ["data.source_len=0"], "data.source_len"),
    ("t5_translate.py", ["model.activation=gelu"], "model.activation"),
    ("t5_translate.py", ["model.label_smoothing=1.0"], "model.label_smoothing"),
    ("t5_translate.py", ["model.remat=some"], "model.remat"),
    ("t5_translate.py", ["model.num_decoder_layers=0"], "model.num_decoder_layers"),
    ("t5_translate.py", ["data.dataset=pairs"], "data.train_file"),
    ("t5_g2p.py", ["data.spm_model_type=bytes"], "data.spm_model_type"),
    ("t5_span.py", ["data.plays_dir=/no/such/plays"], "data.plays_dir"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{c[0]}:{'+'.join(c[1]) or 'file'}" for c in BAD])
def test_a_bad_config_names_its_key(case):
    spec, overrides, key, devices = (*case, 1) if len(case) == 3 else case
    with pytest.raises(ConfigError) as e:
        cfg = parse_config_args([f"--config={ROOT / 'configs' / spec}", *(f"--config.{o}" for o in overrides)]).config
        validate(cfg, num_devices=devices)
    assert e.value.key == key, str(e.value)
    assert len(str(e.value)) > len(f"config key '{key}' = ") + 10  # says what would be valid, not just the key


def test_the_table_is_large_and_covers_every_family():
    assert len(BAD) >= 60
    assert {case[0].split("_")[0] for case in BAD} >= {"gpt", "bert", "vit", "t5"}
