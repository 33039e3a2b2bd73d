"""Speed benchmark for decoder-only models (issue 12 item 6), on a laptop-class CPU.

Run from the project root, offline::

    python benchmarks/decoder.py            # the full run (about 15-20 min on 2 busy cores)
    python benchmarks/decoder.py --quick    # a smoke run on the tiny random Llama (< 30 s)

The full run builds Qwen2.5-0.5B's exact architecture with random weights
(``python -m pubmedqa_peft.random_model qwen2.5-0.5b-arch``: 494,032,768 parameters,
151,936 vocabulary rows, a Qwen2-style byte-level BPE tokenizer learned from PQA-L; cached
in ``benchmarks/.cache/``). TinyLlama-1.1B's architecture (``--arch tinyllama-1.1b-arch``)
runs too but needs about twice the time: too long for 2 cores. The prompts are those of
the 890 yes/no PQA-L records (``../shared/data/pubmedqa/ori_pqal.json``), in the plain
format of a base model, fitted to 512 tokens less the room for the answer and EOS, as
the evaluate stage does (``prompts.fit_prompts_encoded``); sorted by length and cut into
consecutive batches as ``score_yes_no`` batches a split, of which each repeat scores one,
taken at evenly spaced length quantiles (:func:`scoring_chunks`).

a. Scoring throughput (examples/s) of the evaluate stage's path,
   :func:`pubmedqa_peft.scoring.score_yes_no` at ``evaluate.batch_size`` (prompt once,
   both single-token answers read from its last position's logits), against, in a
   stock-transformers worker process (``benchmarks/decoder_reference.py``, which never
   imports ``pubmedqa_peft``):

   * ``generate(max_new_tokens=10)`` on inputs left-padded to 512, batch 8, answer parsed
     from the text: how PubMedQA fine-tuning projects usually evaluate;
   * one full forward per answer (lm-evaluation-harness's ``loglikelihood``: context +
     continuation as its own sequence, whole-vocabulary logits, batch 8, logits cache off);
   * for information, the harness's default since 0.4.3 (``logits_cache``): requests
     with the same context and a one-token continuation share one forward.

   The ways run interleaved on the same prompts, rotating which goes first, ``reps``
   times; each figure is the median over the repeats and each speed-up the median of the
   per-repeat ratios. Both processes load the same weights in float32; so that
   ``generate`` writes parseable answers with random weights, both restrict the output
   head to the two answer tokens (every other row zero, ``no`` = -``yes``; a tied head is
   untied first; the shapes, and so the cost, are unchanged). Checks: ours and the
   harness's ways give the same log-likelihoods (max abs difference) and the same
   argmax, and ``generate``'s parsed answers equal our argmax.
b. Training throughput, real (non-padding) tokens/s, of LoRA (the method registry's
   ``lora`` with ``params.yaml``'s ``train_lora``): the project's encoding
   (``training.encode_examples``: prompt + answer + EOS, loss on the answer) and its
   collator (dynamic padding) on length-grouped batches, against the same batches padded
   to 512. Forward, backward and AdamW step on the same LoRA model, steps interleaved;
   the batches are taken at evenly spaced length quantiles of a real epoch of the
   Trainer's ``LengthGroupedSampler``. The padding share is also computed over a whole
   epoch (all 890 yes/no records) at the timed batch size and at ``train.batch_size``.
c. Peak resident memory (RSS, MB) of each way: ``VmHWM``, reset before each measurement
   (``/proc/self/clear_refs``), so it is that way's peak, the resident model included.

The load average is recorded: other processes on a 2-core machine change every number.
Output: a Markdown table on stdout, ``benchmarks/results/decoder.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import decoder_reference as ref  # (stock helpers: answer-only head, peak reset)
import numpy as np
import torch
from speed import CACHE, MAX_LEN, PQAL, load_average, machine, peak_rss_mb

from pubmedqa_peft import modeling, scoring, training
from pubmedqa_peft.config import load_params, parse_params
from pubmedqa_peft.data import clean_records, read_raw
from pubmedqa_peft.families import ANSWER_DELIMITER
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import LABELS, fit_prompts_encoded, verbalize

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("decoder")

RESULTS = ROOT / "benchmarks" / "results" / "decoder.json"
WORKER_LOG = CACHE / "decoder-worker.log"
SEED = 0

GOALS = {"vs_generate": 3.0, "vs_per_answer": 1.5, "train_padding": 0.10, "loglik_diff": 1e-4}

FULL = {"arch": "qwen2.5-0.5b-arch", "prompts_per_rep": 8, "reps": 3, "train_batch": 4, "train_steps": 2}
QUICK = {"arch": "tiny-llama", "prompts_per_rep": 4, "reps": 2, "train_batch": 2, "train_steps": 1}

WAYS = ("ours", "generate", "per_answer", "grouped")
LABEL = {
    "ours": "ours: `score_yes_no` (prompt once, KV cache, single-token answers in one pass)",
    "generate": "`generate(max_new_tokens=10)`, padded to 512, batch 8, text parsed",
    "per_answer": "one full forward per answer (lm-eval-harness, logits cache off), batch 8",
    "grouped": "harness default (`logits_cache`: one forward per prompt for one-token answers), batch 8",
}


# --- model, prompts, reference worker ----------------------------------------------------------


def cached_model(arch: str) -> Path:
    """A random-weight model of ``arch`` in ``benchmarks/.cache/``, built offline once."""
    from pubmedqa_peft.random_model import write_random_model

    target = CACHE / arch
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        log.info("reusing %s (delete it to rebuild)", target)
        return target
    start = time.perf_counter()
    write_random_model(arch, target, PQAL, seed=SEED, prompt_stats=False)
    log.info("built %s in %.0fs", arch, time.perf_counter() - start)
    return target


class Worker:
    """The stock-transformers reference (``decoder_reference.py``) in its own process, kept loaded."""

    def __init__(self, model_dir: Path, answers: list[str], stderr: Any) -> None:
        script = Path(ref.__file__).resolve()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(model_dir), json.dumps(answers)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )

    def reply(self) -> dict[str, Any]:
        """The worker's next ``RESULT`` line, decoded."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(ref.RESULT):
                return json.loads(line[len(ref.RESULT) :])
        raise RuntimeError(f"the reference worker exited (code {self.proc.wait()}); see {WORKER_LOG}")

    def ask(self, **request: Any) -> dict[str, Any]:
        """Send one request, wait for its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        """Ask the worker to quit and wait for it (killed if it does not within a minute)."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- a. scoring, c. its memory -------------------------------------------------------------------


