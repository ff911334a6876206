"""Speech: log-mel against transformers' Whisper feature extractor (numpy and torch), CTC against a
brute-force sum over alignments and torch's CTC, greedy CTC decoding, SpecAugment's masks, the
length-bucketed batches, the Asterisk files and an end-to-end CTC run on them."""

from __future__ import annotations

import io
import itertools
import tarfile
import wave

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax import audio
from bigmodel_jax.data import asterisk, audio_batches
from bigmodel_jax.tasks import ctc


def _tone(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("rate,n_fft,hop", [(16000, 400, 160), (8000, 200, 80)])
def test_log_mel_equals_whispers_feature_extractor_numpy_and_torch(rate, n_fft, hop):
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=rate, n_fft=n_fft, hop_length=hop, chunk_length=2)
    # Whisper's filters stop at 8 kHz whatever the rate: at 8 kHz ours stop at Nyquist (4 kHz)
    fe.mel_filters = mel_filter_bank(num_frequency_bins=1 + n_fft // 2, num_mel_filters=80, min_frequency=0.0,
                                     max_frequency=rate / 2, sampling_rate=rate, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(audio.mel_filters(rate, n_fft, 80), fe.mel_filters, atol=1e-7)
    x = _tone(1.5, rate)
    ours = np.asarray(audio.log_mel(jnp.asarray(x[None]), sample_rate=rate, n_fft=n_fft, hop=hop, n_mels=80))[0].T
    for reference in (fe._np_extract_fbank_features(x[None], "cpu"), fe._torch_extract_fbank_features(x[None], "cpu")):
        assert reference.shape[1:] == ours.shape
        np.testing.assert_allclose(ours, reference[0], atol=2e-5)
    assert ours.std() > 0.1  # not a constant floor


def test_log_mel_of_a_padded_row_keeps_its_frames_but_the_last_windows():
    x = _tone(1.0, 8000)
    alone = np.asarray(audio.log_mel(jnp.asarray(x[None]), sample_rate=8000, n_fft=200, hop=80, n_mels=80))[0]
    padded = np.concatenate([x, np.zeros(4000, np.float32)])[None]
    both = np.asarray(audio.log_mel(jnp.asarray(padded), jnp.array([8000]), sample_rate=8000, n_fft=200, hop=80,
                                    n_mels=80))[0]
    assert both.shape[0] == 150 and alone.shape[0] == audio.num_frames(8000, 80) == 100
    np.testing.assert_array_equal(both[:98], alone[:98])  # only windows reaching past the end differ
    # without the real length, the padding's floor would set the clamp: here the clamp is the same
    unmasked = np.asarray(audio.log_mel(jnp.asarray(padded), sample_rate=8000, n_fft=200, hop=80, n_mels=80))[0]
    np.testing.assert_allclose(unmasked[:98], alone[:98], atol=1e-6)


def _brute_force_ctc(logits_tv: np.ndarray, labels: list[int]) -> float:
    """-log of the summed probability of every frame labelling that collapses to labels."""
    logp = logits_tv - np.log(np.exp(logits_tv).sum(-1, keepdims=True))
    total = 0.0
    for path in itertools.product(range(logits_tv.shape[1]), repeat=logits_tv.shape[0]):
        if audio.ctc_greedy(np.array(path)) == labels:
            total += np.exp(sum(logp[t, k] for t, k in enumerate(path)))
    return -np.log(total)


def test_ctc_loss_is_the_sum_over_alignments_and_torchs_with_padding():
    import torch

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 4)).astype(np.float32)
    labels = [[1, 2, 2], [3], [1, 3, 1, 2]]
    frames = [5, 6, 6]
    label_pad = np.array([[i >= len(row) for i in range(4)] for row in labels], np.float32)
    label_arr = np.array([row + [0] * (4 - len(row)) for row in labels], np.int32)
    frame_pad = np.array([[t >= f for t in range(6)] for f in frames], np.float32)
    loss = np.asarray(optax.ctc_loss(logits, frame_pad, label_arr, label_pad, blank_id=0))
    for i in range(2):  # small enough to enumerate: 4^5 and 4^6 paths
        assert loss[i] == pytest.approx(_brute_force_ctc(logits[i, :frames[i]], labels[i]), rel=1e-5)
    reference = torch.nn.functional.ctc_loss(
        torch.log_softmax(torch.tensor(logits).transpose(0, 1), -1), torch.tensor(label_arr),
        torch.tensor(frames), torch.tensor([len(r) for r in labels]), blank=0, reduction="none")
    np.testing.assert_allclose(loss, reference.numpy(), rtol=1e-5)


