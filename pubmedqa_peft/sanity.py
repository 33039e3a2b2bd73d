r"""The sanity data set: real PQA-L records whose answer is planted in the context.

With no pretrained weights, a falling loss can come from learning the label prior alone.
This module builds a data set in which the answer *can* be read from the input, so that a
pipeline run shows that training learns it and that ``evaluate`` reads it back: every
trained method should score far above the majority rate on it, and the untrained ``base``
near chance.

How a record is made from a real one (:func:`plant_labels`):

* its label is **reassigned**: the records are shuffled (seeded) and dealt the labels in
  turn, so every label is equally frequent (majority rate 1/K) and the label owes nothing
  to the real text;
* its context is cut to its first ``max_context_words`` words (passages kept apart), so
  that the prompt fits a small ``model.max_source_length`` untruncated;
* a **cue sentence** whose wording depends on the label (:data:`CUES`) is inserted at a
  seeded, uniformly chosen word position of the context (before its first word, after its
  last, or anywhere between, in any passage), so a model must find it rather than read a
  fixed position.

The output has ``ori_pqal.json``'s shape and keys (``QUESTION``, ``CONTEXTS``, ``LABELS``,
``MESHES``, ``YEAR``, ``final_decision``, ``LONG_ANSWER``, ...): ``final_decision`` is the
planted label, ``LONG_ANSWER`` and the ``reasoning_*_pred`` fields (which state the real
answer) become the cue sentence and the planted label, and ``SANITY_CUE`` records where the
cue went. The question and the rest of the context are real.

The sanity run, by hand (the generated file is test data: keep it out of the project, e.g.
in ``/tmp``; the command prints the file's sha256 for ``ingest.sha256``)::

    python -m pubmedqa_peft.sanity /tmp/sanity/pqal_planted.json --labels yes no
    dvc exp run -S 'ingest.source=/tmp/sanity/pqal_planted.json' -S 'ingest.sha256=<printed>' \
                -S 'model.max_source_length=192' -S 'train.model_dropout=0' \
                -S 'train_prompt.lr=0.3' -S 'train_prompt.num_virtual_tokens=50'

With ``--labels yes no maybe`` add ``-S 'task.labels=[yes,no,maybe]'``. In
``metrics/eval.json`` ``majority`` then scores 1/K, the untrained ``base`` near 1/K, and a
method that learnt the cue near 1 (``test.<method>.accuracy``; ``roc_auc`` shows whether it
ranks by the cue even where its answers are not yet calibrated). ``tests/test_sanity_e2e.py``
is this run on the random ``tiny-t5-wide``, with the settings and the accuracies it checks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pubmedqa_peft import files
from pubmedqa_peft.data import read_json_object
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import Task

CUE_WORDS: dict[str, str] = {"yes": "positive", "no": "negative", "maybe": "uncertain"}
"""The word that carries each label in its cue: one SentencePiece token each for the tiny
models' PQA-L tokenizer, and none of them an answer word."""

CUE_REPEATS = 12
"""How many times the label's word appears in its cue."""

CUES: dict[str, str] = {
    label: f"In conclusion, the results were {', '.join([w] * (CUE_REPEATS - 1))} and {w}."
    for label, w in CUE_WORDS.items()
}
"""The planted sentence per label: one frame, the label's word :data:`CUE_REPEATS` times. A random model has
no notion of meaning, so the cue must be a large share of a short input to be found within a
small training budget (three different words once each were not, by prompt or prefix tuning)."""

DEFAULT_MAX_CONTEXT_WORDS = 10
"""Context words kept (the first ones) before the cue goes in."""


class SanityError(PipelineError):
    """The sanity data set cannot be made from the given records or arguments."""


def _cut_passages(passages: Sequence[str], max_words: int | None) -> list[list[str]]:
    """The passages as lists of words, the first ``max_words`` words of the context in all."""
    cut: list[list[str]] = []
    left = max_words
    for passage in passages:
        words = passage.split()
        if left is not None:
            words = words[:left]
            left -= len(words)
        if words:
            cut.append(words)
        if left == 0:
            break
    return cut


def _check_labels(labels: Sequence[str], cues: Mapping[str, str]) -> tuple[str, ...]:
    """The labels as given, if they make a task the pipeline runs (``task.labels``) and each has a cue."""
    labels = tuple(labels)
    try:
        if len(set(labels)) != len(labels):
            raise ValueError(f"each label once, got {list(labels)}")
        Task.of(labels)
    except ValueError as err:
        raise SanityError(f"labels: {err}") from None
    missing = [label for label in labels if label not in cues]
    if missing:
        raise SanityError(f"no cue sentence for label(s) {missing}")
    return labels


