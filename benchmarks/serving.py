"""Serving benchmark (issue 14): the HTTP server under 1, 8 and 32 concurrent clients vs offline scoring.

Run from the project root, offline::

    python benchmarks/serving.py            # about 6 min on 2 cores
    python benchmarks/serving.py --quick    # a smoke run (about 4 min)

It builds the exact flan-t5-small architecture with random weights (as
``benchmarks/speed.py`` does, sharing its cache), saves an untrained LoRA adapter on it
with a ``run.json`` as ``train_lora`` would (the registry's LoRA builder and default
section: the layers, shapes and compute of a trained adapter), and takes a fixed random
sample of the real PQA-L records. The server, ``python -m pubmedqa_peft.serve``, runs as
a separate process on a loopback port; the offline path (the evaluate stage's: prompts
fitted as ``evaluate`` fits them, :func:`pubmedqa_peft.scoring.score_yes_no`, tokenization
included as in :func:`~pubmedqa_peft.scoring.measure_latency` and
:func:`~pubmedqa_peft.scoring.measure_throughput`) runs in this process on the same
adapter. The two are measured in turns, so that both see the same load on a shared machine:

a. Latency at 1 client: each item is scored offline at batch 1, then asked of the server
   by one client (its keep-alive connection; the time the client sees: JSON, HTTP,
   queueing, prompt fitting, scoring).
b. Throughput: each round times the offline path over the whole sample at the predictor's
   batch size, then the server under 8 and 32 closed-loop clients (each sends one item,
   waits for the answer, sends the next); a round's share compares the server with that
   round's offline run. Every server answer is checked against the offline probability.

Goals (issue 14): at 32 clients the server reaches >= 80% of offline throughput; its
median latency at 1 client is <= 1.2x the offline batch-1 latency. The client threads
and the server share the machine's cores, as they would on one host; the load average
is recorded because other processes on a 2-core machine change every number. Output: a
Markdown table on stdout, ``benchmarks/results/serving.json`` and ``serving.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import statistics
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import speed  # (benchmarks/speed.py: the model, the sample, the machine description)
import torch
from scipy.special import softmax

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.manifest import RunManifest, write_manifest
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import LABELS, TEMPLATE_VERSION, fit_prompts_encoded
from pubmedqa_peft.serve import start_process
from pubmedqa_peft.serving.http import Limits

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("serving")

RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
METHOD = "lora"
MAX_LEN = 512
BATCH_SIZE = 8
"""Prompts per forward pass, offline and inside the server's batches (params.yaml evaluate.batch_size)."""
CLIENTS = (1, 8, 32)
GOALS = {"throughput_share_32": 0.80, "latency_ratio_1": 1.2}

FULL = {"n_items": 48, "latency_samples": 32, "rounds": 2, "requests": {8: 48, 32: 96}, "warmup": 4}
QUICK = {"n_items": 16, "latency_samples": 8, "rounds": 1, "requests": {8: 16, 32: 32}, "warmup": 2}


def write_adapter(model_dir: Path, out: Path) -> Path:
    """``out/lora``: an untrained LoRA adapter on ``model_dir`` with its ``run.json``, as ``train_lora`` writes it."""
    spec = registry.get(METHOD)
    base = modeling.load_base_model(str(model_dir), torch.device("cpu"))
    model = spec.build(base, spec.section(), str(model_dir))
    target = out / METHOD
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    write_manifest(
        target,
        RunManifest(
            method=METHOD,
            saves=spec.saves,
            base_model=str(model_dir),
            model_type=base.config.model_type,
            family="seq2seq",
            labels=LABELS,
            prompt_template=TEMPLATE_VERSION,
            max_source_length=MAX_LEN,
        ),
    )
    return out


# --- the offline path and the server, measured in turns ---------------------------------------------


