"""Federated learning: the clients of the real plays, and each algorithm against a plain computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bigmodel_jax.config import apply_overrides, load_config_file
from bigmodel_jax.data import fed_shakespeare as fs
from bigmodel_jax.federated import algorithms, clients, run
from bigmodel_jax.models.gpt import GPT
from tests.conftest import ROOT

TEXTS = ["To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
         "Now is the winter of our discontent\nMade glorious summer by this sun of York;\nAnd all the clouds",
         "O Romeo", "Friends, Romans, countrymen, lend me your ears;\nI come to bury Caesar, not to praise him.",
         "Once more unto the breach, dear friends, once more;"]
SEQ = 8


def fed_config(**overrides):
    cfg = load_config_file(str(ROOT / "configs" / "fed_shakespeare.py"))
    base = {"model.num_layers": 1, "model.width": 16, "model.num_heads": 2, "model.mlp_dim": 32,
            "model.max_len": SEQ,
            "data.seq_len": SEQ, "fed.client_lr": 0.5, "fed.micro_batch": 0, "compilation_cache_dir": ""}
    base.update(overrides)
    return apply_overrides(cfg, [f"{k}={v}" for k, v in base.items()])


def encode(text):
    return np.frombuffer(text.encode("latin-1"), np.uint8).astype(np.int32) % 64


def setup(cfg):
    cfg.model.vocab_size = 64
    graphdef, state = nnx.split(GPT(cfg.model, rngs=nnx.Rngs(params=0)), nnx.Param)
    cs = clients.text_clients([f"c{i}" for i in range(len(TEXTS))], TEXTS, encode, SEQ)
    return graphdef, nnx.to_pure_dict(state), cs


def token_loss(graphdef, params, windows, lengths):
    """(NLL sum, count) of the task's statistics over every row."""
    stats = run.make_stats("causal_lm", graphdef)
    return stats(params, {"windows": windows, "lengths": lengths}, jnp.ones(len(windows), bool))[:2]


def group_sum(cfg, graphdef, params, cs, members, group_size, min_examples=1, clip=0.0):
    """Sums the group updates of the members over their padded groups."""
    key = jax.random.PRNGKey(3)
    total, weight, norms = None, 0.0, {}
    for g in clients.round_groups(cs, np.array(members), group_size, 1 << 20, min_examples):
        fn = algorithms.make_group_update(run.make_stats(cfg.task, graphdef), cfg.fed, clip, g.n_pad)
        t, w, _, _, n = jax.jit(fn)(params, key, g.clients, g.arrays, g.num_examples, g.weights)
        total = t if total is None else jax.tree.map(jnp.add, total, t)
        weight += float(w)
        norms.update({int(k): float(v) for k, v in zip(g.clients, n) if k >= 0})
    return total, weight, norms


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ clients from the plays

def test_windows_cover_the_text_once():
    ids = encode(TEXTS[1] + "\n")
    rows, lengths = clients.windows(ids, SEQ)
    assert lengths.sum() == len(ids) - 1 and (lengths[:-1] == SEQ).all()
    targets = np.concatenate([r[1:1 + n] for r, n in zip(rows, lengths)])
    np.testing.assert_array_equal(targets, ids[1:])


def test_clients_split_each_role_80_20_and_iid_keeps_the_lines():
    p_text, q_text = "A:\nl1\nl2\nl3\nl4\nl5\n\nB:\nonly\n\nA:\nl6\n", "A:\nm1\nm2\n"
    scenes = [{"play": "p", "scene": 0, "genre": "g", "act": "", "text": p_text},
              {"play": "q", "scene": 0, "genre": "g", "act": "", "text": q_text}]
    cs = fs.clients_from_scenes(scenes)
    assert [c.id for c in cs] == ["p/A", "q/A"]  # B has one line; A of another play is another client
    assert cs[0].train == ("l1", "l2", "l3", "l4") and cs[0].test == ("l5", "l6")
    assert cs[1].train == ("m1",) and cs[1].test == ("m2",)
    iid = fs.iid_partition(cs, seed=0)
    assert sorted(sum((c.train for c in iid), ())) == sorted(sum((c.train for c in cs), ()))
    assert [len(c.train) for c in iid] == [3, 2] and [c.test for c in iid] == [c.test for c in cs]


