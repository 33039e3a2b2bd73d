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
the process's peak resident memory (``ru_maxrss`` of that child alone, via ``wait4``).
Linear time shows as a constant records/s; bounded memory as a peak RSS that grows far
less than the data (the raw file is ~2.2 KB a record).

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pubmedqa_peft.fetch import sha256_file  # noqa: E402
from pubmedqa_peft.large_data import PQAA_RECORDS, write_pqaa  # noqa: E402

REAL_PQAL = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("ingest", "clean", "split")
DEFAULT_SIZES = (21_127, PQAA_RECORDS)


def run_stage(stage: str, workdir: Path) -> dict[str, float]:
    """Run ``python -m stages.<stage>`` in ``workdir``; its wall time and peak RSS (MiB).

    Raises:
        RuntimeError: If the stage fails (its stderr is shown).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    err_path = workdir / f"{stage}.stderr"
    with err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env, stderr=err)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children).
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"stage {stage} failed in {workdir}:\n{err_path.read_text()[-2000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss is KiB on Linux


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
        result = run_stage(stage, workdir)
        rows.append(
            {
                "data": label,
                "records": records,
                "raw_mib": raw.stat().st_size / 2**20,
                "stage": stage,
                **result,
                "records_per_s": records / result["seconds"],
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
        "| data | records | raw file (MiB) | stage | wall (s) | records/s | peak RSS (MiB) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['records']:,} | {r['raw_mib']:.1f} | {r['stage']} | {r['seconds']:.2f} "
            f"| {r['records_per_s']:,.0f} | {r['peak_rss_mib']:.0f} |"
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
