"""The causal fine-tune engine (`qlora`) and the memory estimator (`concepts`), on tiny offline models."""
import pytest
import torch
from domaintune_course.config import InputError, make_config
from domaintune_course.data import build_example, build_prompt
from domaintune_course.testing import tiny_causal_lm, tiny_model_dir, toy_qa_rows
from domaintune_course import concepts, costs, generation, models, qlora, training


def example_fn(record, tokenizer): return build_example("qa", record, tokenizer, style="instruction")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory): return tiny_model_dir("causal", tmp_path_factory.mktemp("tiny"))


def tiny_cfg(model_dir, **kw):
    base = dict(model=str(model_dir), strategy="lora", max_steps=2, batch_size=4, max_length=64, eval_steps=1, logging_steps=1, lora_r=4)
    return make_config("qa", "smoke", **(base | kw))


def test_lora_targets_refuses_a_missing_module_and_names_the_real_ones():
    m = tiny_causal_lm()
    assert models.lora_targets(m) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with pytest.raises(InputError, match="query_key_value.*q_proj"):
        models.lora_targets(m, "query_key_value")
    assert "lm_head" not in models.lora_targets(m, "all-linear")


def test_training_arguments_drop_cuda_only_options_on_cpu(tmp_path):
    args = training.training_arguments(make_config("qa", "smoke", optimizer="paged_adamw_8bit"), tmp_path)
    if not torch.cuda.is_available():
        assert str(args.optim.value) == "adamw_torch" and not args.fp16 and not args.bf16
    assert str(args.eval_strategy.value) == "steps" and str(args.train_sampling_strategy) == "group_by_length"


@pytest.fixture(scope="module")
def lora_run(model_dir, tmp_path_factory):
    "A LoRA run of two updates, at a learning rate that moves the adapter off zero (read only), and its metrics."
    run, rows = tmp_path_factory.mktemp("lora-run"), toy_qa_rows(16)
    return run, qlora.fine_tune(tiny_cfg(model_dir, learning_rate=1e-2), run, rows[:12], rows[12:], example_fn)


def test_fine_tune_saves_only_the_adapter_and_reports_costs(lora_run):
    run, m = lora_run
    saved = {p.name for p in (run / "model").iterdir()}
    assert "adapter_config.json" in saved and "model.safetensors" not in saved and "finetune.json" in saved
    assert m["global_step"] == 2 and 0 < m["trainable_params"] < m["total_params"]
    for key in ("model_memory_mb", "peak_memory_mb", "tokens_per_second", "wall_time_s", "eval_loss"):
        assert m[key] > 0, key
    assert any("eval_loss" in h for h in m["log_history"])


# Resuming from the last checkpoint (the step count, the tokens and their speed): tests/test_checkpoints.py
# (test_resume_ends_with_the_best_of_the_whole_run).


def test_merged_model_computes_what_base_plus_adapter_computes(lora_run, model_dir, tmp_path):
    """The one check that a merge changes nothing: the merged copy `merge_adapter` writes, and the model `load_finetuned` merges
    by default (full precision), compute what the base with its adapter beside it computes, and not what the base computes."""
    from transformers import AutoModelForCausalLM
    run, _ = lora_run
    written = AutoModelForCausalLM.from_pretrained(qlora.merge_adapter(run, tmp_path / "merged")).eval()
    merged, tok = qlora.load_finetuned(run)
    adapted, _ = qlora.load_finetuned(run, merge=False)
    assert type(adapted).__name__.startswith("Peft") and not type(merged).__name__.startswith("Peft"), "full precision: merged by default"
    assert tok.pad_token_id != tok.eos_token_id
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([tok("What colour is lamp number 3?")["input_ids"]])
    with torch.no_grad(): a, m, b, c = written(ids).logits, merged(ids).logits, adapted(ids).logits, base(ids).logits
    assert torch.allclose(a, b, atol=1e-4) and torch.allclose(m, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-4)


def test_full_strategy_saves_a_whole_model(model_dir, tmp_path):
    rows = toy_qa_rows(8)
    m = qlora.fine_tune(tiny_cfg(model_dir, strategy="full"), tmp_path, rows, rows[:2], example_fn)
    assert (tmp_path / "model" / "model.safetensors").is_file() and m["trainable_params"] == m["total_params"]
    with pytest.raises(InputError, match="nothing to merge"): qlora.merge_adapter(tmp_path, tmp_path / "merged")


def test_frozen_strategy_trains_only_the_top_blocks(model_dir):
    model, _ = qlora.load_for_training(tiny_cfg(model_dir, strategy="frozen", extra=dict(trainable_blocks=1)))
    trainable = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1"}


