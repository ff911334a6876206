"""Speech features and CTC decoding, in JAX inside the compiled step (features) or numpy (decoding).

`log_mel` is Whisper's recipe (Radford et al. 2022, as transformers' WhisperFeatureExtractor
computes it): a centered STFT with a periodic Hann window and reflect padding, the power spectrum
through Slaney-normalized mel filters, log10, clamped to 8 decades below the utterance's maximum
and scaled to roughly [-1, 1] by (x + 4) / 4. Computing it in the step keeps the data pipeline to
raw samples and lets SpecAugment act on the features of each draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, Whisper's): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = 3.0 * f / 200.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] triangular filters evenly spaced on the mel scale from 0 Hz to
    Nyquist, each scaled to unit area (Slaney's normalization), in float32."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])[None]
    upper = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])[None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    return (filters * (2.0 / (edges[2:] - edges[:-2]))[None]).astype(np.float32)


def num_frames(num_samples: Array | np.ndarray | int, hop: int) -> Array | np.ndarray | int:
    """Frames log_mel gives for a signal of that many samples (Whisper drops the STFT's last one)."""
    return num_samples // hop


def log_mel(waves_bn: Array, lengths_b: Array | None = None, *, sample_rate: int, n_fft: int, hop: int,
            n_mels: int) -> Array:
    """[B, N] samples in [-1, 1] -> [B, N // hop, n_mels] f32 log-mel features. lengths_b: each row's
    real samples (right padding after them): the clamp takes the maximum over real frames only, so a
    padded row's real frames equal the unpadded row's (but for the last ~n_fft/hop/2 frames, whose
    window reaches the padding where the unpadded STFT reflects)."""
    b, n = waves_bn.shape
    x = jnp.pad(waves_bn.astype(jnp.float32), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = n // hop  # the STFT's 1 + n // hop frames, less the last
    idx = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = jnp.fft.rfft(x[:, idx] * window.astype(np.float32), axis=-1)
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    mel = jnp.einsum("bfk,km->bfm", power, mel_filters(sample_rate, n_fft, n_mels),
                     precision=jax.lax.Precision.HIGHEST)
    logs = jnp.log10(jnp.maximum(mel, 1e-10))
    if lengths_b is None:
        top = logs.max(axis=(1, 2), keepdims=True)
    else:
        real = (jnp.arange(frames)[None] < num_frames(lengths_b, hop)[:, None])[..., None]
        top = jnp.where(real, logs, -jnp.inf).max(axis=(1, 2), keepdims=True)
    return (jnp.maximum(logs, top - 8.0) + 4.0) / 4.0


def spec_augment(feats_btm: Array, frames_b: Array, key: Array, *, freq_masks: int, freq_width: int,
                 time_masks: int, time_ratio: float) -> Array:
    """SpecAugment's masks (Park et al. 2019, without time warping): per example, freq_masks bands of
    0..freq_width mel channels and time_masks spans of 0..time_ratio x its length frames, each at a
    uniform start, set to 0 (about the features' mean under log_mel's scaling)."""
    b, t, m = feats_btm.shape
    k_fw, k_fs, k_tw, k_ts = jax.random.split(key, 4)
    fw = jax.random.randint(k_fw, (b, freq_masks), 0, freq_width + 1)
    fs = (jax.random.uniform(k_fs, (b, freq_masks)) * (m - fw)).astype(jnp.int32)
    tmax = jnp.floor(time_ratio * frames_b).astype(jnp.int32)[:, None]
    tw = (jax.random.uniform(k_tw, (b, time_masks)) * (tmax + 1)).astype(jnp.int32)
    ts = (jax.random.uniform(k_ts, (b, time_masks)) * jnp.maximum(frames_b[:, None] - tw, 0)).astype(jnp.int32)
    ch, fr = jnp.arange(m), jnp.arange(t)
    freq_hit = ((ch[None, None] >= fs[..., None]) & (ch[None, None] < (fs + fw)[..., None])).any(1)  # [B, M]
    time_hit = ((fr[None, None] >= ts[..., None]) & (fr[None, None] < (ts + tw)[..., None])).any(1)  # [B, T]
    return jnp.where(freq_hit[:, None, :] | time_hit[:, :, None], 0.0, feats_btm)


def ctc_greedy(ids_t: np.ndarray, blank: int = 0) -> list[int]:
    """Best-path decoding of one utterance's per-frame argmax ids (real frames only): runs of one id
    collapse to one, then blanks go (so a blank between two equal ids keeps both)."""
    ids = np.asarray(ids_t)
    if not len(ids):
        return []
    starts = np.concatenate([[True], ids[1:] != ids[:-1]])
    return [int(i) for i in ids[starts] if i != blank]