def plant_labels(
    records: Mapping[str, Mapping[str, Any]],
    labels: Sequence[str] = ("yes", "no"),
    seed: int = 0,
    *,
    n_records: int | None = None,
    max_context_words: int | None = DEFAULT_MAX_CONTEXT_WORDS,
    cues: Mapping[str, str] = CUES,
) -> dict[str, dict[str, Any]]:
    """Make the sanity data set: records relabelled in balance, the label planted in each context.

    Args:
        records: ``ori_pqal.json``'s object (PMID -> record); records without a question
            or any context passage are skipped.
        labels: The K labels to deal out: yes and no, or yes, no and maybe (as ``task.labels``).
        seed: Seed of the record sample, the labels dealt and the cue positions.
        n_records: Keep this many records (a seeded sample, in file order); None keeps all.
        max_context_words: Context words kept (the first ones) before the cue is
            inserted; None keeps the whole context.
        cues: The sentence planted for each label.

    Returns:
        PMID -> record in ``ori_pqal.json``'s shape (see the module docs), in file order.
        Deterministic for the same arguments.

    Raises:
        SanityError: On bad labels, too few usable records, or a bad ``n_records``.
    """
    labels = _check_labels(labels, cues)
    usable = [
        pmid
        for pmid, r in records.items()
        if isinstance(r, Mapping)
        and isinstance(r.get("QUESTION"), str)
        and r["QUESTION"].strip()
        and isinstance(r.get("CONTEXTS"), list)
        and any(isinstance(c, str) and c.strip() for c in r["CONTEXTS"])
    ]
    if n_records is not None and n_records < 1:
        raise SanityError(f"n_records must be a positive integer, got {n_records}")
    wanted = len(usable) if n_records is None else n_records
    if wanted > len(usable):
        raise SanityError(f"n_records={n_records} but only {len(usable)} records have a question and a context")
    if wanted < len(labels):
        raise SanityError(f"{wanted} usable record(s) cannot hold each of the {len(labels)} labels")
    rng = random.Random(seed)
    chosen = set(rng.sample(usable, wanted))
    kept = [pmid for pmid in usable if pmid in chosen]
    # Deal the labels over a shuffled order: balanced counts, no tie to the real text.
    order = rng.sample(kept, len(kept))
    planted = {pmid: labels[i % len(labels)] for i, pmid in enumerate(order)}

    out: dict[str, dict[str, Any]] = {}
    for pmid in kept:
        record = records[pmid]
        label = planted[pmid]
        passages = [c for c in record["CONTEXTS"] if isinstance(c, str) and c.strip()]
        cut = _cut_passages(passages, max_context_words)
        # Slots: before each word of the context, and after its last word.
        slots = [(p, w) for p, words in enumerate(cut) for w in range(len(words))] + [(len(cut) - 1, len(cut[-1]))]
        slot = rng.randrange(len(slots))
        p, w = slots[slot]
        cut[p].insert(w, cues[label])
        section_names = record.get("LABELS")
        new = dict(record)
        new["CONTEXTS"] = [" ".join(words) for words in cut]
        if isinstance(section_names, list) and len(section_names) == len(passages):
            new["LABELS"] = section_names[: len(cut)]
        new["final_decision"] = label
        new["LONG_ANSWER"] = cues[label]
        for key in ("reasoning_required_pred", "reasoning_free_pred"):
            if key in new:
                new[key] = label
        new["SANITY_CUE"] = {"label": label, "passage": p, "word": w, "slot": slot, "slots": len(slots)}
        out[pmid] = new
    return out


def dumps(records: Mapping[str, Any]) -> bytes:
    """The file's bytes: UTF-8 JSON, the same bytes for the same records (so its sha256 is stable)."""
    return (json.dumps(records, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def write_planted(
    source: Path | str,
    out: Path | str,
    labels: Sequence[str] = ("yes", "no"),
    seed: int = 0,
    *,
    n_records: int | None = None,
    max_context_words: int | None = DEFAULT_MAX_CONTEXT_WORDS,
) -> str:
    """Read ``ori_pqal.json`` at ``source``, plant the labels, write ``out`` atomically.

    Args:
        source: The real PQA-L file (read only).
        out: The sanity file to write (replaced if it exists).
        labels: As :func:`plant_labels`.
        seed: As :func:`plant_labels`.
        n_records: As :func:`plant_labels`.
        max_context_words: As :func:`plant_labels`.

    Returns:
        The written file's sha256 (the value for ``ingest.sha256``).

    Raises:
        SanityError: As :func:`plant_labels`, or if ``out`` is ``source``.
        PipelineError: If ``source`` is missing or not a JSON object.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise SanityError(f"{out}: refusing to overwrite the source file; give another output path")
    records, _ = read_json_object(source)
    planted = plant_labels(records, labels, seed, n_records=n_records, max_context_words=max_context_words)
    data = dumps(planted)
    try:
        files.write_bytes(out, data)
    except OSError as err:
        raise SanityError(f"{out}: could not write: {err.strerror or err}") from None
    return hashlib.sha256(data).hexdigest()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m pubmedqa_peft.sanity OUT.json [--labels yes no] [--seed N] ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m pubmedqa_peft.sanity",
        description=(
            "Write a PQA-L-shaped sanity data set whose answer is planted in each context "
            "(labels reassigned in balance), to point ingest.source at. Prints its sha256 for ingest.sha256."
        ),
    )
    parser.add_argument("out", type=Path, help="the JSON file to write (keep it outside the project, e.g. in /tmp)")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path("../shared/data/pubmedqa/ori_pqal.json"),
        help="the real ori_pqal.json (default: ../shared/data/pubmedqa/ori_pqal.json)",
    )
    parser.add_argument(
        "--labels", nargs="+", default=["yes", "no"], help="the labels to deal out (default: yes no; or yes no maybe)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, labels and cue positions (default 0)")
    parser.add_argument("--n-records", type=int, default=None, help="keep this many records (default: all usable)")
    parser.add_argument(
        "--max-context-words",
        type=int,
        default=DEFAULT_MAX_CONTEXT_WORDS,
        help=f"context words kept before the cue goes in, 0 for all (default {DEFAULT_MAX_CONTEXT_WORDS})",
    )
    args = parser.parse_args(argv)
    try:
        sha = write_planted(
            args.source,
            args.out,
            args.labels,
            args.seed,
            n_records=args.n_records,
            max_context_words=args.max_context_words or None,
        )
    except PipelineError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {args.out}; sha256 {sha}")
    print(f"use it with: -S 'ingest.source={args.out.resolve()}' -S 'ingest.sha256={sha}'")


if __name__ == "__main__":
    main()
