"""The course's fine-tune through TRL's SFTTrainer (lesson 02b): the same configuration, the same loss tokens, the same first steps."""
from dataclasses import replace
import pytest

pytest.importorskip("trl", reason="lesson 02b's TRL path needs the trl extra: pip install 'domaintune-course[trl]'")
from domaintune_course.config import make_config
from domaintune_course.data import build_example
from domaintune_course.qlora import featurize, load_for_training
from domaintune_course.training import training_arguments
from domaintune_course.sft import compare_first_steps, sft_config, sft_trainer, token_parity
from domaintune_course.tasks.qa import qa_example
from domaintune_course.tasks.summarize import summary_example
from domaintune_course.testing import tiny_model_dir, toy_dialogues, toy_qa_rows


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_config("qa", "smoke", model=str(tiny_model_dir("causal", tmp_path_factory.mktemp("tiny"))), strategy="lora",
                       max_steps=2, batch_size=4, max_length=64, lora_r=4, learning_rate=1e-3)


def test_the_sft_config_carries_the_courses_choices(cfg, tmp_path):
    course, sft = training_arguments(cfg, tmp_path / "a"), sft_config(cfg, tmp_path / "b")
    for name in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "lr_scheduler_type", "optim",
                 "bf16", "fp16", "seed", "train_sampling_strategy", "warmup_steps", "weight_decay", "use_cpu"):
        assert getattr(sft, name) == getattr(course, name), name
    assert (sft.completion_only_loss, sft.max_length, sft.packing, sft.padding_free) == (True, cfg.max_length, False, False)


@pytest.mark.parametrize("task", ["qa", "summarize"])
def test_both_pipelines_put_the_loss_on_the_same_tokens(cfg, task, tmp_path):
    rows, build = (toy_qa_rows(12), qa_example) if task == "qa" else (toy_dialogues(8), summary_example)
    cfg = replace(cfg, max_length=256)  # every example fits: over-long ones are cut differently (the course keeps the answer)
    model, tok = load_for_training(cfg)
    ours = featurize(tok, rows, build, cfg.max_length)
    parity = token_parity(ours, sft_trainer(cfg, model, tok, rows, build, tmp_path).train_dataset)
    assert parity["identical"] == parity["examples"] == parity["trl_examples"] == len(rows), parity["differ"]
    assert parity["loss_tokens"] > 0


def test_an_over_long_example_is_cut_differently(cfg, tmp_path):
    model, tok = load_for_training(cfg)
    rows = toy_dialogues(4)  # longer than max_length=64: the course cuts the middle of the prompt, TRL the end (so the answer)
    ours = featurize(tok, rows, summary_example, cfg.max_length)
    parity = token_parity(ours, sft_trainer(cfg, model, tok, rows, summary_example, tmp_path).train_dataset)
    assert all(any(l != -100 for l in f["labels"]) for f in ours), "the course keeps every answer"
    assert parity["trl_examples"] < parity["examples"], "TRL drops the examples whose answer it cut away"


def test_a_prompt_that_ends_mid_token_is_caught(cfg, tmp_path):
    def spaced(record, tokenizer):
        prompt, completion = build_example("qa", record, tokenizer, "instruction")
        return prompt + " ", completion
    model, tok = load_for_training(cfg)
    rows = toy_qa_rows(4)
    parity = token_parity(featurize(tok, rows, spaced, cfg.max_length), sft_trainer(cfg, model, tok, rows, spaced, tmp_path).train_dataset)
    assert parity["identical"] < parity["examples"], "a trailing space merges with the answer in TRL's joint tokenization"


def test_first_steps_agree(cfg, tmp_path):
    steps = compare_first_steps(cfg, toy_qa_rows(8), qa_example, steps=2, output_dir=tmp_path)
    assert len(steps["course"]) == len(steps["trl"]) == 2
    assert steps["course"][0] == pytest.approx(steps["trl"][0], abs=1e-4) and steps["max_abs_diff"] < 1e-4
    assert steps["course"][1] != steps["course"][0], "the second step must see updated weights"


def test_a_comparison_that_trl_cannot_train_says_why(cfg, tmp_path):
    from domaintune_course.config import InputError
    with pytest.raises(InputError, match="raise max_length"):
        compare_first_steps(cfg, toy_dialogues(4), summary_example, steps=1, output_dir=tmp_path)  # every answer cut away at 64 tokens
