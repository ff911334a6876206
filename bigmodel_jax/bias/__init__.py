"""Bias: WEAT / SEAT (weat.py), word lists and swaps (words.py), hard-debias (debias.py), the swap probe
(probe.py); `python -m experiments.bias` and docs/bias.md."""
