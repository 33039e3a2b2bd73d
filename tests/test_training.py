import json

import pytest
import torch
from conftest import tiny_params
from safetensors.torch import load_file
from transformers import TrainerCallback

from pubmedqa_peft import modeling
from pubmedqa_peft.config import METHODS
from pubmedqa_peft.training import encode_examples, train_method


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


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss_and_saves_a_reloadable_adapter(tmp_path, tiny_t5_dir, rows, method):
    lr = {"prompt": 0.3, "prefix": 0.05, "lora": 0.01}[method]
    params, out, metrics = _train(tmp_path, tiny_t5_dir, method, rows, **{f"train_{method}": {"lr": lr}})
    tok = modeling.load_tokenizer(str(tiny_t5_dir))
    base = modeling.load_base_model(str(tiny_t5_dir), torch.device("cpu"))
    before = _mean_loss(base, tok, rows[0], params.model.max_source_length)
    tuned = modeling.load_adapter_model(str(tiny_t5_dir), out / "adapter", torch.device("cpu"))
    after = _mean_loss(tuned, tok, rows[0], params.model.max_source_length)
    assert after < before - 0.5, (before, after)

    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not list((out / "adapter").glob("*.bin"))
    written = json.loads((out / "metrics.json").read_text())
    assert written["trainable_params"] == metrics["trainable_params"] > 0
    assert 0 < written["trainable_pct"] < 100
    assert written["final_val_loss"] is not None and written["final_train_loss"] is not None
    assert written["provenance"]["config"][f"train_{method}"]["lr"] == lr
    assert (out / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    # Curves are keyed by optimizer step: 32 examples / batch 8 = 4 steps per epoch.
    train_curve = [line.split("\t") for line in (out / "plots/metrics/train/loss.tsv").read_text().splitlines()]
    assert train_curve[0][:2] == ["step", "loss"]
    assert [int(r[0]) for r in train_curve[1:]] == list(range(1, 4 * int(params.train.epochs) + 1))
    val_curve = [line.split("\t") for line in (out / "plots/metrics/eval/loss.tsv").read_text().splitlines()]
    assert [int(r[0]) for r in val_curve[1:]] == [4 * (e + 1) for e in range(int(params.train.epochs))]
    assert float(val_curve[-1][1]) == pytest.approx(written["final_val_loss"])

    # The adapter reloaded onto a fresh base model gives the logits of the trained model.
    again = modeling.load_adapter_model(str(tiny_t5_dir), out / "adapter", torch.device("cpu"))
    ids = torch.tensor([encode_examples(tok, rows[1][:1], 96).features[0]["input_ids"]])
    labels = torch.tensor([[5, 1]])
    with torch.inference_mode():
        torch.testing.assert_close(
            tuned(input_ids=ids, labels=labels).logits, again(input_ids=ids, labels=labels).logits, rtol=0, atol=0
        )


def test_same_seed_gives_identical_adapter_weights(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:16], rows[1][:4])
    _, a, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="a", train={"epochs": 1})
    _, b, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="b", train={"epochs": 1})
    _, c, _ = _train(tmp_path, tiny_t5_dir, "lora", small, tag="c", train={"epochs": 1, "seed": 7})
    wa, wb, wc = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


class _Killed(Exception):
    pass


class _KillInSecondEpoch(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= 1:
            raise _Killed


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_the_same(tmp_path, tiny_t5_dir, rows):
    small = (rows[0][:16], rows[1][:4])
    _, full, _ = _train(tmp_path, tiny_t5_dir, "prefix", small, tag="full")
    with pytest.raises(_Killed):
        _train(tmp_path, tiny_t5_dir, "prefix", small, tag="killed", callbacks=[_KillInSecondEpoch()])
    killed = tmp_path / "killed"
    assert not (killed / "adapter").exists()  # outputs absent, not half-written
    assert not (killed / "metrics.json").exists()
    assert list((killed / "ckpt").glob("checkpoint-*"))
    _, _, metrics = _train(tmp_path, tiny_t5_dir, "prefix", small, tag="killed")
    assert metrics["resumed_from"].startswith("checkpoint-")
    wf = load_file(full / "adapter" / "adapter_model.safetensors")
    wk = load_file(killed / "adapter" / "adapter_model.safetensors")
    for k in wf:
        torch.testing.assert_close(wf[k], wk[k])
    curve = (killed / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 2  # both epochs' val loss, across the interruption
