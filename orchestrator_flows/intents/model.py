"""The built-in intent classifier: trained from example utterances, it picks an intent among those
a stage allows, or says no-match and why.

Two heads score an utterance: the TF-IDF head (tfidf.py, always) and, when its packages are
installed, a sentence encoder (encoder.py) with a logistic regression over its embeddings. Over the
ALLOWED intents only (the others' logits are dropped before normalising, so the answer is
P(intent | intent is allowed)):
    z = 0.4 * log_softmax(tfidf logits) + 0.6 * log_softmax(encoder logits);  p = softmax(z / T)
(TF-IDF only: p = softmax(tfidf logits / T)). The turn is a no-match when p1 < confidence
("low_confidence"), p1 - p2 < margin ("ambiguous"), or the utterance's cosine similarity to the
nearest example of the top intent is below the similarity gate ("unlike_examples": the question is
about something no intent covers). With one allowed intent p1 is 1 by construction, so its
confidence is that similarity (clamped to 0-1) instead, and the same three checks apply.
Weights, temperature and gates were chosen on BANKING77 (bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from .encoder import EncoderUnavailable, SentenceEncoder, load_encoder
from .tfidf import TfidfHead

NO_MATCH = "no_match"
TFIDF_WEIGHT = 0.4
TEMPERATURE = 0.65
ENCODER_C = 100.0
# Default similarity gates per head: embeddings' cosine is on another scale than TF-IDF's.
ENCODER_SIMILARITY = 0.5
TFIDF_SIMILARITY = 0.2
# Examples per intent kept for the similarity gate (chosen to cover the intent), bounding its cost.
GATE_EXAMPLES_PER_INTENT = 32
# Only the start of a long utterance is read: bounds the cost of one turn.
MAX_CHARS = 1000


@dataclass(frozen=True)
class Scored:
    intent: str
    confidence: float  # 0-1, probability over the allowed intents


@dataclass(frozen=True)
class Classification:
    intent: str  # the chosen intent, or NO_MATCH
    confidence: float  # the top intent's probability (even when no-match)
    best: str | None  # the top intent (even when no-match); None when nothing to rank
    alternatives: tuple[Scored, ...]  # the next two (fewer if fewer allowed), best first
    # None, "low_confidence", "ambiguous", "unlike_examples" or "no_examples"
    no_match_reason: str | None
    similarity: float | None = None  # cosine to the top intent's nearest example (None: none)


@dataclass(frozen=True)
class Thresholds:
    confidence: float = 0.2  # below: no-match "low_confidence"
    margin: float = 0.05  # top1 - top2 below: no-match "ambiguous"
    similarity: float | None = None  # below: "unlike_examples"; None: the model's own gate


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - math.log(float(np.exp(z).sum()))


def _clean(text: str) -> str:
    """Any str becomes text the heads can read: lone surrogates replaced, length bounded."""
    return text[:MAX_CHARS].encode("utf-8", "replace").decode("utf-8")


def _training_set(
    examples: Mapping[str, Sequence[str]],
) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """(intents with examples, sorted; their texts, grouped by intent; each text's intent index)."""
    for intent, utterances in examples.items():
        if isinstance(utterances, str):
            raise ValueError(f"examples for {intent!r} must be a list of utterances, not a string")
        for u in utterances:
            if not isinstance(u, str) or not u.strip():
                raise ValueError(f"intent {intent!r} has a blank example utterance")
    # Sorted and de-duplicated: the model depends on the set of examples, not their order.
    per_intent = {i: sorted(set(examples[i])) for i in sorted(examples) if examples[i]}
    if len(per_intent) < 2:
        raise ValueError(
            f"intent classification needs examples for at least 2 intents, got {len(per_intent)}"
        )
    intents = tuple(per_intent)
    texts = [t for i in intents for t in per_intent[i]]
    labels = np.asarray([k for k, i in enumerate(intents) for _ in per_intent[i]], np.int64)
    return intents, texts, labels


def _cover(embeddings: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """At most k of one intent's examples that cover it (greedy farthest point, deterministic)."""
    if len(idx) <= k:
        return idx
    x = embeddings[idx]
    chosen = [int(np.argmax(x @ x.mean(axis=0)))]
    nearest = x @ x[chosen[0]]
    for _ in range(k - 1):
        j = int(np.argmin(nearest))
        chosen.append(j)
        nearest = np.maximum(nearest, x @ x[j])
    return idx[np.sort(chosen)]


class _EncoderHead:
    """Logistic regression over sentence embeddings, and the examples kept for the gate."""

    def __init__(self, encoder: SentenceEncoder, texts: list[str], labels: np.ndarray) -> None:
        self.encoder = encoder
        embeddings = encoder.encode_many(texts)
        lr = LogisticRegression(C=ENCODER_C, max_iter=3000).fit(embeddings, labels)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # two classes: one row, class 1 against class 0
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.weights = np.ascontiguousarray(coef.T.astype(np.float32))
        self.intercept = intercept.astype(np.float32)
        n_intents = int(labels.max()) + 1
        keep = np.concatenate(
            [
                _cover(embeddings, np.flatnonzero(labels == c), GATE_EXAMPLES_PER_INTENT)
                for c in range(n_intents)
            ]
        )
        self.gate_examples = np.ascontiguousarray(embeddings[keep].T)  # (DIM, n_kept)
        self.gate_labels = labels[keep]

    def digest(self, h: hashlib._Hash) -> None:
        h.update(self.encoder.model_digest.encode())
        h.update(self.weights.tobytes())
        h.update(self.intercept.tobytes())
        h.update(self.gate_examples.tobytes())


class IntentModel:
    """A trained classifier. Immutable after training; `classify` is safe from many threads."""

    def __init__(
        self,
        intents: tuple[str, ...],
        tfidf: TfidfHead,
        encoder_head: _EncoderHead | None,
        labels: np.ndarray,
        encoder_missing: str | None,
    ) -> None:
        self.intents = intents
        self._index = {name: k for k, name in enumerate(intents)}
        self._tfidf = tfidf
        self._encoder = encoder_head
        self._labels = labels
        self._encoder_missing = encoder_missing
        h = hashlib.sha256(repr(intents).encode())
        tfidf.digest(h)
        if encoder_head is not None:
            encoder_head.digest(h)
        self._fingerprint = h.hexdigest()[:16]

    @classmethod
    def train(
        cls,
        examples: Mapping[str, Sequence[str]],
        *,
        cache_dir: Path | None = None,
        use_encoder: bool = True,
    ) -> IntentModel:
        """Deterministic: the same examples (in any order) give the same model and fingerprint.
        cache_dir holds the encoder's int8 graph between runs. Raises ValueError on bad examples."""
        intents, texts, labels = _training_set(examples)
        encoder_head, missing = None, None
        if use_encoder:
            try:
                encoder_head = _EncoderHead(load_encoder(cache_dir), texts, labels)
            except EncoderUnavailable as e:
                missing = str(e)
        # Without the encoder, the similarity gate runs on the TF-IDF vectors.
        tfidf = TfidfHead(texts, labels, len(intents), keep_examples=encoder_head is None)
        return cls(intents, tfidf, encoder_head, labels, missing)

    @property
    def description(self) -> str:
        if self._encoder is not None:
            return f"tfidf+{self._encoder.encoder.name}"
        if self._encoder_missing is not None:
            return f"tfidf (encoder unavailable: {self._encoder_missing})"
        return "tfidf"

    def fingerprint(self) -> str:
        return self._fingerprint

    def default_similarity(self) -> float:
        return ENCODER_SIMILARITY if self._encoder is not None else TFIDF_SIMILARITY

    def classify(self, text: str, allowed: Sequence[str], thresholds: Thresholds) -> Classification:
        candidates = np.asarray(sorted({self._index[a] for a in allowed if a in self._index}))
        if len(candidates) == 0:
            return Classification(NO_MATCH, 0.0, None, (), "no_examples")
        probabilities, similarities = self._score(_clean(text), candidates)
        order = np.argsort(-probabilities, kind="stable")[:3]
        ranked = [Scored(self.intents[candidates[k]], float(probabilities[k])) for k in order]
        similarity = float(similarities[order[0]])
        top = ranked[0]
        if len(candidates) == 1:
            top = Scored(top.intent, min(max(similarity, 0.0), 1.0))
        second = ranked[1].confidence if len(ranked) > 1 else 0.0
        gate = self.default_similarity() if thresholds.similarity is None else thresholds.similarity
        reason = None
        if top.confidence < thresholds.confidence:
            reason = "low_confidence"
        elif len(ranked) > 1 and top.confidence - second < thresholds.margin:
            reason = "ambiguous"
        elif similarity < gate:
            reason = "unlike_examples"
        return Classification(
            NO_MATCH if reason else top.intent,
            top.confidence,
            top.intent,
            tuple(ranked[1:]),
            reason,
            similarity,
        )

    def _score(self, text: str, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probability of each candidate, similarity of the text to each candidate's nearest
        example), both over the candidates only."""
        head = self._encoder
        logits, example_sims = self._tfidf.score(text, similarity=head is None)
        if head is None:
            z = logits[candidates] / TEMPERATURE
            sims = self._nearest(example_sims, self._labels, candidates)
        else:
            embedding = head.encoder.encode(text)
            encoder_logits = (embedding @ head.weights + head.intercept)[candidates]
            z = (
                TFIDF_WEIGHT * _log_softmax(logits[candidates])
                + (1 - TFIDF_WEIGHT) * _log_softmax(encoder_logits)
            ) / TEMPERATURE
            # einsum, not `@`: a matrix-vector product this size goes to BLAS's threads, whose
            # hand-over stalls the turn when the cores are busy (bench/RESULTS.md).
            sims = np.einsum("d,dn->n", embedding, head.gate_examples)
            sims = self._nearest(sims, head.gate_labels, candidates)
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=-1e4)  # answers stay numbers, always
        p = np.exp(z - z.max())
        return p / p.sum(), np.nan_to_num(sims, nan=-1.0)

    @staticmethod
    def _nearest(sims: np.ndarray | None, labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Per candidate, the largest similarity among its examples (labels are grouped and
        ascending, and every intent has an example: reduceat's segments are the intents)."""
        assert sims is not None
        starts = np.searchsorted(labels, np.arange(int(labels[-1]) + 1))
        return np.maximum.reduceat(sims, starts)[candidates]