def test_the_plays_give_a_client_per_speaking_role(tmp_path):
    cs = fs.load_clients(tmp_path)
    assert len(cs) == 1273 and len({c.id.split("/")[0] for c in cs}) == 38
    hamlet = next(c for c in cs if c.id == "hamlet/HAMLET")
    lines = len(hamlet.train) + len(hamlet.test)
    assert lines > 1000 and len(hamlet.test) == -(-lines // 5)
    assert all(c.train and c.test for c in cs)


def test_round_sampling_depends_on_seed_and_round_only():
    a = clients.sample_round(100, 0.1, False, seed=0, round_index=5)
    assert len(a) == 10 and len(set(a.tolist())) == 10
    np.testing.assert_array_equal(a, clients.sample_round(100, 0.1, False, seed=0, round_index=5))
    assert not np.array_equal(a, clients.sample_round(100, 0.1, False, seed=0, round_index=6))
    sizes = [len(clients.sample_round(1000, 0.1, True, 0, r)) for r in range(200)]
    assert abs(np.mean(sizes) - 100) < 3 and np.std(sizes) > 5  # Poisson: binomial(1000, 0.1) sizes


# ------------------------------------------------------------------ algorithms against plain computations

def test_fedavg_one_client_one_full_batch_epoch_is_one_sgd_step():
    cfg = fed_config(**{"fed.local_epochs": 1, "fed.local_batch": 0})
    graphdef, params, cs = setup(cfg)
    total, weight, _ = group_sum(cfg, graphdef, params, cs, [1], group_size=1)
    tx = algorithms.server_optimizer(cfg.fed)
    server = algorithms.make_server_update(tx, 0.0, None)
    new, _ = server(params, tx.init(params), total, weight, jax.random.PRNGKey(0))

    lo, hi = cs.offsets[1], cs.offsets[2]
    w, n = jnp.asarray(cs.arrays["windows"][lo:hi]), jnp.asarray(cs.arrays["lengths"][lo:hi])
    grads = jax.grad(lambda p: token_loss(graphdef, p, w, n)[0] / n.sum())(params)
    assert_trees_close(new, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))
    assert weight == cs.weight(1) == n.sum()


def test_client_adam_is_optax_adam_from_fresh_state_each_round():
    """fed.client_optimizer=adam, E = 2, one full batch: two optax.adam steps from a fresh state
    (the update is built inside the round's compiled call: no client state outlives a round)."""
    cfg = fed_config(**{"fed.local_epochs": 2, "fed.local_batch": 0, "fed.client_optimizer": "adam",
                        "fed.client_lr": 0.01})
    graphdef, params, cs = setup(cfg)
    total, weight, _ = group_sum(cfg, graphdef, params, cs, [1], group_size=1)
    lo, hi = cs.offsets[1], cs.offsets[2]
    w, n = jnp.asarray(cs.arrays["windows"][lo:hi]), jnp.asarray(cs.arrays["lengths"][lo:hi])
    adam, p = optax.adam(0.01), params
    state = adam.init(p)
    for _ in range(2):
        grads = jax.grad(lambda q: token_loss(graphdef, q, w, n)[0] / n.sum())(p)
        updates, state = adam.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    # atol 0.1% of two steps of 0.01: Adam divides by |g|, so where a gradient is ~0 the two ways'
    # float rounding of g shows up at the 1e-6 level
    assert_trees_close(jax.tree.map(lambda t: t / weight, total), jax.tree.map(jnp.subtract, p, params), atol=2e-5)


