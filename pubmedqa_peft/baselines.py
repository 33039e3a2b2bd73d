"""Reference points for the PEFT methods: a constant predictor, TF-IDF + logistic regression, few-shot prompts.

Each baseline yields the same currency as the scored models — P(yes) per evaluation
example for the yes/no task, an ``(n, K)`` probability matrix in the task's column order
for K labels — so :func:`pubmedqa_peft.evaluation.method_metrics` treats all of them alike.
Everything is fitted or chosen on the training split only (TF-IDF's settings on val), and
is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from pubmedqa_peft.evaluation import to_index
from pubmedqa_peft.prompts import LABELS, format_fewshot_prompt
from pubmedqa_peft.task import BINARY, Task

Row = dict[str, Any]


def majority_p_yes(train_labels: Sequence[Any], n: int, labels: Sequence[str] = LABELS) -> np.ndarray:
    """A constant predictor: each label's probability is its share of the training labels.

    Its prediction is therefore the training majority class (a tie goes to the earlier
    column, ``no`` on a 50/50 split, the tie rule of
    :func:`pubmedqa_peft.evaluation.predict`), and its confidence is that class's prior,
    which makes its calibration error meaningful. Its ROC AUC is 0.5: every example gets
    the same score.

    Args:
        train_labels: Training labels (label strings or column indices).
        n: Number of evaluation examples.
        labels: The task's labels in column order (default yes/no).

    Returns:
        For yes/no, ``n`` equal P(yes); otherwise ``n`` equal rows of ``K`` shares.
    """
    y = to_index(train_labels, labels)
    if y.size == 0:
        raise ValueError("no training labels")
    if len(labels) == 2:
        return np.full(n, float(y.mean()))
    shares = np.bincount(y, minlength=len(labels)) / y.size
    return np.tile(shares, (n, 1))


def _text(row: Row) -> str:
    return f"{row['question']} {row['context']}"


TFIDF_GRID: tuple[tuple[float, str | None], ...] = tuple(
    (C, weight) for C in (0.01, 0.1, 1.0) for weight in (None, "balanced")
)
"""What :func:`choose_tfidf_logreg` chooses from: (C, class_weight), in tie-breaking order."""


def fit_tfidf_logreg(
    train_rows: Sequence[Row],
    seed: int,
    C: float = 1.0,
    class_weight: str | None = None,
    labels: Sequence[str] = LABELS,
) -> Pipeline:
    """Fit TF-IDF features of question + context and a logistic regression on training rows.

    Word uni- and bigrams with sublinear term frequency; L2-regularised logistic
    regression (lbfgs). The lbfgs solver is deterministic; ``seed`` is passed as its
    ``random_state`` for completeness.

    Args:
        train_rows: Training records with ``question``, ``context`` and ``label``.
        seed: Random state of the classifier.
        C: Inverse regularisation strength.
        class_weight: ``None``, or ``"balanced"`` to weight classes inversely to their frequency.
        labels: The task's labels in column order (K > 2: multinomial logistic regression).

    Returns:
        The fitted scikit-learn pipeline (``tfidf`` then ``logreg``).

    Raises:
        ValueError: If the training labels miss one of the task's labels.
    """
    y = _labels(train_rows, labels)
    model = _pipeline(seed, C, class_weight)
    model.fit([_text(r) for r in train_rows], y)
    return model


def _labels(train_rows: Sequence[Row], labels: Sequence[str] = LABELS) -> np.ndarray:
    y = to_index([r["label"] for r in train_rows], labels)
    if len(set(y.tolist())) < len(labels):
        raise ValueError(f"TF-IDF baseline: the training split needs examples of every label {tuple(labels)}")
    return y


def _proba(clf: Any, features: Any, k: int) -> np.ndarray:
    """P(yes) (k = 2) or the ``(n, k)`` probabilities in column order, from a fitted classifier."""
    proba = clf.predict_proba(features)
    if k == 2:
        return proba[:, list(clf.classes_).index(1)]
    return proba[:, [list(clf.classes_).index(c) for c in range(k)]]


def _pipeline(seed: int, C: float = 1.0, class_weight: str | None = None) -> Pipeline:
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            ("logreg", LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed)),
        ]
    )


def choose_tfidf_logreg(
    train_rows: Sequence[Row], val_rows: Sequence[Row], seed: int, labels: Sequence[str] = LABELS
) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the TF-IDF baseline on train with the C and class weighting that do best on val.

    With C = 1 and no class weighting the model predicts the majority class on PQA-L
    (its macro-F1 equals the majority baseline's), so both are chosen from
    :data:`TFIDF_GRID` by macro-F1 on the validation split (the first setting wins a tie);
    the TF-IDF vocabulary is fitted on train once and shared by every candidate. The test
    split is never looked at. (Cross-validation on train, the other honest way, took 114 s
    instead of 6 s on PQA-L here, on every evaluate run.)

    Args:
        train_rows: Training records with ``question``, ``context`` and ``label``.
        val_rows: Validation records (their labels choose the setting).
        seed: Random state of the classifier.
        labels: The task's labels in column order.

    Returns:
        The fitted pipeline, and the choice ``{"C", "class_weight", "val_macro_f1"}``.

    Raises:
        ValueError: If the training labels miss one of the task's labels.
    """
    from pubmedqa_peft.evaluation import macro_f1

    y = _labels(train_rows, labels)
    vectorizer = _pipeline(seed).named_steps["tfidf"]
    features = vectorizer.fit_transform([_text(r) for r in train_rows])
    val_features = vectorizer.transform([_text(r) for r in val_rows])
    val_labels = [r["label"] for r in val_rows]
    best: tuple[float, Any, tuple[float, str | None]] | None = None
    for C, weight in TFIDF_GRID:
        clf = LogisticRegression(C=C, class_weight=weight, max_iter=2000, random_state=seed).fit(features, y)
        score = macro_f1(val_labels, _proba(clf, val_features, len(labels)), labels)
        if best is None or score > best[0]:
            best = (score, clf, (C, weight))
    assert best is not None
    score, clf, (C, weight) = best
    model = Pipeline([("tfidf", vectorizer), ("logreg", clf)])
    return model, {"C": C, "class_weight": weight, "val_macro_f1": float(score)}


