"""Precision, processes and the full-run estimate on this machine (issue 15 "Benchmark refresh").

Run from the project root, offline, after ``benchmarks/speed.py`` (whose fp32 rates the
estimate of a full ``dvc repro`` starts from) and ``benchmarks/data_stages.py`` (whose
rows it repeats)::

    python benchmarks/scale.py            # about 15 min on 2 idle cores
    python benchmarks/scale.py --quick    # a smoke run

On the exact flan-t5-small architecture with random weights (as ``speed.py``) and real
PQA-L records it measures, side by side in one run:

a. Scoring, fp32 against bf16 (``evaluate.precision``: the evaluate stage's
   :func:`pubmedqa_peft.scoring.score_yes_no` with ``precision``): examples/s on the same
   prompts, and their agreement on the default split's test set (its first records: max |P(yes) difference|,
   share of identical predictions); peak RSS of each in a fresh process.
b. Batch-1 latency (:func:`pubmedqa_peft.scoring.measure_latency`) in fp32 and bf16,
   each against its floor: FLOPs per request over the best GEMM rate of that dtype
   measured just before.
c. Training through the real train stage (``python -m stages.train lora`` in a
   temporary project, as DVC runs it): fp32 against bf16 (``train.precision``), and one
   process against two (``train.processes``, same global batch of 8), each stopped after
   ``train.max_steps`` updates; real tokens/s and peak RSS from the stage's own metrics.
d. The full ``dvc repro`` on flan-t5-small estimated in fp32 (``speed.py``'s estimate)
   and in bf16 (the same, with training and scoring scaled by the ratios of a and c).
e. The data stages at 1k / 21k / 211k records, from ``benchmarks/results/data_stages.json``.

The load average is recorded: other processes on a 2-core machine change every number,
so ratios are measured within this run. Output: a Markdown table on stdout and
``benchmarks/results/scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import speed  # (benchmarks/speed.py: model building, FLOP counting, records)
import torch
import yaml

from pubmedqa_peft import files, modeling, scoring
from pubmedqa_peft.config import load_params
from pubmedqa_peft.data import clean_records, read_raw
from pubmedqa_peft.prompts import LABELS, fit_prompts_encoded
from pubmedqa_peft.splits import stratified_split

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("scale")

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
SPEED = ROOT / "benchmarks" / "results" / "speed.json"
DATA_STAGES = ROOT / "benchmarks" / "results" / "data_stages.json"
MAX_LEN = speed.MAX_LEN
PRECISIONS = ("fp32", "bf16")
GOAL_LATENCY_OVER_FLOOR = speed.GOALS["latency_over_floor"]
GOAL_FULL_REPRO_MIN = 45

FULL = {"n_score": 16, "n_agree": 32, "latency": 5, "train_steps": 1}
QUICK = {"n_score": 8, "n_agree": 8, "latency": 2, "train_steps": 1}
"""Small samples: bf16 runs several times slower than fp32 on a CPU without native bf16."""
TRAINING_VARIANTS = (
    ("fp32, 1 process", {"precision": "fp32", "processes": 1, "batch_size": 8}),
    ("bf16, 1 process", {"precision": "bf16", "processes": 1, "batch_size": 8}),
    ("fp32, 2 processes", {"precision": "fp32", "processes": 2, "batch_size": 4}),
)
"""Training runs: a global batch of 8 in each (two processes take 4 each)."""


def gemm_rate(n: int, dtype: torch.dtype, reps: int = 3) -> float:
    """Median GFLOP/s of an ``n x n`` by ``n x n`` product in ``dtype``, the better of two kernels.

    ``a @ b`` and ``F.linear(a, b)`` (the model's layers: a transposed weight) take
    different kernels in bf16 on a CPU without native bf16, at rates several times apart.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = 0.0
    for product in (torch.matmul, torch.nn.functional.linear):
        product(a, b)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            product(a, b)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best


def best_gemm_rate(precision: str) -> float:
    """The better of two sizes: bf16 products are slow here, so its large size is smaller."""
    if precision == "fp32":
        return max(gemm_rate(speed.REP_N, torch.float32), gemm_rate(speed.LARGE_N, torch.float32))
    return max(gemm_rate(512, torch.bfloat16), gemm_rate(speed.REP_N, torch.bfloat16, reps=1))


def test_split_records() -> list[dict[str, Any]]:
    """The default pipeline's test split (binary task, stratified, seed 42) of the real PQA-L."""
    p = load_params(ROOT / "params.yaml")
    records = clean_records(read_raw(speed.PQAL), ("yes", "no")).records
    return list(stratified_split(records, p.split.fractions.model_dump(), p.split.seed)["test"])


# --- a, b: scoring and latency -------------------------------------------------------------------


def scoring_section(model_dir: Path, cfg: dict[str, Any], batch_size: int) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(str(model_dir))
    model = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    ids = [f.input_ids for f in fit_prompts_encoded(tokenizer, speed.sample_records(cfg["n_score"]), MAX_LEN, "sample")]
    test = test_split_records()[: cfg["n_agree"]]
    test_fitted = fit_prompts_encoded(tokenizer, test, MAX_LEN, "test")
    out: dict[str, Any] = {"prompts": len(ids), "test_records": len(test), "batch_size": batch_size}
    loglik: dict[str, np.ndarray] = {}
    for precision in PRECISIONS:
        score = dict(progress=False, precision=precision)
        scoring.score_yes_no(model, tokenizer, ids[:batch_size], batch_size, MAX_LEN, **score)  # warm-up
        start = time.perf_counter()
        scoring.score_yes_no(model, tokenizer, ids, batch_size, MAX_LEN, **score)
        seconds = time.perf_counter() - start
        loglik[precision] = scoring.score_yes_no(
            model, tokenizer, [f.input_ids for f in test_fitted], batch_size, MAX_LEN, **score
        )
        texts = [f.text for f in test_fitted]
        rate = best_gemm_rate(precision)
        latency = scoring.measure_latency(model, tokenizer, texts, cfg["latency"], 2, MAX_LEN, precision=precision)
        flops = speed.count_flops(
            scoring.score_yes_no, model, tokenizer, [texts[2]], 1, MAX_LEN, progress=False, precision=precision
        )
        floor = flops / (rate * 1e9)
        out[precision] = {
            "examples_per_s": len(ids) / seconds,
            "gemm_gflops": rate,
            "latency_s": latency,
            "latency_request_gflop": flops / 1e9,
            "latency_floor_s": floor,
            "latency_over_floor": latency["median"] / floor,
            "peak_rss_mb": speed.run_child(
                {"kind": "eval", "model": str(model_dir), "n": cfg["n_score"], "batch_size": batch_size}
            )["peak_rss_mb"]
            if precision == "fp32"
            else eval_rss_bf16(model_dir, cfg["n_score"], batch_size),
            "load": speed.load_average(),
        }
        log.info("scoring %s: %s", precision, out[precision])
    p_yes = {p: _p_yes(v) for p, v in loglik.items()}
    preds = {p: v.argmax(axis=1) for p, v in loglik.items()}
    out["agreement"] = {
        "max_abs_p_yes_diff": float(np.abs(p_yes["fp32"] - p_yes["bf16"]).max()),
        "identical_predictions": float((preds["fp32"] == preds["bf16"]).mean()),
    }
    out["bf16_speed_ratio"] = out["bf16"]["examples_per_s"] / out["fp32"]["examples_per_s"]
    return out


def _p_yes(loglik: np.ndarray) -> np.ndarray:
    yes, no = LABELS.index("yes"), LABELS.index("no")
    return 1 / (1 + np.exp(loglik[:, no] - loglik[:, yes]))


def eval_rss_bf16(model_dir: Path, n: int, batch_size: int) -> float:
    """Peak RSS of scoring in bf16, in a fresh process (this script's --child-eval-bf16)."""
    spec = json.dumps({"model": str(model_dir), "n": n, "batch_size": batch_size})
    return speed.run_script(Path(__file__).resolve(), "--child-eval-bf16", spec)["peak_rss_mb"]


def _child_eval_bf16(spec: dict[str, Any]) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(spec["model"])
    model = modeling.load_base_model(spec["model"], torch.device("cpu"))
    ids = [f.input_ids for f in fit_prompts_encoded(tokenizer, speed.sample_records(spec["n"]), MAX_LEN, "sample")]
    scoring.score_yes_no(model, tokenizer, ids, spec["batch_size"], MAX_LEN, progress=False, precision="bf16")
    return {"peak_rss_mb": speed.peak_rss_mb()}


# --- c: training through the real stage -----------------------------------------------------------


def stage_project(workdir: Path, model_dir: Path, train_rows: list[dict], val_rows: list[dict], **train: Any) -> Path:
    """A project directory where ``python -m stages.train`` runs as under DVC (params + splits)."""
    workdir.mkdir(parents=True)
    params = {
        "model": {"name": str(model_dir), "max_source_length": MAX_LEN, "threads": 0},
        "train": {"epochs": 1, "logging_steps": 1000, "warmup_ratio": 0.0, "eval_batch_size": 8, **train},
    }
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    splits = workdir / "data" / "splits"
    splits.mkdir(parents=True)
    files.write_jsonl(splits / "train.jsonl", train_rows)
    files.write_jsonl(splits / "val.jsonl", val_rows)
    return workdir


def training_section(model_dir: Path, cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(str(model_dir))
    # The benchmark's representative batches (one long warm-up batch, then batches at
    # spread length quantiles), so a few steps see an epoch's mix of lengths.
    rows = [dict(r, id=str(i)) for i, r in enumerate(speed.representative_rows(tokenizer, cfg["train_steps"]))]
    val = speed.sample_records(8, seed=speed.SEED + 1)
    out: dict[str, Any] = {"steps": 1 + cfg["train_steps"], "global_batch": 8}
    for name, variant in TRAINING_VARIANTS:
        project = stage_project(
            workdir / name.replace(", ", "-").replace(" ", "_"),
            model_dir,
            rows,
            val,
            max_steps=1 + cfg["train_steps"],
            **variant,
        )
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "stages.train", "lora"],
            cwd=project,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"},
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"train stage ({name}) failed:\n{proc.stderr[-4000:]}")
        metrics = json.loads((project / "metrics" / "train" / "lora.json").read_text(encoding="utf-8"))
        out[name] = {
            "stage_wall_s": wall,
            "train_time_s": metrics["train_time_s"],
            "real_tokens_per_s": metrics["train_real_tokens_per_s"],
            "peak_memory_mb": metrics["peak_memory_mb"],
            "steps": metrics["steps"],
            "final_train_loss": metrics["final_train_loss"],
            "load": speed.load_average(),
        }
        log.info("training %s: %s", name, out[name])
    base = out["fp32, 1 process"]["real_tokens_per_s"]
    for name, _ in TRAINING_VARIANTS:
        out[name]["ratio_to_fp32_1_process"] = out[name]["real_tokens_per_s"] / base
    return out


