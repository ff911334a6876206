"""Sequential recommendation: MovieLens-100k from the recbole wheel, the leave-one-out split, the
ranking metrics on hand-computed rankings and against scikit-learn, seen-item masking, negatives."""

import numpy as np
import pytest

from bigmodel_jax import ranking
from bigmodel_jax.data import movielens


def test_hit_rate_and_ndcg_on_hand_computed_rankings():
    scores = np.array([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    m = ranking.hit_ndcg(scores, np.array([2, 3]), k=2)  # ranks 1 and 3 (0-based)
    np.testing.assert_allclose(m["hr"], [1.0, 0.0])
    np.testing.assert_allclose(m["ndcg"], [1 / np.log2(3), 0.0])
    np.testing.assert_allclose(ranking.hit_ndcg(scores, np.array([0, 0]), k=1)["ndcg"], [1.0, 1.0])
    # four tied items, k=2: the target lands in the top 2 half the time
    tied = ranking.hit_ndcg(np.ones((1, 4)), np.array([0]), k=2)
    np.testing.assert_allclose(tied["hr"], [0.5])
    np.testing.assert_allclose(tied["ndcg"], [(1 + 1 / np.log2(3)) / 4])
    # -inf (a masked item) never outranks a finite target
    assert ranking.hit_ndcg(np.array([[-np.inf, 0.0]]), np.array([1]), k=1)["hr"][0] == 1.0


def test_ndcg_equals_scikit_learns_tie_averaged_ndcg_and_hr_the_average_over_random_tie_orders():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 30)).astype(float)  # many ties
    targets = rng.integers(0, 30, size=200)
    ours = ranking.hit_ndcg(scores, targets, k=10)
    truth = np.eye(30)[targets]
    for u in range(0, 200, 20):
        assert ours["ndcg"][u] == pytest.approx(ndcg_score(truth[u:u + 1], scores[u:u + 1], k=10), abs=1e-12)
    # HR@10: the expectation over random tie orders equals the average over many shuffled orders
    u = int(np.argmax([(s == s[t]).sum() for s, t in zip(scores, targets)]))
    hits = []
    for _ in range(4000):
        noise = rng.random(30) * 1e-3  # breaks ties at random, keeps the order between distinct scores
        hits.append(((scores[u] + noise) > scores[u][targets[u]] + noise[targets[u]]).sum() < 10)
    assert ours["hr"][u] == pytest.approx(np.mean(hits), abs=0.03)


def test_full_ranking_masks_the_seen_items_but_never_the_target():
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0]])  # item 0 is padding
    inputs = [np.array([1, 2])]
    masked = ranking.mask_seen(scores, inputs, np.array([3]))
    assert np.isneginf(masked[0, :3]).all() and masked[0, 3] == 3.0
    # items 1 and 2 score higher than the target but were seen: the target ranks first
    assert ranking.full_ranking(scores, inputs, np.array([3]), k=1) == {"hr1": 1.0, "ndcg1": 1.0}
    assert ranking.full_ranking(scores, [np.array([1, 3])], np.array([3]), k=1)["hr1"] == 0.0  # 2 is unseen
    sampled = ranking.sampled_ranking(scores, np.array([3]), np.array([[4, 5]]), k=1)
    assert sampled == {"hr1": 1.0, "ndcg1": 1.0}


def test_negatives_are_unseen_distinct_and_follow_popularity():
    rng = np.random.default_rng(0)
    seen = [np.array([1, 2, 3]), np.array([4, 5])]
    neg = movielens.sample_negatives(seen, 50, 20, rng)
    for row, items in zip(neg, seen):
        assert len(set(row)) == 20 and not set(row) & set(items) and 0 not in row
    weights = np.zeros(51)
    weights[10:15] = 100.0
    popular = movielens.sample_negatives([np.array([1])] * 200, 50, 3, rng, weights)
    assert np.isin(popular, np.arange(10, 15)).all()  # the counted items are drawn before the rest
    with pytest.raises(ValueError, match="unseen items"):
        movielens.sample_negatives([np.arange(1, 50)], 50, 5, rng)


