"""Token attributions for people: colored text in the terminal (rich), an HTML page, a PNG.
Red pushes the score up, blue down; the color's strength is the score over the largest |score|."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display), imported when first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay the figure out (inside rect, figure fractions), write it as a PNG and free it."""
    fig.tight_layout(rect=rect)
    path = Path(path)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _strength(scores: np.ndarray) -> np.ndarray:
    top = float(np.abs(scores).max()) if len(scores) else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)


def _rgb(s: float) -> tuple[int, int, int]:
    """White at 0, red at +1, blue at -1."""
    fade = int(round(255 * (1 - min(abs(s), 1.0))))
    return (255, fade, fade) if s >= 0 else (fade, fade, 255)


def rich_text(tokens: Sequence[str], scores: np.ndarray):
    """A rich Text with each token on its color (print it with rich's Console)."""
    from rich.text import Text

    text = Text()
    for token, s in zip(tokens, _strength(np.asarray(scores, np.float64))):
        r, g, b = _rgb(float(s))
        text.append(token, style=f"black on rgb({r},{g},{b})")
        text.append(" ")
    return text


def html_page(tokens: Sequence[str], scores: np.ndarray, title: str, lines: Sequence[str] = ()) -> str:
    spans = []
    for token, raw, s in zip(tokens, scores, _strength(np.asarray(scores, np.float64))):
        r, g, b = _rgb(float(s))
        spans.append(f'<span title="{raw:+.4g}" style="background:rgb({r},{g},{b});padding:2px 3px;'
                     f'margin:1px;border-radius:3px">{html.escape(token)}</span>')
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:60em'><h3>{html.escape(title)}</h3>{notes}"
            f"<p style='line-height:2.2'>{' '.join(spans)}</p>"
            "<p style='color:gray'>red: raises the score; blue: lowers it; hover for the value</p></body></html>")


def tokens_png(tokens: Sequence[str], scores: np.ndarray, path: str | Path, title: str) -> Path:
    """The tokens as a bar chart of their attributions (one bar per token, colored as above)."""
    plt = pyplot()
    scores = np.asarray(scores, np.float64)
    colors = [tuple(c / 255 for c in _rgb(float(s))) for s in _strength(scores)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(tokens)), 3.2))
    ax.bar(range(len(tokens)), scores, color=colors, edgecolor="gray", linewidth=0.5)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_ylabel("attribution")
    ax.set_title(title, fontsize=9)
    return save(fig, path)
