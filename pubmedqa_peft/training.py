"""How a method is trained: one method-agnostic function around the Trainer.

The method (:mod:`pubmedqa_peft.methods.registry`) says how the base model is loaded
(full precision or quantized) and what trains (a PEFT wrapper, or every weight); the
rest is the same for all: the same data, epochs, batch, seed and schedule, so methods
are compared under one training budget. The loss is the standard token-level
cross-entropy of the answer word (``yes`` / ``no`` plus T5's end-of-sequence token)
computed inside the model's forward pass (``T5ForConditionalGeneration`` with
``labels``), driven by ``Seq2SeqTrainer``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    set_seed,
)
from transformers.integrations import DVCLiveCallback

from pubmedqa_peft import families, files, known_warnings, modeling, paths
from pubmedqa_peft.config import Params, method_section
from pubmedqa_peft.manifest import RunManifest, write_manifest
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import TEMPLATE_VERSION, fit_prompts_encoded, uses_chat, verbalize
from pubmedqa_peft.provenance import provenance
from pubmedqa_peft.stage import PipelineError
from pubmedqa_peft.task import BINARY, Task, check_labels

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
TRAINER_STATE_FILE = "trainer_state.json"
"""Written last into a checkpoint by the Trainer: a checkpoint without it was cut off mid-save."""


class EncodedDataset(torch.utils.data.Dataset):
    """Examples tokenised once: ``input_ids`` of the prompt and ``labels`` of the answer."""

    def __init__(self, features: list[dict[str, list[int]]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.features[i]


class StepDVCLiveCallback(DVCLiveCallback):
    """transformers' DVCLive callback, with curves keyed by the optimizer step.

    The stock callback numbers rows by how often it was called and files the per-step
    training loss (``loss``) at the top level, next to the run's mean (``train_loss``)
    under ``train/loss``. Here the x-axis is ``state.global_step``, the per-step loss goes
    to ``train/loss`` and the run's mean to ``train/mean_loss``, computed over the whole
    run by :func:`mean_train_loss` (the Trainer's own ``train_loss`` covers only the steps
    since a resume).
    """

    RENAMES: ClassVar[dict[str, str]] = {"train_loss": "train_mean_loss", "loss": "train_loss"}

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):  # noqa: D102
        if self.live is not None:
            self.live.step = state.global_step
        logs = dict(logs or {})
        if "train_loss" in logs:
            logs["train_loss"] = mean_train_loss(state.log_history)
        logs = {self.RENAMES.get(k, k): v for k, v in logs.items()}
        super().on_log(args, state, control, model=model, logs=logs, **kwargs)


def mean_train_loss(log_history: Sequence[dict[str, Any]]) -> float | None:
    """The mean training loss per optimizer step over the whole run, from the logged losses.

    Each logged ``loss`` is the mean over the steps since the previous log; weighting it
    by that number of steps gives the exact mean over every step, because a log is forced
    at every checkpoint and at the last step (:class:`LogAtCheckpointsAndEnd`). A resumed
    run's history holds the same entries as an uninterrupted run's, so the mean is the same.

    Args:
        log_history: ``trainer.state.log_history``.

    Returns:
        The mean, or None if nothing was logged.
    """
    total, last = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += float(entry["loss"]) * (entry["step"] - last)
            last = entry["step"]
    return total / last if last else None


def truncate_curves(live_dir: Path, step: int) -> None:
    """Drop the curve rows logged after ``step`` (by a run killed after its last checkpoint).

    A resumed run starts again from the checkpoint at ``step`` and logs those steps anew;
    without this, they would appear twice, the first time with the killed run's values.

    Args:
        live_dir: The DVCLive directory of the run.
        step: The step of the checkpoint the run resumes from.
    """
    for tsv in sorted(live_dir.glob("plots/**/*.tsv")):
        lines = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            continue
        column = lines[0].rstrip("\n").split("\t").index("step")
        kept = [lines[0]] + [line for line in lines[1:] if int(line.split("\t")[column]) <= step]
        if len(kept) != len(lines):
            files.write_text(tsv, "".join(kept))


class LogAtCheckpointsAndEnd(TrainerCallback):
    """Log at every checkpoint and at the last step too, besides every ``train.logging_steps``.

    At the last step: a run shorter than ``train.logging_steps`` still gets a loss curve.
    At every checkpoint: a logged loss is the mean since the previous log, and a resumed
    run cannot know the losses of steps after its checkpoint; with a log at the
    checkpoint no logging window spans a resume, so resumed and uninterrupted runs log
    the same values.
    """

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if state.global_step >= state.max_steps or control.should_save:
            control.should_log = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):  # noqa: D102
        if control.should_save:  # epoch-end checkpoints are decided in on_epoch_end
            control.should_log = True
        return control


EPOCH_RNG_FILE = "epoch_rng_state_{}.pth"
"""Torch's CPU RNG state at the start of the checkpoint's epoch, per process (see :class:`ReplayEpochOrder`)."""


class ReplayEpochOrder(TrainerCallback):
    """Resume mid-epoch with the data order the epoch had (checkpoints every ``train.eval_steps``).

    The length-grouped sampler draws each epoch's order from torch's global RNG when the
    epoch starts. Resuming from a checkpoint taken mid-epoch, the Trainer skips the batches
    already trained, but draws the order anew from another RNG state, so the rest of the
    epoch would see other examples than in the uninterrupted run. This keeps the RNG state
    of each epoch's start in every checkpoint and restores it as the resumed epoch begins,
    before the order is drawn; the Trainer then restores the checkpoint's own RNG state
    for the steps that follow. At an epoch boundary the Trainer's own restore overrides it.

    Args:
        resume: The checkpoint the run resumes from, or None.
        process_index: This process's rank (each has its own RNG).
    """

    def __init__(self, resume: str | None, process_index: int) -> None:
        self.resume = resume
        self.file = EPOCH_RNG_FILE.format(process_index)
        self.epoch_start: torch.Tensor | None = None

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
        if self.resume is not None:
            saved = Path(self.resume) / self.file
            if saved.is_file():  # absent if the run was killed between the checkpoint and this file
                torch.random.set_rng_state(torch.load(saved, weights_only=True))
            self.resume = None
        self.epoch_start = torch.random.get_rng_state()
        return control

    def on_save(self, args, state, control, **kwargs):  # noqa: D102
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.epoch_start is not None and checkpoint.is_dir():
            torch.save(self.epoch_start, checkpoint / self.file)
        return control


def encode_examples(
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    max_length: int,
    source: object = "records",
    family: families.Family = families.FAMILIES["seq2seq"],
    chat: bool = False,
    task: Task = BINARY,
) -> EncodedDataset:
    """Tokenise records for training, each prompt exactly once.

    Args:
        tokenizer: The model's tokenizer.
        rows: Split records with ``id``, ``question``, ``context`` and ``label``.
        max_length: ``model.max_source_length``; only the context is truncated, and a
            decoder-only model's prompt leaves room for its answer and EOS.
        source: Where the records came from, named in errors.
        family: The model's family (how prompt and answer make an example).
        chat: Wrap prompts in the tokenizer's chat template (:func:`pubmedqa_peft.prompts.as_chat`).
        task: The label set (named in the instruction; the prompt leaves room for its longest answer).

    Returns:
        A dataset of ``{"input_ids", "labels"}`` lists, unpadded (the collator pads
        each batch to its own longest example).
    """
    budget = family.prompt_budget(tokenizer, task.labels, max_length, chat)
    # The ids computed while fitting each prompt are its inputs: no second tokenization.
    fitted = fit_prompts_encoded(tokenizer, rows, budget, source, chat, task)
    if not family.causal:
        # Seq2seq targets depend on the label only: tokenised once per label.
        targets = {label: tokenizer(text_target=verbalize(label)).input_ids for label in task.labels}
        return EncodedDataset(
            [{"input_ids": p.input_ids, "labels": targets[row["label"]]} for p, row in zip(fitted, rows, strict=True)]
        )
    return EncodedDataset(
        [
            family.encode_example(tokenizer, p.text, p.input_ids, verbalize(row["label"]), chat)
            for p, row in zip(fitted, rows, strict=True)
        ]
    )


def _fingerprint(method: str, params: Params, data_files: Sequence[Path]) -> str:
    """Identify a training run so that a checkpoint is resumed only by the same run."""
    h = hashlib.sha256()
    h.update(method.encode())
    for section in (params.model, params.task, params.train, params.method(method)):
        h.update(section.model_dump_json().encode())
    for f in data_files:
        h.update(f.read_bytes())
    return h.hexdigest()


def _resume_checkpoint(ckpt_dir: Path, fingerprint: str, tidy: bool = True) -> str | None:
    """The last checkpoint of an interrupted identical run, or None (stale ones are removed).

    With ``tidy=False`` (the other processes of a multi-GPU run) it only reads, after the
    main process has tidied, and so reaches the same answer without touching the directory.
    """
    marker = ckpt_dir / FINGERPRINT_FILE
    if ckpt_dir.exists() or not tidy:
        same = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
        checkpoints = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        complete = [c for c in checkpoints if (c / TRAINER_STATE_FILE).is_file()]
        if tidy:
            for c in checkpoints:
                if c not in complete:
                    log.warning("removing incomplete checkpoint %s (cut off mid-save: no %s)", c, TRAINER_STATE_FILE)
                    shutil.rmtree(c)
        if same and complete:
            return str(complete[-1])
        if not tidy:
            return None
        log.info("removing stale checkpoints in %s (params or data changed)", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(marker, {"fingerprint": fingerprint})
    return None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def directory_size(path: Path) -> int:
    """Bytes of every file under ``path`` (the adapter or model as it lies on disk)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _final_losses(log_history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    train = [e["loss"] for e in log_history if "loss" in e]
    val = [e["eval_loss"] for e in log_history if "eval_loss" in e]
    return (train[-1] if train else None), (val[-1] if val else None)


def train_method(
    method: str,
    params: Params,
    train_rows: Sequence[dict[str, Any]],
    val_rows: Sequence[dict[str, Any]],
    *,
    adapter_out: Path,
    metrics_out: Path,
    plots_out: Path | None,
    checkpoints: Path,
    fingerprint: str,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train one method and write its adapter (or model), manifest, metrics and loss curves.

    Args:
        method: A registered method (:func:`pubmedqa_peft.methods.registry.names`).
        params: The validated parameters.
        train_rows: Training records.
        val_rows: Validation records (loss evaluated each epoch, or every ``train.eval_steps``).
        adapter_out: Directory that receives the adapter (or the whole model, for a
            method that saves one) and its ``run.json``, replaced atomically.
        metrics_out: JSON file of training metrics.
        plots_out: DVCLive directory for the loss curves, or None to skip DVCLive.
        checkpoints: Directory of checkpoints (per epoch, or every ``train.eval_steps``),
            used to resume a killed run.
        fingerprint: Identity of this run; checkpoints of another run are discarded.
        callbacks: Extra Trainer callbacks (tests use one to simulate a kill).

    Returns:
        The training metrics written to ``metrics_out``.
    """
    spec = registry.get(method)
    section = params.method(method)
    loading = spec.base_loading(section)
    modeling.set_threads(params.model.threads)
    device = modeling.resolve_device(params.model.device)
    # Resolved before the model loads, so a precision this device cannot run fails at once.
    precision = modeling.resolve_precision(params.train.precision, device, "train.precision")
    tokenizer = modeling.load_tokenizer(params.model.name)
    base = modeling.load_base_model(
        params.model.name,
        device,
        quantize=loading.quantize,
        compute_dtype=loading.compute_dtype,
        setting=f"{method_section(method)}.quantize",
        dropout=params.train.model_dropout,
    )
    if params.train.max_train_examples is not None:
        log.info("using the first %d of %d training examples", params.train.max_train_examples, len(train_rows))
        train_rows = train_rows[: params.train.max_train_examples]

    log.info("tokenising %d train and %d val examples", len(train_rows), len(val_rows))
    family = modeling.load_family(params.model.name)
    max_len = params.model.max_source_length
    chat = uses_chat(tokenizer, params.model.chat_template)
    if chat:
        log.info("prompts go through the tokenizer's chat template (model.chat_template: auto)")
    task = params.task.task
    train_ds = encode_examples(tokenizer, train_rows, max_len, paths.split_file("train"), family, chat, task)
    val_ds = encode_examples(tokenizer, val_rows, max_len, paths.split_file("val"), family, chat, task)

    # T5's loss is a per-batch mean that ignores the Trainer's token count, but its forward
    # takes **kwargs, so the Trainer would assume otherwise and multiply the loss by the
    # number of processes (multi-GPU) and skip the division by gradient_accumulation_steps.
    base.accepts_loss_kwargs = False
    # Seed before wrapping: PEFT initialises the new weights (LoRA A, prefixes) randomly.
    set_seed(params.train.seed)
    model = spec.build(base, section, params.model.name)
    trainable, total = modeling.count_parameters(model)
    log.info("%s: %d trainable of %d parameters (%.4f%%)", method, trainable, total, 100 * trainable / total)

    t = params.train
    args = Seq2SeqTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=section.lr,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay if section.weight_decay is None else section.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        # train.max_steps bounds a run on large data; -1 lets the epochs decide.
        max_steps=-1 if t.max_steps is None else t.max_steps,
        # With train.eval_steps, validation and checkpoints (for resuming) come every N updates
        # instead of every epoch; LogAtCheckpointsAndEnd logs at each of them either way.
        eval_strategy="epoch" if t.eval_steps is None else "steps",
        save_strategy="epoch" if t.eval_steps is None else "steps",
        eval_steps=t.eval_steps,
        save_steps=t.eval_steps or 500,  # the Trainer's default, unused with per-epoch saves
        save_total_limit=1,
        train_sampling_strategy="group_by_length",
        report_to="none",
        use_cpu=device.type == "cpu",
        # DDP over gloo on CPU (Accelerate would take MPI where torch has it); NCCL on CUDA by default.
        ddp_backend="gloo" if device.type == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        # The Trainer would have DDP search every step for parameters the step left unused (a
        # PEFT model is not a PreTrainedModel, so it assumes some may be) and warn that it found
        # none: a whole extra pass over the autograd graph. Only LayerDrop leaves any unused.
        ddp_find_unused_parameters=modeling.skips_layers(model.config),
        # Weights stay float32; the forward and backward run under autocast (fp16 with loss scaling).
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
        predict_with_generate=False,
        disable_tqdm=False,
    )
    # Under `accelerate launch` (one process per GPU) the machine's main process tidies the
    # checkpoint directory first; the others then read the same state and resume alike.
    with args.main_process_first(desc="checkpoint check"):
        resume = _resume_checkpoint(checkpoints, fingerprint, tidy=args.local_process_index == 0)
    if resume:
        log.info("resuming from %s", resume)
        if args.process_index == 0:
            truncate_curves(checkpoints / "dvclive", int(Path(resume).name.split("-")[-1]))
    # Only the main process writes outputs (curves, adapter, metrics); this is what
    # trainer.is_world_process_zero() tests, known before the Trainer exists.
    is_main = args.process_index == 0
    callbacks = [LogAtCheckpointsAndEnd(), ReplayEpochOrder(resume, args.process_index), *callbacks]
    live_dir = checkpoints / "dvclive"
    if plots_out is not None and is_main:
        from dvclive import Live

        # DVCLive writes into the checkpoint area so that a resumed run continues its
        # curves; the finished curves are copied to the declared output at the end.
        live = Live(dir=str(live_dir), resume=resume is not None, report=None, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(StepDVCLiveCallback(live=live))
    with known_warnings.trainer_run():
        trainer = Seq2SeqTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    final_train, final_val = _final_losses(trainer.state.log_history)

    size_on_disk = None
    if is_main:
        log.info("saving %s to %s", spec.saves, adapter_out)
        with files.atomic_path(adapter_out) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            write_manifest(tmp, _manifest(spec, loading, family, params, base, chat, precision))
            size_on_disk = directory_size(tmp)
    n_tokens = sum(len(f["input_ids"]) + len(f["labels"]) for f in train_ds.features)
    # train.max_steps may end a run mid-epoch (or before `epochs`): count the epochs it did.
    epochs = t.epochs if t.max_steps is None else trainer.state.epoch
    metrics = {
        "method": method,
        "saves": spec.saves,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100 * trainable / total,
        "size_on_disk_bytes": size_on_disk,
        "quantize": loading.quantize,
        "train_examples": len(train_ds),
        "val_examples": len(val_ds),
        "epochs": epochs,
        "steps": trainer.state.global_step,
        "processes": args.world_size,
        # train_batch_size is batch_size x GPUs under DataParallel (one process, several GPUs).
        "global_batch_size": args.train_batch_size * args.world_size * t.gradient_accumulation_steps,
        "tokens_seen": round(n_tokens * epochs),
        "train_time_s": wall,
        "train_examples_per_s": result.metrics.get("train_samples_per_second"),
        "train_real_tokens_per_s": n_tokens * epochs / wall,
        "peak_memory_mb": _peak_memory_mb(device),
        "mean_train_loss": mean_train_loss(trainer.state.log_history),
        "final_train_loss": final_train,
        "final_val_loss": final_val,
        "device": device.type,
        "precision": precision,
        "provenance": provenance(model=params.model, train=params.train, **{method_section(method): section}),
    }
    if is_main:
        files.write_json(metrics_out, metrics)
        if plots_out is not None:
            with files.atomic_path(plots_out) as tmp:
                shutil.copytree(live_dir / "plots", tmp)
    # The other processes wait until the curves are copied out of the checkpoint area,
    # which the caller removes next.
    trainer.accelerator.wait_for_everyone()
    return metrics


def _manifest(
    spec: registry.Method,
    loading: registry.BaseLoading,
    family: families.Family,
    params: Params,
    base: Any,
    chat: bool,
    precision: str,
) -> RunManifest:
    """The ``run.json`` of a trained method: what it is and how to load it again."""
    return RunManifest(
        method=spec.name,
        saves=spec.saves,
        base_model=params.model.name,
        base_model_revision=modeling.base_model_revision(params.model.name),
        model_type=base.config.model_type,
        family=family.name,
        labels=params.task.task.labels,
        prompt_template=TEMPLATE_VERSION,
        chat_template=chat,
        max_source_length=params.model.max_source_length,
        quantize=loading.quantize,
        compute_dtype=loading.compute_dtype,
        dtype=str(modeling.choose_dtype(base.device)).removeprefix("torch."),
        precision=precision,
    )


SEED_SUMMARY = ("final_train_loss", "final_val_loss", "mean_train_loss", "train_time_s", "steps")
"""What ``metrics/train/<method>.json`` keeps of each seed's run under ``seeds``."""


def _seed_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in SEED_SUMMARY}


def run_training_stage(method: str, params: Params) -> dict[str, Any]:
    """The body of a ``train_<method>`` stage: read the splits, train, clean up checkpoints.

    Args:
        method: A registered method.
        params: The validated parameters.

    Returns:
        The training metrics.
    """
    split_files = [paths.split_file("train"), paths.split_file("val")]
    for f in split_files:
        if not f.exists():
            raise PipelineError(f"{f} not found: run `dvc repro split` first")
    train_rows, val_rows = (files.read_jsonl(f) for f in split_files)
    for f, rows in zip(split_files, (train_rows, val_rows), strict=True):
        check_labels(rows, params.task.task, f)
    ckpt = paths.checkpoint_dir(method)
    seeds = params.train.seeds
    if len(seeds) > 1:
        log.info("training %s once per seed: %s", method, ", ".join(map(str, seeds)))
    metrics = train_method(
        method,
        params,
        train_rows,
        val_rows,
        adapter_out=paths.adapter_dir(method),
        metrics_out=paths.train_metrics_file(method),
        plots_out=paths.train_plots_dir(method),
        checkpoints=ckpt,
        fingerprint=_fingerprint(method, params, split_files),
    )
    if len(seeds) > 1:
        # The first seed keeps the usual places (evaluation's full report, serving, the
        # loss-curve figure read them); every other seed's model and curves go beside it.
        per_seed = {str(seeds[0]): _seed_summary(metrics)}
        for i, seed in enumerate(seeds[1:], start=2):
            log.info("%s: seed %d (%d of %d)", method, seed, i, len(seeds))
            one = params.model_copy(update={"train": params.train.model_copy(update={"seeds": (seed,)})})
            run = train_method(
                method,
                one,
                train_rows,
                val_rows,
                adapter_out=paths.seed_dir(paths.adapter_dir(method), seed),
                metrics_out=paths.seed_dir(ckpt, seed) / "metrics.json",
                plots_out=paths.seed_dir(paths.train_plots_dir(method), seed),
                checkpoints=paths.seed_dir(ckpt, seed),
                fingerprint=_fingerprint(method, one, split_files),
            )
            per_seed[str(seed)] = _seed_summary(run)
        metrics = {**metrics, "seeds": per_seed}
        if os.environ.get("RANK", "0") == "0":  # written once, by the run's rank 0 (as in train_method)
            files.write_json(paths.train_metrics_file(method), metrics)
    # The run finished, so its checkpoints can no longer be needed for a resume. Under a
    # launcher (train.processes) only the machine's main process (LOCAL_RANK 0) removes them.
    if os.environ.get("LOCAL_RANK", "0") == "0":
        shutil.rmtree(ckpt, ignore_errors=True)
    return metrics
