"""Bad weights (truncated safetensors and GGUF, another architecture's directory, pickled `.bin`
files only) and bad command lines (`sample`, `embed`, `train`): each a sentence naming the file or
flag and what to do, never a traceback; a pickled file is never opened."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from bigmodel_jax import embed, sample
from bigmodel_jax.errors import ConfigError, WeightsError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(d)
    return d


def test_a_truncated_safetensors_file_is_named(gpt2_dir, tmp_path):
    from bigmodel_jax.weights import read_hf_dir

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_bytes((gpt2_dir / "config.json").read_bytes())
    data = (gpt2_dir / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match=rf"{cut / 'model.safetensors'}: not a readable safetensors file"):
        read_hf_dir(cut)


def test_a_truncated_gguf_file_is_named(tmp_path):
    import gguf

    from bigmodel_jax import gguf_import

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((64, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 2048])
    with pytest.raises(ValueError, match=r"tiny.gguf is not a readable GGUF file"):
        gguf_import.load_gguf(path)


def test_a_directory_of_another_architecture_is_refused(gpt2_dir):
    from bigmodel_jax import transfer

    with pytest.raises(ConfigError, match=r"init_from.*gpt2"):
        transfer.source_model(str(gpt2_dir), "bert")


class _Boom:
    """Unpickling this writes a marker file: proof that a file was (or was not) unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_alone_are_refused_and_never_unpickled(gpt2_dir, tmp_path):
    from bigmodel_jax import transfer
    from bigmodel_jax.weights import read_hf_dir

    d = tmp_path / "bin_only"
    d.mkdir()
    (d / "config.json").write_bytes((gpt2_dir / "config.json").read_bytes())
    marker = tmp_path / "UNPICKLED"
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(FileNotFoundError, match=r"model.safetensors is missing.*\.bin files are not read"):
        read_hf_dir(d)
    with pytest.raises((ConfigError, FileNotFoundError, ValueError)):
        transfer.source_params(str(d))
    assert not marker.exists()


def test_sample_and_embed_say_what_is_wrong(tmp_path, capsys):
    assert sample.main(["--workdir", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    assert "no checkpoint under" in capsys.readouterr().err
    for bad in (["--temperature", "0"], ["--top-p", "1.5"], ["--top-k", "-1"], ["--max-new-tokens", "0"],
                ["--repetition-penalty", "0"]):
        with pytest.raises(SystemExit) as e:
            sample.main(["--workdir", str(tmp_path), "--prompt", "hi", *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err, bad
    assert embed.main(["--model", str(tmp_path / "missing"), "hello"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_errors_are_one_sentence(tmp_path):
    """A bad config value, a bad data record and a missing config file through the real CLI."""
    (tmp_path / "train.tsv").write_text("a b\tb a\nbroken line without a tab\n")
    (tmp_path / "ok.tsv").write_text("a b\tb a\n")
    pair_files = [f"--config.data.{n}_file={tmp_path / f}" for n, f in
                  (("train", "train.tsv"), ("validation", "ok.tsv"), ("test", "ok.tsv"))]
    cases = [
        (["--config", str(ROOT / "configs" / "gpt_char.py"), "--config.model.num_heads=7"], "config error: ",
         "model.num_heads"),
        (["--config", str(ROOT / "configs" / "t5_translate.py"), "--config.data.dataset=pairs", *pair_files],
         "data error: ", "train.tsv:2: expected source<TAB>target"),
        (["--config", "configs/none.py"], "config error: ", "no config file at"),
    ]
    for args, kind, says in cases:
        out = subprocess.run([sys.executable, "-m", "bigmodel_jax.train", "--workdir", str(tmp_path / "run"), *args],
                             cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 2, out.stderr[-2000:]
        assert kind in out.stderr and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
