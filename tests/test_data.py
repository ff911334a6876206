import numpy as np
import pytest

from bigmodel_jax.data import pipeline, plays
from bigmodel_jax.data.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer


def test_builder_reads_real_plays_split_by_play(tfds_dir):
    builder = plays.ShakespearePlays(data_dir=str(tfds_dir), file_format="array_record")
    train = builder.as_data_source(split="train")
    val = builder.as_data_source(split="validation")
    train_plays = {train[i]["play"].decode() for i in range(len(train))}
    val_plays = {val[i]["play"].decode() for i in range(len(val))}
    assert val_plays == set(plays.VALIDATION_PLAYS)
    assert not train_plays & val_plays and len(train_plays) == 34
    text = plays.load_split_text(tfds_dir, "train")
    assert 4_000_000 < len(text) < 5_000_000
    assert "**" not in text and "\\[" not in text and "_Enter" not in text  # markup stripped
    assert "ROMEO:\n" in text and "HAMLET:\n" in text


def test_builder_round_trips_a_scene(tmp_path):
    """A play written here comes back through TFDS with its text cleaned, nothing else lost."""
    d = tmp_path / "plays" / "comedies"
    d.mkdir(parents=True)
    line = "A line long enough that a second copy of it counts as a duplicate."
    (d / "tiny.md").write_text(
        "# Tiny\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter ANNE_\n\n**ANNE**  \nGood   morrow,\u00a0sir.  \n"
        f"{line}  \n\n**BOB**  \n\\[Aside] Ay.  \n{line}\n")
    (tmp_path / "plays" / "tragedies").mkdir()
    (tmp_path / "plays" / "tragedies" / "twelfth-night.md").write_text("# V\n\n### SCENE I. X\n\n**A**  \nHi.\n")
    text = plays.load_split_text(tmp_path / "tfds", "train", tmp_path / "plays")
    assert text == ("SCENE I. A room.\n\nEnter ANNE\n\nANNE:\nGood morrow, sir.\n" + line +
                    "\n\nBOB:\n[Aside] Ay.\n")
    assert plays.load_split_text(tmp_path / "tfds", "validation", tmp_path / "plays") == "SCENE I. X\n\nA:\nHi.\n"


def test_missing_plays_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        plays.list_plays(tmp_path)


def test_clean_line():
    assert plays.clean_line("  **KING  LEAR**  ") == "KING LEAR"
    assert plays.clean_line("_\\[Within]_ Swear\u2014now") == "[Within] Swear--now"
    assert plays.clean_line("\ufb01ne") == "fine"  # NFKC folds the ligature


def test_char_tokenizer_round_trip(tmp_path, tfds_dir):
    text = plays.load_split_text(tfds_dir, "validation")
    tok = CharTokenizer.train(text)
    ids = tok.encode_array(text)
    assert ids.dtype == np.int32 and list(ids[:100]) == tok.encode(text[:100])
    assert tok.decode(ids) == text
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.decode(again.encode("ROMEO: O!")) == "ROMEO: O!"
    assert again.encode("\u4e2d") == [0]  # unseen character -> <unk>


def test_bpe_tokenizer_round_trip(tmp_path, tfds_dir):
    text = plays.load_split_text(tfds_dir, "validation")
    tok = BPETokenizer.train(text, vocab_size=600)
    assert tok.vocab_size == 600
    sample = text[:5000]
    ids = tok.encode_array(sample)
    assert len(ids) < 0.6 * len(sample)  # merges learned (measured 0.51 with 600 tokens)
    assert tok.decode(ids) == sample
    tok.save(tmp_path)
    assert load_tokenizer(tmp_path).decode(tok.encode("Unseen \u4e2d text")) == "Unseen \u4e2d text"


def test_corrupt_tokenizer_file_is_named(tmp_path):
    (tmp_path / "tokenizer_char.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_char.json"):
        load_tokenizer(tmp_path)


def test_pipeline_packs_shuffles_and_shards():
    tokens = np.arange(10_000, dtype=np.int32)
    ds = pipeline.train_dataset(tokens, seq_len=16, global_batch=8, seed=3)
    b = ds[0]
    assert b["inputs"].shape == (8, 16) and b["targets"].shape == (8, 16)
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])  # shifted by one
    np.testing.assert_array_equal(np.diff(b["inputs"], axis=1), 1)  # contiguous windows
    assert not np.array_equal(ds[0]["inputs"], pipeline.train_dataset(tokens, 16, 8, seed=4)[0]["inputs"])
    # one epoch covers every window once
    n = (len(tokens) - 1) // 16 - 1
    starts = np.concatenate([ds[i]["inputs"][:, 0] // 16 for i in range(n // 8)])
    assert len(set(starts.tolist())) == len(starts)
    # two processes together see exactly the one-process global batch
    p0 = pipeline.train_dataset(tokens, 16, 8, 3, process_index=0, process_count=2)[5]["inputs"]
    p1 = pipeline.train_dataset(tokens, 16, 8, 3, process_index=1, process_count=2)[5]["inputs"]
    assert sorted(map(tuple, np.concatenate([p0, p1]))) == sorted(map(tuple, ds[5]["inputs"]))


def test_pipeline_iterator_state_resumes():
    ds = pipeline.train_dataset(np.arange(5000, dtype=np.int32), 8, 4, seed=0)
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = next(it)["inputs"]
    it2 = iter(ds)
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["inputs"], expected)


def test_eval_batches_are_consecutive_non_overlapping_windows_split_by_process():
    """Validation window k of batch b is tokens[(4b + k) * 8 : ... + 9] (inputs and the targets
    shifted by one), from the start of the stream, the same at every evaluation; with 2
    processes each takes its half of every global batch."""
    tokens = np.arange(2000, dtype=np.int32) * 7 % 1999  # not the identity, so offsets matter
    batches = pipeline.eval_batches(tokens, 8, 4, 3)
    assert len(batches) == 3
    for b, batch in enumerate(batches):
        for k in range(4):
            start = (4 * b + k) * 8
            np.testing.assert_array_equal(batch["inputs"][k], tokens[start:start + 8])
            np.testing.assert_array_equal(batch["targets"][k], tokens[start + 1:start + 9])
    halves = [pipeline.eval_batches(tokens, 8, 4, 3, process_index=p, process_count=2) for p in range(2)]
    for b, (h0, h1) in enumerate(zip(*halves)):
        np.testing.assert_array_equal(np.concatenate([h0["inputs"], h1["inputs"]]), batches[b]["inputs"])
    assert len(pipeline.eval_batches(tokens, 8, 4, 1000)) == ((2000 - 1) // 8 - 1) // 4  # capped by the stream


def test_corrupt_prepared_dataset_names_its_folder(tmp_path, tfds_dir):
    import shutil

    shutil.copytree(tfds_dir, tmp_path / "tfds")
    (data_file,) = (tmp_path / "tfds").rglob("*train.array_record*")
    data_file.write_bytes(data_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{tmp_path / 'tfds'}.*unreadable.*delete that folder"):
        plays.load_split_text(tmp_path / "tfds", "train")


def test_processes_started_together_prepare_a_dataset_once(tmp_path):
    """The points of a sweep started at once (--jobs N) must not race to write the same TFDS
    folder: one prepares under a file lock, the other waits and reads what it wrote."""
    import subprocess
    import sys

    code = f"from bigmodel_jax.data import plays; print(len(plays.load_scenes({str(tmp_path)!r}, 'validation')))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-500:] for _, err in outs]
    counts = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(counts) == 1 and int(counts.pop()) > 50  # both read every validation scene