def test_fedprox_epochs_and_minibatches_equal_a_plain_loop():
    """E = 2, B = 2 windows, mu = 0.1: the scanned, masked steps against Python steps over the same order."""
    cfg = fed_config(**{"fed.algorithm": "fedprox", "fed.prox_mu": 0.1, "fed.local_epochs": 2, "fed.local_batch": 2})
    graphdef, params, cs = setup(cfg)
    k, n_pad = 0, 16  # client 0 has 11 windows: 6 steps per epoch, the last with one window
    lo, hi = cs.offsets[k], cs.offsets[k + 1]
    win, lens = np.zeros((n_pad, SEQ + 1), np.int32), np.zeros(n_pad, np.int32)
    win[:hi - lo], lens[:hi - lo] = cs.arrays["windows"][lo:hi], cs.arrays["lengths"][lo:hi]
    key = jax.random.PRNGKey(1)
    local = algorithms.make_local_update(run.make_stats("causal_lm", graphdef), cfg.fed, n_pad)
    update, _, count = jax.jit(local)(params, {"windows": win, "lengths": lens}, hi - lo, key)

    p = params
    for e, ek in enumerate(jax.random.split(key, 2)):
        u = np.where(np.arange(n_pad) < hi - lo, np.asarray(jax.random.uniform(ek, (n_pad,))), 2.0)
        order = np.argsort(u, kind="stable")[:hi - lo]
        for j in range(0, len(order), 2):
            rows = order[j:j + 2]

            def loss(q):
                nll, count = token_loss(graphdef, q, jnp.asarray(win[rows]), jnp.asarray(lens[rows]))
                prox = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(params)))
                return nll / count + 0.05 * prox

            p = jax.tree.map(lambda a, g: a - 0.5 * g, p, jax.grad(loss)(p))
    assert_trees_close(update, jax.tree.map(jnp.subtract, p, params), rtol=1e-4, atol=1e-6)
    assert count == 2 * cs.weight(k)  # every target of the client's windows, once per epoch


def test_vmapped_groups_equal_a_sequential_loop_and_padding_changes_nothing():
    cfg = fed_config(**{"fed.local_epochs": 2, "fed.local_batch": 3})
    graphdef, params, cs = setup(cfg)
    members = [0, 1, 2, 3, 4]
    together, w_together, _ = group_sum(cfg, graphdef, params, cs, members, group_size=5)
    alone = [group_sum(cfg, graphdef, params, cs, [k], group_size=1) for k in members]
    # f32 sums in another order (vmapped vs one client at a time): 6e-6 seen on values ~0.04
    assert_trees_close(together, jax.tree.map(lambda *xs: sum(xs), *[a[0] for a in alone]), rtol=1e-4, atol=1e-5)
    assert w_together == sum(a[1] for a in alone) == sum(cs.weight(k) for k in members)
    # one group of 5 clients padded to 8 (three empty clients), 64 windows each
    groups = clients.round_groups(cs, np.array(members), 8, 1 << 20, 64)
    assert [g.arrays["windows"].shape[:2] for g in groups] == [(8, 64)] and (groups[0].clients == -1).sum() == 3
    padded, w_padded, _ = group_sum(cfg, graphdef, params, cs, members, group_size=8, min_examples=64)
    assert_trees_close(padded, together, rtol=1e-4, atol=1e-6)
    assert w_padded == w_together


def test_evaluation_is_loss_and_accuracy_over_the_real_targets():
    """Against one window at a time in plain numpy; more windows than one evaluation batch, so the
    running sums across batches and the zero-padded last batch are both exercised."""
    cfg = fed_config()
    graphdef, params, cs = setup(cfg)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 64, (run.EVAL_BATCH + 7, SEQ + 1)).astype(np.int32)
    lengths = rng.integers(1, SEQ + 1, len(windows)).astype(np.int32)
    got = run.make_eval(run.make_stats("causal_lm", graphdef))(params, {"windows": windows, "lengths": lengths})
    model, nll, correct, count = nnx.merge(graphdef, params), 0.0, 0, 0
    for w, n in zip(windows, lengths):
        logits = np.asarray(model(jnp.asarray(w[None, :-1]))[0][0], np.float64)[:n]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        nll -= logp[np.arange(n), w[1:n + 1]].sum()
        correct += int((logits.argmax(-1) == w[1:n + 1]).sum())
        count += int(n)
    assert got["count"] == count and got["accuracy"] == pytest.approx(correct / count, abs=1e-12)
    assert got["loss"] == pytest.approx(nll / count, rel=1e-5)