def test_a_bad_interactions_file_names_its_path_and_line(tmp_path):
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t3\t881250949\n1\t2\tthree\t881250949\n")
    with pytest.raises(ValueError, match=r"u.data:2: expected user<TAB>item"):
        movielens.read_interactions(bad)
    header = tmp_path / "x.inter"
    header.write_text("user:token\titem:token\n")
    with pytest.raises(ValueError, match=r"x.inter:1: expected a RecBole header"):
        movielens.read_interactions(header)
    good = tmp_path / "u2.data"
    good.write_text("7\t3\t4\t100\n7\t1\t5\t90\n")
    assert movielens.read_interactions(good) == [("7", "3", 4.0, 100), ("7", "1", 5.0, 90)]


def test_a_users_file_is_prepared_apart_and_again_when_it_changes(tmp_path):
    data = tmp_path / "u.data"
    data.write_text("".join(f"{u}\t{i}\t3\t{100 + i}\n" for u in (1, 2) for i in (5, 6, 7)))
    first = movielens.histories(tmp_path / "tfds", str(data))
    assert first.users == ["1", "2"] and first.items == ["5", "6", "7"]
    np.testing.assert_array_equal(first.sequences[0], [1, 2, 3])
    data.write_text(data.read_text() + "3\t9\t4\t50\n3\t5\t4\t60\n3\t6\t4\t55\n")  # an edited file
    second = movielens.histories(tmp_path / "tfds", str(data))
    assert second.users == ["1", "2", "3"] and second.items == ["5", "6", "7", "9"]
    np.testing.assert_array_equal(second.sequences[2], [4, 2, 1])  # by time: 9 (50), 6 (55), 5 (60)
    assert movielens.data_dir(tmp_path, None) == tmp_path


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    try:
        return movielens.histories(tmp_path_factory.mktemp("tfds"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_movielens_100k_holds_every_rating_in_time_order(ml100k):
    assert len(ml100k.users) == 943 and ml100k.num_items == 1682
    assert sum(len(s) for s in ml100k.sequences) == 100_000
    assert all(np.all(np.diff(t) >= 0) for t in ml100k.times)
    assert all(len(np.unique(s)) == len(s) for s in ml100k.sequences)  # one rating per user and movie
    assert min(len(s) for s in ml100k.sequences) == 20 and ml100k.users[:2] == ["1", "2"]


def test_leave_one_out_has_no_leakage(ml100k):
    split = movielens.leave_one_out(ml100k.sequences)
    (val_in, val_y), (test_in, test_y) = split.validation, split.test
    for seq, train, vi, vy, ti, ty in zip(ml100k.sequences, split.train, val_in, val_y, test_in, test_y):
        assert vy == seq[-2] and ty == seq[-1]
        assert vy not in train and ty not in train and ty not in vi  # no target is trained on or an input
        np.testing.assert_array_equal(vi, train)
        np.testing.assert_array_equal(ti, np.append(train, vy))  # the test input adds the validation item
    with pytest.raises(ValueError, match="3 items per user"):
        movielens.leave_one_out([np.array([1, 2])])


def test_the_popularity_baseline_beats_chance_on_every_protocol(ml100k, tmp_path):
    from bigmodel_jax.config import apply_overrides, load_config_file
    from bigmodel_jax.tasks import recsys
    from tests.conftest import ROOT

    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "sasrec_ml100k.py")),
                          [f"data.tfds_dir={tmp_path}"])
    test = recsys.popularity(cfg)["test"]
    assert test["hr10"] > 10 * 10 / 1682 and test["hr10_uniform"] > 2 * 10 / 101
    assert test["hr10_popular"] < test["hr10_uniform"]  # popular negatives are harder for a popularity ranker
    # by hand: the test inputs' counts rank the items
    split = movielens.leave_one_out(ml100k.sequences)
    inputs, targets = split.test
    counts = movielens.item_counts(inputs, ml100k.num_items).astype(float)
    full = ranking.full_ranking(np.broadcast_to(counts, (len(targets), len(counts))), inputs, targets)
    assert full == {"hr10": test["hr10"], "ndcg10": test["ndcg10"]}


