"""Speed benchmark of the pipeline on a laptop-class CPU (issue 7 "Speed").

Run from the project root, offline::

    python benchmarks/speed.py            # the full run (about 10-15 min on 2 cores)
    python benchmarks/speed.py --quick    # a smoke run (about 3-4 min)

It builds the exact flan-t5-small architecture with random weights
(``pubmedqa_peft.random_model flan-t5-small-arch``: 76,961,152 parameters, a tokenizer
giving realistic token lengths) and uses a fixed random sample of the real PubMedQA
PQA-L records (``../shared/data/pubmedqa/ori_pqal.json``). In one run it measures:

a. Scoring throughput (examples/s) of the evaluate stage's path (``modeling`` loader,
   :func:`pubmedqa_peft.scoring.score_yes_no` at ``evaluate.batch_size``) against the way
   other PubMedQA/PEFT projects evaluate: every input padded to 512 tokens, stock
   transformers model, ``generate(max_new_tokens=10)`` in batches of 8 and the answer
   parsed from the text (``benchmarks/reference.py``, run in fresh processes that never
   import ``pubmedqa_peft``). Both use the same weights; so that the reference's text can
   be parsed at all with random weights, the output head is restricted to the two answer
   words (every other row zero, ``no`` = -``yes``; the matmul shapes are unchanged).
b. The fp32 matrix-multiply rate of this machine (square GEMMs of a size like the
   model's and of a large size) and the share of it that scoring achieves, with FLOPs
   counted by ``torch.utils.flop_counter`` (matmuls and attention; elementwise ops are
   not counted).
c. Batch-1 latency (median, p90) against its floor, FLOPs per request / GEMM rate.
d. Training throughput in real (non-padding) tokens/s for prompt, prefix and LoRA: the
   pipeline's ``train_method`` (length-grouped batches, dynamic padding) against the
   same function with every batch padded to 512 on the stock model; padding fractions.
e. Peak resident memory of training (per method) and of evaluation (one model scored),
   each in a fresh process.
f. Wall time of a no-op ``dvc repro`` on a completed pipeline (tiny model, real data, in
   a temporary committed git repository), median of 3.

Timings are medians of repeats; the load average is recorded because other processes
on a 2-core machine change every number. Output: a Markdown table on stdout and
``benchmarks/results/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import reference  # (benchmarks/reference.py: the usual way, stock transformers)
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.config import load_params, parse_params
from pubmedqa_peft.data import clean_records, read_raw
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import LABELS, fit_prompts_encoded

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("speed")

METHODS = registry.names()
"""Every registered training method is trained in the training section."""

PQAL = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results" / "speed.json"
MAX_LEN = 512
TRAIN_BATCH = 8
SEED = 0

GOALS = {
    "scoring_speedup": 3.0,
    "matmul_fraction": 0.60,
    "latency_over_floor": 1.3,
    "train_speedup": 1.5,
    "train_padding": 0.10,
    "dvc_noop_s": 3.0,
}

REP_N, LARGE_N = 1024, 4096
"""Square GEMM sizes: like the model's matmuls (inner sizes 384-1024), and large."""

FULL = {"n_score": 96, "n_ref": 48, "n_sweep": 48, "score_reps": 3, "latency": 20, "train_steps": 4, "padded_steps": 2}
QUICK = {"n_score": 32, "n_ref": 8, "n_sweep": 16, "score_reps": 2, "latency": 5, "train_steps": 2, "padded_steps": 1}


# --- measuring helpers ---------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (its own program, not its parent's).

    Linux's ``VmHWM`` belongs to the address space, which ``exec`` replaces; ``ru_maxrss``
    would also count the benchmark's own memory, inherited through ``fork``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        match = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 2**10
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _cpu_flash_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """The FLOP counter of torch, also counting the CPU flash-attention kernel it leaves out."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def gemm_rate(n: int, reps: int = 5) -> float:
    """Median fp32 GFLOP/s of an ``n x n`` by ``n x n`` matrix product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def machine() -> dict[str, Any]:
    model_name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model_name = match.group(1).strip() if match else model_name
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil comes with dvc
        physical = None
    import transformers

    return {
        "cpu": model_name,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }


