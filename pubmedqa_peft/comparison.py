"""How every method is compared: the body of the ``evaluate`` stage.

Each method yields P(yes) for every validation and test example; everything else
(metrics, confidence intervals, McNemar's test, coverage, the tau chosen on val) is
computed from those probabilities by :mod:`pubmedqa_peft.evaluation`, and written to
``metrics/eval.json`` plus per-example prediction and coverage files under ``plots/eval``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pubmedqa_peft import baselines, evaluation, files, modeling, paths, scoring
from pubmedqa_peft.config import Params
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import fit_prompts_encoded, uses_chat
from pubmedqa_peft.provenance import provenance
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import BINARY, Task, check_labels

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")
Row = dict[str, Any]


@dataclass
class MethodResult:
    """What one method produced: probabilities per split, speed and footprint."""

    probs: dict[str, np.ndarray]
    """Per split: P(yes) per example for yes/no, an ``(n, K)`` matrix (task column order) otherwise."""
    latency_s: dict[str, float]
    throughput_eps: float
    trainable_params: int
    total_params: int
    extra: dict[str, Any] = field(default_factory=dict)


def load_split(split: str, task: Task = BINARY) -> list[Row]:
    """Read one split and check every label is one of the task's.

    Raises:
        PipelineError: If the file is missing or a record has another label.
    """
    path = paths.split_file(split)
    if not path.exists():
        raise PipelineError(f"{path} not found: run `dvc repro split` first")
    rows = files.read_jsonl(path)
    check_labels(rows, task, path)
    return rows


def _time_requests(predict_one: Callable[[Any], object], items: Sequence[Any], samples: int, warmup: int) -> dict:
    """Median and p90 seconds of single requests, after untimed warm-up ones."""
    for i in range(warmup):
        predict_one(items[i % len(items)])
    times = []
    for i in range(samples):
        start = time.perf_counter()
        predict_one(items[(warmup + i) % len(items)])
        times.append(time.perf_counter() - start)
    return {"median": float(statistics.median(times)), "p90": float(np.percentile(times, 90))}


class Comparison:
    """Scores every method on val and test with one tokenizer and one base model."""

    def __init__(self, params: Params, splits: dict[str, list[Row]]) -> None:
        self.params = params
        self.splits = splits
        modeling.set_threads(params.model.threads)
        self.device = modeling.resolve_device(params.model.device)
        # Every model (base, trained, few-shot) is scored in this one precision.
        self.precision = modeling.resolve_precision(params.evaluate.precision, self.device, "evaluate.precision")
        self.tokenizer = modeling.load_tokenizer(params.model.name)
        # A decoder-only model's prompt leaves room for its answer in the same sequence.
        family = modeling.load_family(params.model.name)
        self.chat = uses_chat(self.tokenizer, params.model.chat_template)
        self.task = params.task.task
        self.labels = self.task.labels
        self.max_len = family.prompt_budget(self.tokenizer, self.labels, params.model.max_source_length, self.chat)
        # A decoder-only model's answers are split from prompt + answer encoded together,
        # which needs the prompt's text; a seq2seq model scores the fitted ids as they are.
        self.score_texts = family.causal
        self.base = modeling.load_base_model(params.model.name, self.device)
        self.base_total = modeling.count_parameters(self.base)[1]
        log.info("fitting zero-shot prompts for %s", ", ".join(EVAL_SPLITS))
        fitted = {
            s: fit_prompts_encoded(self.tokenizer, splits[s], self.max_len, paths.split_file(s), self.chat, self.task)
            for s in EVAL_SPLITS
        }
        self.prompts = {s: [p.text for p in fitted[s]] for s in EVAL_SPLITS}
        # Their token ids, computed once while fitting and scored by every model as they are.
        self.prompt_ids = {s: [p.input_ids for p in fitted[s]] for s in EVAL_SPLITS}

    def _score_model(
        self, name: str, model: Any, prompts: dict[str, list[str]], ids: dict[str, list[list[int]]] | None = None
    ) -> MethodResult:
        ev = self.params.evaluate
        probs: dict[str, np.ndarray] = {}
        throughput = 0.0
        for s in EVAL_SPLITS:
            start = time.perf_counter()
            loglik = scoring.score_yes_no(
                model,
                self.tokenizer,
                ids[s] if ids and not self.score_texts else prompts[s],
                ev.batch_size,
                self.max_len,
                desc=f"{name} {s}",
                chat=self.chat,
                labels=self.labels,
                precision=self.precision,
            )
            if s == "test":
                throughput = len(prompts[s]) / (time.perf_counter() - start)
            probs[s] = scoring.probabilities(loglik)
        latency = scoring.measure_latency(
            model,
            self.tokenizer,
            prompts["test"],
            ev.latency_samples,
            ev.latency_warmup,
            self.max_len,
            self.chat,
            self.labels,
            self.precision,
        )
        log.info("%s: test latency median %.4fs, throughput %.1f ex/s", name, latency["median"], throughput)
        return MethodResult(probs, {k: latency[k] for k in ("median", "p90")}, throughput, 0, self.base_total)

    def base_model(self) -> MethodResult:
        """The frozen base model, zero-shot, with the same prompt as the adapters."""
        return self._score_model("base", self.base, self.prompts, self.prompt_ids)

    def trained(self, method: str) -> MethodResult:
        """A trained method: its adapter on a fresh copy of the base model, or its whole model."""
        model = modeling.load_trained_model(paths.adapter_dir(method), self.device)
        result = self._score_model(method, model, self.prompts, self.prompt_ids)
        train_metrics = paths.train_metrics_file(method)
        if not train_metrics.exists():
            raise PipelineError(f"{train_metrics} not found: run `dvc repro train_{method}` first")
        trained = json.loads(train_metrics.read_text())
        result.trainable_params = int(trained["trainable_params"])
        result.total_params = int(trained["total_params"])
        # Every further seed's model, scored on the same prompts (its speed is the first's).
        for seed in self.params.train.seeds[1:]:
            model = modeling.load_trained_model(paths.seed_dir(paths.adapter_dir(method), seed), self.device)
            probs = {}
            for s in EVAL_SPLITS:
                loglik = scoring.score_yes_no(
                    model,
                    self.tokenizer,
                    self.prompts[s] if self.score_texts else self.prompt_ids[s],
                    self.params.evaluate.batch_size,
                    self.max_len,
                    desc=f"{method} seed {seed} {s}",
                    chat=self.chat,
                    labels=self.labels,
                    precision=self.precision,
                )
                probs[s] = scoring.probabilities(loglik)
            result.extra.setdefault("seed_probs", {})[seed] = probs
        return result

    def fewshot_prompts(self, k: int) -> tuple[list[Row], dict[str, list[str]]]:
        """The ``k`` exemplars and the few-shot prompts of every split, checked before any scoring.

        Raises:
            PipelineError: If the training split cannot give ``k`` balanced exemplars or the
                prompts cannot fit ``model.max_source_length``, naming the key to change.
        """
        try:
            exemplars = baselines.choose_exemplars(self.splits["train"], k, self.params.evaluate.seed, self.labels)
        except ValueError as err:
            raise PipelineError(
                f"evaluate.fewshot_k: {err} in {paths.split_file('train')}; lower or drop {k} in evaluate.fewshot_k"
            ) from None
        try:
            prompts = {
                s: baselines.fewshot_prompts(
                    self.tokenizer, exemplars, self.splits[s], self.max_len, self.chat, self.task
                )
                for s in EVAL_SPLITS
            }
        except ValueError as err:
            raise PipelineError(
                f"evaluate.fewshot_k: k={k}: {err}; raise model.max_source_length or drop {k} from evaluate.fewshot_k"
            ) from None
        return exemplars, prompts

    def fewshot(self, k: int, prepared: tuple[list[Row], dict[str, list[str]]] | None = None) -> MethodResult:
        """The base model with ``k`` balanced in-context exemplars from train.

        Args:
            k: Number of exemplars.
            prepared: What :meth:`fewshot_prompts` returned for ``k``, if already made.
        """
        exemplars, prompts = prepared or self.fewshot_prompts(k)
        log.info("fewshot_k%d: exemplars %s", k, ", ".join(e["id"] for e in exemplars))
        result = self._score_model(f"fewshot_k{k}", self.base, prompts)
        result.extra["exemplar_ids"] = [e["id"] for e in exemplars]
        return result

    def majority(self) -> MethodResult:
        """The training majority class, each label's probability its training share."""
        train = [r["label"] for r in self.splits["train"]]

        def predict(n: int) -> np.ndarray:
            return baselines.majority_p_yes(train, n, self.labels)

        p = {s: predict(len(self.splits[s])) for s in EVAL_SPLITS}
        ev = self.params.evaluate
        latency = _time_requests(lambda _: predict(1), self.splits["test"], ev.latency_samples, ev.latency_warmup)
        start = time.perf_counter()
        predict(len(self.splits["test"]))
        throughput = len(self.splits["test"]) / max(time.perf_counter() - start, 1e-9)
        # K - 1 free shares (1 for yes/no).
        return MethodResult(p, latency, throughput, len(self.labels) - 1, len(self.labels) - 1)

    def tfidf_logreg(self) -> MethodResult:
        """TF-IDF features and logistic regression on train, C and class weighting chosen on val."""
        ev = self.params.evaluate
        model, choice = baselines.choose_tfidf_logreg(self.splits["train"], self.splits["val"], ev.seed, self.labels)
        log.info("tfidf_logreg: chose %s on val", choice)
        p = {s: baselines.predict_tfidf_logreg(model, self.splits[s]) for s in EVAL_SPLITS}
        latency = _time_requests(
            lambda row: baselines.predict_tfidf_logreg(model, [row]),
            self.splits["test"],
            ev.latency_samples,
            ev.latency_warmup,
        )
        start = time.perf_counter()
        baselines.predict_tfidf_logreg(model, self.splits["test"])
        throughput = len(self.splits["test"]) / max(time.perf_counter() - start, 1e-9)
        n_params = baselines.tfidf_logreg_parameters(model)
        return MethodResult(p, latency, throughput, n_params, n_params, extra={"choice": choice})


