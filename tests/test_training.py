import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import gradient_probe, tiny_params
from safetensors.torch import load_file
from transformers import TrainerCallback

from pubmedqa_peft import modeling, scoring
from pubmedqa_peft.methods import registry
from pubmedqa_peft.prompts import fit_prompts_encoded
from pubmedqa_peft.training import encode_examples, train_method

# Learning rates that move the tiny random model within 8 steps (the defaults suit real models).
TINY_LR = {"prompt": 0.3, "prefix": 0.05, "lora": 0.01, "ia3": 0.1, "full": 0.003}

# Every method, and LoRA's two options, as (method, its params section).
VARIANTS = {
    **{m: (m, {}) for m in registry.names()},
    "dora": ("lora", {"use_dora": True}),
    "qlora": ("lora", {"quantize": "4bit"}),
}


class _KeepModel(TrainerCallback):
    """Keeps the model as training left it (the Trainer hands it to on_train_end)."""

    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


@pytest.fixture(scope="module")
def rows(pqal_rows):
    return pqal_rows[:32], pqal_rows[32:40]


def _train(tmp_path, model_dir, method, rows, *, callbacks=(), tag="run", **sections):
    params = tiny_params(model_dir, **sections)
    out = tmp_path / tag
    metrics = train_method(
        method,
        params,
        rows[0],
        rows[1],
        adapter_out=out / "adapter",
        metrics_out=out / "metrics.json",
        plots_out=out / "plots",
        checkpoints=out / "ckpt",
        fingerprint="test",
        callbacks=list(callbacks),
    )
    return params, out, metrics


def _mean_loss(model, tokenizer, rows, max_length):
    ds = encode_examples(tokenizer, rows, max_length)
    model.eval()
    losses = []
    with torch.inference_mode():
        for f in ds.features:
            out = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]))
            losses.append(out.loss.item())
    return sum(losses) / len(losses)


def test_encode_examples_truncates_context_only(tiny_t5_dir, pqal_rows):
    tok = modeling.load_tokenizer(str(tiny_t5_dir))
    ds = encode_examples(tok, pqal_rows[:20], 64)
    assert all(len(f["input_ids"]) <= 64 for f in ds.features)
    assert [tok.decode(f["labels"], skip_special_tokens=True) for f in ds.features] == [
        r["label"] for r in pqal_rows[:20]
    ]
    first = tok.decode(ds.features[0]["input_ids"], skip_special_tokens=True)
    assert pqal_rows[0]["question"][:30] in first
    assert first.rstrip().endswith("yes or no.")


def _weights(directory):
    return load_file(next(p for p in directory.glob("*.safetensors")))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_lowers_the_loss_and_saves_a_model_that_reloads_bit_identically(tmp_path, tiny_t5_dir, rows, variant):
    method, section = VARIANTS[variant]
    section = {"lr": TINY_LR[method], **section}
    kept, probe = _KeepModel(), gradient_probe()
    params, out, metrics = _train(
        tmp_path, tiny_t5_dir, method, rows, callbacks=[kept, probe], **{f"train_{method}": section}
    )
    assert probe.steps > 0 and probe.missing == set()  # every trainable parameter learns in every step
    tok = modeling.load_tokenizer(str(tiny_t5_dir))
    base = modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))
    before = _mean_loss(base, tok, rows[0], params.model.max_source_length)
    tuned = modeling.load_trained_model(out / "adapter", torch.device("cpu"))
    after = _mean_loss(tuned, tok, rows[0], params.model.max_source_length)
    assert after < before - 0.5, (before, after)

    spec = registry.get(method)
    files = {p.name for p in (out / "adapter").iterdir()}
    weights = "model.safetensors" if spec.saves == "model" else "adapter_model.safetensors"
    assert weights in files and "run.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    manifest = json.loads((out / "adapter" / "run.json").read_text())
    assert manifest["method"] == method and manifest["base_model"] == str(tiny_t5_dir)
    assert (manifest["model_type"], manifest["family"]) == ("t5", "seq2seq")
    assert manifest["quantize"] == section.get("quantize", "none")
    written = json.loads((out / "metrics.json").read_text())
    assert written["trainable_params"] == metrics["trainable_params"] > 0
    assert written["total_params"] >= written["trainable_params"]
    assert (written["trainable_pct"] == 100) == (method == "full")
    assert written["size_on_disk_bytes"] == sum(f.stat().st_size for f in (out / "adapter").iterdir())
    assert written["tokens_seen"] > written["train_examples"] * params.train.epochs
    assert written["peak_memory_mb"] > 0 and written["train_time_s"] > 0
    assert written["final_val_loss"] is not None and written["final_train_loss"] is not None
    assert written["provenance"]["config"][f"train_{method}"]["lr"] == section["lr"]
    # Curves are keyed by optimizer step: 32 examples / batch 8 = 4 steps per epoch.
    train_curve = [line.split("\t") for line in (out / "plots/metrics/train/loss.tsv").read_text().splitlines()]
    assert train_curve[0][:2] == ["step", "loss"]
    assert [int(r[0]) for r in train_curve[1:]] == list(range(1, 4 * int(params.train.epochs) + 1))
    val_curve = [line.split("\t") for line in (out / "plots/metrics/eval/loss.tsv").read_text().splitlines()]
    assert [int(r[0]) for r in val_curve[1:]] == [4 * (e + 1) for e in range(int(params.train.epochs))]
    assert float(val_curve[-1][1]) == pytest.approx(written["final_val_loss"])

    # What was saved is what trained: the reloaded model's logits equal the trained model's, bit for bit.
    trained = kept.model.eval()
    ids = torch.tensor([encode_examples(tok, rows[1][:1], 96).features[0]["input_ids"]])
    labels = torch.tensor([[5, 1]])
    with torch.inference_mode():
        torch.testing.assert_close(
            trained(input_ids=ids, labels=labels).logits, tuned(input_ids=ids, labels=labels).logits, rtol=0, atol=0
        )

    # Full fine-tuning changes every weight tensor; a PEFT method changes none of the base's.
    original = _weights(tiny_t5_dir)
    inner = trained if method == "full" else trained.get_base_model()
    now = {
        k.replace(".base_layer.", "."): v
        for k, v in inner.state_dict().items()
        if not any(tag in k for tag in ("lora_", "ia3_"))
    }
    if method == "full":
        assert all(not torch.equal(original[k], now[k]) for k in original)
    elif section.get("quantize", "none") == "none":
        assert all(torch.equal(original[k], now[k]) for k in original)