def run_ours(model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> dict[str, Any]:
    """The evaluate stage's call (texts, as it passes a decoder-only model's prompts), timed."""
    ref.reset_peak_rss()
    start = time.perf_counter()
    loglik = scoring.score_yes_no(model, tokenizer, texts, batch_size, MAX_LEN, progress=False)
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "loglik": loglik.tolist()}


def run_way(way: str, worker: Worker, ours: Any, tokenizer: Any, texts: list[str], answers: list[str], bs: int) -> dict:
    if way == "ours":
        return run_ours(ours, tokenizer, texts, bs)
    if way == "generate":
        return worker.ask(op="generate", texts=texts)
    return worker.ask(op="loglik", texts=texts, answers=answers, group=way == "grouped")


def scoring_chunks(tokenizer: Any, cfg: dict[str, Any], budget: int) -> tuple[list[list[str]], list[list[int]]]:
    """The prompts of each repeat: batches as the evaluate stage forms them over a whole split.

    Every yes/no PQA-L record's prompt is fitted, the prompts are sorted by length and cut
    into consecutive runs of ``prompts_per_rep``, as :func:`score_yes_no` batches a split;
    the repeats take runs at evenly spaced length quantiles. (A few prompts drawn at random
    would make one short batch padded to its longest prompt, near 512 tokens: a padding
    share of 20-26% that no real split has, about 0.5% over all 890 prompts in batches of 8.)
    """
    records = clean_records(read_raw(PQAL), ("yes", "no")).records
    fitted = sorted(fit_prompts_encoded(tokenizer, records, budget, PQAL), key=lambda f: -len(f.input_ids))
    n = cfg["prompts_per_rep"]
    runs = [fitted[i : i + n] for i in range(0, len(fitted) - n + 1, n)]
    picks = [runs[int(q)] for q in np.linspace(0, len(runs) - 1, cfg["reps"] + 2)[1:-1]]
    return [[f.text for f in run] for run in picks], [[len(f.input_ids) for f in run] for run in picks]


