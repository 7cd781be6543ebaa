"""`domaintune export`: a merged model and an Ollama Modelfile always; GGUF and llama.cpp parity where the converter and llama-cpp-python are here."""
import importlib.util, json
import pytest
from domaintune_course import jobs
from domaintune_course.batching import ensure_pad_token
from domaintune_course.cli import main
from domaintune_course.config import InputError, TrainConfig, make_config
from domaintune_course.data import END_MARKER, PROMPT_TEMPLATES, build_prompt
from domaintune_course.export import export_run, modelfile
from domaintune_course.gguf import PARITY_THRESHOLDS, find_converter
from domaintune_course.models import load_tokenizer
from domaintune_course.tasks import qa
from domaintune_course.testing import tiny_causal_lm, toy_qa_rows, write_jsonl

NEEDS_CONVERTER = pytest.mark.skipif(find_converter() is None, reason="llama.cpp's converter is not cached: `make gguf` (or one `domaintune export --format gguf`) fetches it")
NEEDS_LLAMA_CPP = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed: it compiles llama.cpp (the gguf extra, `make gguf`)")
QUESTION = "What colour is lamp number 3?"


def finished_run(cfg, runs_dir, name, task_module):
    "Train `cfg` into a new run directory the way `domaintune train` lays it out."
    d = jobs.create_run(cfg, name, runs_dir); jobs.save_config(d, cfg)
    with jobs.track(d): task_module.train(cfg, d)
    return d


def tiny_with_smollm_tokenizer(path, arch="llama"):
    "A tiny random model with SmolLM2's tokenizer: llama.cpp's converter recognises that tokenizer."
    tok = ensure_pad_token(load_tokenizer("smollm2-135m"))
    if arch == "llama":
        model = tiny_causal_lm(tok)
        model.lm_head.weight.data.mul_(100)  # random logits are nearly flat: float noise would flip greedy near-ties; spread them
    else:
        from transformers import OPTConfig, OPTForCausalLM
        model = OPTForCausalLM(OPTConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                                         word_embed_proj_dim=16, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path); tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = make_config("qa", "smoke", model=str(tiny_with_smollm_tokenizer(root / "tiny")), data=str(write_jsonl(toy_qa_rows(30), root / "lamps.jsonl")),
                      strategy="lora", max_steps=2, batch_size=4, max_length=64, eval_steps=1, eval_limit=2, lora_r=4)
    return finished_run(cfg, root / "runs", "lamps", qa)