def test_the_weighted_mean_is_exact():
    cfg = fed_config(**{"fed.local_epochs": 1, "fed.local_batch": 4})
    graphdef, params, cs = setup(cfg)
    total, weight, _ = group_sum(cfg, graphdef, params, cs, [0, 2], group_size=2)
    u0, w0, _ = group_sum(cfg, graphdef, params, cs, [0], group_size=1)
    u2, w2, _ = group_sum(cfg, graphdef, params, cs, [2], group_size=1)
    assert (w0, w2) == (cs.weight(0), cs.weight(2))
    u0, u2 = jax.tree.map(lambda x: x / w0, u0), jax.tree.map(lambda x: x / w2, u2)  # each client's own update
    mean = jax.tree.map(lambda x: x / weight, total)
    assert_trees_close(mean, jax.tree.map(lambda a, b: (w0 * a + w2 * b) / (w0 + w2), u0, u2), rtol=1e-4, atol=1e-7)


def test_fedadam_server_is_optax_adam_on_the_negated_mean():
    cfg = fed_config(**{"fed.server_optimizer": "adam", "fed.server_lr": 0.01})
    graphdef, params, cs = setup(cfg)
    total, weight, _ = group_sum(cfg, graphdef, params, cs, [0, 1], group_size=2)
    tx = algorithms.server_optimizer(cfg.fed)
    new, _ = algorithms.make_server_update(tx, 0.0, None)(params, tx.init(params), total, weight, None)
    adam = optax.adam(0.01, b1=0.9, b2=0.99, eps=1e-3)
    grad = jax.tree.map(lambda t: -t / weight, total)
    want = optax.apply_updates(params, adam.update(grad, adam.init(params), params)[0])
    assert_trees_close(new, want)


@pytest.mark.parametrize("clip", [1e-3, 1e3])
def test_dp_clips_each_update_and_counts_each_client_once(clip):
    cfg = fed_config(**{"fed.local_epochs": 1, "fed.local_batch": 2})
    graphdef, params, cs = setup(cfg)
    total, weight, norms = group_sum(cfg, graphdef, params, cs, [0, 1, 2], group_size=4, clip=clip)
    _, _, raw = group_sum(cfg, graphdef, params, cs, [0, 1, 2], group_size=4)
    assert weight == 3.0
    unclipped = []
    for k in (0, 1, 2):
        u, w, _ = group_sum(cfg, graphdef, params, cs, [k], group_size=1)
        unclipped.append(jax.tree.map(lambda x: x / w, u))
        assert norms[k] == pytest.approx(raw[k], rel=1e-5)
    scales = [min(1.0, clip / norms[k]) for k in (0, 1, 2)]
    want = jax.tree.map(lambda *us: sum(u * s for u, s in zip(us, scales)), *unclipped)
    assert_trees_close(total, want, rtol=1e-4, atol=1e-8)  # f32 summation order: 4e-9 seen on 1e-5 values
    assert optax.tree.norm(total) <= 3 * clip * (1 + 1e-5)


def test_dp_noise_has_the_stated_standard_deviation():
    params = {"w": jnp.zeros((200, 500))}
    server = algorithms.make_server_update(optax.sgd(1.0), noise_std=0.3, denominator=6.0)
    new, _ = server(params, optax.sgd(1.0).init(params), params, 0.0, jax.random.PRNGKey(0))
    noise = np.asarray(new["w"]) * 6.0  # the server step adds the noisy sum / 6
    assert abs(noise.mean()) < 0.003 and noise.std() == pytest.approx(0.3, rel=0.01)


# ------------------------------------------------------------------ privacy budget, the CLI, resume