def test_next_item_windows_make_every_later_item_a_target_once():
    from bigmodel_jax.tasks import recsys

    s = np.arange(1, 8, dtype=np.int32)  # 7 items
    w = recsys.next_item_windows([s, np.array([5, 6], np.int32)], seq_len=3)
    np.testing.assert_array_equal(w["inputs"], [[4, 5, 6], [1, 2, 3], [5, 0, 0]])
    np.testing.assert_array_equal(w["targets"], [[5, 6, 7], [2, 3, 4], [6, 0, 0]])
    assert sorted(w["targets"][:2].ravel()) == list(range(2, 8))
    items, lengths = recsys.right_padded([s], 5)
    np.testing.assert_array_equal(items, [[3, 4, 5, 6, 7]])
    assert lengths.tolist() == [5]
    items, lengths = recsys.right_padded([s[:2]], 5)
    np.testing.assert_array_equal(items, [[1, 2, 0, 0, 0]])
    assert lengths.tolist() == [2]


def test_bert4rec_masks_each_item_at_the_rate_and_reads_only_real_slots():
    from flax import nnx

    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.models.bert import BertMLM
    from bigmodel_jax.tasks import bert4rec
    from tests.conftest import ROOT

    rng = np.random.default_rng(0)
    items = np.array([3, 4, 5, 6, 7, 0, 0, 0], np.int32)
    counts = np.zeros(8)
    for _ in range(2000):
        ex = bert4rec.mask_window(items, 5, rng, 0.2, 3, mask_id=9)
        real = ex["labels"] > 0
        chosen = ex["positions"][real]
        assert 1 <= real.sum() <= 3 and (ex["inputs"][chosen] == 9).all() and (chosen < 5).all()
        np.testing.assert_array_equal(ex["labels"][real], items[chosen])
        np.testing.assert_array_equal(np.delete(ex["inputs"], chosen), np.delete(items, chosen))
        counts[chosen] += 1
    assert counts[5:].sum() == 0 and np.allclose(counts[:5] / 2000, 0.2 + 0.8 ** 5 / 5, atol=0.03)  # + the forced one
    assert bert4rec.history_inputs([np.arange(1, 9)], 4, num_items=20)[0].tolist() == [6, 7, 8, 21]
    cfg = load_config_file(str(ROOT / "configs" / "bert4rec_ml100k.py")).model
    cfg.update(vocab_size=22, width=16, num_heads=2, mlp_dim=32, max_len=6, dropout=0.0)
    model = BertMLM(cfg, rngs=nnx.Rngs(0))
    inputs = np.array([[3, 4, 21, 0, 0, 0], [3, 4, 21, 9, 9, 9]], np.int32)
    s = np.asarray(bert4rec.scores(model, inputs, np.array([3, 3])))
    assert s.shape == (2, 21)  # [MASK] is not among the scored items
    np.testing.assert_allclose(s[0], s[1], atol=1e-5)  # the slots after the length are masked out


def test_sasrec_reads_each_users_last_real_item_and_padding_changes_nothing():
    from flax import nnx

    from bigmodel_jax.config import load_config_file
    from bigmodel_jax.models.gpt import GPT
    from bigmodel_jax.tasks import sasrec
    from tests.conftest import ROOT

    cfg = load_config_file(str(ROOT / "configs" / "sasrec_ml100k.py")).model
    cfg.update(vocab_size=30, width=16, num_heads=2, mlp_dim=32, max_len=6, dropout=0.0)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    inputs = np.array([[3, 4, 5, 0, 0, 0], [3, 4, 5, 9, 9, 9]], np.int32)
    s = np.asarray(sasrec.scores(model, inputs, np.array([3, 3])))
    np.testing.assert_allclose(s[0], s[1], atol=1e-6)  # what follows the last item is never read
    logits, _ = model(inputs[:1, :3])
    np.testing.assert_allclose(s[0], np.asarray(logits[0, 2]), atol=1e-5)