def test_a_qlora_adapter_reloads_onto_a_4bit_and_a_full_precision_base(tmp_path, tiny_t5_dir, rows):
    section = {"lr": TINY_LR["lora"], "quantize": "4bit", "compute_dtype": "float32"}
    _, out, _ = _train(tmp_path, tiny_t5_dir, "lora", rows, train={"epochs": 1}, train_lora=section)
    on_4bit = modeling.load_trained_model(out / "adapter", torch.device("cpu"))
    assert any(type(m).__name__ == "Linear4bit" for m in on_4bit.modules())
    on_fp32 = modeling.load_adapter_model(str(tiny_t5_dir), out / "adapter", torch.device("cpu"))
    assert not any(type(m).__name__ == "Linear4bit" for m in on_fp32.modules())
    tok = modeling.load_tokenizer(str(tiny_t5_dir))
    prompts = [p.input_ids for p in fit_prompts_encoded(tok, rows[1], 96, "val")]
    p4 = scoring.probabilities(scoring.score_yes_no(on_4bit, tok, prompts, 4, 96, progress=False))
    p32 = scoring.probabilities(scoring.score_yes_no(on_fp32, tok, prompts, 4, 96, progress=False))
    # NF4 keeps 16 levels per block of 64 weights: the tiny random model's P(yes) moves by a
    # few hundredths (measured: max 0.063 over these 8 examples, deterministic on CPU); the
    # stated tolerance is 0.1.
    assert np.abs(p4 - p32).max() < 0.1
    assert not np.array_equal(p4, p32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_seed_gives_identical_weights(tmp_path, tiny_t5_dir, rows, variant):
    method, section = VARIANTS[variant]
    small = (rows[0][:16], rows[1][:4])
    sections = {"train": {"epochs": 1}, f"train_{method}": {"lr": TINY_LR[method], **section}}
    _, a, _ = _train(tmp_path, tiny_t5_dir, method, small, tag="a", **sections)
    _, b, _ = _train(tmp_path, tiny_t5_dir, method, small, tag="b", **sections)
    wa, wb = _weights(a / "adapter"), _weights(b / "adapter")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_another_seed_gives_other_weights(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:16], rows[1][:4])
    _, a, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="a", train={"epochs": 1})
    _, c, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="c", train={"epochs": 1, "seeds": [7]})
    wa, wc = _weights(a / "adapter"), _weights(c / "adapter")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


class _Killed(Exception):
    pass