def scoring_section(
    model_dir: Path, cfg: dict[str, Any], batch_size: int, worker: Worker, chunks: list[list[str]]
) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(str(model_dir))
    answers = [ANSWER_DELIMITER + verbalize(label) for label in LABELS]
    ours = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    ref.answer_only_head(ours, ref.answer_first_tokens(tokenizer, answers))
    n = cfg["prompts_per_rep"]

    # Warm-up on one prompt (allocator growth, kernel choice, lazy imports); `grouped` runs
    # the code `per_answer` has just warmed up.
    for way in WAYS[:-1]:
        run_way(way, worker, ours, tokenizer, chunks[-1][-1:], answers, batch_size)
    runs: list[dict[str, dict[str, Any]]] = []
    for rep, chunk in enumerate(chunks):
        order = WAYS[rep % len(WAYS) :] + WAYS[: rep % len(WAYS)]  # who goes first rotates
        row = {}
        for way in order:
            row[way] = run_way(way, worker, ours, tokenizer, chunk, answers, batch_size)
            row[way]["load"] = load_average()
            log.info("rep %d %s: %.2f ex/s (load %s)", rep, way, len(chunk) / row[way]["seconds"], load_average())
        runs.append(row)
    del ours
    gc.collect()

    eps = {w: statistics.median(n / r[w]["seconds"] for r in runs) for w in WAYS}
    speedup = {w: statistics.median(r[w]["seconds"] / r["ours"]["seconds"] for r in runs) for w in WAYS[1:]}
    ours_ll = np.array([x for r in runs for x in r["ours"]["loglik"]])
    ours_pred = [LABELS[i] for i in ours_ll.argmax(axis=1)]
    checks: dict[str, Any] = {}
    for way in ("per_answer", "grouped"):
        theirs = np.array([x for r in runs for x in r[way]["loglik"]])
        checks[f"max_abs_loglik_diff_{way}"] = float(np.abs(theirs - ours_ll).max())
        checks[f"argmax_agree_{way}"] = int((theirs.argmax(axis=1) == ours_ll.argmax(axis=1)).sum())
    gen = [p for r in runs for p in r["generate"]["preds"]]
    checks["generate_parsed"] = sum(p is not None for p in gen)
    checks["generate_agree"] = sum(p == o for p, o in zip(gen, ours_pred, strict=True))
    checks["prompts"] = len(ours_pred)
    checks["ours_min_margin"] = float(np.abs(ours_ll[:, 1] - ours_ll[:, 0]).min())
    lengths = [len(ids) for chunk in chunks for ids in tokenizer(chunk).input_ids]
    widths = [max(len(ids) for ids in tokenizer(chunk).input_ids) * len(chunk) for chunk in chunks]
    return {
        "batch_size": batch_size,
        "prompts_per_rep": n,
        "reps": cfg["reps"],
        "prompt_tokens": {"mean": float(np.mean(lengths)), "max": int(max(lengths)), "min": int(min(lengths))},
        "ours_padding_share": 1 - sum(lengths) / sum(widths),
        "examples_per_s": eps,
        "speedup_of_ours": speedup,
        "peak_rss_mb": {w: max(r[w]["peak_rss_mb"] for r in runs) for w in WAYS},
        "reference_forwards_per_rep": {w: runs[0][w]["forwards"] for w in ("per_answer", "grouped")},
        "generate_new_tokens_per_rep": runs[0]["generate"]["new_tokens"],
        "checks": checks,
        "runs": [{w: {k: v for k, v in r[w].items() if k not in ("loglik", "preds")} for w in WAYS} for r in runs],
    }


# --- b. training, c. its memory -------------------------------------------------------------------


def epoch_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """The Trainer's length-grouped batches (indices) over one epoch of examples of these lengths."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    torch.manual_seed(seed)
    order = list(LengthGroupedSampler(batch_size, lengths=lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padding tokens when each batch is padded to its own longest example."""
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / sum(max(lengths[i] for i in b) * len(b) for b in batches)


