"""Token attributions: which input tokens a prediction rests on.

Both methods differentiate a scalar score of each row (the predicted class's probability, or the
next token's) with respect to the input embeddings (`capture.input_embed`), as Captum's layer
methods on `word_embeddings` do:

- gradient x input (Captum's LayerGradientXActivation): e_t · dF/de_t per token;
- integrated gradients (Sundararajan et al. 2017; Captum's LayerIntegratedGradients):
  (e_t - b_t) · ∫_0^1 dF/de(b + α(e - b)) dα, the integral by a quadrature over `steps` points.
  Completeness, Σ_t attr_t = F(e) - F(b), holds for the exact integral; the gap the quadrature
  leaves is reported with every result (`completeness_error`): more steps if it is large.

A token's attribution is the sum over its embedding's dimensions. The baseline b is a sequence of
token ids (the embeddings of [PAD] where the input has words, its [CLS]/[SEP] kept: Captum's
BERT tutorial's choice), so F(b) is the model on that sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bigmodel_jax.explain import capture

Inputs = dict[str, jax.Array]
ScoreFn = Callable[[nnx.Module, Inputs, jax.Array], jax.Array]  # (model, inputs [B, ...], target [B]) -> [B]


def classifier_probability(model: nnx.Module, inputs: Inputs, target_b: jax.Array) -> jax.Array:
    """A BERT-with-head classifier's probability of class target_b."""
    logits_bc = model(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
    return jnp.take_along_axis(jax.nn.softmax(logits_bc, -1), target_b[:, None], -1)[:, 0]


def next_token_probability(model: nnx.Module, inputs: Inputs, target_b: jax.Array) -> jax.Array:
    """A causal LM's probability of token target_b after the whole of inputs["input_ids"]."""
    logits_btv, _ = model(inputs["input_ids"])
    return jnp.take_along_axis(jax.nn.softmax(logits_btv[:, -1], -1), target_b[:, None], -1)[:, 0]


SCORES = {"classify": classifier_probability, "causal_lm": next_token_probability}  # task -> score


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas in [0, 1], weights summing to 1) approximating ∫_0^1 f(α) dα by Σ w_i f(α_i):
    'gausslegendre' (Captum's default: exact for polynomials of degree < 2·steps) or
    'riemann_trapezoid'."""
    if steps < 2:
        raise ValueError(f"integrated gradients needs steps >= 2, not {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if method == "riemann_trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    raise ValueError(f"method={method!r}; valid: 'gausslegendre', 'riemann_trapezoid'")


@dataclass
class Attribution:
    method: str
    token_ids: np.ndarray  # [T]
    scores: np.ndarray  # [T], one per token: its summed attribution
    target: int
    value: float  # F(input)
    baseline_value: float  # F(baseline); nan for gradient x input
    completeness_error: float  # |Σ scores - (F(input) - F(baseline))|; nan for gradient x input


@partial(jax.jit, static_argnums=(0, 1))
def _score_and_grads(score_fn: ScoreFn, graphdef: nnx.GraphDef, state: nnx.State, perturbation: nnx.State,
                     inputs: Inputs, target_b: jax.Array) -> tuple[jax.Array, nnx.State]:
    """(F [B], dF/d(perturbation) [B, T, D]) with the perturbation added to the input embeddings."""
    def total(p):
        score_b, _ = capture.run(score_fn, nnx.merge(graphdef, state), inputs, target_b, init=p)
        return score_b.sum(), score_b

    grads, score_b = jax.grad(total, has_aux=True)(perturbation)
    return score_b, grads


def _rows(inputs: Inputs, n: int) -> Inputs:
    return {k: jnp.repeat(v, n, axis=0) for k, v in inputs.items()}


def _embedding_grads(model: nnx.Module, score_fn: ScoreFn, inputs: Inputs, target: int,
                     embeddings_std: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """(F, dF/de) [S], [S, T, D] at each of the S embedding sequences embeddings_std (the input's
    token embeddings replaced; everything else about the input as it is)."""
    embed = capture.input_embed(model)
    x_td = embed(inputs["input_ids"][0])
    s = embeddings_std.shape[0]
    path = next(p for p, m in nnx.iter_modules(model) if m is embed)
    delta = nnx.from_flat_state([(path + ("input_embeddings",), nnx.Perturbation(embeddings_std - x_td[None]))])
    embed.explain = True
    try:
        score_s, grads = _score_and_grads(score_fn, *nnx.split(model), delta, _rows(inputs, s), jnp.full((s,), target))
    finally:
        embed.explain = False
    (g,) = [v.get_value() for _, v in nnx.to_flat_state(grads)]
    return np.asarray(score_s), np.asarray(g)


def gradient_x_input(model: nnx.Module, score_fn: ScoreFn, inputs: Inputs, target: int) -> Attribution:
    """e_t · dF/de_t for the one row of `inputs` (arrays [1, T])."""
    x_td = capture.input_embed(model)(inputs["input_ids"][0])
    score, g_std = _embedding_grads(model, score_fn, inputs, target, x_td[None])
    scores = (np.asarray(x_td) * g_std[0]).sum(-1)
    return Attribution("gradient_x_input", np.asarray(inputs["input_ids"][0]), scores, target, float(score[0]),
                       float("nan"), float("nan"))


def integrated_gradients(model: nnx.Module, score_fn: ScoreFn, inputs: Inputs, target: int,
                         baseline_ids: np.ndarray, steps: int = 50, method: str = "gausslegendre",
                         batch: int = 16) -> Attribution:
    """Integrated gradients of the one row of `inputs` (arrays [1, T]) from baseline_ids [T];
    the steps run `batch` at a time."""
    embed = capture.input_embed(model)
    x_td = embed(inputs["input_ids"][0])
    b_td = embed(jnp.asarray(baseline_ids))
    alphas, weights = quadrature(method, steps)
    pad = -steps % batch  # every chunk one shape, one compile: the padding points weigh 0
    alphas, weights = np.pad(alphas, (0, pad)), np.pad(weights, (0, pad))
    total_td = np.zeros(x_td.shape, np.float64)
    for i in range(0, steps + pad, batch):
        a = jnp.asarray(alphas[i:i + batch], jnp.float32)[:, None, None]
        _, g_std = _embedding_grads(model, score_fn, inputs, target, b_td[None] + a * (x_td - b_td)[None])
        total_td += np.einsum("s,std->td", weights[i:i + batch], g_std.astype(np.float64))
    scores = ((np.asarray(x_td) - np.asarray(b_td)) * total_td).sum(-1)
    value = float(score_fn(model, inputs, jnp.array([target]))[0])
    base_inputs = dict(inputs, input_ids=jnp.asarray(baseline_ids)[None])
    baseline_value = float(score_fn(model, base_inputs, jnp.array([target]))[0])
    return Attribution("integrated_gradients", np.asarray(inputs["input_ids"][0]), scores, target, value,
                       baseline_value, abs(float(scores.sum()) - (value - baseline_value)))


def pad_baseline(input_ids_t: np.ndarray, keep_t: np.ndarray, pad_id: int) -> np.ndarray:
    """The baseline sequence: pad_id where keep_t is False (the words), the input's ids where it is
    True ([CLS], [SEP], padding)."""
    return np.where(keep_t, input_ids_t, pad_id).astype(np.asarray(input_ids_t).dtype)
