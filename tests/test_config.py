"""Config files and overrides through ml_collections.config_flags; each bad config value fails
before anything compiles, with a message naming the key."""

import pytest

from bigmodel_jax.config import apply_overrides, parse_config_args, validate
from bigmodel_jax.errors import ConfigError
from tests.conftest import ROOT

CONFIG = str(ROOT / "configs" / "gpt_char.py")


def parse(*overrides):
    return parse_config_args(["--config", CONFIG, *overrides]).config


def test_config_files_load_and_validate():
    for spec in (CONFIG, CONFIG + ":baby", str(ROOT / "configs" / "gpt_bpe.py")):
        cfg, rest, overrides = parse_config_args(["--config", spec, "--workdir", "x"])
        assert rest == ["--workdir", "x"] and overrides == {}
        validate(cfg, num_devices=1)
    assert parse_config_args([f"--config={CONFIG}:baby"]).config.train.num_steps == 2000  # the variant


def test_overrides_parse_by_type():
    parsed = parse_config_args(["--config", CONFIG, "--config.train.num_steps=7", "--config.optim.lr=1",
                                "--config.model.dtype=float32", "--config.model.use_bias=false", "--config.seed", "3"])
    cfg = parsed.config
    assert (cfg.train.num_steps, cfg.optim.lr, cfg.model.dtype, cfg.model.use_bias, cfg.seed) == (
        7, 1.0, "float32", False, 3)
    assert isinstance(cfg.optim.lr, float)  # "1" for a float field is the float 1.0
    assert parsed.overrides == {"train.num_steps": 7, "optim.lr": 1.0, "model.dtype": "float32",
                                "model.use_bias": False, "seed": 3}  # what init_from checks against its source
    cfg.model.extra = 1  # the parsed config is unlocked: the trainer adds what the data decides


def test_flagfile_holds_the_config_and_its_overrides(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text(f"--config={CONFIG}\n--config.model.num_layers=3\n--workdir=runs/from_flagfile\n")
    cfg, rest, overrides = parse_config_args([f"--flagfile={flagfile}", "--config.optim.lr=0.002"])
    assert (cfg.model.num_layers, cfg.optim.lr) == (3, 0.002)
    assert rest == ["--workdir=runs/from_flagfile"] and set(overrides) == {"model.num_layers", "optim.lr"}


def test_programmatic_overrides_use_the_same_parser():
    base = parse()
    cfg = apply_overrides(base, ["model.num_layers=2", "train.restore_best=true"])
    assert (cfg.model.num_layers, cfg.train.restore_best) == (2, True)
    assert base.model.num_layers == 4  # a copy: the base is untouched
    with pytest.raises(ConfigError, match=r"model.num_layerz.*unknown key.*model.num_layers"):
        apply_overrides(base, ["model.num_layerz=2"])
    with pytest.raises(ConfigError, match=r"model.num_layers.*'two'.*expected a int"):
        apply_overrides(base, ["model.num_layers=two"])


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


def test_missing_config_file_unknown_variant_and_no_config():
    with pytest.raises(ConfigError, match="no config file at"):
        parse_config_args(["--config", "configs/nope.py"])
    with pytest.raises(ConfigError, match=r"--config.*:tiny.*unknown variant 'tiny'.*'baby'"):
        parse_config_args([f"--config={CONFIG}:tiny"])
    with pytest.raises(ConfigError, match=r"pass --config configs/"):
        parse_config_args(["--workdir", "x", "--config.model.num_layers=3"])


def test_train_cli_reports_config_error_before_compiling(tmp_path, capsys, tfds_dir):
    from bigmodel_jax import train

    rc = train.main(["--config", CONFIG, "--workdir", str(tmp_path), "--config.model.num_heads=7"])
    assert rc == 2
    assert "model.num_heads" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def bert_parse(file, *overrides):
    return parse_config_args(["--config", str(ROOT / "configs" / file), *overrides]).config


def test_bert_config_files_load_and_validate():
    for file in ("bert_mlm.py", "bert_cls.py", "bert_cls.py:play", "bert_cls.py:polarity", "bert_cls.py:vader_sign",
                 "bert_regress.py", "bert_tag.py", "bert_qa.py"):
        validate(bert_parse(file), num_devices=1)


def test_bert_config_errors_name_the_key():
    with pytest.raises(ConfigError,
                       match=r"data.dataset.*'imdb'.*one of \['plays_genre', 'plays_play', 'polarity', 'vader_sign'\]"):
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
    with pytest.raises(ConfigError,
                       match=r"train.eval_metric.*'mse'.*\['loss', 'accuracy', 'macro_f1'\] for task classify"):
        validate(bert_parse("bert_cls.py", "--config.train.eval_metric=mse"), num_devices=1)


def test_training_loss_and_penalties_are_checked():
    for file in ("bert_cls.py", "vit_digits.py", "vit_mnist.py"):  # vit_mnist inherits vit_digits' train.loss
        assert bert_parse(file).train.loss == "cross_entropy"
    validate(bert_parse("bert_cls.py", "--config.train.loss=mse"), num_devices=1)
    with pytest.raises(ConfigError, match=r"train.loss.*'hinge'.*\['cross_entropy', 'mse'\]") as e:
        validate(bert_parse("bert_cls.py", "--config.train.loss=hinge"), num_devices=1)
    assert e.value.key == "train.loss"
    assert "loss" not in parse().train  # a task that is not classification needs no train.loss
    for key in ("optim.l1", "optim.l2"):
        validate(parse(f"--config.{key}=0.01"), num_devices=1)
        with pytest.raises(ConfigError, match=rf"{key}.*-0.1.*0 \(off\) or a positive") as e:
            validate(parse(f"--config.{key}=-0.1"), num_devices=1)
        assert e.value.key == key