# --- models and data -------------------------------------------------------------------------


def build_model(arch: str, reuse: Path | None, workdir: Path) -> Path:
    """A random-weight model directory of ``arch``, built offline (or reused if given/cached)."""
    from pubmedqa_peft.random_model import write_random_model

    if reuse is not None:
        return reuse
    cached = CACHE / arch
    if (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file():
        log.info("reusing %s (delete it to rebuild)", cached)
        return cached
    start = time.perf_counter()
    target = cached if arch == "flan-t5-small-arch" else workdir / arch
    write_random_model(arch, target, PQAL, seed=SEED)
    log.info("built %s in %.0fs", arch, time.perf_counter() - start)
    return target


def sample_records(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """A fixed random sample of the cleaned yes/no PQA-L records (realistic length mix)."""
    records = clean_records(read_raw(PQAL), ("yes", "no")).records
    return random.Random(seed).sample(records, min(n, len(records)))


# --- a. scoring, b. efficiency, c. latency ----------------------------------------------------


def time_ours(model: Any, tokenizer: Any, ids: list[list[int]], batch_size: int) -> float:
    start = time.perf_counter()
    scoring.score_yes_no(model, tokenizer, ids, batch_size, MAX_LEN, progress=False)
    return time.perf_counter() - start


def reference_in_child(model_dir: Path, texts: list[str]) -> tuple[list[str | None], float, int]:
    """The reference, ``benchmarks/reference.py``, timed in a fresh process.

    It uses stock transformers and never imports ``pubmedqa_peft``, so none of our fast
    paths touch it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(texts), encoding="utf-8")
        row = run_script(Path(reference.__file__).resolve(), str(model_dir), str(path))
    return row["preds"], row["seconds"], row["new_tokens"]


def count_flops(fn: Any, *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``fn(*args, **kwargs)``, run on this thread only.

    The counter sees the thread it runs in, and scoring spreads batches over worker
    threads when torch has several (``scoring.cpu_workers``); with one torch thread it runs
    the same operators in this thread.
    """
    with scoring.torch_threads(1), flop_counter() as fc:
        fn(*args, **kwargs)
    return fc.get_total_flops()


def naive_loglik(model: Any, tokenizer: Any, text: str) -> list[float]:
    """One prompt, one candidate, one full stock forward at a time, unpadded."""
    enc = tokenizer(text, return_tensors="pt")
    out = []
    with torch.inference_mode():
        for label in LABELS:
            target = tokenizer(text_target=label, return_tensors="pt").input_ids
            logp = torch.log_softmax(model(**enc, labels=target).logits[0].double(), dim=-1)
            out.append(float(sum(logp[t, target[0, t]] for t in range(target.shape[1]))))
    return out


def gemm_pair() -> dict[str, float]:
    """GEMM rates at the representative and the large size, measured back to back."""
    return {"representative": gemm_rate(REP_N), "large": gemm_rate(LARGE_N, reps=3)}


def scoring_section(model_dir: Path, cfg: dict[str, Any], batch_size: int) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(str(model_dir))
    ours = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    _, ref = reference.load(str(model_dir))  # stock model, for the equivalence check and its FLOPs
    reference.answer_only_head(ours, tokenizer)
    rows = sample_records(cfg["n_score"])
    fitted = fit_prompts_encoded(tokenizer, rows, MAX_LEN, PQAL)
    texts, ids = [f.text for f in fitted], [f.input_ids for f in fitted]
    lengths = np.array([len(i) for i in ids])
    log.info("scoring sample: %d prompts, tokens mean %.0f, max %d", len(ids), lengths.mean(), lengths.max())

    # Warm-up (allocator growth, kernel choice), then FLOPs of one full pass (not timed).
    scoring.score_yes_no(ours, tokenizer, ids[:batch_size], batch_size, MAX_LEN, progress=False)
    loglik = scoring.score_yes_no(ours, tokenizer, ids, batch_size, MAX_LEN, progress=False)
    ours_flops = count_flops(scoring.score_yes_no, ours, tokenizer, ids, batch_size, MAX_LEN, progress=False)

    # Equivalence on this model: fast path vs the naive stock loop, a few prompts.
    naive = np.array([naive_loglik(ref, tokenizer, t) for t in texts[:4]])
    max_diff = float(np.abs(naive - loglik[:4]).max())

    # Each timed run of ours is paired with a GEMM measurement just before it, so the
    # share of the GEMM rate compares like with like when the load changes. The
    # reference runs in two halves between our runs, each in a fresh process.
    n_ref = cfg["n_ref"]
    halves = [texts[: n_ref // 2], texts[n_ref // 2 : n_ref]]
    runs, ref_preds, ref_time, ref_tokens = [], [], 0.0, 0
    for rep in range(cfg["score_reps"]):
        gemm = gemm_pair()
        seconds = time_ours(ours, tokenizer, ids, batch_size)
        runs.append({"seconds": seconds, "gemm_gflops": gemm, "load": load_average()})
        log.info("ours run %d: %.2f ex/s, GEMM %s GFLOP/s (load %s)", rep, len(ids) / seconds, gemm, load_average())
        if rep < len(halves):
            preds, seconds, new = reference_in_child(model_dir, halves[rep])
            ref_preds += preds
            ref_time += seconds
            ref_tokens += new
            log.info("reference: %.2f ex/s so far (load %s)", len(ref_preds) / ref_time, load_average())
    for half in halves[cfg["score_reps"] :]:
        preds, seconds, new = reference_in_child(model_dir, half)
        ref_preds, ref_time, ref_tokens = ref_preds + preds, ref_time + seconds, ref_tokens + new
    ref_flops = count_flops(reference.generate_answers, ref, tokenizer, texts[: reference.BATCH])
    ref_flops_per_example = ref_flops / min(reference.BATCH, len(texts))

    ours_seconds = statistics.median(r["seconds"] for r in runs)
    ours_eps = len(ids) / ours_seconds
    ref_eps = len(ref_preds) / ref_time
    ours_pred = [LABELS[int(i)] for i in loglik.argmax(axis=1)]
    comparable = [(o, r) for o, r in zip(ours_pred, ref_preds, strict=False) if r is not None]
    shares = [ours_flops / r["seconds"] / 1e9 / max(r["gemm_gflops"].values()) for r in runs]
    shares_rep = [ours_flops / r["seconds"] / 1e9 / r["gemm_gflops"]["representative"] for r in runs]

    # Batch-size sweep (and one thread) on a subset, one run each.
    sweep_ids = ids[: cfg["n_sweep"]]
    sweep = {str(bs): len(sweep_ids) / time_ours(ours, tokenizer, sweep_ids, bs) for bs in (4, 8, 16, 32)}
    with scoring.torch_threads(1):
        one_thread = len(sweep_ids) / time_ours(ours, tokenizer, sweep_ids, batch_size)
    # Our batches: sorted by length, each padded to its own longest prompt.
    ordered = np.sort(lengths)[::-1]
    padded_tokens = sum(ordered[i] * len(ordered[i : i + batch_size]) for i in range(0, len(ordered), batch_size))

    # c. Batch-1 latency over the prompts measure_latency cycles through, and their floors.
    warmup = 3
    gemm_latency = gemm_pair()
    latency = scoring.measure_latency(ours, tokenizer, texts, cfg["latency"], warmup, MAX_LEN)
    request_flops = []
    for i in range(cfg["latency"]):
        text = texts[(warmup + i) % len(texts)]
        request_flops.append(count_flops(scoring.score_yes_no, ours, tokenizer, [text], 1, MAX_LEN, progress=False))
    floor = statistics.median(request_flops) / (max(gemm_latency.values()) * 1e9)
    return {
        "prompts": len(ids),
        "prompt_tokens": {
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },
        "batch_size": batch_size,
        "ours_examples_per_s": ours_eps,
        "ours_runs": runs,
        "ours_padding_fraction": float(1 - lengths.sum() / padded_tokens),
        "ours_flops_per_example": ours_flops / len(ids),
        "ours_gflops_per_s": ours_flops / ours_seconds / 1e9,
        "share_of_gemm_rate": statistics.median(shares),
        "share_of_representative_gemm_rate": statistics.median(shares_rep),
        "reference_examples": len(ref_preds),
        "reference_examples_per_s": ref_eps,
        "reference_flops_per_example": ref_flops_per_example,
        "reference_gflops_per_s": ref_flops_per_example * ref_eps / 1e9,
        "reference_new_tokens_per_example": ref_tokens / max(len(ref_preds), 1),
        "speedup": ours_eps / ref_eps,
        "comparable": len(comparable),
        "agree": sum(o == r for o, r in comparable),
        "max_abs_loglik_diff_vs_naive_stock": max_diff,
        "batch_size_sweep_examples_per_s": sweep,
        "one_thread_examples_per_s": one_thread,
        "latency_s": latency,
        "latency_gemm_gflops": gemm_latency,
        "latency_request_gflop_median": statistics.median(request_flops) / 1e9,
        "latency_floor_s": floor,
        "latency_over_floor": latency["median"] / floor,
    }


# --- d, e. training and memory, each in a fresh process ---------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process and return its numbers."""
    if spec["kind"] == "eval":
        return _child_eval(spec)
    return _child_train(spec)


def _child_eval(spec: dict[str, Any]) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(spec["model"])
    model = modeling.load_base_model(spec["model"], torch.device("cpu"))
    fitted = fit_prompts_encoded(tokenizer, sample_records(spec["n"]), MAX_LEN, PQAL)
    ids = [f.input_ids for f in fitted]
    scoring.score_yes_no(model, tokenizer, ids, spec["batch_size"], MAX_LEN, progress=False)
    return {"peak_rss_mb": peak_rss_mb()}


def full_epoch_batches(tokenizer: Any) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """The records and the Trainer's length-grouped batches (indices) over all of them as one epoch."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    records = clean_records(read_raw(PQAL), ("yes", "no")).records
    lengths = [len(f.input_ids) for f in fit_prompts_encoded(tokenizer, records, MAX_LEN, PQAL)]
    torch.manual_seed(42)  # the pipeline's train.seed
    order = list(LengthGroupedSampler(TRAIN_BATCH, lengths=lengths))
    batches = [order[i : i + TRAIN_BATCH] for i in range(0, len(order), TRAIN_BATCH)]
    for r, n in zip(records, lengths, strict=True):
        r["_tokens"] = n
    return records, batches


def representative_rows(tokenizer: Any, timed: int) -> list[dict[str, Any]]:
    """Rows of a few batches that look like a whole epoch of the pipeline's training.

    The longest length-grouped batch of a real epoch (the warm-up step) plus ``timed``
    batches at evenly spaced length quantiles, so a few steps see its lengths and padding.
    """
    records, batches = full_epoch_batches(tokenizer)
    full = [b for b in batches if len(b) == TRAIN_BATCH]  # not the epoch's last, partial batch
    by_length = sorted(full, key=lambda b: max(records[i]["_tokens"] for i in b))
    picks = [by_length[-1]] + [by_length[int(q)] for q in np.linspace(0, len(by_length) - 2, timed)]
    return [{k: v for k, v in records[i].items() if k != "_tokens"} for b in picks for i in b]


def _child_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one method on representative batches: ours, then everything padded to 512 on the stock model."""
    from transformers import DataCollatorForSeq2Seq, TrainerCallback, trainer_pt_utils

    from pubmedqa_peft import fastpath, training

    events: list[tuple] = []
    state = {"padded_512": False, "max_steps": 0}

    class Recording(DataCollatorForSeq2Seq):
        """The pipeline's collator, recording real and padded tokens (padding to 512 for the reference)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if state["padded_512"]:
                kwargs.update(padding="max_length", max_length=MAX_LEN)
            super().__init__(*args, **kwargs)

        def __call__(self, features: Any, return_tensors: Any = None) -> Any:
            batch = super().__call__(features, return_tensors)
            labels = batch["labels"]
            real = int(batch["attention_mask"].sum()) + int((labels != -100).sum())
            events.append(("batch", real, batch["input_ids"].numel() + labels.numel()))
            return batch

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state_: Any, control: Any, **kwargs: Any) -> None:
            events.append(("begin", time.perf_counter()))

        def on_step_end(self, args: Any, state_: Any, control: Any, **kwargs: Any) -> None:
            events.append(("end", time.perf_counter()))
            if state_.global_step >= state["max_steps"]:
                control.should_training_stop = True

    training.DataCollatorForSeq2Seq = Recording
    # On a real epoch the sampler sorts megabatches of up to 50 batches; on these few
    # batches its default would shrink to one batch per megabatch (random batches), so
    # group the whole sample as one megabatch, which gives back the chosen batches.
    grouped = trainer_pt_utils.get_length_grouped_indices
    trainer_pt_utils.get_length_grouped_indices = lambda lengths, batch_size, mega_batch_mult=None, generator=None: (
        grouped(lengths, batch_size, mega_batch_mult=-(-len(lengths) // batch_size), generator=generator)
    )
    stock_enable = fastpath.enable
    tokenizer = modeling.load_tokenizer(spec["model"])
    rows = representative_rows(tokenizer, spec["timed_steps"])
    val = sample_records(TRAIN_BATCH, seed=SEED + 1)
    params = parse_params(
        {
            "model": {"name": spec["model"], "max_source_length": MAX_LEN},
            "train": {
                "epochs": 1,
                "batch_size": TRAIN_BATCH,
                "eval_batch_size": TRAIN_BATCH,
                "logging_steps": 1000,
                "warmup_ratio": 0.0,
            },
        }
    )
    out: dict[str, Any] = {}
    for variant, steps in (("ours", 1 + spec["timed_steps"]), ("padded512", 1 + spec["padded_timed_steps"])):
        events.clear()
        state.update(padded_512=variant == "padded512", max_steps=steps)
        # The reference runs the stock model: no fast paths.
        fastpath.enable = (lambda model: []) if state["padded_512"] else stock_enable
        work = Path(spec["workdir"]) / variant
        training.train_method(
            spec["method"],
            params,
            rows,
            val,
            adapter_out=work / "adapter",
            metrics_out=work / "metrics.json",
            plots_out=None,
            checkpoints=work / "ckpt",
            fingerprint="benchmark",
            callbacks=[Timer()],
        )
        # Pair every step with the batch collated just before it; the first step is warm-up.
        done, last_batch, begin = [], None, None
        for event in events:
            if event[0] == "batch":
                last_batch = event
            elif event[0] == "begin":
                begin = event[1]
            elif event[0] == "end" and begin is not None and last_batch is not None:
                done.append({"real": last_batch[1], "padded": last_batch[2], "seconds": event[1] - begin})
        timed = done[1:]
        out[variant] = {
            "steps": len(done),
            "step_seconds": [round(d["seconds"], 3) for d in done],
            "real_tokens_per_step": statistics.fmean(d["real"] for d in timed),
            "padding_fraction": 1 - sum(d["real"] for d in done) / sum(d["padded"] for d in done),
            "seconds_per_step": statistics.fmean(d["seconds"] for d in timed),
            "peak_rss_mb": peak_rss_mb(),
        }
    # Ours: real tokens of its own timed steps over their time. Padded to 512, a step costs
    # the same whatever its examples, so the reference processes the same real tokens per
    # step (those of our representative batches) in its own time per step.
    real_per_step = out["ours"]["real_tokens_per_step"]
    for variant in out:
        out[variant]["real_tokens_per_s"] = real_per_step / out[variant]["seconds_per_step"]
    return out


def run_script(script: Path, *args: str) -> dict[str, Any]:
    """Run a Python script in a fresh process; the JSON object on its last output line."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    return run_script(Path(__file__).resolve(), "--child", json.dumps(spec))


def simulated_train_padding(model_dir: Path) -> float:
    """Padding of the Trainer's length-grouped batches over all 890 yes/no records as one epoch."""
    records, batches = full_epoch_batches(modeling.load_tokenizer(str(model_dir)))
    real = sum(records[i]["_tokens"] for b in batches for i in b)
    padded = sum(max(records[i]["_tokens"] for i in b) * len(b) for b in batches)
    return 1 - real / padded


def training_section(model_dir: Path, cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"timed_steps": cfg["train_steps"], "batch_size": TRAIN_BATCH}
    for method in METHODS:
        spec = {
            "kind": "train",
            "method": method,
            "model": str(model_dir),
            "timed_steps": cfg["train_steps"],
            "padded_timed_steps": cfg["padded_steps"],
            "workdir": str(workdir / f"train-{method}"),
        }
        row = run_child(spec)
        row["speedup"] = row["ours"]["real_tokens_per_s"] / row["padded512"]["real_tokens_per_s"]
        log.info("train %s: %s (load %s)", method, row, load_average())
        out[method] = row
    out["simulated_full_epoch_padding"] = simulated_train_padding(model_dir)
    return out


# --- f. no-op dvc repro -----------------------------------------------------------------------


def dvc_section(tiny_dir: Path, workdir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from e2e_support import E2E_PARAMS, commit_all, dvc, make_repo

    # The end-to-end tests' small settings: every stage does real work, quickly.
    params = {"ingest.source": str(PQAL), "model.name": str(tiny_dir), **E2E_PARAMS}
    repo = make_repo(workdir / "repo", params)
    start = time.perf_counter()
    dvc(repo, "repro")
    first = time.perf_counter() - start
    commit_all(repo, "pipeline run")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = dvc(repo, "repro")
        times.append(time.perf_counter() - start)
        if "Running stage" in proc.stdout:
            raise RuntimeError(f"the second dvc repro was not a no-op:\n{proc.stdout}")
    return {"first_repro_s": first, "noop_repro_s": statistics.median(times), "noop_runs_s": times}


# --- report ------------------------------------------------------------------------------------


def estimate_full_repro(doc: dict[str, Any], params: Any) -> dict[str, Any]:
    """Minutes of a full ``dvc repro`` on flan-t5-small with ``params``, from this run's rates.

    Training: epochs x training examples x real tokens per example / measured real
    tokens/s, per method, plus one validation pass per epoch at the scoring rate.
    Evaluation: base and 3 adapters score val + test at the measured rate; the few-shot
    prompts fill the 512-token budget, so they are charged by FLOPs per token relative to
    our sample (attention makes long prompts dearer); plus the latency requests. Data,
    plot and model-loading steps take seconds and are left out.
    """
    s, t = doc["scoring"], doc["training"]
    n = 890  # PQA-L yes/no records after cleaning
    fr = params.split.fractions
    n_train, n_val, n_test = round(n * fr.train), round(n * fr.val), round(n * fr.test)
    tokens = s["prompt_tokens"]["mean"] + 2  # prompt + "yes</s>" / "no</s>"
    eps = s["ours_examples_per_s"]
    epochs = params.train.epochs
    train_min = {
        m: (epochs * n_train * tokens / t[m]["ours"]["real_tokens_per_s"] + epochs * n_val / eps) / 60 for m in METHODS
    }
    per_model = (n_val + n_test) / eps
    long_factor = (MAX_LEN / s["prompt_tokens"]["mean"]) * 1.15  # ~15% more FLOPs per token at 512 (attention)
    ev = params.evaluate
    latency = (
        (1 + len(METHODS) + len(ev.fewshot_k)) * (ev.latency_samples + ev.latency_warmup) * s["latency_s"]["median"]
    )
    eval_min = (4 * per_model + len(ev.fewshot_k) * per_model * long_factor + latency) / 60
    return {
        "train_minutes": train_min,
        "evaluate_minutes": eval_min,
        "total_minutes": sum(train_min.values()) + eval_min,
        "assumes": f"{n_train} train / {n_val} val / {n_test} test examples, {epochs} epochs, this run's rates",
    }


def _ok(value: float, goal: float, *, at_most: bool = False) -> str:
    return "yes" if (value <= goal if at_most else value >= goal) else "NO"


def table(doc: dict[str, Any]) -> str:
    s, lat = doc["scoring"], doc["scoring"]["latency_s"]
    g_runs = [r["gemm_gflops"] for r in s["ours_runs"]]
    rep = statistics.median(g["representative"] for g in g_runs)
    large = statistics.median(g["large"] for g in g_runs)
    share = s["share_of_gemm_rate"]
    lines = [
        "| measure | ours | reference | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| a. scoring throughput, examples/s (ours: n={s['prompts']}, batch {s['batch_size']}; reference: "
        f"n={s['reference_examples']}, padded to 512, generate 10 tokens, batch 8) "
        f"| {s['ours_examples_per_s']:.2f} | {s['reference_examples_per_s']:.2f} | {s['speedup']:.2f}x "
        f"| >= {GOALS['scoring_speedup']:.0f}x | {_ok(s['speedup'], GOALS['scoring_speedup'])} |",
        f"| a. same predictions where comparable (reference text parses to yes/no) "
        f"| {s['agree']}/{s['comparable']} agree | | | all | {'yes' if s['agree'] == s['comparable'] else 'NO'} |",
        f"| b. fp32 GEMM rate, GFLOP/s, {REP_N}^3 / {LARGE_N}^3 (median of the runs' pairs) "
        f"| {rep:.0f} / {large:.0f} | | | | |",
        f"| b. scoring GFLOP/s; share of the better GEMM rate measured just before each run (median) "
        f"| {s['ours_gflops_per_s']:.0f} | {s['reference_gflops_per_s']:.0f} | {share:.0%} "
        f"| >= {GOALS['matmul_fraction']:.0%} | {_ok(share, GOALS['matmul_fraction'])} |",
        f"| b. GFLOP per example (torch flop_counter: matmuls + attention) "
        f"| {s['ours_flops_per_example'] / 1e9:.1f} | {s['reference_flops_per_example'] / 1e9:.1f} | | | |",
        f"| c. batch-1 latency median / p90, s; floor = {s['latency_request_gflop_median']:.1f} GFLOP / "
        f"{max(s['latency_gemm_gflops'].values()):.0f} GFLOP/s = {s['latency_floor_s']:.3f} s "
        f"| {lat['median']:.3f} / {lat['p90']:.3f} | | {s['latency_over_floor']:.2f}x floor "
        f"| <= {GOALS['latency_over_floor']}x "
        f"| {_ok(s['latency_over_floor'], GOALS['latency_over_floor'], at_most=True)} |",
    ]
    t = doc.get("training")
    if t:
        for m in METHODS:
            r = t[m]
            lines.append(
                f"| d. training {m}, real tokens/s (batch {t['batch_size']}) "
                f"| {r['ours']['real_tokens_per_s']:.0f} | {r['padded512']['real_tokens_per_s']:.0f} "
                f"| {r['speedup']:.2f}x | >= {GOALS['train_speedup']}x | {_ok(r['speedup'], GOALS['train_speedup'])} |"
            )
        worst = max(t[m]["ours"]["padding_fraction"] for m in METHODS)
        full = t["simulated_full_epoch_padding"]
        lines.append(
            f"| d. training padding: a whole epoch of length-grouped batches / the timed batches "
            f"| {full:.1%} / {worst:.1%} | {t['lora']['padded512']['padding_fraction']:.1%} | "
            f"| < {GOALS['train_padding']:.0%} | {_ok(full, GOALS['train_padding'], at_most=True)} |"
        )
        lines.append(
            f"| e. peak RSS of training, MB ({' / '.join(METHODS)}) | "
            + " / ".join(f"{t[m]['ours']['peak_rss_mb']:.0f}" for m in METHODS)
            + " | "
            + " / ".join(f"{t[m]['padded512']['peak_rss_mb']:.0f}" for m in METHODS)
            + " | | | |"
        )
    if "eval_peak_rss_mb" in doc:
        lines.append(f"| e. peak RSS of evaluation (one model scored), MB | {doc['eval_peak_rss_mb']:.0f} | | | | |")
    d = doc.get("dvc")
    if d:
        lines.append(
            f"| f. no-op `dvc repro` on a completed pipeline, s (median of 3) | {d['noop_repro_s']:.2f} | | "
            f"| < {GOALS['dvc_noop_s']:.0f} s | {_ok(d['noop_repro_s'], GOALS['dvc_noop_s'], at_most=True)} |"
        )
    return "\n".join(lines)


def setup_logging() -> None:
    """Timestamped INFO lines of the benchmark; the libraries' chatter silenced."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "peft", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples: a smoke run of a few minutes")
    parser.add_argument("--model-dir", type=Path, help="reuse a flan-t5-small-arch directory instead of building one")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--skip-training", action="store_true", help="leave out d and e (training)")
    parser.add_argument("--skip-dvc", action="store_true", help="leave out f (dvc repro)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_logging()
    if args.child:
        logging.getLogger().setLevel(logging.WARNING)
        print(json.dumps(_child(json.loads(args.child))))
        return
    if not PQAL.is_file():
        raise SystemExit(f"PubMedQA not found at {PQAL}: the benchmark needs ../shared/data/pubmedqa/ori_pqal.json")

    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    doc: dict[str, Any] = {"quick": args.quick, "config": cfg, "machine": machine(), "load_average": {}}
    doc["load_average"]["start"] = load_average()
    batch_size = load_params(ROOT / "params.yaml").evaluate.batch_size if (ROOT / "params.yaml").is_file() else 16
    with tempfile.TemporaryDirectory(prefix="speed-bench-") as tmp:
        workdir = Path(tmp)
        model_dir = build_model("flan-t5-small-arch", args.model_dir, workdir)
        doc["model_dir"] = str(model_dir)

        doc["scoring"] = scoring_section(model_dir, cfg, batch_size)
        doc["load_average"]["after_scoring"] = load_average()

        doc["eval_peak_rss_mb"] = run_child(
            {"kind": "eval", "model": str(model_dir), "n": cfg["n_score"], "batch_size": batch_size}
        )["peak_rss_mb"]
        if not args.skip_training:
            doc["training"] = training_section(model_dir, cfg, workdir)
            doc["load_average"]["after_training"] = load_average()
        if not args.skip_dvc:
            tiny = build_model("tiny-t5", None, workdir)
            doc["dvc"] = dvc_section(tiny, workdir)
        doc["load_average"]["end"] = load_average()
    if "training" in doc:
        doc["estimate_full_repro"] = estimate_full_repro(doc, load_params(ROOT / "params.yaml"))
    doc["wall_s"] = time.perf_counter() - started
    doc["table"] = table(doc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    m = doc["machine"]
    print(f"\n{m['cpu']}, {m['logical_cpus']} logical CPUs, torch threads {m['torch_threads']}")
    print(f"load average (1, 5, 15 min) during the run: {doc['load_average']}")
    print(doc["table"])
    if "estimate_full_repro" in doc:
        e = doc["estimate_full_repro"]
        parts = ", ".join(f"train_{m} {v:.0f}" for m, v in e["train_minutes"].items())
        print(f"\nestimated full dvc repro on flan-t5-small: {e['total_minutes']:.0f} min ({parts}, ", end="")
        print(f"evaluate {e['evaluate_minutes']:.0f}; {e['assumes']})")
    print(f"\nwrote {args.out} ({doc['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
