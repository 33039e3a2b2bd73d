"""Stage check_params: validate the whole params.yaml before any other stage runs.

Every other stage depends on this one's output (through ``ingest``), so DVC runs it
first whenever any value in ``params.yaml`` changes. An invalid value, an unknown key or
a typo'd section stops the pipeline here, before DVC deletes the outputs of the stage
the change was meant for (a failed ``dvc exp run -S train_lora.r=0`` keeps the last
LoRA adapter, metrics and curves). Its output's content never changes, so a valid edit
reruns nothing downstream by itself.

Inputs:
    params.yaml (all of it).
Outputs:
    metrics/params_check.json (constant: ``{"params.yaml": "valid"}``).
Params:
    every section.
"""

from pubmedqa_peft import files, paths
from pubmedqa_peft.config import Params
from pubmedqa_peft.stage import run


def _body(params: Params) -> None:
    # The validation itself happened in run(): load_params refuses anything invalid.
    files.write_json(paths.PARAMS_CHECK, {"params.yaml": "valid"})


def main() -> None:
    """Run the stage."""
    # Nothing downstream ran or was deleted: a failure here leaves every output as it was.
    run("check_params", _body, note_stale=False)


if __name__ == "__main__":
    main()