def test_the_tasks_loss_is_ctc_per_character_of_the_models_logits():
    from flax import nnx

    from bigmodel_jax.config import load_config_file
    from tests.conftest import ROOT

    cfg = load_config_file(str(ROOT / "configs" / "ctc_asterisk.py:tiny"))
    cfg.model.vocab_size = len(ctc.VOCAB)
    model = ctc.build_model(cfg, nnx.Rngs(0))
    rng = np.random.default_rng(1)
    batch = {"audio": (rng.normal(size=(2, 8000)) * 3000).astype(np.int16), "length": np.array([8000, 5000]),
             "labels": np.array([[5, 6, 7, 0], [8, 8, 9, 10]], np.int32), "label_length": np.array([3, 4])}
    loss, metrics = ctc.loss_fn(model, batch, None)
    feats, mask = ctc.features(model, batch["audio"], batch["length"])
    logits, mask = model(feats, mask)
    assert mask.sum(1).tolist() == [50, 31]  # 100 and 62 frames at 10 ms, halved by the second conv
    label_pad = np.array([[0, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    direct = optax.ctc_loss(logits, 1.0 - mask, batch["labels"], label_pad, blank_id=0)
    assert float(loss) == pytest.approx(float(direct.sum()) / 7, rel=1e-6) and float(metrics["weight"]) == 7
    out = ctc.eval_fn(model, batch)
    np.testing.assert_allclose(out["nll"], direct, rtol=1e-6)
    assert out["ids"].shape == (2, cfg.model.max_frames) and not np.asarray(out["ids"])[1, 32:].any()


def test_greedy_ctc_decoding_merges_repeats_then_drops_blanks():
    assert audio.ctc_greedy(np.array([1, 1, 0, 1, 2, 2, 0, 0, 3])) == [1, 1, 2, 3]
    assert audio.ctc_greedy(np.array([0, 0, 0])) == [] and audio.ctc_greedy(np.array([], int)) == []
    assert audio.ctc_greedy(np.array([4, 4, 4, 4])) == [4]
    assert ctc.decode_ids(audio.ctc_greedy(np.array(ctc.encode_text("Hi, it's 9!")))) == "hi it's 9"
    assert ctc.feasible([1, 1, 2], 4) and not ctc.feasible([1, 1, 2], 3) and ctc.feasible([1, 2, 3], 3)


def test_spec_augment_masks_bands_and_spans_inside_each_utterance():
    feats = jnp.ones((64, 100, 80))
    frames = jnp.array([100, 40] * 32)
    out = np.asarray(audio.spec_augment(feats, frames, jax.random.key(0), freq_masks=2, freq_width=15,
                                        time_masks=2, time_ratio=0.1))
    zero = out == 0
    band = zero.all(axis=1)  # [B, M]: channels masked over all time
    span = zero.all(axis=2)  # [B, T]: frames masked over all channels
    assert 0 < band.sum(1).max() <= 30 and band.any(1).mean() > 0.8
    assert 0 < span.sum(1).max() <= 20 and not span[1::2, 40:].any()  # spans end inside the real frames
    assert span[1::2].sum(1).max() <= 8  # at most 2 x 10% of 40 frames
    assert (zero == (band[:, None, :] | span[:, :, None])).all()  # nothing else is touched
    again = np.asarray(audio.spec_augment(feats, frames, jax.random.key(0), freq_masks=2, freq_width=15,
                                          time_masks=2, time_ratio=0.1))
    np.testing.assert_array_equal(out, again)


def _examples(lengths: list[int]) -> list[dict]:
    return [{"audio": np.full(n, i + 1, np.int16), "labels": np.array([i % 30 + 1], np.int32)}
            for i, n in enumerate(lengths)]


def test_bucketed_batches_cover_every_example_each_epoch_and_split_over_processes():
    rng = np.random.default_rng(0)
    ex = _examples(list(rng.integers(1000, 40000, size=100)))
    sizes = audio_batches.buckets(40000, 8000)
    assert sizes.tolist() == [8000, 16000, 32000, 40000]
    whole = audio_batches.train_dataset(ex, 8, 3, sizes, 4, lambda n: n // 160)
    epoch = [whole[i] for i in range(12)]  # 100 // 8 batches per epoch
    ids = np.concatenate([b["audio"][:, 0] for b in epoch])
    assert len(set(ids.tolist())) == 96  # distinct examples; 4 wait for another epoch
    for b in epoch:
        assert b["audio"].shape[1] == sizes[np.searchsorted(sizes, b["length"].max())]
        assert all((b["audio"][i, n:] == 0).all() for i, n in enumerate(b["length"]))
    assert [whole[i]["audio"][:, 0].tolist() for i in range(12, 15)] != [b["audio"][:, 0].tolist() for b in epoch[:3]]
    parts = [audio_batches.train_dataset(ex, 8, 3, sizes, 4, lambda n: n // 160, p, 2)[5] for p in range(2)]
    union = np.concatenate([p["audio"][:, 0] for p in parts])
    assert sorted(union.tolist()) == sorted(epoch[5]["audio"][:, 0].tolist())
    assert all(p["padded_positions"].tolist() == [p["audio"].shape[1] // 160] * 4 for p in parts)
    evals = audio_batches.eval_batches(ex, 16, sizes, 4)
    idx = np.concatenate([b["index"][b["weight"] > 0] for b in evals])
    assert sorted(idx.tolist()) == list(range(100)) and sum(b["weight"].sum() for b in evals) == 100
    for b in evals:
        np.testing.assert_array_equal(b["audio"][:, 0], b["index"] + 1)


def _deb(members: dict[str, bytes]) -> bytes:
    """A minimal Debian package: an ar archive with debian-binary, control and data tarballs."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = b"!<arch>\n"
    for name, body in [("debian-binary", b"2.0\n"), ("control.tar.xz", b"x"), ("data.tar.xz", data.getvalue())]:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" * (len(body) % 2)
    return out


def _wav(samples: np.ndarray, rate: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def test_a_debian_package_unpacks_and_its_prompts_read(tmp_path):
    import gzip

    transcript = b"; comment\n\nhello: Hello, world!\ntone: [a tone]\ndigits/1: 1\n"
    deb = tmp_path / "sounds.deb"
    deb.write_bytes(_deb({asterisk.SOUNDS + "/hello.wav": _wav(np.arange(800)),
                          asterisk.SOUNDS + "/digits/1.wav": _wav(np.zeros(400)),
                          asterisk.TRANSCRIPTS: gzip.compress(transcript)}))
    asterisk._unpack_deb(deb, tmp_path / "root")
    root = asterisk.find_root(str(tmp_path / "root"))
    assert asterisk.read_transcripts(root / asterisk.TRANSCRIPTS) == {"hello": "Hello, world!", "tone": "[a tone]",
                                                                     "digits/1": "1"}
    np.testing.assert_array_equal(asterisk.read_wav(root / asterisk.SOUNDS / "hello.wav"), np.arange(800))
    assert [asterisk.normalize(t) for t in ("Hello, world!", "[a tone]", "Call-Forward on Busy.", "dollar [$]")] == [
        "hello world", "", "call forward on busy", "dollar"]
    (tmp_path / "bad.txt").write_text("ok: fine\nno colon here\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected `name: text`"):
        asterisk.read_transcripts(tmp_path / "bad.txt")
    (tmp_path / "stereo.wav").write_bytes(_wav(np.zeros(800), channels=2))
    with pytest.raises(ValueError, match=r"stereo.wav: 2 channel\(s\).*expected mono"):
        asterisk.read_wav(tmp_path / "stereo.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(ValueError, match="junk.wav: not a readable WAV"):
        asterisk.read_wav(tmp_path / "junk.wav")
    (tmp_path / "x.deb").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="x.deb is not a Debian package"):
        asterisk._unpack_deb(tmp_path / "x.deb", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="bigmodel_jax.data.asterisk fetch"):
        asterisk.find_root(str(tmp_path / "nothing"))


@pytest.fixture(scope="module")
def prompts():
    try:
        asterisk.find_root("")
    except FileNotFoundError:
        pytest.skip(f"the Asterisk prompts are not fetched: run `{asterisk.FETCH}`")
    return asterisk.load(asterisk.DEFAULT_ROOT.replace("asterisk-sounds", "tfds"))


def test_the_asterisk_prompts_split_by_utterance(prompts):
    sizes = {k: len(v) for k, v in prompts.items()}
    assert sum(sizes.values()) == 561 and sizes["train"] > 400 and min(sizes.values()) > 35
    names = [r["name"] for split in prompts.values() for r in split]
    assert len(set(names)) == len(names)  # no prompt in two splits
    seconds = sum(len(r["audio"]) for split in prompts.values() for r in split) / asterisk.SAMPLE_RATE
    assert 24 * 60 < seconds < 26 * 60
    assert all(asterisk.normalize(r["text"]) for split in prompts.values() for r in split)


def test_ctc_trains_on_the_prompts_and_reports_cer_and_wer(prompts, tmp_path):
    from bigmodel_jax import train
    from bigmodel_jax.config import apply_overrides, load_config_file
    from tests.conftest import ROOT

    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "ctc_asterisk.py:tiny")),
                          ["compilation_cache_dir="])
    result = train.train(cfg, tmp_path / "run")
    test = result.test_metrics
    assert set(test) == {"loss", "cer", "wer"} and np.isfinite(test["loss"])
    assert test["cer"] > 0.3 and test["wer"] > 0.5  # 30 steps of a 1-layer model: far from transcribing


@pytest.mark.slow
def test_a_ctc_run_resumes_exactly_across_an_epoch(prompts, tmp_path):
    """The bucketed batches are a pure function of (seed, step): a run resumed from a checkpoint ends
    where the unbroken run did, across the epoch boundary where a new permutation starts."""
    import shutil

    from bigmodel_jax import train
    from bigmodel_jax.config import apply_overrides, load_config_file
    from tests.conftest import ROOT

    cfg = apply_overrides(load_config_file(str(ROOT / "configs" / "ctc_asterisk.py:tiny")), [
        "compilation_cache_dir=", "data.max_seconds=1.0", "train.batch_size=16", "train.num_steps=12",
        "train.log_every=1", "train.eval_every=12", "train.checkpoint_every=4", "train.keep_checkpoints=5"])
    straight = train.train(cfg, tmp_path)
    assert len(ctc.examples(cfg, asterisk.load(cfg.data.tfds_dir)["train"])[0]) // 16 < 12  # an epoch ends inside
    for step in (8, 12):
        shutil.rmtree(tmp_path / "checkpoints" / str(step))
    shutil.rmtree(tmp_path / "best", ignore_errors=True)
    resumed = train.train(cfg, tmp_path)
    assert sorted(resumed.train_losses) == list(range(5, 13))
    assert [resumed.train_losses[s] for s in range(5, 13)] == [straight.train_losses[s] for s in range(5, 13)]