@pytest.fixture(scope="module")
def merged(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "lamps-merged"
    assert main(["--runs-dir", str(run.parent), "export", "--run", "lamps", "--out", str(out)]) == 0
    return out


def test_the_merged_export_answers_like_the_run(run, merged):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from domaintune_course.generation import generate
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    settings = json.loads((merged / "domaintune.json").read_text())
    assert (settings["run"], settings["task"], settings["strategy"]) == ("lamps", "qa", "lora")
    model, tok = AutoModelForCausalLM.from_pretrained(merged).eval(), AutoTokenizer.from_pretrained(merged)
    prompt = build_prompt("qa", {"prompt": QUESTION}, tok, settings["style"])
    assert generate(model, tok, [prompt], settings["max_new_tokens"])[0] == qa.generate(run, [QUESTION])[0]


def test_an_export_never_overwrites(run, merged, capsys):
    assert main(["--runs-dir", str(run.parent), "export", "--run", "lamps", "--out", str(merged)]) == 2
    assert "never overwrites" in capsys.readouterr().err and (merged / "domaintune.json").is_file()


def test_the_modelfile_prompts_as_the_run_was_trained(merged):
    from transformers import AutoTokenizer
    tok, settings = AutoTokenizer.from_pretrained(merged), json.loads((merged / "domaintune.json").read_text())
    text = modelfile("lamps-f16.gguf", merged)
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    instruction = "{{ if .System }}{{ .System }}{{ else }}" + PROMPT_TEMPLATES["qa"] + "{{ end }}"
    fill = lambda system=None: template.replace("{{ .Prompt }}", QUESTION).replace(instruction, system or PROMPT_TEMPLATES["qa"])
    assert fill() == build_prompt("qa", {"prompt": QUESTION}, tok, settings["style"])
    assert fill("Answer in one word.") == build_prompt("qa", {"prompt": QUESTION}, tok, settings["style"], instruction="Answer in one word.")
    lines = text.splitlines()
    assert "FROM ./lamps-f16.gguf" in lines and "PARAMETER temperature 0" in lines and f"PARAMETER num_predict {settings['max_new_tokens']}" in lines
    assert f'PARAMETER stop {json.dumps(tok.eos_token)}' in lines and f'PARAMETER stop "{END_MARKER}"' in lines


def test_a_classifier_and_an_unknown_format_are_refused(tmp_path, capsys):
    cfg = TrainConfig.tiny("classify")
    d = jobs.create_run(cfg, "reviews", tmp_path); jobs.save_config(d, cfg); (d / "model").mkdir()
    assert main(["--runs-dir", str(tmp_path), "export", "--run", "reviews"]) == 2
    assert "only qa and summarize runs" in capsys.readouterr().err
    with pytest.raises(InputError, match="merged or gguf"): export_run(d, "onnx")


@pytest.mark.slow
@NEEDS_CONVERTER
def test_gguf_export_writes_a_file_transformers_reads_back(run, merged, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    out = export_run(run, "gguf", tmp_path / "gguf", "f32")
    gguf = tmp_path / "gguf" / "lamps-f32.gguf"
    assert out["gguf"] == str(gguf) and "FROM ./lamps-f32.gguf" in (tmp_path / "gguf" / "Modelfile").read_text()
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["Modelfile", "lamps-f32.gguf"], "the merged scratch copy is removed"
    back = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ref = AutoModelForCausalLM.from_pretrained(merged).eval()  # the merged export of the same run
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad(): assert torch.allclose(back(ids).logits, ref(ids).logits, atol=1e-5)


@NEEDS_CONVERTER
def test_an_architecture_the_converter_does_not_handle_is_refused(tmp_path, capsys):
    cfg = make_config("qa", "smoke", model=str(tiny_with_smollm_tokenizer(tmp_path / "opt", "opt")), data=str(write_jsonl(toy_qa_rows(12), tmp_path / "q.jsonl")),
                      strategy="lora", max_steps=1, batch_size=4, max_length=48, eval_limit=2, lora_r=2)
    finished_run(cfg, tmp_path / "runs", "opt-run", qa)
    assert main(["--runs-dir", str(tmp_path / "runs"), "export", "--run", "opt-run", "--format", "gguf"]) == 2
    err = capsys.readouterr().err
    assert "cannot write OPTForCausalLM as GGUF" in err and "Traceback" not in err


@NEEDS_CONVERTER
@NEEDS_LLAMA_CPP
@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_cpp_gives_the_merged_models_greedy_answers(run, tmp_path, outtype):
    from domaintune_course.gguf import LlamaCrash
    try: out = export_run(run, "gguf", tmp_path / outtype, outtype, check=True)
    except LlamaCrash as e: pytest.xfail(f"this llama-cpp-python build crashes at {outtype} on this CPU: {e}")
    p = out["parity"]
    assert p["prompts"] >= 1 and p["prompt_tokens_match"] and p["ok"]
    assert p["agreement"] >= PARITY_THRESHOLDS[outtype]
    if outtype == "f32": assert p["exact"] == p["prompts"], p["rows"]


@NEEDS_CONVERTER
def test_a_variant_the_converter_does_not_handle_is_refused_before_converting(tmp_path):
    "llama.cpp lists FalconForCausalLM, but falcon-rw-1b's layout (ALiBi, sequential attention) is not one it can write."
    from transformers import FalconConfig
    from domaintune_course.config import InputError
    from domaintune_course.gguf import check_architecture, converter_dir
    rw = dict(alibi=True, parallel_attn=False, new_decoder_architecture=False, bias=True, multi_query=False)
    FalconConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, architectures=["FalconForCausalLM"], **rw).save_pretrained(tmp_path / "rw")
    with pytest.raises(InputError, match="falcon-rw layout"): check_architecture(tmp_path / "rw", converter_dir())
    FalconConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, alibi=False, parallel_attn=True, architectures=["FalconForCausalLM"]).save_pretrained(tmp_path / "7b")
    assert check_architecture(tmp_path / "7b", converter_dir()) == "FalconForCausalLM"


def test_a_crash_in_llama_cpp_is_reported_and_the_caller_lives_on(monkeypatch):
    "llama.cpp runs in a child process: a segmentation fault there is a LlamaCrash naming the file and the fix, not the end of this process."
    from domaintune_course import gguf
    monkeypatch.setattr(gguf, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(gguf.LlamaCrash, match=r"model-q8_0.gguf.*signal 11 \(segmentation fault\).*--outtype"):
        gguf._run_llama(dict(gguf_file="model-q8_0.gguf"))
    monkeypatch.setattr(gguf, "_CHILD", "import json, sys; a = json.load(sys.stdin); print('noise'); print(json.dumps([a['gguf_file']]))")
    assert gguf._run_llama(dict(gguf_file="x.gguf")) == ["x.gguf"], "the child's answer is its last line"