class _KillAt(TrainerCallback):
    """Kills training just before optimizer step ``step + 1`` (after step ``step`` was logged)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise _Killed


# What may differ between two runs of the same training: how long it took and how much memory it used.
_MEASURED = {"train_time_s", "train_examples_per_s", "train_real_tokens_per_s", "peak_memory_mb", "provenance"}
_MEASURED_CURVES = ("runtime.tsv", "samples_per_second.tsv", "steps_per_second.tsv")


def _digest(run):
    return hashlib.sha256((run / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def _curves(run):
    root = run / "plots"
    return {
        str(f.relative_to(root)): f.read_text()
        for f in sorted(root.rglob("*.tsv"))
        if not f.name.endswith(_MEASURED_CURVES)
    }


@pytest.mark.parametrize("kill_at", [3, 5], ids=["after-an-epoch-checkpoint", "mid-epoch-after-a-log"])
def test_a_killed_run_resumes_and_ends_exactly_as_an_uninterrupted_one(tmp_path, tiny_t5_dir, rows, kill_at, caplog):
    # 24 examples, batch 8: 3 steps per epoch, 3 epochs, a checkpoint at steps 3, 6, 9; logs every 2 steps.
    small = (rows[0][:24], rows[1][:4])
    budget = {"train": {"epochs": 3, "logging_steps": 2}}
    _, whole, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="whole", **budget)
    with pytest.raises(_Killed):
        _train(tmp_path, tiny_t5_dir, "lora", small, tag="killed", callbacks=[_KillAt(kill_at)], **budget)
    killed = tmp_path / "killed"
    assert not (killed / "adapter").exists()  # outputs absent, not half-written
    assert not (killed / "metrics.json").exists()
    with caplog.at_level("INFO", logger="pubmedqa_peft.training"):
        _train(tmp_path, tiny_t5_dir, "lora", small, tag="killed", **budget)
    assert any(r.getMessage().startswith("resuming from") for r in caplog.records)

    assert _digest(whole) == _digest(killed)
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (whole, killed))
    assert {k: v for k, v in a.items() if k not in _MEASURED} == {k: v for k, v in b.items() if k not in _MEASURED}
    assert _curves(whole) == _curves(killed)
    steps = [line.split("\t")[0] for line in _curves(whole)["metrics/train/loss.tsv"].splitlines()[1:]]
    assert steps == ["2", "3", "4", "6", "8", "9"]  # every 2 steps, and at each checkpoint (3, 6, 9)


def test_a_run_shorter_than_logging_steps_still_logs_its_last_step(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:16], rows[1][:4])  # 2 optimizer steps
    _, out, _ = _train(tmp_path, tiny_t5_dir, "lora", small, train={"epochs": 1, "logging_steps": 50})
    curve = (out / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in curve] == ["step", "2"]


def test_a_checkpoint_cut_off_mid_save_is_removed_and_training_restarts(tmp_path, tiny_t5_dir, rows, caplog):
    small = (rows[0][:16], rows[1][:4])
    _, full, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="full")
    with pytest.raises(_Killed):
        _train(tmp_path, tiny_t5_dir, "lora", small, tag="cut", callbacks=[_KillAt(3)])
    (checkpoint,) = (tmp_path / "cut" / "ckpt").glob("checkpoint-*")
    (checkpoint / "trainer_state.json").unlink()  # as if killed while the Trainer was still writing it
    with caplog.at_level("INFO", logger="pubmedqa_peft.training"):
        _train(tmp_path, tiny_t5_dir, "lora", small, tag="cut")
    assert not any(r.getMessage().startswith("resuming from") for r in caplog.records)
    assert not checkpoint.exists()
    assert any(f"removing incomplete checkpoint {checkpoint}" in r.getMessage() for r in caplog.records)
    wf, wc = _weights(full / "adapter"), _weights(tmp_path / "cut" / "adapter")
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


_NOISE = (
    "Token indices sequence length is longer",  # prompts are measured, then cut: not an error
    "The tied weights mapping",  # T5 v1.1's untied head, kept on purpose
    "FutureWarning",  # the Trainer's and PEFT's own calls of deprecated aliases
    "is incompatible with gradient checkpointing",  # QLoRA: use_cache is off while training
)


@pytest.mark.parametrize("section", [{}, {"quantize": "4bit"}], ids=["lora", "qlora"])
def test_training_prints_no_known_harmless_warning(tmp_path, tiny_t5_dir, pqal_rows, capfd, section):
    # The longest records: their prompts exceed the tokenizer's 512 tokens before fitting.
    longest = sorted(pqal_rows, key=lambda r: len(r["context"]), reverse=True)[:8]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # pytest would otherwise collect them out of sight
        _train(tmp_path, tiny_t5_dir, "lora", (longest, longest[:2]), train={"epochs": 1}, train_lora=section)
    err = capfd.readouterr().err + "\n".join(f"{w.category.__name__}: {w.message}" for w in caught)
    assert not [n for n in _NOISE if n in err], err


# --- precision and step-bounded runs ----------------------------------------------------------


def test_bf16_on_cpu_trains_under_autocast_and_records_its_precision(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:16], rows[1][:4])  # 2 optimizer steps
    sections = {"train_lora": {"lr": TINY_LR["lora"]}}
    _, bf16, metrics = _train(
        tmp_path, tiny_t5_dir, "lora", small, tag="bf16", train={"epochs": 1, "precision": "bf16"}, **sections
    )
    _, auto, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="auto", train={"epochs": 1}, **sections)
    assert metrics["precision"] == json.loads((bf16 / "metrics.json").read_text())["precision"] == "bf16"
    assert json.loads((bf16 / "adapter" / "run.json").read_text())["precision"] == "bf16"
    # auto is fp32 on a CPU; the same seed under bf16 autocast gives other (bf16-rounded) updates.
    assert json.loads((auto / "adapter" / "run.json").read_text())["precision"] == "fp32"
    assert np.isfinite(metrics["final_train_loss"]) and np.isfinite(metrics["final_val_loss"])
    wb, wa = _weights(bf16 / "adapter"), _weights(auto / "adapter")
    assert all(v.dtype == torch.float32 for v in wb.values())  # the weights themselves stay float32
    assert any(not torch.equal(wb[k], wa[k]) for k in wa)


def test_fp16_on_cpu_stops_before_loading_with_one_line(tmp_path, tiny_t5_dir, rows):
    with pytest.raises(modeling.PrecisionError, match=r"^train\.precision=fp16 is not supported on a CPU; set"):
        _train(tmp_path, tiny_t5_dir, "lora", rows, train={"precision": "fp16"})
    assert not (tmp_path / "run").exists()


def test_max_steps_stops_early_and_eval_steps_evaluates_and_checkpoints_every_n(tmp_path, tiny_t5_dir, rows):
    # 32 examples, batch 8: 4 steps per epoch; 3 epochs would be 12 steps, max_steps cuts at 5.
    train = {"epochs": 3, "max_steps": 5, "eval_steps": 2, "logging_steps": 50}
    saved = []

    class _Saves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved.append(state.global_step)

    _, out, metrics = _train(tmp_path, tiny_t5_dir, "lora", rows, callbacks=[_Saves()], train=train)
    assert metrics["steps"] == 5
    assert metrics["epochs"] == pytest.approx(5 / 4)
    val_curve = (out / "plots/metrics/eval/loss.tsv").read_text().splitlines()
    # Every 2 steps and at the last one, so final_val_loss is the saved model's.
    assert [line.split("\t")[0] for line in val_curve[1:]] == ["2", "4", "5"]
    assert float(val_curve[-1].split("\t")[1]) == pytest.approx(metrics["final_val_loss"])
    assert saved == [2, 4, 5]  # a checkpoint with every evaluation, to resume from
    # A log at every checkpoint and at the end, though logging_steps is 50.
    train_curve = (out / "plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in train_curve[1:]] == ["2", "4", "5"]


def test_a_run_checkpointed_every_eval_steps_resumes_mid_epoch_exactly(tmp_path, tiny_t5_dir, rows):
    # 24 examples, batch 8: 3 steps per epoch; checkpoints at 2, 4, 6 and the last step, 7.
    small = (rows[0][:24], rows[1][:4])
    budget = {"train": {"epochs": 3, "max_steps": 7, "eval_steps": 2, "logging_steps": 50}}
    _, whole, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="whole", **budget)
    with pytest.raises(_Killed):
        _train(tmp_path, tiny_t5_dir, "lora", small, tag="killed", callbacks=[_KillAt(5)], **budget)
    killed = tmp_path / "killed"
    assert [p.name for p in (killed / "ckpt").glob("checkpoint-*")] == ["checkpoint-4"]  # mid-epoch 2
    _train(tmp_path, tiny_t5_dir, "lora", small, tag="killed", **budget)
    assert _digest(whole) == _digest(killed)
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (whole, killed))
    assert {k: v for k, v in a.items() if k not in _MEASURED} == {k: v for k, v in b.items() if k not in _MEASURED}
    assert _curves(whole) == _curves(killed)
    val_steps = [line.split("\t")[0] for line in _curves(whole)["metrics/eval/loss.tsv"].splitlines()[1:]]
    assert val_steps == ["2", "4", "6", "7"]


def test_model_dropout_switches_off_the_base_models_dropout_while_training(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:8], rows[1][:4])  # 1 optimizer step
    kept = {}
    for dropout in (None, 0.0):
        keep = _KeepModel()
        _, _, metrics = _train(
            tmp_path,
            tiny_t5_dir,
            "prompt",
            small,
            callbacks=[keep],
            tag=str(dropout),
            train={"epochs": 1, "model_dropout": dropout},
        )
        assert metrics["provenance"]["config"]["train"]["model_dropout"] == dropout
        kept[dropout] = {m.p for m in keep.model.modules() if isinstance(m, torch.nn.Dropout)}, keep.model.config
    assert kept[None][0] == {0.1} and kept[None][1].dropout_rate == 0.1  # the checkpoint's own
    assert kept[0.0][0] == {0.0} and kept[0.0][1].dropout_rate == 0.0