def test_epsilon_is_dp_accountings_rdp_over_the_rounds():
    import dp_accounting
    from dp_accounting import pld, rdp

    from bigmodel_jax import privacy

    event = dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.1))
    accountant = rdp.RdpAccountant()
    for _ in range(100):  # round by round, as a run composes them
        accountant.compose(event)
    eps = privacy.epsilon(100, 0.05, 1.1, 1e-5)
    assert eps == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    tight = pld.PLDAccountant().compose(event, 100).get_epsilon(1e-5)  # PLD is tighter than RDP, not far off
    assert 0.5 * eps < tight <= eps * 1.01
    assert privacy.epsilon(200, 0.05, 1.1, 1e-5) > eps and privacy.epsilon(100, 0.05, 0.0, 1e-5) == float("inf")


def test_a_bad_federated_config_is_refused_before_anything_runs(tmp_path, capsys):
    config = str(ROOT / "configs" / "fed_shakespeare.py")
    assert run.main([f"--config={config}", f"--workdir={tmp_path}", "--config.fed.algorithm=fedx"]) == 2
    assert "fed.algorithm" in capsys.readouterr().err
    assert run.main([f"--config={config}", f"--workdir={tmp_path}", "--config.dp.noise_multiplier=1.0"]) == 2
    assert "dp.clip" in capsys.readouterr().err
    assert run.main([f"--config={config}", f"--workdir={tmp_path}", "--config.fed.client_optimizer=lamb"]) == 2
    assert "fed.client_optimizer" in capsys.readouterr().err
    assert run.main([f"--config={config}", f"--workdir={tmp_path}", "--config.task=mlm"]) == 2
    assert "causal_lm | classify" in capsys.readouterr().err
    genre = str(ROOT / "configs" / "fed_genre.py")
    assert run.main([f"--config={genre}", f"--workdir={tmp_path}", "--config.model.lora.rank=4"]) == 2
    assert "model.lora.rank" in capsys.readouterr().err
    assert run.main([f"--config={genre}", f"--workdir={tmp_path}", "--config.init_from=minilm"]) == 2
    assert "init_from" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_resuming_with_changed_settings_says_which(tfds_dir, tmp_path, caplog):
    import logging

    settings = {"model.num_layers": 1, "model.width": 16, "model.num_heads": 2, "model.mlp_dim": 32,
                "data.seq_len": 80, "model.max_len": 80, "data.tfds_dir": str(tfds_dir), "fed.micro_batch": 0,
                "compilation_cache_dir": "", "fed.rounds": 1, "fed.client_fraction": 0.002, "fed.local_batch": 64,
                "fed.eval_examples": 64}
    run.run(fed_config(**settings), tmp_path)
    with caplog.at_level(logging.WARNING, logger="bigmodel_jax.federated.run"):
        run.run(fed_config(**dict(settings, **{"fed.rounds": 2, "fed.server_eps": 1e-8})), tmp_path)
    warned = [r.getMessage() for r in caplog.records if "differ from the saved run" in r.getMessage()]
    assert len(warned) == 1 and "fed.server_eps" in warned[0] and "fed.rounds" in warned[0]
    assert "fed.client_lr" not in warned[0]


