"""Reading a model's insides with flax.nnx's own mechanism, `nnx.capture`.

Three class attributes are the only hooks in the model code, all off by default, so training and
checkpoints never see them: `Attention.explain` sows each layer's attention probabilities,
`Block.explain` sows each block's input (the residual stream a probe reads), and `Embed.explain`
adds an nnx `Perturbation` to the input embeddings, through which attributions differentiate.
They are on only inside `hooks_on` (and an attribution's own call), always under `nnx.capture`,
which hands the values back as an `nnx.State` keyed by module path and leaves the model as it was.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Callable, Iterator

import jax
import numpy as np
from flax import nnx

from bigmodel_jax.models.attention import Attention
from bigmodel_jax.models.blocks import Block
from bigmodel_jax.models.encdec import EncoderDecoder
from bigmodel_jax.models.layers import Embed


@contextlib.contextmanager
def hooks_on(model: nnx.Module) -> Iterator[nnx.Module]:
    """The model with its attention and block hooks on, as they were again afterwards (else every
    later call would sow into the model's state): the plain attention path (a fused kernel never
    forms the probabilities), no rematerialization (its traced copy of a block would sow into a
    module nobody reads). Scanned layers run as a loop (run_blocks)."""
    saved = []
    for _, m in nnx.iter_modules(model):
        if isinstance(m, Attention):
            saved.append((m, {"explain": m.explain, "attention_impl": m.attention_impl}))
            m.explain, m.attention_impl = True, "plain"
        elif isinstance(m, Block):
            saved.append((m, {"explain": m.explain, "remat": m.remat}))
            m.explain, m.remat = True, "none"
        elif isinstance(m, EncoderDecoder):  # it remats its layers itself
            saved.append((m, {"remat": m.remat}))
            m.remat = "none"
    try:
        yield model
    finally:
        for m, attrs in saved:
            for name, value in attrs.items():
                setattr(m, name, value)


def input_embed(model: nnx.Module) -> Embed:
    """The embedding whose output token attributions are taken at: the word embeddings of a BERT
    (bare, MLM or with a head) and a GPT's token embeddings, as Captum's LayerIntegratedGradients on
    `bert.embeddings.word_embeddings` / `transformer.wte` does."""
    for path in (("bert", "word_embed"), ("word_embed",), ("token_embed",)):
        m = model
        for name in path:
            m = getattr(m, name, None)
        if isinstance(m, Embed):
            return m
    raise ValueError(f"token attributions need a model with token inputs (BERT or GPT), not a {type(model).__name__}:"
                     " a ViT's attributions are over pixels (attributions.pixel_gradients)")


def run(fn: Callable, model: nnx.Module, *args, init: nnx.State | None = None, **kwargs) -> tuple[Any, nnx.State]:
    """(fn(model, *args, **kwargs), what it sowed and perturbed). init: perturbations to add."""
    captured = nnx.capture(fn, nnx.Intermediate, nnx.Perturbation, init=init)(model, *args, **kwargs)
    out, sown, perturbations = captured
    return out, nnx.merge_state(sown, perturbations)


def _layer_order(path: tuple) -> tuple:
    """Module paths sorted as the model runs them: blocks by number, not as strings."""
    return tuple((0, int(p), "") if isinstance(p, int) or str(p).isdigit() else (1, 0, str(p)) for p in path)


def collected(state: nnx.State, name: str) -> dict[str, np.ndarray]:
    """Every value sown under `name`, keyed by its module's dotted path ('blocks.3.attn',
    'decoder.1.cross_attn'), in layer order; a module called twice keeps its last value."""
    found = {}
    for path, value in nnx.to_flat_state(state):
        if path[-1] == name:
            found[path[:-1]] = np.asarray(jax.device_get(value.get_value()[-1]))
    return {".".join(map(str, p)): found[p] for p in sorted(found, key=_layer_order)}


def attention_maps(model: nnx.Module, fn: Callable, *args, **kwargs) -> dict[str, np.ndarray]:
    """Each attention module's probabilities [B, H, T, S] for one call of fn(model, *args)."""
    with hooks_on(model):
        _, state = run(fn, model, *args, **kwargs)
    return collected(state, "attention_probs")


def hidden_states(model: nnx.Module, fn: Callable, *args) -> tuple[list[np.ndarray], Any]:
    """([each block's input, ..., fn's output], fn's output): the embedding layer's output first,
    then the residual stream after each block, as Hugging Face's output_hidden_states (fn returns
    the last hidden state: a BERT's last block output, a GPT's final-normed stream). Compiled once
    per fn and input shapes (a probe reads hundreds of windows of one shape)."""
    states, out = _hidden_states(fn, *nnx.split(model), *args)
    return [np.asarray(s) for s in states], out


@partial(jax.jit, static_argnums=(0, 1))
def _hidden_states(fn: Callable, graphdef: nnx.GraphDef, state: nnx.State, *args):
    model = nnx.merge(graphdef, state)  # made inside the trace, so the hooks may be set on it
    with hooks_on(model):
        out, sown = run(fn, model, *args)
    inputs = []
    for path, value in sorted(nnx.to_flat_state(sown), key=lambda pv: _layer_order(pv[0])):
        if path[-1] == "block_input":
            inputs.append(value.get_value()[-1])
    return inputs + [out], out