@pytest.mark.parametrize("config", ["sasrec_ml100k", pytest.param("bert4rec_ml100k", marks=pytest.mark.slow)])
def test_training_on_movielens_reports_every_protocol_and_recommends_unseen_items(config, ml100k, tmp_path, capsys):
    from bigmodel_jax import recommend, train
    from bigmodel_jax.config import apply_overrides, load_config_file
    from tests.conftest import ROOT

    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / f"{config}.py")), [
        f"data.tfds_dir={tmp_path / 'tfds'}", "model.width=32", "model.mlp_dim=64", "train.batch_size=64",
        "train.num_steps=30", "train.eval_every=30", "train.checkpoint_every=30", "train.log_every=10",
        "optim.warmup_steps=5", "optim.lr=3e-3", "compilation_cache_dir="])
    result = train.train(cfg, tmp_path / "run")
    test = result.test_metrics
    assert set(test) == {"loss", "hr10", "ndcg10", "hr10_uniform", "ndcg10_uniform", "hr10_popular",
                         "ndcg10_popular"}
    assert test["hr10_uniform"] > 10 / 101 and 0 < test["ndcg10"] <= test["hr10"] <= 1
    assert recommend.main(["--workdir", str(tmp_path / "run"), "--user", "1", "--k", "5"]) == 0
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line[:4].strip().rstrip(".").isdigit()]
    assert len(listed) == 5 and "(19" in out  # titles with their years
    seen_titles = {movielens.default_titles()[ml100k.items[i - 1]] for i in ml100k.sequences[0]}
    assert not any(line.split(". ", 1)[1].rsplit("  (score", 1)[0] in seen_titles for line in listed)
    with pytest.raises(SystemExit, match="not in the run's data"):
        recommend.main(["--workdir", str(tmp_path / "run"), "--user", "nobody"])


def test_recboles_copy_of_the_ratings_keeps_our_order_with_no_ties(ml100k, tmp_path):
    """RecBole sorts timestamps as float32, so ratings a second apart tie and keep file order; the
    file it reads instead (experiments/recbole_peer.py) holds ranks that give back our histories."""
    from experiments import recbole_peer

    data = tmp_path / "u.data"  # user 1's items 7 and 5 tie at t=100: file order decides, as in ours
    data.write_text("1\t7\t3\t100\n1\t5\t3\t100\n1\t6\t3\t50\n2\t5\t4\t100\n2\t6\t4\t90\n2\t7\t4\t95\n")
    hand = movielens.histories(tmp_path / "tfds", str(data))
    assert [hand.items[i - 1] for i in hand.sequences[0]] == ["6", "7", "5"]
    for h in (hand, ml100k):
        folder = recbole_peer.write_ranked_inter(h, tmp_path / f"ranked{len(h.users)}") / recbole_peer.DATASET
        again = movielens.histories(tmp_path / "tfds", str(folder / f"{recbole_peer.DATASET}.inter"))
        assert again.users == h.users and again.items == h.items
        for a, b, t in zip(again.sequences, h.sequences, again.times):
            np.testing.assert_array_equal(a, b)
            assert np.all(np.diff(t) > 0)  # no ties left to break
        assert len(np.unique(np.concatenate(again.times))) == sum(len(s) for s in h.sequences)


def test_the_recbole_peers_say_what_to_install_before_anything_trains(tmp_path):
    pytest.importorskip("recbole")
    from experiments import recbole_peer, recommenders
    try:
        recbole_peer.require()
        pytest.skip("RecBole's dependencies are installed here")
    except SystemExit:
        pass
    with pytest.raises(SystemExit, match="venv --system-site-packages .venv-recbole"):
        recommenders.main(["--recbole", "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit) as refused:  # argparse's usage error (code 2), before any training
        recommenders.main(["--recbole", "--recbole-epochs", "0", "--workdir", str(tmp_path)])
    assert refused.value.code == 2
    assert not any(tmp_path.iterdir())  # refused before any sweep started