def _rows(workdir):
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "seconds", "clients_per_s")}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_dp_fedadam_run_resumes_to_the_same_model(tfds_dir, tmp_path, how):
    """Poisson sampling, clipping and noise, Adam's server state: 4 rounds straight vs the CLI
    stopped mid-run, then rerun. SIGTERM (a preemption notice): the round it finished is saved off
    the checkpoint schedule and the CLI exits 0. SIGKILL, once round 2's checkpoint is committed:
    the rerun redoes what came after it."""
    import signal
    import subprocess
    import sys
    import time

    from bigmodel_jax import checkpoint

    settings = {"model.num_layers": 1, "model.width": 16, "model.num_heads": 2, "model.mlp_dim": 32,
                "data.seq_len": 80, "model.max_len": 80, "data.tfds_dir": str(tfds_dir), "fed.client_lr": 0.5,
                "fed.micro_batch": 0, "compilation_cache_dir": "", "fed.rounds": 4, "fed.client_fraction": 0.004,
                "fed.local_batch": 64, "fed.eval_every": 2, "fed.eval_examples": 256,
                "fed.checkpoint_every": 4 if how == "SIGTERM" else 2,
                "fed.server_optimizer": "adam", "fed.server_lr": 0.01, "dp.clip": 0.5, "dp.noise_multiplier": 0.5}
    cfg = fed_config(**settings)
    straight = run.run(cfg, tmp_path / "straight")
    workdir = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "bigmodel_jax.federated", "--config", str(ROOT / "configs" / "fed_shakespeare.py"),
           "--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in settings.items()]
    log = tmp_path / "cli.log"  # a file, not a pipe nobody reads until the end (it could fill and block the CLI)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    metrics, deadline = workdir / "metrics.jsonl", time.time() + 300

    def reached() -> bool:  # SIGTERM once round 1 is done (it stops in round 2); SIGKILL once round 2 is saved
        if how == "SIGTERM":
            return metrics.exists() and bool(metrics.read_text().strip())
        return (workdir / "checkpoints" / "2").is_dir()

    while not reached():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(getattr(signal, how))
    proc.wait(timeout=120)
    out = log.read_text()
    if how == "SIGTERM":
        assert proc.returncode == 0 and "stopped by SIGTERM after round" in out, out[-3000:]
        stopped_at = int(out.split("stopped by SIGTERM after round ")[1].split()[0])
    else:
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
        stopped_at = 2
    assert 1 <= stopped_at < 4 and checkpoint.read_meta(workdir / "checkpoints")["round"] == stopped_at
    resumed = run.run(cfg, workdir)
    assert resumed["test"] == straight["test"] and resumed["epsilon"] == straight["epsilon"] < float("inf")
    assert _rows(workdir) == _rows(tmp_path / "straight")
    a = checkpoint.read_meta(tmp_path / "straight" / "checkpoints")
    assert a["round"] == 4
    import orbax.checkpoint as ocp

    params = [ocp.StandardCheckpointer().restore((tmp_path / w / "checkpoints" / "4" / "params").absolute())
              for w in ("straight", "resumed")]
    assert jax.tree.leaves(params[0]) and jax.tree.structure(params[0]) == jax.tree.structure(params[1])
    assert_trees_close(params[0], params[1], rtol=0, atol=0)


# ------------------------------------------------------------------ a classifier trained federated