def test_batched_generation_matches_one_prompt_at_a_time(model_dir):
    from domaintune_course.models import load_tokenizer
    from domaintune_course.batching import ensure_pad_token
    tok = ensure_pad_token(load_tokenizer(str(model_dir)))
    model = tiny_causal_lm(tok, seed=3).eval()
    prompts = [build_prompt("qa", r, tok, style="instruction") for r in toy_qa_rows(3)]
    prompts[1] = prompts[1] + " Please answer at length, in your own words."
    together = generation.generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    alone = [generation.generate(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert together == alone and all(isinstance(a, str) for a in together)


def test_load_finetuned_names_the_fix_for_a_directory_without_a_model(tmp_path):
    with pytest.raises(InputError, match="finetune.json"): qlora.load_finetuned(tmp_path)


@pytest.mark.parametrize("strategy", ["lora", "qlora"])
def test_memory_estimate_within_15_percent_of_measured_smollm2_footprint(strategy):
    estimated = concepts.estimate_memory("smollm2-135m", strategy, "fp32", lora_r=0)["weights"] * 1024
    measured = costs.measured_footprint_mb(strategy)
    assert abs(estimated / measured - 1) < 0.15, (estimated, measured)


def test_estimator_orders_strategies_and_sharding():
    e = {s: concepts.estimate_memory("phi-2", s, "fp16", seq_len=512)["total"] for s in ("full", "lora", "qlora")}
    assert e["full"] > e["lora"] > e["qlora"]
    z = [concepts.estimate_memory("llama-7b", "full", "bf16", world_size=8, zero_stage=s)["total"] for s in (0, 1, 2, 3)]
    assert z == sorted(z, reverse=True) and z[0] > 2 * z[3]
    assert concepts.fits("llama-7b", "T4", "qlora")["fits"] and not concepts.fits("llama-7b", "A100", "full")["fits"]
    with pytest.raises(InputError, match="Unknown GPU"): concepts.fits("phi-2", "V100")
    with pytest.raises(InputError, match="No shape"): concepts.estimate_memory("gpt-9")


def test_training_arguments_work_with_transformers_before_the_checkpointing_rename(tmp_path, monkeypatch):
    "A transformers 5 release without `activation_checkpointing` (5.17 has only `gradient_checkpointing`) gets the name it knows."
    import transformers
    real = transformers.TrainingArguments
    fields = {n: f for n, f in real.__dataclass_fields__.items() if not n.startswith("activation_checkpointing")}

    class BeforeRename(real):
        "`TrainingArguments` refusing the new names, as a release from before the rename does."
        __dataclass_fields__ = fields
        def __init__(self, **kw):
            unknown = [k for k in kw if k not in fields]
            if unknown: raise TypeError(f"TrainingArguments.__init__() got an unexpected keyword argument {unknown[0]!r}")
            super().__init__(**kw)

    monkeypatch.setattr(transformers, "TrainingArguments", BeforeRename)
    args = training.training_arguments(make_config("qa", "smoke", gradient_checkpointing=True), tmp_path)
    assert type(args) is BeforeRename and args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


def tiny_falcon_dir(path) -> str:
    "A tiny random-weight Falcon (falcon-rw-1b's layout: alibi, biases, no multi-query) with the tiny tokenizer."
    from transformers import FalconConfig, FalconForCausalLM
    from domaintune_course.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    cfg = FalconConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, alibi=True, bias=True,
                       multi_query=False, parallel_attn=False, new_decoder_architecture=False)
    torch.manual_seed(0)
    FalconForCausalLM(cfg).save_pretrained(path); tok.save_pretrained(path)
    return str(path)


def test_qlora_loads_every_linear_layer_of_a_falcon_model_in_4_bit(tmp_path):
    pytest.importorskip("bitsandbytes")
    cfg = make_config("qa", "smoke", model=tiny_falcon_dir(tmp_path), strategy="qlora", lora_r=4)
    model, _ = qlora.load_for_training(cfg)
    base = model.get_base_model()
    head = base.get_output_embeddings()
    left = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and type(m).__name__ != "Linear4bit"
            and m is not head and "lora_" not in n]
    assert left == [], f"{len(left)} linear layers left in full precision, e.g. {left[:2]}"
    from transformers.models.falcon import modeling_falcon
    assert modeling_falcon.FalconLinear is not torch.nn.Linear, "the stand-in must not outlive the load"
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad(): assert torch.isfinite(model(input_ids=ids).logits).all()


def test_an_evaluation_does_not_change_the_gradients_of_a_4bit_model(tmp_path):
    """bitsandbytes repacks a 4-bit layer for its CPU inference kernel (CPUs with AVX512-BF16) the first time it runs in eval
    mode without gradients, as the Trainer's evaluation does; the training steps after that got wrong gradients (10 steps of
    LoRA on SmolLM2 moved the held-out loss 0.014 with the repacking against 0.36 without). The course's 4-bit models keep
    the layout training needs."""
    from domaintune_course.testing import tiny_tokenizer
    tok = tiny_tokenizer(); path = tmp_path / "tiny64"
    tiny_causal_lm(tok, hidden_size=64).save_pretrained(path); tok.save_pretrained(path)  # 64 wide: one NF4 block per row
    model, tokenizer = qlora.load_for_training(tiny_cfg(path, strategy="qlora"))
    batch = tokenizer(["a short question and its answer", "another one"], return_tensors="pt", padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    def grads():
        torch.manual_seed(0); model.train(); model.zero_grad(); model(**batch).loss.backward()  # the same LoRA dropout each time
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    before = grads()
    model.eval()
    with torch.no_grad(): model(**batch)  # what Trainer.evaluate does
    after = grads()
    for n in before: torch.testing.assert_close(after[n], before[n], msg=lambda m: f"{n}: {m}")
    assert not any(getattr(getattr(m, "weight", None), "quant_state", None) is not None and
                   getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in model.modules())
