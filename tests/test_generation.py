"""Fast generation changes no answer: the course's earlier path (kept in bench/generation.py) and the current one give the
same greedy answers, for the base and the fine-tuned model, with the adapter beside the base and merged into it."""
import importlib.util
from pathlib import Path
import pytest
import torch
from transformers import AutoTokenizer
from domaintune_course import generation, qlora
from domaintune_course.batching import ensure_pad_token
from domaintune_course.config import make_config
from domaintune_course.data import END_MARKER, build_prompt
from domaintune_course.models import load_tokenizer
from domaintune_course.testing import tiny_causal_lm, tiny_model_dir, toy_dialogues, toy_qa_rows

ROOT = Path(__file__).resolve().parents[1]


def bench_generation():
    "bench/generation.py, which keeps the earlier path (`today_models`, `generate_today`)."
    spec = importlib.util.spec_from_file_location("bench_generation", ROOT / "bench" / "generation.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


FEW_SHOT = ("Answer each question in one line, then write ### End.\n\nQ: What is 2 + 2?\nA: 4\n\n### End\n\n"
            "Q: What colour is the sky?\nA: Blue.\n\n### End\n\nQ: What is the capital of France?\nA:")


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    "A run directory holding SmolLM2-135M's tokenizer and a LoRA adapter with random weights (what `fine_tune` would save)."
    from peft import LoraConfig, get_peft_model
    run = tmp_path_factory.mktemp("smollm2-run")
    cfg = make_config("qa", "smoke", strategy="lora", lora_r=8)
    tok = ensure_pad_token(load_tokenizer(cfg.model))
    model = qlora.load_base(cfg, tok)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n: p.mul_(0.3)  # a nudge, not noise: the adapted model still writes text
    qlora.save_finetuned(model, tok, cfg, run / "model")
    return run


@pytest.fixture(scope="module")
def prompts(smollm2_run):
    "Dialogues in the instruction layout, questions in the chat template, and a prompt that invites the end marker."
    tok = AutoTokenizer.from_pretrained(smollm2_run / "model")
    return ([build_prompt("summarize", r) for r in toy_dialogues(2)] + [build_prompt("qa", r, tok, style="chat") for r in toy_qa_rows(2)]
            + [FEW_SHOT])


@pytest.fixture(scope="module")
def today(smollm2_run, prompts):
    "The earlier path's answers (adapter beside the base, the base with it switched off, the caller's order, stop strings)."
    bench = bench_generation()
    model, tok = bench.today_models(smollm2_run)
    with model.disable_adapter(): base = bench.generate_today(model, tok, prompts, BUDGET, batch_size=2)
    return dict(base=base, finetuned=bench.generate_today(model, tok, prompts, BUDGET, batch_size=2))


BUDGET = 20


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "adapter-beside"])
def test_today_and_new_paths_give_the_same_answers(smollm2_run, prompts, today, merge):
    assert today["finetuned"][0] != today["base"][0], "the adapter must change some answers, or the test proves nothing"
    tok, models = qlora.base_then_finetuned(smollm2_run, merge=merge)
    for name, model in models:
        assert type(model).__name__.startswith("Peft") != merge
        new = generation.generate(model, tok, prompts, BUDGET, batch_size=8, progress=False)
        assert list(new) == today[name][0], f"{name} answers changed"


# That merging changes the logits by float rounding only (what lets the merged answers above equal the adapter's):
# tests/test_qlora.py, test_merged_model_computes_what_base_plus_adapter_computes.


def test_end_marker_exact_check_stops_where_stop_strings_stop(smollm2_run, today):
    tok = AutoTokenizer.from_pretrained(smollm2_run / "model")
    tail = generation.end_marker_ids(tok)
    assert tok.decode(tail) == END_MARKER and "stopping_criteria" in generation.stop_kwargs(tok)
    _, models = qlora.base_then_finetuned(smollm2_run)
    base = next(models)[1]  # the base model follows the few-shot pattern and writes the marker
    exact = generation.generate(base, tok, [FEW_SHOT], BUDGET, progress=False)
    assert [exact[0]] == today["base"][0][-1:] and "### End" not in exact[0]
    assert exact.new_tokens < BUDGET, "it stopped at the marker, not at the budget"


def test_the_marker_check_is_exact():
    check = generation.EndsWith([7, 8])
    ids = torch.tensor([[1, 2, 7, 8], [7, 8, 1, 2], [0, 0, 8, 7]])
    assert check(ids).tolist() == [True, False, False]
    assert check(torch.tensor([[8]])).tolist() == [False]


def test_answers_return_in_the_callers_order_with_time_and_progress(tmp_path, capsys):
    from domaintune_course.testing import tiny_tokenizer
    tok = ensure_pad_token(tiny_tokenizer())
    model = tiny_causal_lm(tok, seed=5).eval()
    prompts = [build_prompt("qa", r, style="instruction") + " x" * (3 * i % 7) for i, r in enumerate(toy_qa_rows(5))]
    out = generation.generate(model, tok, prompts, max_new_tokens=6, batch_size=2, progress="tiny")
    alone = [generation.generate(model, tok, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert list(out) == alone
    stats = out.stats()
    assert stats["examples"] == 5 and 0 < stats["new_tokens"] <= 5 * 6 and stats["seconds"] > 0
    assert stats["new_tokens_per_second"] == pytest.approx(stats["new_tokens"] / out.seconds, rel=0.05)
    err = capsys.readouterr().err
    assert "tiny" in err and "ex/s" in err and "5/5" in err


def test_length_batches_sort_longest_first_and_cover_every_example():
    batches = generation.length_batches([3, 9, 5, 7, 1, 9], batch_size=4)
    assert batches == [[1, 5, 3, 2], [0, 4]]
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_completion_losses_do_not_depend_on_batching(tmp_path):
    from domaintune_course.testing import tiny_tokenizer
    from domaintune_course.data import build_example
    tok = ensure_pad_token(tiny_tokenizer())
    model = tiny_causal_lm(tok, seed=2).eval()
    pairs = [build_example("qa", r) for r in toy_qa_rows(5)]
    pairs[2] = (pairs[2][0] + " and a much longer question than the others", pairs[2][1])
    together = generation.completion_losses(model, tok, pairs, batch_size=4)
    alone = [generation.completion_losses(model, tok, [p], batch_size=1)[0] for p in pairs]
    assert [n for _, n in together] == [n for _, n in alone]
    assert all(abs(a - b) < 1e-4 for (a, _), (b, _) in zip(together, alone))


def test_full_fine_tune_evaluates_on_the_inference_device(tmp_path):
    "A run without an adapter: the base and the saved model, both on the device inference runs on, KV cache on."
    from domaintune_course.data import build_example
    model_dir = tiny_model_dir("causal", tmp_path / "tiny")
    cfg = make_config("qa", "smoke", model=str(model_dir), strategy="full", max_steps=2, batch_size=4, max_length=64, eval_steps=2, learning_rate=1e-2)
    qlora.fine_tune(cfg, tmp_path / "run", toy_qa_rows(8), [], lambda r, t: build_example("qa", r, t, style="instruction"))
    tok, models = qlora.base_then_finetuned(tmp_path / "run")
    seen = {}
    for name, model in models:
        assert next(model.parameters()).device.type == generation.inference_device() and model.config.use_cache and not model.training
        seen[name] = torch.cat([p.detach().flatten()[:50].cpu() for p in model.parameters()][:4])
    assert set(seen) == {"base", "finetuned"} and not torch.equal(seen["base"], seen["finetuned"])