class Offline:
    """The evaluate stage's path on the adapter, in this process: ``score_yes_no`` on fitted prompts.

    Every call runs in one worker thread, as the server scores in its one worker thread: on
    an oversubscribed machine torch's OpenMP team in the *main* thread stalls on every
    operator (measured here at load 11 on 2 cores: 2-10 s per prompt in the main thread,
    about 1 s in a worker thread with the same thread count), which would flatter the server.
    """

    def __init__(self, model_dir: Path, models: Path, rows: list[dict[str, Any]]) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="offline")
        self.tokenizer = modeling.load_tokenizer(str(model_dir))
        self.model = modeling.load_trained_model(models / METHOD, torch.device("cpu"))
        self.budget = modeling.load_family(str(model_dir)).prompt_budget(self.tokenizer, LABELS, MAX_LEN)
        self.texts = [f.text for f in fit_prompts_encoded(self.tokenizer, rows, self.budget, "sample")]
        loglik = self.thread.submit(
            scoring.score_yes_no, self.model, self.tokenizer, self.texts, BATCH_SIZE, self.budget, progress=False
        ).result()
        self.p_yes = softmax(loglik, axis=1)[:, LABELS.index("yes")]

    def throughput(self) -> float:
        """Examples/s over the whole sample at ``BATCH_SIZE`` (tokenization included)."""
        run = scoring.measure_throughput
        return self.thread.submit(run, self.model, self.tokenizer, self.texts, BATCH_SIZE, self.budget).result()

    def one(self, i: int) -> float:
        """Seconds of one batch-1 request on item ``i`` (tokenization included), as ``measure_latency`` times it."""

        def timed() -> float:
            start = time.perf_counter()
            scoring.score_yes_no(self.model, self.tokenizer, [self.texts[i]], 1, self.budget, progress=False)
            return time.perf_counter() - start

        return self.thread.submit(timed).result()


class Server:
    """``python -m pubmedqa_peft.serve`` on a free loopback port, logging to a file."""

    def __init__(self, models: Path, log_file: Path, max_batch: int, max_wait_ms: float) -> None:
        args = [
            "--models-dir", str(models), "--method", METHOD, "--eval-file", "", "--port", "0",
            "--batch-size", str(BATCH_SIZE), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
        ]  # fmt: skip
        self.log_file = log_file
        env = {k: v for k, v in os.environ.items() if k != "PUBMEDQA_API_KEY"} | {"TQDM_DISABLE": "1"}
        self.proc, self.port = start_process(args, log_file, env=env, cwd=ROOT)

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_file.read_text(errors="replace")

    def batches(self) -> list[int]:
        """Items of every batch logged so far."""
        return [int(n) for n in re.findall(r"batch: (\d+) items", self.log())]

    def stop(self) -> int:
        """SIGTERM; its exit status."""
        self.proc.terminate()
        return self.proc.wait(60)


