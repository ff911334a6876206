"""LoRA: fresh adapters change nothing, merging changes nothing, a step trains the adapters alone."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bigmodel_jax import tasks
from bigmodel_jax.config import apply_overrides, load_config_file
from bigmodel_jax.errors import ConfigError
from bigmodel_jax.models import lora
from tests.conftest import ROOT, tiny_config


def small(config: str, rank: int, **overrides):
    cfg = load_config_file(str(ROOT / "configs" / config))
    sets = {"model.num_layers": 2, "model.width": 32, "model.num_heads": 4, "model.mlp_dim": 64,
            "model.max_len": 16, "model.vocab_size": 60, "model.dtype": "float32", "model.lora.rank": rank,
            **overrides}
    return apply_overrides(cfg, [f"{k}={v}" for k, v in sets.items()])


def outputs(model, config: str, ids_bt):
    if config == "gpt_char.py":
        return model(ids_bt)[0]
    return model(ids_bt, jnp.zeros_like(ids_bt), jnp.ones_like(ids_bt))  # the BERT classifier's logits


@pytest.mark.parametrize("config,extra", [("gpt_char.py", {}), ("bert_cls.py", {"model.num_outputs": 3})])
def test_fresh_adapters_compute_exactly_the_base_and_merging_changes_nothing(config, extra):
    ids_bt = jnp.asarray(np.random.default_rng(0).integers(1, 60, (2, 16)), jnp.int32)
    base = tasks.build_model(small(config, 0, **extra), nnx.Rngs(params=0))
    adapted = tasks.build_model(small(config, 4, **extra), nnx.Rngs(params=0))
    adapters, rest = lora.split(nnx.to_pure_dict(nnx.state(adapted, nnx.Param)))
    assert len(adapters) == 2 * 6 * 2  # A and B on query, key, value, out, up, down of 2 blocks
    base_flat = lora.split(nnx.to_pure_dict(nnx.state(base, nnx.Param)))[1]
    assert rest.keys() == base_flat.keys() and all(np.array_equal(rest[k], base_flat[k]) for k in rest)
    np.testing.assert_array_equal(outputs(adapted, config, ids_bt), outputs(base, config, ids_bt))  # B = 0

    graphdef, state = nnx.split(adapted, nnx.Param)
    rng = np.random.default_rng(1)
    trained = {k: (rng.normal(0, 0.05, v.shape).astype(np.float32) if k[-1] == "b" else v)
               for k, v in adapters.items()}  # as if training had moved B
    nnx.replace_by_pure_dict(state, lora.join(trained, rest))
    moved = nnx.merge(graphdef, state)
    before = outputs(moved, config, ids_bt)
    assert float(jnp.abs(before - outputs(base, config, ids_bt)).max()) > 1e-3
    merged = lora.merge(moved)
    np.testing.assert_allclose(outputs(merged, config, ids_bt), before, rtol=1e-5, atol=1e-5)
    merged_params = nnx.to_pure_dict(nnx.state(merged, nnx.Param))  # an ordinary model's: exports, loads as one
    assert jax.tree.structure(merged_params) == jax.tree.structure(nnx.to_pure_dict(nnx.state(base, nnx.Param)))


def test_a_train_step_moves_only_the_adapters_and_only_they_hold_optimizer_state(tfds_dir, tmp_path):
    from bigmodel_jax import sharding, train

    cfg = tiny_config(tfds_dir, **{"model.lora.rank": 2, "model.lora.targets": "attn/(query|value)$",
                                   "optim.name": "adamw", "optim.weight_decay": 0.1})
    task = tasks.get(cfg.task)
    data = task.make_data(cfg, tmp_path)
    cfg.model.update(data.model_overrides)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    graphdef, params, opt_state, param_sh, opt_sh, tx, schedule = train.init_state(cfg, task, mesh)
    adapters, base = lora.split(jax.tree.map(np.asarray, params))
    assert {k[-3] for k in adapters} == {"query", "value"}
    adapter_size = sum(v.size for v in adapters.values())
    state_size = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim > 0)
    assert state_size == 2 * adapter_size  # Adam's two moments, of the adapters alone

    step = train.make_train_step(graphdef, task, tx, schedule, cfg, param_sh, opt_sh, mesh)
    batch = next(iter(data.train))
    for i in range(2):
        params, opt_state, metrics = step(params, opt_state, batch, i)
    new_adapters, new_base = lora.split(jax.tree.map(np.asarray, params))
    assert all(np.array_equal(new_base[k], base[k]) for k in base)  # frozen, weight decay included
    assert all(not np.array_equal(new_adapters[k], adapters[k]) for k in adapters if k[-1] == "b")
    assert np.isfinite(float(metrics["loss"]))


def test_bad_lora_settings_are_refused_with_what_to_fix(tfds_dir):
    from bigmodel_jax import config as config_lib

    with pytest.raises(ConfigError, match="model.lora.rank"):
        config_lib.validate(tiny_config(tfds_dir, **{"model.lora.rank": -1}), 1)
    with pytest.raises(ConfigError, match="regular expression"):
        config_lib.validate(tiny_config(tfds_dir, **{"model.lora.rank": 2, "model.lora.targets": "attn/(q"}), 1)
    with pytest.raises(ConfigError, match="blocks/0/attn/query"):  # matches nothing: the paths there are
        tasks.abstract_model(small("gpt_char.py", 2, **{"model.lora.targets": "qkv_proj"}))


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_lora_finetunes_from_a_workdir_keeps_its_base_and_loads_merged(tfds_dir, tmp_path):
    """The trainer end to end: a base run, then LoRA from it (init_from): the checkpoint's base
    weights are the source's, bit for bit; the run reloads with its adapters, and as an init_from
    source it hands over the merged weights (what the adapted model computes)."""
    from bigmodel_jax import train, transfer

    train.train(tiny_config(tfds_dir, **{"train.num_steps": 6, "train.checkpoint_every": 6}), tmp_path / "base")
    cfg = tiny_config(tfds_dir, **{"train.num_steps": 6, "train.checkpoint_every": 6, "model.lora.rank": 2,
                                   "init_from": str(tmp_path / "base"), "optim.lr": 3e-2})
    result = train.train(cfg, tmp_path / "lora")
    assert result.step == 6 and all(np.isfinite(v) for v in result.train_losses.values())
    source = transfer.source_params(str(tmp_path / "base"))
    model, saved_cfg, step = transfer.load_trained(tmp_path / "lora")
    assert step == 6 and saved_cfg.model.lora.rank == 2
    adapters, rest = lora.split(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert adapters and all(np.array_equal(np.asarray(v), source["/".join(map(str, k))]) for k, v in rest.items())
    ids_bt = jnp.asarray(np.random.default_rng(0).integers(1, 30, (2, 16)), jnp.int32)
    adapted_logits = model(ids_bt)[0]
    merged = transfer.source_params(str(tmp_path / "lora"))
    assert not any("lora" in k for k in merged)
    kernel = "blocks/0/attn/query/kernel"
    assert not np.array_equal(merged[kernel], source[kernel])  # the adapters' update is in it
    np.testing.assert_allclose(lora.merge(model)(ids_bt)[0], adapted_logits, rtol=1e-5, atol=1e-5)
    # summary.json's sizes: the LoRA run trains the adapters alone, and Adam holds two moments of them
    base, adapted = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("base", "lora"))
    n_adapters = sum(v.size for v in adapters.values())
    assert adapted["trained_params"] == n_adapters and base["trained_params"] == base["params"]
    assert adapted["params"] == base["params"] + n_adapters
    assert 8 * n_adapters <= adapted["optimizer_bytes"] < 8 * n_adapters + 64  # + Adam's step counts
    assert base["optimizer_bytes"] >= 8 * base["params"] and adapted["peak_rss_mb"] > 0


def test_a_classifiers_fresh_head_trains_beside_the_adapters():
    cfg = small("bert_cls.py", 4, **{"model.num_outputs": 3})
    _, params, _ = tasks.abstract_model(cfg)
    train_part, frozen = lora.split(params, lora.trainable(cfg))
    named = {"/".join(map(str, k)) for k in train_part}
    assert {"head/kernel", "head/bias"} <= named and all(k.startswith("head/") or "/lora/" in k for k in named)
    assert "bert/blocks/0/attn/query/kernel" in {"/".join(map(str, k)) for k in frozen}
    assert lora.trainable(small("bert_cls.py", 0)) is None  # no adapters: everything trains


def test_a_lora_run_resumes_exactly(tfds_dir, tmp_path):
    """The optimizer state holds the adapters' moments alone (masked nodes for the base): a run
    resumed from step 3 ends where the unbroken run did."""
    import shutil

    from bigmodel_jax import train

    over = {"train.num_steps": 9, "train.checkpoint_every": 3, "train.keep_checkpoints": 5, "model.lora.rank": 2}
    straight = train.train(tiny_config(tfds_dir, **over), tmp_path)
    for step in (6, 9):
        shutil.rmtree(tmp_path / "checkpoints" / str(step))
    resumed = train.train(tiny_config(tfds_dir, **over), tmp_path)
    assert sorted(resumed.train_losses) == [4, 5, 6, 7, 8, 9]
    assert resumed.train_losses[9] == straight.train_losses[9]


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [{"parallel.data": 2, "parallel.fsdp": 2, "parallel.tensor": 2},
                                  {"parallel.mode": "pmap", "parallel.data": -1}])
def test_lora_losses_on_a_mesh_and_in_pmap_mode_equal_one_device(tfds_dir, tmp_path, mesh):
    """Adapters are sharded like their layer (A on its input axis, B on its output axis) and the
    masked optimizer state like the adapters: 8 fake devices give one device's losses."""
    from bigmodel_jax import train

    par = {"model.width": 64, "model.num_heads": 8, "model.mlp_dim": 128, "train.num_steps": 6,
           "train.eval_every": 6, "train.checkpoint_every": 6, "model.lora.rank": 4, "optim.lr": 1e-2}
    one = train.train(tiny_config(tfds_dir, **par, **{"parallel.data": 1}), tmp_path / "one",
                      devices=jax.devices()[:1])
    many = train.train(tiny_config(tfds_dir, **par, **mesh), tmp_path / "many")
    got, want = ([r.train_losses[s] for s in sorted(r.train_losses)] for r in (many, one))
    assert len(got) == 6 and want[-1] < want[0]
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_adapter_dropout_acts_on_the_adapters_alone_and_only_in_training():
    ids_bt = jnp.asarray(np.random.default_rng(0).integers(1, 60, (2, 16)), jnp.int32)
    base = tasks.build_model(small("gpt_char.py", 0), nnx.Rngs(params=0))
    model = tasks.build_model(small("gpt_char.py", 4, **{"model.lora.dropout": 0.5}), nnx.Rngs(params=0))
    want = base(ids_bt)[0]
    # B = 0: whatever the dropout draws, the adapters add nothing (it never touches the base's input)
    np.testing.assert_array_equal(model(ids_bt, rngs=nnx.Rngs(dropout=1))[0], want)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, lora.Adapter):
            m.b[...] = np.random.default_rng(2).normal(0, 0.05, m.b.shape).astype(np.float32)
    evaluated = model(ids_bt)[0]
    np.testing.assert_array_equal(evaluated, model(ids_bt)[0])  # evaluation: deterministic
    one, two = model(ids_bt, rngs=nnx.Rngs(dropout=1))[0], model(ids_bt, rngs=nnx.Rngs(dropout=2))[0]
    assert float(jnp.abs(one - two).max()) > 1e-4 and float(jnp.abs(one - evaluated).max()) > 1e-4
    no_dropout = tasks.build_model(small("gpt_char.py", 4), nnx.Rngs(params=0))
    nnx.update(no_dropout, nnx.state(model, nnx.Param))
    np.testing.assert_allclose(no_dropout(ids_bt)[0], evaluated, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="model.lora.dropout"):
        from bigmodel_jax import config as config_lib

        config_lib.validate(small("gpt_char.py", 4, **{"model.lora.dropout": 1.0}), 1)