# --- d: full repro estimate ---------------------------------------------------------------------------


def estimate(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Minutes of a full ``dvc repro`` on flan-t5-small, fp32 (from speed.json) and bf16 (scaled)."""
    if not SPEED.is_file():
        return None
    fp32 = json.loads(SPEED.read_text(encoding="utf-8")).get("estimate_full_repro")
    if not fp32:
        return None
    train_ratio = doc["training"]["bf16, 1 process"]["ratio_to_fp32_1_process"]
    score_ratio = doc["scoring"]["bf16_speed_ratio"]
    train_bf16 = {m: v / train_ratio for m, v in fp32["train_minutes"].items()}
    eval_bf16 = fp32["evaluate_minutes"] / score_ratio
    return {
        "fp32_minutes": fp32["total_minutes"],
        "bf16_minutes": sum(train_bf16.values()) + eval_bf16,
        "fp32": fp32,
        "bf16_train_minutes": train_bf16,
        "bf16_evaluate_minutes": eval_bf16,
    }


# --- report -------------------------------------------------------------------------------------------------


def _ok(met: bool) -> str:
    return "yes" if met else "NO"


def table(doc: dict[str, Any]) -> str:
    s = doc["scoring"]
    a = s["agreement"]
    lines = [
        "| measure | fp32 | bf16 | bf16 / fp32 | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| a. scoring, examples/s (n={s['prompts']}, batch {s['batch_size']}) "
        f"| {s['fp32']['examples_per_s']:.2f} | {s['bf16']['examples_per_s']:.2f} | {s['bf16_speed_ratio']:.2f}x | | |",
        f"| a. GEMM rate, GFLOP/s (best of two sizes) "
        f"| {s['fp32']['gemm_gflops']:.0f} | {s['bf16']['gemm_gflops']:.1f} "
        f"| {s['bf16']['gemm_gflops'] / s['fp32']['gemm_gflops']:.3f}x | | |",
        f"| a. peak RSS of scoring, MB | {s['fp32']['peak_rss_mb']:.0f} | {s['bf16']['peak_rss_mb']:.0f} "
        f"| {s['bf16']['peak_rss_mb'] / s['fp32']['peak_rss_mb']:.2f}x | | |",
        f"| a. agreement on the first {s['test_records']} records of the test set: "
        "max abs P(yes) difference / identical predictions "
        f"| | {a['max_abs_p_yes_diff']:.4f} / {a['identical_predictions']:.1%} | | | |",
    ]
    for p in PRECISIONS:
        r = s[p]
        lines.append(
            f"| b. batch-1 latency median, s, {p}: floor {r['latency_request_gflop']:.1f} GFLOP / "
            f"{r['gemm_gflops']:.1f} GFLOP/s = {r['latency_floor_s']:.3f} s | "
            + (f"{r['latency_s']['median']:.3f} | | " if p == "fp32" else f"| {r['latency_s']['median']:.3f} | ")
            + f"{r['latency_over_floor']:.2f}x floor | <= {GOAL_LATENCY_OVER_FLOOR}x "
            f"| {_ok(r['latency_over_floor'] <= GOAL_LATENCY_OVER_FLOOR)} |"
        )
    t = doc.get("training")
    if t:
        for name, _ in TRAINING_VARIANTS:
            r = t[name]
            value = f"{r['real_tokens_per_s']:.0f}, {r['peak_memory_mb']:.0f}"
            cells = f"| {value} |" if name.startswith("fp32") else f"| | {value}"
            lines.append(
                f"| c. LoRA training through the stage, {name} (global batch {t['global_batch']}, {r['steps']} steps): "
                f"real tokens/s, peak RSS MB (rank 0) {cells} | {r['ratio_to_fp32_1_process']:.2f}x of fp32, 1 process "
                "| | |"
            )
    e = doc.get("estimate")
    if e:
        lines.append(
            f"| d. estimated full `dvc repro` on flan-t5-small, minutes | {e['fp32_minutes']:.0f} "
            f"| {e['bf16_minutes']:.0f} | | < {GOAL_FULL_REPRO_MIN} "
            f"| fp32 {_ok(e['fp32_minutes'] < GOAL_FULL_REPRO_MIN)}, "
            f"bf16 {_ok(e['bf16_minutes'] < GOAL_FULL_REPRO_MIN)} |"
        )
    data = doc.get("data_stages")
    if data and data.get("table"):
        lines += ["", "e. Data stages (benchmarks/data_stages.py):", "", data["table"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples: a smoke run")
    parser.add_argument("--model-dir", type=Path, help="reuse a flan-t5-small-arch directory")
    parser.add_argument("--skip-training", action="store_true", help="leave out c (training)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    parser.add_argument("--child-eval-bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    speed.setup_logging()
    if args.child_eval_bf16:
        logging.getLogger().setLevel(logging.WARNING)
        print(json.dumps(_child_eval_bf16(json.loads(args.child_eval_bf16))))
        return
    if not speed.PQAL.is_file():
        raise SystemExit(
            f"PubMedQA not found at {speed.PQAL}: the benchmark needs ../shared/data/pubmedqa/ori_pqal.json"
        )
    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    doc: dict[str, Any] = {"quick": args.quick, "config": cfg, "machine": speed.machine(), "load_average": {}}
    doc["machine"]["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    doc["machine"]["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    doc["load_average"]["start"] = speed.load_average()
    batch_size = load_params(ROOT / "params.yaml").evaluate.batch_size
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        workdir = Path(tmp)
        model_dir = speed.build_model("flan-t5-small-arch", args.model_dir, workdir)
        doc["scoring"] = scoring_section(model_dir, cfg, batch_size)
        doc["load_average"]["after_scoring"] = speed.load_average()
        if not args.skip_training:
            doc["training"] = training_section(model_dir, cfg, workdir)
            doc["load_average"]["after_training"] = speed.load_average()
            doc["estimate"] = estimate(doc)
    if DATA_STAGES.is_file():
        doc["data_stages"] = json.loads(DATA_STAGES.read_text(encoding="utf-8"))
    doc["wall_s"] = time.perf_counter() - started
    doc["table"] = table(doc)
    files.write_json(args.out, doc)
    m = doc["machine"]
    header = (
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch threads {m['torch_threads']}, "
        f"torch CPU capability {m['torch_cpu_capability']}, oneDNN bf16 {m['mkldnn_bf16_supported']}\n"
        f"load average (1, 5, 15 min): {doc['load_average']}\n\n"
    )
    args.out.with_suffix(".md").write_text(header + doc["table"] + "\n", encoding="utf-8")
    print("\n" + header + doc["table"])
    print(f"\nwrote {args.out} ({doc['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
