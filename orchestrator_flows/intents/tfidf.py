"""The TF-IDF head: character (char_wb 1-5) and word (1-2) n-grams, sublinear tf, a linear SVM.

Character n-grams carry any language written in the examples (Spanish, accents, typos) without a
tokenizer or a download. Training uses scikit-learn; scoring one utterance is a hand-compiled
sparse dot product over the fitted vocabularies, because sklearn's `transform` costs more per
call than the whole model does (bench/RESULTS.md, "Intent classification").
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

# The SVM's decision values are margins near +-1; scaled, they read as logits for a softmax.
SVM_LOGIT_SCALE = 5.0
SVM_C = 0.5


@dataclass(frozen=True)
class _Part:
    """One fitted vectorizer, compiled: its analyzer, vocabulary, idf and the SVM's weights."""

    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray  # (n_features,) float64
    weights: np.ndarray  # (n_features, n_intents) float32


def _vectorizers() -> list[TfidfVectorizer]:
    return [
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 5), sublinear_tf=True, dtype=np.float32
        ),
        TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, 2),
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w+\b",
            dtype=np.float32,
        ),
    ]


class TfidfHead:
    """Per-intent logits for one utterance and, with keep_examples, its cosine similarity to
    each example (the TF-IDF-only model's out-of-scope gate)."""

    def __init__(
        self, texts: Sequence[str], labels: np.ndarray, n_intents: int, *, keep_examples: bool
    ) -> None:
        vectorizers = _vectorizers()
        blocks = [v.fit_transform(texts) for v in vectorizers]
        features = sp.hstack(blocks).tocsr()
        svm = LinearSVC(C=SVM_C, random_state=0).fit(features, labels)
        coef = svm.coef_.astype(np.float32)
        if n_intents == 2:  # sklearn returns one row for two classes: class 1 minus class 0
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-svm.intercept_[0] / 2, svm.intercept_[0] / 2], np.float32)
        else:
            intercept = svm.intercept_.astype(np.float32)
        self._parts: list[_Part] = []
        offset = 0
        for v in vectorizers:
            n = len(v.vocabulary_)
            self._parts.append(
                _Part(
                    v.build_analyzer(),
                    dict(v.vocabulary_),
                    v.idf_.astype(np.float64),
                    np.ascontiguousarray(coef[:, offset : offset + n].T),
                )
            )
            offset += n
        self._intercept = intercept
        self._examples: sp.csr_matrix | None = None
        if keep_examples:
            # The examples' own unit vectors over both parts, as the query's, for the
            # nearest-example similarity: (n_features, n_examples).
            rows = features.astype(np.float32)
            norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
            self._examples = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ rows).T.tocsr()

    def _query(self, text: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per part: (feature indices, tf-idf weights), each part L2-normalised like sklearn's."""
        out = []
        for part in self._parts:
            counts = Counter(part.analyzer(text))
            idx = [part.vocabulary[g] for g in counts if g in part.vocabulary]
            if not idx:
                out.append((np.empty(0, np.int64), np.empty(0, np.float32)))
                continue
            tf = np.fromiter((c for g, c in counts.items() if g in part.vocabulary), np.float64)
            index = np.asarray(idx, dtype=np.int64)
            w = (np.log(tf) + 1.0) * part.idf[index]
            w /= math.sqrt(float(w @ w))
            out.append((index, w.astype(np.float32)))
        return out

    def score(self, text: str, *, similarity: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits over all intents, cosine similarity to each example if asked, else None)."""
        query = self._query(text)
        logits = self._intercept.copy()
        rows: list[np.ndarray] = []
        values: list[np.ndarray] = []
        offset = 0
        for part, (index, w) in zip(self._parts, query, strict=True):
            if len(index):
                logits += w @ part.weights[index]
                rows.append(index + offset)
                values.append(w)
            offset += len(part.vocabulary)
        if not similarity or self._examples is None:
            return SVM_LOGIT_SCALE * logits, None
        sims = np.zeros(self._examples.shape[1], np.float32)
        if rows:
            index = np.concatenate(rows)
            w = np.concatenate(values)
            w /= max(float(np.linalg.norm(w)), 1e-12)
            sims = np.asarray(self._examples[index].T @ w).ravel()
        return SVM_LOGIT_SCALE * logits, sims

    def digest(self, h: hashlib._Hash) -> None:
        for part in self._parts:
            h.update(repr(sorted(part.vocabulary.items())).encode())
            h.update(part.idf.tobytes())
            h.update(part.weights.tobytes())
        h.update(self._intercept.tobytes())