class Client:
    """One keep-alive connection sending one-item requests; collects latencies and answers."""

    def __init__(self, port: int, items: list[dict[str, Any]]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.items = items

    def ask(self, i: int) -> tuple[float, float | None, str | None]:
        """(seconds, P(yes) or None, error or None) of one request for item ``i``."""
        body = json.dumps({"items": [self.items[i]]}).encode()
        headers = {"Content-Type": "application/json"}
        start = time.perf_counter()
        try:
            self.conn.request("POST", "/v1/predict", body=body, headers=headers)
            resp = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (uvicorn does after 5 s, e.g. while
            # the offline side was timed): connect again, as HTTP clients do, and time the retry.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.conn.host, self.conn.port, timeout=600)
            start = time.perf_counter()
            self.conn.request("POST", "/v1/predict", body=body, headers=headers)
            resp = self.conn.getresponse()
        data = resp.read()
        seconds = time.perf_counter() - start
        if resp.status != 200:
            return seconds, None, f"{resp.status}: {data[:200]!r}"
        return seconds, json.loads(data)["predictions"][0]["probabilities"]["yes"], None


def percentiles(seconds: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(seconds, q)) for q in (50, 90, 99)} | {"mean": float(np.mean(seconds))}


def load(server: Server, items: list[dict[str, Any]], clients: int, requests: int) -> dict[str, Any]:
    """``requests`` one-item requests from ``clients`` closed-loop clients, each on its own connection."""
    next_request = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    answers: dict[int, float] = {}
    errors: list[str] = []

    def run() -> None:
        client = Client(server.port, items)
        while True:
            with lock:
                r = next(next_request, None)
            if r is None:
                break
            seconds, p_yes, error = client.ask(r % len(items))
            with lock:
                if error:
                    errors.append(error)
                else:
                    latencies.append(seconds)
                    answers[r % len(items)] = p_yes
        client.conn.close()

    before = len(server.batches())
    threads = [threading.Thread(target=run) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    sizes = server.batches()[before:]
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "wall_s": wall,
        "examples_per_s": len(latencies) / wall,
        "latency_s": percentiles(latencies),
        "batches": len(sizes),
        "mean_batch_items": float(np.mean(sizes)) if sizes else 0.0,
        "load": speed.load_average(),
        "answers": answers,
    }


def measure(offline: Offline, server: Server, items: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Offline and server figures taken in turns, so that both see the same load on a shared machine.

    Latency: each item is scored offline at batch 1, then asked of the server by one client.
    Throughput: each round times the offline path over the whole sample, then the server
    under 8 and 32 clients; a round's share compares it with that round's offline run.
    """
    for i in range(cfg["warmup"]):  # allocator growth, kernel choice, on both sides
        offline.one(i % len(items))
    load(server, items, 8, 2 * cfg["warmup"])

    client = Client(server.port, items)
    off_s, srv_s, answers, errors = [], [], {}, []
    for r in range(cfg["latency_samples"]):
        i = r % len(items)
        off_s.append(offline.one(i))
        seconds, p_yes, error = client.ask(i)
        if error:
            errors.append(error)
        else:
            srv_s.append(seconds)
            answers[i] = p_yes
    client.conn.close()
    one = {
        "clients": 1,
        "requests": cfg["latency_samples"],
        "errors": errors,
        "examples_per_s": len(srv_s) / sum(srv_s),
        "latency_s": percentiles(srv_s),
        "mean_batch_items": 1.0,
        "load": speed.load_average(),
        "answers": answers,
    }
    offline_latency = percentiles(off_s)
    log.info(
        "batch 1: offline p50 %.3f s, server p50 %.3f s (load %s)",
        offline_latency["p50"],
        one["latency_s"]["p50"],
        one["load"],
    )
    rounds = []
    for _ in range(cfg["rounds"]):
        rnd = {"offline_examples_per_s": offline.throughput()}
        log.info("offline throughput %.2f ex/s (load %s)", rnd["offline_examples_per_s"], speed.load_average())
        for clients in CLIENTS[1:]:
            run = load(server, items, clients, cfg["requests"][clients])
            run["share_of_offline"] = run["examples_per_s"] / rnd["offline_examples_per_s"]
            rnd[str(clients)] = run
            log.info(
                "%2d clients: %.2f ex/s (%.0f%% of offline), p50 %.3f s, p99 %.3f s, mean batch %.1f (load %s)",
                clients,
                run["examples_per_s"],
                100 * run["share_of_offline"],
                run["latency_s"]["p50"],
                run["latency_s"]["p99"],
                run["mean_batch_items"],
                run["load"],
            )
        rounds.append(rnd)
    return {"offline_latency_s": offline_latency, "one_client": one, "rounds": rounds}


def _ok(value: float, goal: float, *, at_most: bool = False) -> str:
    return "yes" if (value <= goal if at_most else value >= goal) else "NO"


def summary(m: dict[str, Any]) -> dict[str, Any]:
    """Per setting: throughput, share of offline, latency percentiles (medians over the rounds)."""
    rounds = m["rounds"]
    offline_eps = statistics.median(r["offline_examples_per_s"] for r in rounds)
    one = m["one_client"]
    out = {
        "offline": {"examples_per_s": offline_eps, "latency_s": m["offline_latency_s"]},
        "1": {
            "examples_per_s": one["examples_per_s"],
            "share_of_offline": one["examples_per_s"] / offline_eps,
            "latency_s": one["latency_s"],
            "mean_batch_items": 1.0,
            "requests": one["requests"],
            "p50_over_offline_batch1_p50": one["latency_s"]["p50"] / m["offline_latency_s"]["p50"],
        },
    }
    for clients in CLIENTS[1:]:
        runs = [r[str(clients)] for r in rounds]
        out[str(clients)] = {
            "examples_per_s": statistics.median(r["examples_per_s"] for r in runs),
            "share_of_offline": statistics.median(r["share_of_offline"] for r in runs),
            "latency_s": {q: statistics.median(r["latency_s"][q] for r in runs) for q in runs[0]["latency_s"]},
            "mean_batch_items": statistics.median(r["mean_batch_items"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
        }
    return out


def table(s: dict[str, Any]) -> str:
    off = s["offline"]
    ms = "{p50:.0f} / {p90:.0f} / {p99:.0f}"
    lines = [
        "| setting | throughput, ex/s | share of offline | latency p50 / p90 / p99, ms | mean batch | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| offline `score_yes_no`: batch {BATCH_SIZE} (throughput), batch 1 (latency) "
        f"| {off['examples_per_s']:.2f} | 100% | {ms.format(**{k: v * 1000 for k, v in off['latency_s'].items()})} "
        "| | | |",
    ]
    for clients in CLIENTS:
        run = s[str(clients)]
        goal, met = "", ""
        if clients == 32:
            goal = f"throughput >= {GOALS['throughput_share_32']:.0%} of offline"
            met = _ok(run["share_of_offline"], GOALS["throughput_share_32"])
        if clients == 1:
            ratio = run["p50_over_offline_batch1_p50"]
            goal = f"p50 <= {GOALS['latency_ratio_1']}x offline batch-1 p50 (is {ratio:.2f}x)"
            met = _ok(ratio, GOALS["latency_ratio_1"], at_most=True)
        lines.append(
            f"| server, {clients} client{'s' if clients > 1 else ''} ({run['requests']} requests) "
            f"| {run['examples_per_s']:.2f} | {run['share_of_offline']:.0%} "
            f"| {ms.format(**{k: v * 1000 for k, v in run['latency_s'].items()})} "
            f"| {run['mean_batch_items']:.1f} | {goal} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small samples: a smoke run of a few minutes")
    parser.add_argument("--model-dir", type=Path, help="reuse a flan-t5-small-arch directory instead of building one")
    parser.add_argument("--max-batch", type=int, default=Limits.max_batch, help="the server's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=Limits.max_wait_ms, help="the server's --max-wait-ms")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "peft", "huggingface_hub", "pubmedqa_peft"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ["TQDM_DISABLE"] = "1"
    if not speed.PQAL.is_file():
        raise SystemExit(
            f"PubMedQA not found at {speed.PQAL}: the benchmark needs ../shared/data/pubmedqa/ori_pqal.json"
        )

    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    doc: dict[str, Any] = {"quick": args.quick, "config": cfg, "machine": speed.machine(), "load_average": {}}
    doc["server_options"] = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "batch_size": BATCH_SIZE}
    doc["load_average"]["start"] = speed.load_average()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        model_dir = speed.build_model("flan-t5-small-arch", args.model_dir, workdir)
        models = write_adapter(model_dir, workdir / "models")
        rows = speed.sample_records(cfg["n_items"])
        items = [{"question": r["question"], "context": r["context"]} for r in rows]
        server = Server(models, workdir / "serve.log", args.max_batch, args.max_wait_ms)
        try:
            offline = Offline(model_dir, models, rows)
            doc["measurements"] = measure(offline, server, items, cfg)
        finally:
            doc["server_exit_code"] = server.stop()
        doc["load_average"]["end"] = speed.load_average()

    # Every answer equals the offline probability of the same item (batching changes rounding only).
    m = doc["measurements"]
    runs = [m["one_client"]] + [r[str(c)] for r in m["rounds"] for c in CLIENTS[1:]]
    diffs = [abs(p - offline.p_yes[i]) for run in runs for i, p in run.pop("answers").items()]
    doc["max_abs_p_yes_diff_vs_offline"] = float(max(diffs))
    doc["errors"] = sum(len(run["errors"]) for run in runs)
    doc["summary"] = summary(m)
    doc["wall_s"] = time.perf_counter() - started
    doc["table"] = table(doc["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    mach = doc["machine"]
    note = (
        f"{mach['cpu']}, {mach['logical_cpus']} logical CPUs, torch threads {mach['torch_threads']}; "
        f"load average (1, 5, 15 min): start {doc['load_average']['start']}, end {doc['load_average']['end']}\n"
        f"flan-t5-small architecture (random weights) + untrained LoRA adapter; {len(items)} PQA-L items; "
        f"server --max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g} --batch-size {BATCH_SIZE}; "
        f"{doc['errors']} errors; answers vs offline: max |dP(yes)| {doc['max_abs_p_yes_diff_vs_offline']:.1e}"
    )
    args.out.with_suffix(".md").write_text(f"{note}\n\n{doc['table']}\n", encoding="utf-8")
    print(f"\n{note}\n{doc['table']}")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md').name} ({doc['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