def test_genre_clients_are_the_roles_speeches_each_with_its_plays_genre(tfds_dir):
    from bigmodel_jax.data import plays, plays_tasks

    found = fs.genre_clients(tfds_dir)
    genre_of = {s["play"]: plays.GENRES.index(s["genre"]) for s in plays_tasks.plays_speeches(tfds_dir)}
    assert len(found) == 1014 and sum(len(c.train) for c in found) == 16870
    for c in found:
        examples = c.train + c.test
        assert len(examples) >= 2 and len(c.test) == max(1, -(-len(examples) // 5))
        assert {label for _, label in examples} == {genre_of[c.id.split("/")[0]]}  # one genre per client
        assert all(len(text.split()) >= 8 for text, _ in examples)
    iid = fs.iid_partition(found, seed=0)
    assert sorted(ex for c in iid for ex in c.train) == sorted(ex for c in found for ex in c.train)
    assert np.mean([len({label for _, label in c.train}) for c in iid]) > 2  # the control mixes genres


def classifier_setup():
    """A tiny BERT classifier and 3 clients of labeled random token rows (3, 5 and 2 examples)."""
    from bigmodel_jax import tasks

    cfg = load_config_file(str(ROOT / "configs" / "fed_genre.py"))
    cfg = apply_overrides(cfg, ["model.num_layers=1", "model.width=16", "model.num_heads=2", "model.mlp_dim=32",
                                "model.max_len=8", "model.vocab_size=50", "model.num_outputs=3", "fed.client_lr=0.5",
                                "fed.local_batch=0", "fed.micro_batch=0"])
    graphdef, state = nnx.split(tasks.get("classify").build_model(cfg, nnx.Rngs(params=0)), nnx.Param)
    rng = np.random.default_rng(0)
    n = 10
    ids = rng.integers(5, 50, (n, 8)).astype(np.int32)
    mask = (np.arange(8) < rng.integers(3, 9, n)[:, None]).astype(np.int32)
    arrays = {"input_ids": ids * mask, "token_type_ids": np.zeros_like(ids), "attention_mask": mask,
              "label": rng.integers(0, 3, n).astype(np.int32)}
    return cfg, graphdef, nnx.to_pure_dict(state), clients.from_rows(["a", "b", "c"], arrays, [3, 5, 2])


def test_a_federated_classifier_step_is_the_classify_tasks_sgd_step_and_padding_changes_nothing():
    """FedAvg, one client, E = 1, full batch: one SGD step on the classify task's own training loss
    (what `python -m bigmodel_jax.train` minimizes). Three clients in a group padded to 4 clients
    of 8 examples each: the sum of the three alone."""
    from bigmodel_jax.tasks import classify

    cfg, graphdef, params, cs = classifier_setup()
    total, weight, _ = group_sum(cfg, graphdef, params, cs, [1], group_size=1)
    assert weight == 5.0  # a labeled example weighs 1
    batch = {k: jnp.asarray(a[3:8]) for k, a in cs.arrays.items()}
    grads = jax.grad(lambda p: classify.loss_fn(nnx.merge(graphdef, p), batch, None)[0])(params)
    assert_trees_close(jax.tree.map(lambda t: t / weight, total), jax.tree.map(lambda g: -0.5 * g, grads))

    cfg.fed.update(local_epochs=2, local_batch=2)
    alone = [group_sum(cfg, graphdef, params, cs, [k], group_size=1) for k in range(3)]
    padded, w_padded, _ = group_sum(cfg, graphdef, params, cs, [0, 1, 2], group_size=4, min_examples=8)
    assert w_padded == 10.0
    assert_trees_close(padded, jax.tree.map(lambda *xs: sum(xs), *[a[0] for a in alone]), rtol=1e-4, atol=1e-6)


def test_federated_classifier_evaluation_is_accuracy_over_the_examples():
    from bigmodel_jax.tasks import classify

    cfg, graphdef, params, cs = classifier_setup()
    got = run.make_eval(run.make_stats("classify", graphdef))(params, cs.arrays)
    out = classify.eval_fn(nnx.merge(graphdef, params), {k: jnp.asarray(a) for k, a in cs.arrays.items()})
    assert got["count"] == 10
    assert got["accuracy"] == pytest.approx(float(np.mean(np.asarray(out["pred"]) == cs.arrays["label"])), abs=1e-12)
    assert got["loss"] == pytest.approx(float(np.mean(out["loss"])), rel=1e-5)


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_the_cli_trains_the_genre_classifier_on_the_real_clients(tfds_dir, tmp_path):
    settings = ["--config.model.num_layers=1", "--config.model.width=32", "--config.model.num_heads=2",
                "--config.model.mlp_dim=64", "--config.data.vocab_size=500", "--config.data.seq_len=32",
                "--config.model.max_len=32", f"--config.data.tfds_dir={tfds_dir}", "--config.fed.rounds=2",
                "--config.fed.client_fraction=0.005", "--config.fed.eval_examples=300", "--config.fed.eval_every=1",
                "--config.compilation_cache_dir="]
    assert run.main(["--config", str(ROOT / "configs" / "fed_genre.py"), "--workdir", str(tmp_path)] + settings) == 0
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["clients"] == 1014 and summary["test"]["count"] == 300 and 0 <= summary["test"]["accuracy"] <= 1
    assert (tmp_path / "tokenizer" / "vocab.txt").is_file()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "validation"] == [1, 2]