def summarize(params: Params, splits: dict[str, list[Row]], results: dict[str, MethodResult]) -> dict[str, Any]:
    """Turn every method's probabilities into the ``metrics/eval.json`` document.

    Args:
        params: The validated parameters (``evaluate`` section).
        splits: The split records (labels are read from them).
        results: Per method, its :class:`MethodResult`; must include ``base``.

    Returns:
        ``{"test": {method: {...}}, "val": {method: {...}}, "tau", "target_accuracy"}``.
    """
    ev = params.evaluate
    labels = params.task.task.labels
    y = {s: [r["label"] for r in splits[s]] for s in EVAL_SPLITS}
    out: dict[str, Any] = {"test": {}, "val": {}, "tau": ev.tau, "target_accuracy": ev.target_accuracy}
    if len(labels) > 2:
        # The binary task's file stays as it was; any other names its labels.
        out["labels"] = list(labels)
    for name, res in results.items():
        for s in EVAL_SPLITS:
            out[s][name] = evaluation.method_metrics(
                y[s],
                res.probs[s],
                tau=ev.tau,
                bins=ev.calibration_bins,
                bootstrap=ev.bootstrap,
                seed=ev.seed,
                labels=labels,
            )
        test = out["test"][name]
        test["mcnemar_p_vs_base"] = (
            None
            if name == "base"
            else evaluation.mcnemar(y["test"], res.probs["test"], results["base"].probs["test"], labels)["p_value"]
        )
        test["latency_s"] = res.latency_s
        test["throughput_eps"] = res.throughput_eps
        test["trainable_params"] = res.trainable_params
        test["total_params"] = res.total_params
        test["trainable_pct"] = 100 * res.trainable_params / res.total_params if res.total_params else 0.0
        target = evaluation.tau_for_target(
            y["val"],
            res.probs["val"],
            y["test"],
            res.probs["test"],
            target=ev.target_accuracy,
            step=ev.tau_grid_step,
            labels=labels,
        )
        target.pop("target_accuracy")
        test["tau_target"] = target
        if "seed_probs" in res.extra:
            test.update(_across_seeds(params, y["test"], res))
    return out


