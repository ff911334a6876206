"""Each bad config value fails before anything compiles, with a message naming the key."""

import pytest

from bigmodel_jax.config import ConfigError, parse_config_args, validate
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "gpt_char.py")


def parse(*overrides):
    return parse_config_args(["--config", CONFIG, *overrides])[0]


def test_config_files_load_and_validate():
    for spec in (CONFIG, CONFIG + ":baby", str(ROOT / "configs" / "gpt_bpe.py")):
        cfg, rest = parse_config_args(["--config", spec, "--workdir", "x"])
        assert rest == ["--workdir", "x"]
        validate(cfg, num_devices=1)


def test_overrides_parse_by_type():
    cfg = parse("--config.train.num_steps=7", "--config.optim.lr=0.5", "--config.model.dtype=float32",
                "--config.model.use_bias=false", "--config.seed", "3")
    assert (cfg.train.num_steps, cfg.optim.lr, cfg.model.dtype, cfg.model.use_bias, cfg.seed) == (7, 0.5, "float32", False, 3)


def test_unknown_key():
    with pytest.raises(ConfigError, match=r"train.num_stepz.*unknown key.*train.num_steps"):
        parse("--config.train.num_stepz=3")
    with pytest.raises(ConfigError, match=r"unknown section 'trian'"):
        parse("--config.trian.num_steps=3")


def test_wrong_type():
    with pytest.raises(ConfigError, match=r"train.batch_size.*'twelve'.*expected a int"):
        parse("--config.train.batch_size=twelve")


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match=r"model.num_heads.*= 5.*must divide model.width=128"):
        validate(parse("--config.model.num_heads=5"), num_devices=1)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError, match=r"model.num_kv_heads.*must divide model.num_heads=4"):
        validate(parse("--config.model.num_kv_heads=3"), num_devices=1)


def test_batch_must_divide_data_shards():
    with pytest.raises(ConfigError, match=r"train.batch_size.*= 12.*divide over the 8 data shards"):
        validate(parse("--config.train.batch_size=12"), num_devices=8)
    with pytest.raises(ConfigError, match=r"train.grad_accum_steps.*must divide train.batch_size=12"):
        validate(parse("--config.train.grad_accum_steps=5"), num_devices=1)


def test_mesh_must_match_devices():
    with pytest.raises(ConfigError, match=r"parallel.*must equal the 8 devices"):
        validate(parse("--config.parallel.data=2", "--config.parallel.fsdp=2"), num_devices=8)


def test_missing_corpus_folder(tmp_path):
    missing = tmp_path / "no_such_plays"
    with pytest.raises(ConfigError, match=rf"data.plays_dir.*{missing}"):
        validate(parse(f"--config.data.plays_dir={missing}"), num_devices=1)


def test_bad_choice_lists_valid_values():
    with pytest.raises(ConfigError, match=r"model.norm.*'batchnorm'.*\['layernorm', 'rmsnorm'\]"):
        validate(parse("--config.model.norm=batchnorm"), num_devices=1)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no config file at"):
        parse_config_args(["--config", "configs/nope.py"])


def test_train_cli_reports_config_error_before_compiling(tmp_path, capsys, tfds_dir):
    from bigmodel_jax import train

    rc = train.main(["--config", CONFIG, "--workdir", str(tmp_path), "--config.model.num_heads=7"])
    assert rc == 2
    assert "model.num_heads" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def bert_parse(file, *overrides):
    return parse_config_args(["--config", str(ROOT / "configs" / file), *overrides])[0]


def test_bert_config_files_load_and_validate():
    for file in ("bert_mlm.py", "bert_cls.py", "bert_cls.py:play", "bert_cls.py:polarity", "bert_regress.py",
                 "bert_tag.py", "bert_qa.py"):
        validate(bert_parse(file), num_devices=1)


def test_bert_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"data.dataset.*'imdb'.*one of \['plays_genre', 'plays_play', 'polarity'\]"):
        validate(bert_parse("bert_cls.py", "--config.data.dataset=imdb"), num_devices=1)
    with pytest.raises(ConfigError, match=r"init_from.*/no/such/run.*neither"):
        validate(bert_parse("bert_cls.py", "--config.init_from=/no/such/run"), num_devices=1)
    with pytest.raises(ConfigError, match=r"data.seq_len.*at most model.max_len=128"):
        validate(bert_parse("bert_mlm.py", "--config.data.seq_len=256"), num_devices=1)
    with pytest.raises(ConfigError, match=r"data.mask_rate.*0.15"):
        validate(bert_parse("bert_mlm.py", "--config.data.mask_rate=1.5"), num_devices=1)
    with pytest.raises(ConfigError, match=r"train.eval_metric.*'auc'"):
        validate(bert_parse("bert_cls.py", "--config.train.eval_metric=auc"), num_devices=1)
    with pytest.raises(ConfigError, match=r"data.train_file.*CoNLL"):
        validate(bert_parse("bert_tag.py", "--config.data.dataset=conll"), num_devices=1)
    with pytest.raises(ConfigError, match=r"data.tokenizer_dir.*vocab.txt"):
        validate(bert_parse("bert_cls.py", "--config.data.tokenizer_dir=/no/such/dir"), num_devices=1)
    with pytest.raises(ConfigError, match=r"train.eval_metric.*'mse'.*\['loss', 'accuracy'\] for task classify"):
        validate(bert_parse("bert_cls.py", "--config.train.eval_metric=mse"), num_devices=1)
