"""Cost of the data stages (ingest, clean, split) from PQA-L's size up to PQA-A's (issue 15).

Run from the project root, offline::

    nice python benchmarks/data_stages.py                    # 1k (real), 21,127 and 211,269 records
    python benchmarks/data_stages.py --sizes 5000 --no-save  # a quick look, results not written

For each size it runs ``python -m stages.ingest``, ``stages.clean`` and ``stages.split``,
each in a fresh process as DVC runs them, in a temporary directory whose ``params.yaml``
is the project's with ``ingest.source`` / ``ingest.sha256`` pointed at the file. The
first size is the real PQA-L (``../shared/data/pubmedqa/ori_pqal.json``, 1,000 records);
the others are PQA-A-shaped files written by :mod:`pubmedqa_peft.large_data` into the
temporary directory (deleted afterwards; never in the project). Per stage it records the
wall time, records per second (raw records in, for every stage, so the rows compare) and
the process's peak resident memory (``ru_maxrss`` of that child alone, via ``wait4``),
and the same for a process that only imports the stage: the fixed start-up (Python,
pydantic, the library), which dominates at 1k records. CPU time (user + system, from
``wait4``) is reported beside wall time: on a shared machine it moves less with the load.
Linear time shows as a constant number of records per CPU-second after start-up; bounded
memory as a peak RSS that grows far less than the data (the raw file is ~2.2 KB a record).

Output: a Markdown table on stdout, and ``benchmarks/results/data_stages.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pubmedqa_peft.fetch import sha256_file
from pubmedqa_peft.large_data import PQAA_RECORDS, write_pqaa

ROOT = Path(__file__).resolve().parents[1]
REAL_PQAL = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("ingest", "clean", "split")
DEFAULT_SIZES = (21_127, PQAA_RECORDS)

RUNNER = """
import atexit, runpy, sys

def peak():
    try:
        with open("/proc/self/status") as fh:
            sys.stderr.write("".join("VMHWM_KIB " + l.split()[1] + "\\n" for l in fh if l.startswith("VmHWM:")))
    except OSError:
        pass

atexit.register(peak)
stage, what = sys.argv[1:3]
sys.argv = ["-m"]
if what == "import":
    __import__("stages." + stage)
else:
    runpy.run_module("stages." + stage, run_name="__main__", alter_sys=True)
"""
"""Runs ``python -m stages.<stage>`` (or only imports it) and reports its peak RSS at exit."""


def run_stage(stage: str, workdir: Path, *, import_only: bool = False) -> dict[str, float]:
    """Run ``python -m stages.<stage>`` in ``workdir``; its wall time and peak RSS (MiB).

    Args:
        stage: The stage.
        workdir: Where it runs (its ``params.yaml`` and ``data/``).
        import_only: Only start Python and import the stage (its fixed start-up cost).

    Raises:
        RuntimeError: If the stage fails (its stderr is shown).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    err_path = workdir / f"{stage}.stderr"
    command = [sys.executable, "-c", RUNNER, stage, "import" if import_only else "run"]
    with err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=workdir, env=env, stderr=err)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"stage {stage} failed in {workdir}:\n{stderr[-2000:]}")
    # VmHWM is the peak of the stage's own address space; ru_maxrss also counts the image
    # of this (larger) parent process the child was forked from before it exec'd Python.
    hwm = [line.split()[1] for line in stderr.splitlines() if line.startswith("VMHWM_KIB ")]
    peak_kib = int(hwm[-1]) if hwm else usage.ru_maxrss  # ru_maxrss is KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime  # less moved by other processes than wall time on a shared machine
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_kib / 1024}


def bench_file(raw: Path, records: int, label: str, tmp: Path) -> list[dict[str, Any]]:
    """The three stages on ``raw`` in a fresh work directory under ``tmp``."""
    workdir = tmp / f"work-{records}"
    workdir.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["source"] = str(raw)
    params["ingest"]["sha256"] = sha256_file(raw)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    rows = []
    for stage in STAGES:
        startup = run_stage(stage, workdir, import_only=True)
        result = run_stage(stage, workdir)
        work_cpu = result["cpu_seconds"] - startup["cpu_seconds"]
        rows.append(
            {
                "data": label,
                "records": records,
                "raw_mib": raw.stat().st_size / 2**20,
                "stage": stage,
                **result,
                "startup_seconds": startup["seconds"],
                "startup_cpu_seconds": startup["cpu_seconds"],
                "startup_rss_mib": startup["peak_rss_mib"],
                "records_per_s": records / result["seconds"],
                # Too little work after start-up to time (ingest of 1k): no rate.
                "records_per_cpu_s_after_startup": records / work_cpu if work_cpu >= 0.05 else None,
            }
        )
        print(f"  {stage:6s} {result['seconds']:7.2f} s  {result['peak_rss_mib']:7.1f} MiB", flush=True)
    clean = json.loads((workdir / "metrics" / "data" / "clean.json").read_text())
    if clean["records_in"] != records:
        raise RuntimeError(f"clean read {clean['records_in']} records, expected {records}")
    shutil.rmtree(workdir)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | records | raw file (MiB) | stage | wall (s) | CPU (s) | start-up CPU (s) | records/s (wall) | "
        "records per CPU-s after start-up | peak RSS (MiB) | start-up RSS (MiB) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rate = r["records_per_cpu_s_after_startup"]
        lines.append(
            f"| {r['data']} | {r['records']:,} | {r['raw_mib']:.1f} | {r['stage']} | {r['seconds']:.2f} "
            f"| {r['cpu_seconds']:.2f} | {r['startup_cpu_seconds']:.2f} | {r['records_per_s']:,.0f} "
            f"| {'n/a' if rate is None else f'{rate:,.0f}'} | {r['peak_rss_mib']:.0f} | {r['startup_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(DEFAULT_SIZES),
        help="generated sizes after the real 1k, comma-separated (default 21127,211269)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated files")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    generation: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="pubmedqa-data-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"real PQA-L ({REAL_PQAL})", flush=True)
        rows += bench_file(REAL_PQAL, 1000, "PQA-L (real)", tmp)
        for size in args.sizes:
            raw = tmp / f"ori_pqaa_{size}.json"
            start = time.perf_counter()
            write_pqaa(raw, size, args.seed, REAL_PQAL)
            generation[size] = time.perf_counter() - start
            print(f"generated {size:,} records ({raw.stat().st_size / 2**20:.0f} MiB) in {generation[size]:.1f} s")
            rows += bench_file(raw, size, "PQA-A-shaped (generated)", tmp)
            raw.unlink()

    table = markdown(rows)
    print()
    print(table)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_after": os.getloadavg(),
            "seed": args.seed,
            "generation_seconds": {str(k): v for k, v in generation.items()},
        }
        (RESULTS / "data_stages.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        note = (
            "Data stages, each in a fresh process (`python benchmarks/data_stages.py`); records/s counts raw "
            f"records in. Python {meta['python']}, {meta['cpus']} CPUs (shared), load average after "
            f"{meta['load_average_after'][0]:.1f}.\n\n"
        )
        (RESULTS / "data_stages.md").write_text(note + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
