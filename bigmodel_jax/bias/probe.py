"""The bias probe of a finetuned classifier: how its predictions move when the gendered words and
names of its inputs are swapped (he <-> she, king <-> queen, John <-> Amy; words.swap_gender).
A classifier that ignores gender moves nothing; the probe reports how often the predicted class
flips, how far the probabilities move, and which class gains when male texts become female.

The features the head reads can be passed through a projection first (debias.neutralize), which
is how the post-hoc hard-debias baseline is evaluated on the same texts.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from scipy import stats

from bigmodel_jax import embed
from bigmodel_jax.bias import debias, words
from bigmodel_jax.data.wordpiece import WordPieceTokenizer
from bigmodel_jax.models.heads import EncoderWithHead


@partial(jax.jit, static_argnums=0)
def _features(graphdef: nnx.GraphDef, state: nnx.State, input_ids, token_type_ids, attention_mask) -> jax.Array:
    return nnx.merge(graphdef, state).features(input_ids, token_type_ids, attention_mask)


def features(model: EncoderWithHead, tokenizer: WordPieceTokenizer, texts: Sequence[str], max_len: int = 64,
             batch_size: int = 32) -> np.ndarray:
    """[N, D] f32: what the classifier's head reads for each text (its pooled [CLS] output)."""
    graphdef, state = nnx.split(model)
    out = []
    for arrays, real in embed.padded_batches(tokenizer, texts, max_len, batch_size):
        out.append(np.asarray(_features(graphdef, state, arrays["input_ids"], arrays["token_type_ids"],
                                        arrays["attention_mask"]))[:real])
    return np.concatenate(out)


def probabilities(model: EncoderWithHead, features_nd: np.ndarray, direction_d: np.ndarray | None = None) -> np.ndarray:
    """[N, C] class probabilities from features, with the direction projected out first when given."""
    h = features_nd if direction_d is None else debias.neutralize(features_nd, direction_d)
    return np.asarray(jax.nn.softmax(model.read(jax.numpy.asarray(h)), axis=-1), np.float64)


def feature_direction(model: EncoderWithHead, tokenizer: WordPieceTokenizer) -> np.ndarray:
    """The gender direction in the classifier's feature space, from Bolukbasi et al.'s definitional
    pairs (woman/man, she/he, ...) each run through the classifier alone."""
    pairs = words.bolukbasi()["definitional_pairs"]
    f = features(model, tokenizer, [w for pair in pairs for w in pair], max_len=16)
    return debias.gender_direction([(f[2 * i], f[2 * i + 1]) for i in range(len(pairs))])


def swap_probe(model: EncoderWithHead, tokenizer: WordPieceTokenizer, texts: Sequence[str],
               label_names: Sequence[str], direction_d: np.ndarray | None = None, max_len: int = 64) -> dict:
    """The probe over the texts that have something to swap (swap_scores says what it reports).
    Texts are truncated to max_len tokens, as the classifier was trained."""
    pairs = [(t, swapped) for t in texts if (swapped := words.swap_gender(t)) != t]
    if not pairs:
        raise ValueError("none of the texts has a gendered word or name to swap")
    originals, swapped = [t for t, _ in pairs], [s for _, s in pairs]
    p0 = probabilities(model, features(model, tokenizer, originals, max_len), direction_d)
    p1 = probabilities(model, features(model, tokenizer, swapped, max_len), direction_d)
    return swap_scores(p0, p1, originals, label_names)


def swap_scores(p0: np.ndarray, p1: np.ndarray, originals: Sequence[str], label_names: Sequence[str]) -> dict:
    """From the class probabilities [N, C] of the original texts (p0) and of their swapped copies
    (p1): n, flip_rate (share whose predicted class changes), mean_abs_change (|P(originally predicted
    class)| moved), total_variation (half the L1 distance of the two distributions), and
    male_to_female: each class's mean probability change over the texts words.gender_of calls male
    (its Wilcoxon signed-rank p for the class that moves most)."""
    pred = p0.argmax(-1)
    male = np.asarray([words.gender_of(t) == 1 for t in originals])
    shift = (p1[male] - p0[male]).mean(0) if male.any() else np.zeros(p0.shape[1])
    top = int(np.abs(shift).argmax())
    p_top = float(stats.wilcoxon(p1[male, top] - p0[male, top]).pvalue) if male.sum() > 10 else float("nan")
    return {"n": len(originals), "n_male": int(male.sum()),
            "flip_rate": float((p1.argmax(-1) != pred).mean()),
            "mean_abs_change": float(np.abs(p1[np.arange(len(pred)), pred] - p0[np.arange(len(pred)), pred]).mean()),
            "total_variation": float(0.5 * np.abs(p1 - p0).sum(-1).mean()),
            "male_to_female": {name: float(s) for name, s in zip(label_names, shift)},
            "most_moved": label_names[top], "most_moved_p": p_top}