def _across_seeds(params: Params, y_test: list[str], res: MethodResult) -> dict[str, Any]:
    """Test accuracy and macro-F1 of every seed's model, and their mean and sample standard deviation."""
    labels = params.task.task.labels
    probs = {params.train.seeds[0]: res.probs["test"]} | {s: p["test"] for s, p in res.extra["seed_probs"].items()}
    per_seed = {
        str(seed): {
            "accuracy": evaluation.accuracy(y_test, p, labels),
            "macro_f1": evaluation.macro_f1(y_test, p, labels),
        }
        for seed, p in probs.items()
    }
    out: dict[str, Any] = {"seeds": per_seed}
    for metric in ("accuracy", "macro_f1"):
        values = np.array([m[metric] for m in per_seed.values()])
        out[f"{metric}_mean"] = float(values.mean())
        out[f"{metric}_std"] = float(values.std(ddof=1))
    return out


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_plot_data(out_dir: Path, params: Params, test_rows: list[Row], results: dict[str, MethodResult]) -> None:
    """Write per-example predictions and coverage curves (test split) as DVC-plottable CSV.

    The whole directory is replaced atomically.
    """
    y = [r["label"] for r in test_rows]
    labels = params.task.task.labels
    columns = params.task.task.probability_columns
    order = sorted(range(len(test_rows)), key=lambda i: test_rows[i]["id"])
    with files.atomic_path(out_dir) as tmp:
        (tmp / "predictions").mkdir(parents=True)
        (tmp / "coverage").mkdir()
        for name, res in results.items():
            p = res.probs["test"]
            pred = evaluation.predict(p)
            conf = evaluation.confidence(p)
            cells = p.reshape(len(p), -1)
            rows = [
                (test_rows[i]["id"], y[i], *(f"{v:.6f}" for v in cells[i]), labels[int(pred[i])], f"{conf[i]:.6f}")
                for i in order
            ]
            (tmp / "predictions" / f"{name}.csv").write_text(
                _csv(("id", "label", *columns, "prediction", "confidence"), rows), encoding="utf-8"
            )
            curve = evaluation.coverage_curve(y, p, params.evaluate.tau_grid_step, labels)
            cov_rows = [
                (
                    f"{c['tau']:.2f}",
                    f"{c['coverage']:.6f}",
                    "" if c["selective_accuracy"] is None else f"{c['selective_accuracy']:.6f}",
                )
                for c in curve
            ]
            (tmp / "coverage" / f"{name}.csv").write_text(
                _csv(("tau", "coverage", "selective_accuracy"), cov_rows), encoding="utf-8"
            )


