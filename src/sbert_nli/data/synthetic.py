"""A built-in, deterministic, learnable NLI generator (no downloads): for the smoke preset and tests.

Each premise is a scene "<adjective> <subject> <activity> <place>." and gets one hypothesis per label,
SNLI style (so premises repeat three times, as in SNLI):
- entailment: the same scene said more generally (hypernyms, dropped details);
- neutral: the same scene plus a detail the premise does not support;
- contradiction: the same subject doing an incompatible or a different activity.
The rules are consistent, so a small encoder learns them well above chance (the smoke preset
reaches >= 0.8 held-out accuracy on premises it never saw).
"""

from __future__ import annotations

import numpy as np

from sbert_nli.data.nli import NLIData, SourceReport

# (specific, general)
SUBJECTS = [
    ("man", "person"), ("woman", "person"), ("boy", "child"), ("girl", "child"), ("dog", "animal"),
    ("cat", "animal"), ("chef", "cook"), ("student", "young person"), ("farmer", "worker"),
    ("musician", "performer"), ("doctor", "professional"), ("soldier", "uniformed person"),
]
ADJECTIVES = ["tall", "young", "old", "small", "happy", "tired"]
# (specific, general, incompatible)
ACTIVITIES = [
    ("plays a guitar", "makes music", "sleeps in a bed"),
    ("rides a bicycle", "is cycling", "sits completely still"),
    ("eats a sandwich", "is eating food", "is starving with no food"),
    ("reads a newspaper", "is reading", "has eyes closed while napping"),
    ("throws a red ball", "plays with a ball", "holds nothing at all"),
    ("swims in cold water", "is in the water", "is completely dry"),
    ("paints a picture", "is making art", "watches television"),
    ("climbs a tall tree", "is climbing", "lies on the ground"),
    ("drinks hot coffee", "has a drink", "is fasting and drinking nothing"),
    ("runs very fast", "is moving quickly", "stands without moving"),
    ("cooks dinner", "prepares a meal", "orders food at a restaurant"),
    ("sings a song", "uses their voice", "stays silent"),
]
# (specific, general)
PLACES = [
    ("in the park", "outside"), ("on the beach", "outdoors"), ("in a kitchen", "indoors"),
    ("at the train station", "in public"), ("in a classroom", "inside a building"),
    ("on a mountain", "outdoors"), ("in the city", "in an urban area"), ("near a river", "by the water"),
]
EXTRAS = [
    "because it is their birthday", "for a competition", "while waiting for a friend",
    "for the first time", "to impress a crowd", "after a long day at work", "with their family",
    "during a holiday", "for a television show", "because they are sad",
]


def _article(noun_phrase: str) -> str:
    return ("An " if noun_phrase[0] in "aeiou" else "A ") + noun_phrase


def synthetic_nli(n_pairs: int = 6000, seed: int = 0) -> NLIData:
    """``n_pairs`` pairs (rounded down to a multiple of 3), deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    n_premises = max(1, n_pairs // 3)
    grid = len(SUBJECTS) * len(ADJECTIVES) * len(ACTIVITIES) * len(PLACES)
    picks = rng.permutation(grid)[:n_premises] if n_premises <= grid else rng.integers(0, grid, n_premises)
    premises, hypotheses, labels = [], [], []
    for code in picks:
        code, s = divmod(int(code), len(SUBJECTS))
        code, a = divmod(code, len(ADJECTIVES))
        p_i, act = divmod(code, len(ACTIVITIES))
        subj, subj_general = SUBJECTS[s]
        doing, doing_general, doing_not = ACTIVITIES[act]
        place, place_general = PLACES[p_i]
        extra = EXTRAS[rng.integers(len(EXTRAS))] if rng.random() < 0.5 else None
        premise = f"{_article(ADJECTIVES[a] + ' ' + subj)} {doing} {place}" + (f" {extra}." if extra else ".")
        # Hypothesis-only cues are avoided on purpose: an extra clause, a general activity or a
        # specific one occurs under every label, so the label depends on the premise.
        kept = f" {extra}" if extra and rng.random() < 0.5 else ""
        entail = [
            f"{_article(subj_general)} {doing_general} {place_general}{kept}.",
            f"{_article(subj)} {doing_general}{kept}.",
            f"{_article(subj_general)} {doing} {place_general}.",
        ][rng.integers(3)]
        new_extra = EXTRAS[(EXTRAS.index(extra) + 1 + rng.integers(len(EXTRAS) - 1)) % len(EXTRAS)] if extra \
            else EXTRAS[rng.integers(len(EXTRAS))]
        neutral = [
            f"{_article(subj)} {doing} {place} {new_extra}.",
            f"{_article(subj_general)} {doing_general} {new_extra}.",
        ][rng.integers(2)]
        other = ACTIVITIES[(act + 1 + rng.integers(len(ACTIVITIES) - 1)) % len(ACTIVITIES)]
        contradict = [
            f"{_article(subj)} {doing_not} {place}.",
            f"{_article(subj_general)} {other[1]} {place_general}{kept}.",
            f"{_article(subj)} {other[0]}.",
        ][rng.integers(3)]
        for hypothesis, label in ((entail, 0), (neutral, 1), (contradict, 2)):
            premises.append(premise)
            hypotheses.append(hypothesis)
            labels.append(label)
    report = SourceReport(name="builtin:synthetic", rows=len(labels), kept=len(labels))
    return NLIData(premises, hypotheses, np.asarray(labels, dtype=np.int64), [report])
