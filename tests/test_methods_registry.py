"""A method declared once in the registry reaches config, training, loading, plots, reports and experiments."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_params

from pubmedqa_peft import experiments, modeling, plotting
from pubmedqa_peft.config import ConfigError, LearningRate, MethodSection, PositiveInt, parse_params
from pubmedqa_peft.methods import peft, registry, sections
from pubmedqa_peft.training import train_method


class ToyParams(MethodSection):
    """A throwaway method: LoRA on the attention output projection only."""

    lr: LearningRate = 0.02
    r: PositiveInt = 2


def _toy_build(base, section, model_name):
    lora = sections.LoraParams(r=section.r, alpha=2 * section.r, dropout=0.0, target_modules=("o",))
    return peft.lora(base, lora, model_name)


TOY = registry.Method(
    name="toy",
    label="toy LoRA",
    color="#123456",
    section=ToyParams,
    build=_toy_build,
    adapts="the attention output projections",
)


@pytest.fixture
def toy():
    registry.register(TOY)
    try:
        yield TOY
    finally:
        registry.unregister("toy")
    assert "toy" not in registry.names() and "toy" not in sections.SECTIONS


def test_every_built_in_method_has_a_section_and_a_distinct_colour_and_label():
    assert registry.names() == ("prompt", "prefix", "lora", "ia3", "full")
    assert tuple(sections.SECTIONS) == registry.names()
    methods = registry.REGISTRY.values()
    assert len({m.color for m in methods}) == len({m.label for m in methods}) == len(registry.names())
    assert all(m.section is sections.SECTIONS[m.name] for m in methods)


def test_a_registered_method_is_validated_in_params(toy):
    params = parse_params({"train_toy": {"r": 3}})
    assert params.method("toy") == ToyParams(r=3)
    assert parse_params({}).method("toy").lr == 0.02  # absent section: the defaults
    with pytest.raises(ConfigError, match=r"train_toy\.r: Input should be greater than 0"):
        parse_params({"train_toy": {"r": 0}})
    with pytest.raises(ConfigError, match=r"train_toy\.rank: unknown key; allowed keys here: lr, weight_decay, r"):
        parse_params({"train_toy": {"rank": 3}})


def test_unregistered_the_section_is_unknown_again(toy):
    registry.unregister("toy")
    with pytest.raises(ConfigError, match="train_toy: unknown section"):
        parse_params({"train_toy": {}})
    registry.register(TOY)  # for the fixture's teardown to remove


def test_names_must_be_new_and_plain():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("lora"))
    with pytest.raises(ValueError, match="lower-case letters and digits"):
        registry.register(registry.Method("Q-LoRA", "x", "#000000", ToyParams, _toy_build, "x"))
    with pytest.raises(ConfigError, match="unknown method 'nope'; registered methods: prompt, prefix"):
        registry.get("nope")


def test_a_registered_method_trains_saves_its_manifest_and_reloads(toy, tmp_path, tiny_t5_dir, pqal_rows):
    params = tiny_params(tiny_t5_dir, train={"epochs": 1})
    out = tmp_path / "toy"
    metrics = train_method(
        "toy",
        params,
        pqal_rows[:8],
        pqal_rows[8:12],
        adapter_out=out,
        metrics_out=tmp_path / "toy.json",
        plots_out=None,
        checkpoints=tmp_path / "ckpt",
        fingerprint="toy",
    )
    assert metrics["method"] == "toy" and 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["provenance"]["config"]["train_toy"] == {"lr": 0.02, "weight_decay": None, "r": 2}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["method"] == "toy" and manifest["saves"] == "adapter"
    model = modeling.load_trained_model(out, torch.device("cpu"))
    adapted = {n for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted and all(".o.lora_A" in n for n in adapted)


def test_plots_reports_and_experiments_take_methods_from_the_registry(toy):
    assert plotting.method_color("toy") == "#123456"
    assert plotting.method_label("toy") == "toy LoRA"
    assert plotting.order_methods(["majority", "toy", "fewshot_k3", "base", "lora"]) == [
        "base",
        "lora",
        "toy",
        "fewshot_k3",
        "majority",
    ]
    assert "toy" in plotting.trained_vs_base()
    exp = experiments.Experiment(
        name="e",
        rev="r",
        baseline_rev="b",
        is_baseline=False,
        created=None,
        params={},
        eval_metrics={"val": {"lora": {"macro_f1": 0.5}, "toy": {"macro_f1": 0.7}}},
    )
    best = experiments.score(exp)
    assert (best.value, best.metric) == (0.7, "val.toy.macro_f1")
    assert "toy" in experiments.default_metric_label()