def run_evaluate_stage(params: Params) -> dict[str, Any]:
    """The body of the ``evaluate`` stage.

    Args:
        params: The validated parameters.

    Returns:
        The document written to ``metrics/eval.json``.
    """
    splits = {s: load_split(s, params.task.task) for s in ("train", *EVAL_SPLITS)}
    # Every input is checked before the first model is loaded: a missing or unusable
    # trained model must not stop the stage after minutes of scoring the others.
    methods = registry.names()
    manifests = {m: modeling.check_trained_model(paths.adapter_dir(m)) for m in methods}
    for m in methods:
        for seed in params.train.seeds[1:]:
            modeling.check_trained_model(paths.seed_dir(paths.adapter_dir(m), seed))
    for m in methods:
        if not paths.train_metrics_file(m).is_file():
            raise PipelineError(f"{paths.train_metrics_file(m)} not found: run `dvc repro train_{m}` first")
    cmp = Comparison(params, splits)
    # Every method is scored on the same prompts, so each must have been trained on them.
    for m, manifest in manifests.items():
        if manifest.chat_template != cmp.chat:
            raise PipelineError(
                f"{paths.adapter_dir(m)}/run.json: trained with chat_template={manifest.chat_template}, "
                f"but model.chat_template={params.model.chat_template} gives {cmp.chat} here; "
                f"retrain with `dvc repro train_{m}`"
            )
    # Few-shot exemplars and prompts too: a k the data or the token budget cannot serve
    # must stop the stage now, not after every other method was scored.
    fewshot = {k: cmp.fewshot_prompts(k) for k in params.evaluate.fewshot_k}
    results: dict[str, MethodResult] = {}
    log.info("scoring base (zero-shot)")
    results["base"] = cmp.base_model()
    for m in methods:
        log.info("scoring %s", m)
        results[m] = cmp.trained(m)
    log.info("fitting baselines majority and tfidf_logreg")
    results["majority"] = cmp.majority()
    results["tfidf_logreg"] = cmp.tfidf_logreg()
    for k in params.evaluate.fewshot_k:
        log.info("scoring fewshot_k%d", k)
        results[f"fewshot_k{k}"] = cmp.fewshot(k, fewshot[k])

    doc = summarize(params, splits, results)
    doc["fewshot_exemplars"] = {n: r.extra["exemplar_ids"] for n, r in results.items() if "exemplar_ids" in r.extra}
    doc["tfidf_logreg_choice"] = results["tfidf_logreg"].extra["choice"]
    doc["provenance"] = provenance(model=params.model, evaluate=params.evaluate)
    # What evaluate.precision resolved to on this device (auto differs by machine). Kept
    # under provenance: like the versions, it says how the numbers were made.
    doc["provenance"]["precision"] = cmp.precision
    write_plot_data(paths.EVAL_PLOTS_DIR, params, splits["test"], results)
    files.write_json(paths.EVAL_METRICS, doc)
    for name, m in doc["test"].items():
        log.info("test %-14s accuracy %.3f  macro-F1 %.3f", name, m["accuracy"], m["macro_f1"])
    return doc
