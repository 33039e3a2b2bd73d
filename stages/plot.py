"""Stage plot: comparison figures and Markdown reports from the train and evaluate outputs.

Inputs:
    metrics/eval.json (test metrics of every method, tau, provenance; ``labels`` for a task
    other than yes/no, which every figure and report then shows K classes of),
    metrics/train/<method>.json for each trained method (training cost),
    plots/train/<method>/metrics/{train,eval}/loss.tsv (DVCLive loss curves),
    plots/eval/predictions/<method>.csv (per-example test predictions: p_yes, or p_<label> per label),
    plots/eval/coverage/<method>.csv (tau sweep from 1/K), data/splits/test.jsonl (questions, contexts).
Outputs:
    plots/figures/{accuracy_macro_f1,all_methods,footprint,cost_benefit,loss_curves,latency,confusion,
    coverage_accuracy,reliability}.png, reports/summary.md, reports/examples.md.
Params:
    plot.examples_per_method, plot.context_chars, plot.dpi, evaluate.calibration_bins.
"""

from pubmedqa_peft.config import Params
from pubmedqa_peft.reports import run_plot_stage
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    run_plot_stage(params)


def main() -> None:
    """Run the stage."""
    run("plot", _body)


if __name__ == "__main__":
    main()
