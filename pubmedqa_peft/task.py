"""The task: which answers a question can have (``task.labels``), in one place.

PubMedQA's answers are ``yes``, ``no`` and ``maybe``. The default task is binary (``yes``
/``no``; ``maybe`` records are dropped and counted by the clean stage), the one most
PEFT write-ups report; ``task.labels: [yes, no, maybe]`` is the official three-label task
of the PubMedQA paper and leaderboard.

Whatever order ``params.yaml`` lists them in, labels are used in one fixed order,
:data:`LABEL_ORDER` filtered to the task: columns of scores and probabilities, rows and
columns of confusion matrices. The binary task's order is ``("no", "yes")``, index 1 the
positive class, as it has always been, so its files and numbers do not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

LABEL_ORDER = ("no", "yes", "maybe")
"""Every label PubMedQA knows, in column order."""

DISPLAY_ORDER = ("yes", "no", "maybe")
"""Order for people (per-class dicts, legends, logs): the positive class first."""

ALLOWED = ({"yes", "no"}, {"yes", "no", "maybe"})
"""Label sets a task may have."""


@dataclass(frozen=True)
class Task:
    """A label set in column order."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if set(self.labels) not in ALLOWED or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"task labels must be [yes, no] or [yes, no, maybe], got {list(self.labels)}")
        if self.labels != tuple(label for label in LABEL_ORDER if label in self.labels):
            raise ValueError(f"labels {self.labels} are not in column order {LABEL_ORDER}; use Task.of()")

    @classmethod
    def of(cls, labels: Iterable[str]) -> Task:
        """The task of a label set given in any order (``task.labels``)."""
        chosen = set(labels)
        return cls(tuple(label for label in LABEL_ORDER if label in chosen) if chosen in ALLOWED else tuple(labels))

    @property
    def k(self) -> int:
        """Number of labels."""
        return len(self.labels)

    @property
    def binary(self) -> bool:
        """Whether this is the yes/no task."""
        return self.k == 2

    @property
    def display(self) -> tuple[str, ...]:
        """The labels in :data:`DISPLAY_ORDER`."""
        return tuple(label for label in DISPLAY_ORDER if label in self.labels)

    @property
    def probability_columns(self) -> list[str]:
        """Columns of a predictions CSV: ``p_yes`` alone for yes/no (P(no) is 1 minus it), else ``p_<label>``."""
        return ["p_yes"] if self.binary else [f"p_{label}" for label in self.labels]

    @property
    def answers_phrase(self) -> str:
        """The answers as the instruction names them: ``yes or no``, ``yes, no or maybe``."""
        *first, last = self.display
        return f"{', '.join(first)} or {last}"


BINARY = Task(("no", "yes"))
"""The default task: yes/no."""

THREE_LABELS = Task(("no", "yes", "maybe"))
"""The official PubMedQA task: yes/no/maybe."""


def check_labels(rows: Sequence[dict[str, Any]], task: Task, source: object) -> None:
    """Refuse records whose label is not one of the task's (a split made for another task).

    Raises:
        PipelineError: Naming the file, the line and the label.
    """
    # Imported here: stage -> config -> task, so a module-level import would be circular.
    from pubmedqa_peft.stage import PipelineError

    for i, row in enumerate(rows, start=1):
        if row.get("label") not in task.labels:
            raise PipelineError(
                f"{source}:{i}: record {row.get('id')!r} has label {row.get('label')!r}, not one of task.labels "
                f"{list(task.display)}; rerun `dvc repro split` after changing task.labels"
            )