def predict_tfidf_logreg(model: Pipeline, rows: Sequence[Row]) -> np.ndarray:
    """P(yes) of a :func:`fit_tfidf_logreg` model for each row, or its ``(n, K)`` probabilities (labels not read)."""
    k = len(model.classes_)
    if not rows:
        return np.zeros(0) if k == 2 else np.zeros((0, k))
    features = model.named_steps["tfidf"].transform([_text(r) for r in rows])
    return _proba(model.named_steps["logreg"], features, k)


def tfidf_logreg_parameters(model: Pipeline) -> int:
    """Learned parameters of a :func:`fit_tfidf_logreg` model: one weight per feature plus the bias.

    The vocabulary and IDF weights are counted as features, not parameters.
    """
    clf = model.named_steps["logreg"]
    return int(clf.coef_.size + clf.intercept_.size)


def tfidf_logreg_p_yes(train_rows: Sequence[Row], eval_rows: Sequence[Row], seed: int) -> np.ndarray:
    """Fit on ``train_rows`` (:func:`fit_tfidf_logreg`) and return P(yes) for ``eval_rows``."""
    return predict_tfidf_logreg(fit_tfidf_logreg(train_rows, seed), eval_rows)


def choose_exemplars(train_rows: Sequence[Row], k: int, seed: int, labels: Sequence[str] = LABELS) -> list[Row]:
    """Pick ``k`` balanced training exemplars for in-context prompts, deterministically.

    Each of the K labels gets ``k // K`` exemplars, and the ``k % K`` left over go to the
    most frequent training labels (ties: ``yes``, ``no``, ``maybe``) — for yes/no,
    ``ceil(k/2)`` from the majority class and ``floor(k/2)`` from the other. They are drawn
    without replacement with ``numpy.random.default_rng(seed)`` from the candidates sorted
    by ``id`` (so the choice does not depend on row order), label by label, then shuffled
    with the same generator so the label order is not a fixed pattern.

    Args:
        train_rows: Training records with ``id``, ``question``, ``context`` and ``label``.
        k: Number of exemplars (>= 1).
        seed: Seed of the choice.
        labels: The task's labels.

    Returns:
        The exemplars (the original row dicts).

    Raises:
        ValueError: If ``k`` < 1 or a class has too few rows.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = Task.of(labels).display
    by_label = {lab: sorted((r for r in train_rows if r["label"] == lab), key=lambda r: str(r["id"])) for lab in order}
    by_size = sorted(order, key=lambda lab: -len(by_label[lab]))  # stable: display order on ties
    quota = {lab: k // len(order) + (1 if lab in by_size[: k % len(order)] else 0) for lab in order}
    rng = np.random.default_rng(seed)
    picked: list[Row] = []
    for lab in order:
        pool = by_label[lab]
        if len(pool) < quota[lab]:
            raise ValueError(f"few-shot k={k}: need {quota[lab]} {lab!r} training rows, found {len(pool)}")
        picked.extend(pool[i] for i in sorted(rng.choice(len(pool), size=quota[lab], replace=False)))
    return [picked[i] for i in rng.permutation(len(picked))]


def _allocate(lengths: list[int], weights: list[float], budget: int) -> list[int]:
    """Split ``budget`` tokens over contexts in proportion to ``weights``, capped by each length.

    Water-filling: a context shorter than its share keeps all its tokens, and what it
    leaves unused is shared again among the others.
    """
    alloc = [0] * len(lengths)
    open_ = set(range(len(lengths)))
    left = budget
    while open_:
        total_w = sum(weights[i] for i in open_)
        shares = {i: left * weights[i] / total_w for i in open_}
        done = {i for i in open_ if lengths[i] <= shares[i]}
        if not done:
            for i in open_:
                alloc[i] = math.floor(shares[i])
            break
        for i in done:
            alloc[i] = lengths[i]
            left -= lengths[i]
        open_ -= done
    return alloc


def fewshot_prompt(
    tokenizer: Any, exemplars: Sequence[Row], row: Row, max_length: int, chat: bool = False, task: Task = BINARY
) -> str:
    """One few-shot prompt that fits ``max_length`` tokens, only contexts shortened.

    The tokens left after the questions, answers and template are shared between the
    contexts: the query's context gets half of them (the larger share: the answer
    depends on it), the exemplars' contexts split the other half equally, and whatever a
    short context does not use goes to the others. Questions are never truncated.
    Token counts of pieces do not add up exactly once joined, so the full prompt is
    re-measured and the budget trimmed until it fits.

    Args:
        tokenizer: A Hugging Face tokenizer.
        exemplars: Records with ``question``, ``context`` and ``label``.
        row: The query record (``id``, ``question``, ``context``).
        max_length: Token budget including special tokens.
        chat: Exemplars and query as chat turns (:func:`pubmedqa_peft.prompts.format_fewshot_prompt`).
        task: The label set named in the instruction.

    Returns:
        Prompt text of at most ``max_length`` tokens.

    Raises:
        ValueError: Naming the record if even empty contexts do not fit.
    """
    shots = [dict(e) for e in exemplars]
    contexts = [e["context"] for e in exemplars] + [row["context"]]
    # verbose=False: over-long texts are measured here in order to cut them (see prompts._fit).
    ids = [tokenizer(c, add_special_tokens=False, verbose=False).input_ids for c in contexts]

    def build(cut: list[int]) -> str:
        texts = [
            c if n >= len(i) else tokenizer.decode(i[:n], skip_special_tokens=True)
            for c, i, n in zip(contexts, ids, cut, strict=True)
        ]
        for shot, text in zip(shots, texts, strict=False):
            shot["context"] = text
        return format_fewshot_prompt(shots, row["question"], texts[-1], tokenizer, chat, task)

    def length(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    full = build([len(i) for i in ids])
    if length(full) <= max_length:
        return full
    overhead = length(build([0] * len(ids)))
    budget = max_length - overhead
    if budget <= 0:
        raise ValueError(
            f"record {row.get('id', '?')}: the {len(exemplars)}-shot prompt without contexts is already "
            f"{overhead} tokens, more than max_length={max_length}"
        )
    k = len(exemplars)
    weights = [0.5 / k] * k + [0.5] if k else [1.0]
    while budget > 0:
        text = build(_allocate([len(i) for i in ids], weights, budget))
        n = length(text)
        if n <= max_length:
            return text
        budget -= max(1, n - max_length)
    # The overhead check above guarantees that empty contexts fit.
    return build([0] * len(ids))


def fewshot_prompts(
    tokenizer: Any,
    exemplars: Sequence[Row],
    rows: Sequence[Row],
    max_length: int,
    chat: bool = False,
    task: Task = BINARY,
) -> list[str]:
    """:func:`fewshot_prompt` for every row; each is measured and fits ``max_length`` tokens.

    Args:
        tokenizer: A Hugging Face tokenizer.
        exemplars: The in-context exemplars (see :func:`choose_exemplars`).
        rows: Query records.
        max_length: Token budget including special tokens.
        chat: Exemplars and query as chat turns (see :func:`fewshot_prompt`).
        task: The label set named in the instruction.

    Returns:
        One prompt per row, in order.
    """
    return [fewshot_prompt(tokenizer, exemplars, r, max_length, chat, task) for r in rows]