def training_section(model_dir: Path, cfg: dict[str, Any], params: Any) -> dict[str, Any]:
    tokenizer = modeling.load_tokenizer(str(model_dir))
    family = modeling.load_family(str(model_dir))
    records = clean_records(read_raw(PQAL), ("yes", "no")).records
    features = training.encode_examples(tokenizer, records, MAX_LEN, PQAL, family).features
    lengths = [len(f["input_ids"]) for f in features]
    bs, seed = cfg["train_batch"], params.train.seed
    epoch = {size: epoch_batches(lengths, size, seed) for size in sorted({bs, params.train.batch_size})}
    full = sorted((b for b in epoch[bs] if len(b) == bs), key=lambda b: max(lengths[i] for i in b))
    # Timed batches at evenly spaced length quantiles of a real epoch; the shortest example warms up.
    picks = [full[int(q)] for q in np.linspace(0, len(full) - 1, cfg["train_steps"] + 2)[1:-1]]

    base = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    torch.manual_seed(seed)
    section = params.method("lora")
    model = registry.get("lora").build(base, section, str(model_dir))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=section.lr)
    collate = {
        "ours": training.DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        "padded512": training.DataCollatorForSeq2Seq(
            tokenizer, padding="max_length", max_length=MAX_LEN, label_pad_token_id=-100
        ),
    }

    def step(variant: str, batch_idx: list[int]) -> dict[str, Any]:
        batch = collate[variant]([features[i] for i in batch_idx])
        ref.reset_peak_rss()
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "seconds": time.perf_counter() - start,
            "real_tokens": int(batch["attention_mask"].sum()),
            "tokens": int(batch["input_ids"].numel()),
            "peak_rss_mb": peak_rss_mb(),
            "load": load_average(),
        }

    for variant in collate:
        step(variant, full[0][:1])  # warm-up, not timed: one example (padded to 512 it is a quarter step)
    steps: dict[str, list[dict[str, Any]]] = {v: [] for v in collate}
    for k, b in enumerate(picks):
        for variant in list(collate)[:: 1 if k % 2 == 0 else -1]:  # who goes first alternates
            steps[variant].append(step(variant, b))
            log.info("train %s step %d: %s", variant, k, steps[variant][-1])
    out: dict[str, Any] = {
        "batch_size": bs,
        "timed_steps": len(picks),
        "lora": {"r": section.r, "alpha": section.alpha, "target_modules": section.target_modules},
        "trainable_params": modeling.count_parameters(model)[0],
        "epoch_padding_share": {str(size): padding_share(lengths, b) for size, b in epoch.items()},
        "example_tokens": {"mean": float(np.mean(lengths)), "max": int(max(lengths))},
    }
    for variant, rows in steps.items():
        real, tokens, seconds = (sum(r[k] for r in rows) for k in ("real_tokens", "tokens", "seconds"))
        out[variant] = {
            "real_tokens_per_s": real / seconds,
            "padding_share": 1 - real / tokens,
            "seconds_per_step": seconds / len(rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "steps": rows,
        }
    out["speedup"] = out["ours"]["real_tokens_per_s"] / out["padded512"]["real_tokens_per_s"]
    return out


# --- report -------------------------------------------------------------------------------------


def _ok(met: bool) -> str:
    return "yes" if met else "NO"


def table(doc: dict[str, Any]) -> str:
    s, c = doc["scoring"], doc["scoring"]["checks"]
    eps, up, rss = s["examples_per_s"], s["speedup_of_ours"], s["peak_rss_mb"]
    reps = f"median of {s['reps']} x {s['prompts_per_rep']} prompts"
    goal = {"generate": GOALS["vs_generate"], "per_answer": GOALS["vs_per_answer"]}
    lines = [
        "| measure | examples/s or tokens/s | ours faster by | goal | met | peak RSS, MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for way in WAYS:
        ratio = "—" if way == "ours" else f"{up[way]:.2f}x"
        g = goal.get(way)
        lines.append(
            f"| a. scoring: {LABEL[way]} ({reps}) | {eps[way]:.3g} ex/s | {ratio} "
            f"| {f'>= {g}x' if g else ''} | {_ok(up[way] >= g) if g else ''} | {rss[way]:.0f} |"
        )
    diff = c["max_abs_loglik_diff_per_answer"]
    lines.append(
        f"| a. same log-likelihoods as one forward per answer / per prompt: max abs diff "
        f"| {diff:.1e} / {c['max_abs_loglik_diff_grouped']:.1e} | | <= {GOALS['loglik_diff']:.0e} "
        f"| {_ok(max(diff, c['max_abs_loglik_diff_grouped']) <= GOALS['loglik_diff'])} | |"
    )
    agree = c["argmax_agree_per_answer"] == c["argmax_agree_grouped"] == c["generate_agree"] == c["prompts"]
    lines.append(
        f"| a. same predictions: harness ways / `generate` (parsed {c['generate_parsed']}) "
        f"| {c['argmax_agree_per_answer']}, {c['argmax_agree_grouped']} / {c['generate_agree']} "
        f"of {c['prompts']} | | all | {_ok(agree)} | |"
    )
    t = doc.get("training")
    if t:
        o, p = t["ours"], t["padded512"]
        lines.append(
            f"| b. LoRA training, real tokens/s: ours (dynamic padding, length-grouped) vs padded to 512 "
            f"(batch {t['batch_size']}, {t['timed_steps']} interleaved steps each) "
            f"| {o['real_tokens_per_s']:.0f} vs {p['real_tokens_per_s']:.0f} | {t['speedup']:.2f}x | | "
            f"| {o['peak_rss_mb']:.0f} vs {p['peak_rss_mb']:.0f} |"
        )
        epoch = t["epoch_padding_share"]
        worst = max(epoch.values())
        lines.append(
            "| b. padding share: ours over a whole epoch at batch "
            + " / ".join(epoch)
            + f" (timed steps) vs padded to 512 | {' / '.join(f'{v:.1%}' for v in epoch.values())} "
            f"({o['padding_share']:.1%}) vs {p['padding_share']:.1%} | | < {GOALS['train_padding']:.0%} "
            f"| {_ok(worst < GOALS['train_padding'])} | |"
        )
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["scoring"]
    return (
        f"# Decoder-only speed ({doc['arch']}{', quick' if doc['quick'] else ''})\n\n"
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"transformers {m['transformers']}. Load average (1, 5, 15 min): {doc['load_average']}.\n"
        f"Prompts: real PQA-L records, {s['prompt_tokens']['mean']:.0f} tokens on average "
        f"({s['prompt_tokens']['min']}-{s['prompt_tokens']['max']}), fitted to {MAX_LEN} less the answer's room; "
        f"each repeat one batch of prompts consecutive in length order (ours pads "
        f"{s.get('ours_padding_share', float('nan')):.1%} of its tokens). "
        f"Wall time {doc['wall_s'] / 60:.1f} min.\n\n{doc['table']}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random Llama, few prompts: a smoke run (< 30 s)")
    parser.add_argument("--arch", help="random_model architecture (default: qwen2.5-0.5b-arch; tiny-llama if --quick)")
    parser.add_argument("--model-dir", type=Path, help="use this model directory instead of building one")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--skip-training", action="store_true", help="leave out b (training)")
    for key in ("prompts_per_rep", "reps", "train_batch", "train_steps"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"override {key} (default {FULL[key]})")
    parser.add_argument("--render", action="store_true", help="only rewrite the table and .md from --out's JSON")
    args = parser.parse_args()
    if args.render:
        doc = json.loads(args.out.read_text(encoding="utf-8"))
        doc["table"] = table(doc)
        write(doc, args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "peft", "httpx", "huggingface_hub", "pubmedqa_peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if not PQAL.is_file():
        raise SystemExit(f"PubMedQA not found at {PQAL}: the benchmark needs ../shared/data/pubmedqa/ori_pqal.json")

    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: v for k, v in vars(args).items() if k in cfg and v is not None})
    started = time.perf_counter()
    params = load_params(ROOT / "params.yaml") if (ROOT / "params.yaml").is_file() else parse_params({})
    doc: dict[str, Any] = {"quick": args.quick, "arch": cfg["arch"], "config": cfg, "machine": machine()}
    doc["load_average"] = {"start": load_average()}
    model_dir = args.model_dir or cached_model(cfg["arch"])
    doc["model_dir"] = str(model_dir)
    answers = [ANSWER_DELIMITER + verbalize(label) for label in LABELS]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(WORKER_LOG, "w", encoding="utf-8") as worker_log:
        worker = Worker(model_dir, answers, worker_log)  # loads while the prompts are fitted here
        try:
            tokenizer = modeling.load_tokenizer(str(model_dir))
            budget = modeling.load_family(str(model_dir)).prompt_budget(tokenizer, LABELS, MAX_LEN)
            chunks, _ = scoring_chunks(tokenizer, cfg, budget)
            worker.reply()  # ready
            doc["scoring"] = scoring_section(model_dir, cfg, params.evaluate.batch_size, worker, chunks)
        finally:
            worker.close()
    doc["load_average"]["after_scoring"] = load_average()
    doc["wall_s"] = time.perf_counter() - started
    doc["table"] = table(doc)
    write(doc, args.out)  # scoring is kept if training fails (e.g. out of memory on a shared machine)
    if not args.skip_training:
        doc["training"] = training_section(model_dir, cfg, params)
        doc["load_average"]["end"] = load_average()
        doc["wall_s"] = time.perf_counter() - started
        doc["table"] = table(doc)
        write(doc, args.out)
    print("\n" + markdown(doc))
    print(f"wrote {args.out} and {args.out.with_suffix('.md').name} ({doc['wall_s'] / 60:.1f} min)")


def write(doc: dict[str, Any], out: Path) -> None:
    """The results as JSON (``out``) and as Markdown (``out`` with ``.md``)."""
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(doc), encoding="utf-8")


if __name__ == "__main__":
    main()