def test_a_bf16_frozen_base_trains_resumes_and_loads(tfds_dir, tmp_path):
    """model.lora.base_dtype=bfloat16: the frozen base is stored (and checkpointed) in bf16, the
    adapters stay f32, param_bytes shrink, and a resumed run ends where the unbroken one did."""
    import shutil

    from bigmodel_jax import train, transfer

    over = {"train.num_steps": 4, "train.checkpoint_every": 2, "train.keep_checkpoints": 3, "model.lora.rank": 2,
            "model.lora.base_dtype": "bfloat16"}
    straight = train.train(tiny_config(tfds_dir, **over), tmp_path / "bf16")
    assert all(np.isfinite(v) for v in straight.train_losses.values())
    model, _, _ = transfer.load_trained(tmp_path / "bf16")
    adapters, base = lora.split(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert {v.dtype for v in base.values()} == {jnp.dtype(jnp.bfloat16)}
    assert {v.dtype for v in adapters.values()} == {jnp.dtype(jnp.float32)}
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert summary["param_bytes"] == 2 * (summary["params"] - summary["trained_params"]) + 4 * summary["trained_params"]
    shutil.rmtree(tmp_path / "bf16" / "checkpoints" / "4")
    resumed = train.train(tiny_config(tfds_dir, **over), tmp_path / "bf16")
    assert resumed.train_losses[4] == straight.train_losses[4]
    with pytest.raises(ConfigError, match="model.lora.base_dtype"):
        from bigmodel_jax import config as config_lib

        config_lib.validate(tiny_config(tfds_dir, **{**over, "model.lora.base_dtype": "float16"}), 1)
