from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pubmedqa_peft.config import ConfigError, Params, load_params, params_model, parse_params
from pubmedqa_peft.methods import registry

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def real_params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS_YAML.read_text(encoding="utf-8"))


def test_real_params_yaml_loads() -> None:
    params = load_params(PARAMS_YAML)
    assert isinstance(params, Params)
    raw = real_params()
    # Every section in the file is parsed, and its values win over the defaults.
    assert set(raw) == set(params_model().model_fields)
    assert params.split.seed == raw["split"]["seed"]
    assert params.ingest.sha256 == raw["ingest"]["sha256"]
    assert sorted(params.task.labels) == ["no", "yes"] and params.task.task.labels == ("no", "yes")
    methods = registry.names()
    assert {m: params.method(m).lr for m in methods} == {m: raw[f"train_{m}"]["lr"] for m in methods}


def test_params_are_frozen() -> None:
    params = load_params(PARAMS_YAML)
    with pytest.raises(ValueError):
        params.split.seed = 1  # type: ignore[misc]


def with_change(section: str, key: str, value: Any) -> dict[str, Any]:
    data = real_params()
    node = data[section]
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("data", "key", "hint"),
    [
        (with_change("train", "epochz", 3), "train.epochz", "unknown key"),
        (with_change("split", "fractions.tset", 0.1), "split.fractions.tset", "unknown key"),
        (with_change("train", "batch_size", "eight"), "train.batch_size", "'eight'"),
        (with_change("train_lora", "lr", -0.001), "train_lora.lr", "greater than 0"),
        (with_change("train_prompt", "lr", -1), "train_prompt.lr", "greater than 0"),
        (with_change("split", "fractions.test", 0.3), "split.fractions", "sum to 1"),
        (with_change("split", "strategy", "random"), "split.strategy", "'random'"),
        (with_change("ingest", "sha256", "abc"), "ingest.sha256", "'abc'"),
        (with_change("train", "epochs", float("inf")), "train.epochs", "finite"),
        (with_change("train", "warmup_ratio", float("nan")), "train.warmup_ratio", "finite"),
        (with_change("train", "batch_size", True), "train.batch_size", "not a boolean"),
        (with_change("evaluate", "bootstrap", False), "evaluate.bootstrap", "not a boolean"),
        (with_change("train_lora", "alpha", True), "train_lora.alpha", "not a boolean"),
        (with_change("train_lora", "quantize", "3bit"), "train_lora.quantize", "'3bit'"),
        (with_change("train_lora", "target_modules", []), "train_lora.target_modules", "at least one"),
        (with_change("train_ia3", "lr", 0), "train_ia3.lr", "greater than 0"),
        (with_change("train_full", "weight_decay", -0.1), "train_full.weight_decay", "greater than or equal"),
        (with_change("evaluate", "fewshot_k", [3, 3]), "evaluate.fewshot_k", "list each K once"),
        (with_change("model", "threads", 100_000), "model.threads", "less than or equal to 1024"),
        (with_change("train", "model_dropout", 1), "train.model_dropout", "less than 1"),
        (with_change("train", "model_dropout", -0.1), "train.model_dropout", "greater than or equal to 0"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(data: dict[str, Any], key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(data, "params.yaml")
    message = str(err.value)
    assert "\n" not in message
    head, problems = message.split(": invalid parameters: ")
    assert head == "params.yaml"
    assert any(p.startswith(f"{key}:") and hint in p for p in problems.split("; ")), message


def test_unknown_key_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="allowed keys here: epochs, batch_size"):
        parse_params(with_change("train", "epochz", 3))


def test_unknown_section_is_rejected_listing_the_sections() -> None:
    data = real_params() | {"trian": {}}
    with pytest.raises(ConfigError, match="trian: unknown section; allowed sections here: model, ingest") as err:
        parse_params(data)
    assert "train_full" in str(err.value)


def test_integers_pass_for_floats_and_method_sections_get_their_defaults() -> None:
    data = with_change("train_full", "lr", 1)
    del data["train_ia3"]
    params = parse_params(data)
    assert params.method("full").lr == 1.0
    assert params.method("ia3") == registry.get("ia3").section()


def test_unknown_method_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="unknown method 'qlora'; allowed: prompt, prefix, lora, ia3, full"):
        load_params(PARAMS_YAML).method("qlora")


@pytest.mark.parametrize("labels", [["yes", "maybe"], ["yes"], ["yes", "no", "no"], ["yes", "no", "perhaps"]])
def test_task_labels_must_be_the_binary_or_the_three_label_task(labels) -> None:
    with pytest.raises(ConfigError, match=r"task\.labels"):
        parse_params(with_change("task", "labels", labels))


def test_three_labels_in_any_order_are_used_in_column_order() -> None:
    params = parse_params(with_change("task", "labels", ["maybe", "yes", "no"]))
    assert params.task.task.labels == ("no", "yes", "maybe") and params.task.task.answers_phrase == "yes, no or maybe"


def test_the_old_clean_section_says_where_its_setting_moved() -> None:
    with pytest.raises(ConfigError, match=r"clean: clean\.keep_labels is now task\.labels; unknown section"):
        parse_params({"clean": {"keep_labels": ["yes", "no"]}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(top)


def test_unquoted_yes_no_stay_strings_as_dvc_writes_them(tmp_path):
    # `dvc exp run -S` rewrites params.yaml with a YAML 1.2 dumper, which leaves yes/no unquoted.
    path = tmp_path / "params.yaml"
    path.write_text("task:\n  labels: [yes, no, maybe]\n")
    assert load_params(path).task.labels == ("yes", "no", "maybe")


def test_train_seeds_are_a_non_empty_list_of_distinct_seeds_and_the_first_is_the_seed() -> None:
    params = parse_params(with_change("train", "seeds", [3, 1, 2]))
    assert params.train.seeds == (3, 1, 2) and params.train.seed == 3
    for bad in ([], [1, 1], [-1], [True]):
        with pytest.raises(ConfigError, match=r"train\.seeds"):
            parse_params(with_change("train", "seeds", bad))
    with pytest.raises(ConfigError, match=r"train\.seed: train\.seed is now train\.seeds"):
        parse_params({"train": {"seed": 7}})
