"""Models from the hub and its cache, as the GPU profiles get them, checked on this CPU: partial snapshots, pickle-only
checkpoints, the hub reachable or not, LoRA targets on a wrapped 4-bit model, falcon-rw-1b quantized, remote code that
transformers does not need."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch

from clirunner import dt
from domaintune_course import cli, models, qlora, testing
from domaintune_course.config import InputError, make_config

FALCON = "tiiuae/falcon-rw-1b"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    "An empty Hugging Face cache that huggingface_hub and `resolve_model` use (offline, as conftest sets)."
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def test_offline_a_partial_snapshot_is_refused_with_the_fix(hub_root, hub_cache):
    "A cached snapshot that holds only config.json is not a model: offline, `resolve_model` says what it lacks."
    testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased", files=["config.json"])
    with pytest.raises(InputError, match="lacks model.safetensors.*tokenizer files.*Internet"):
        models.resolve_model("distilbert-base-uncased")


def test_offline_a_complete_snapshot_loads_with_its_own_tokenizer(hub_root, hub_cache):
    snap = testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased")
    assert models.resolve_model("distilbert-base-uncased") == str(snap)
    tok = models.load_tokenizer("distilbert-base-uncased")
    assert tok.unk_token_id not in tok("a great film")["input_ids"]  # a real vocabulary, not every word [UNK]
    assert type(models.load_model("distilbert-base-uncased", kind="encoder", num_labels=2)).__name__ == "DistilBertForSequenceClassification"


# --- pickle-only checkpoints: falcon-rw-1b's main branch holds pytorch_model.bin only --------------------------------------

LOADER = """
import json
from domaintune_course import models
out = {}
for name in ("phi-2", "falcon-rw-1b"):
    tok, model = models.load_tokenizer(name), models.load_model(name)
    out[name] = dict(path=models.resolve_model(name), model=type(model).__name__, eos=tok.eos_token)
print("LOADED " + json.dumps(out))
"""  # in a process of its own: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once per process


def _same_weights(converted: Path, reference: Path):
    "Every tensor of `reference` (a safetensors file) is in `converted` with the same values."
    from safetensors.torch import load_file
    got, want = load_file(str(converted)), load_file(str(reference))
    assert set(want) <= set(got) and all(torch.equal(got[k], v) for k, v in want.items())


def test_both_hub_layouts_load_through_the_hub(hub_root, tmp_path):
    "phi-2's main holds safetensors (loaded by hub id); falcon-rw-1b's a pickle only: downloaded, converted once, loaded from the copy."
    with testing.MockHub(hub_root) as hub:
        env = {**os.environ, **testing.hub_env(hub.endpoint, tmp_path / "hf"), "DOMAINTUNE_CACHE": str(tmp_path / "cache")}
        r = subprocess.run([sys.executable, "-c", LOADER], env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("LOADED ")), None)
    assert line, r.stderr[-4000:]
    falcon = tmp_path / "cache" / "models" / "falcon-rw-1b"
    assert json.loads(line[len("LOADED "):]) == {"phi-2": dict(path="microsoft/phi-2", model="PhiForCausalLM", eos="<|endoftext|>"),
                                                 "falcon-rw-1b": dict(path=str(falcon), model="FalconForCausalLM", eos="<|endoftext|>")}
    assert any(q.startswith("GET /microsoft/phi-2/resolve/") and "/model.safetensors 200" in q for q in hub.requests)
    assert any(q.startswith(f"GET /{FALCON}/resolve/") and "/pytorch_model.bin 200" in q for q in hub.requests)
    _same_weights(falcon / "model.safetensors", testing.revision_dir(hub_root, FALCON, "refs/pr/1") / "model.safetensors")


def test_offline_a_cached_pickle_only_snapshot_is_complete_and_loads(hub_root, hub_cache, tmp_path, monkeypatch):
    "The Hugging Face cache holds falcon-rw-1b's main as downloaded (pickle weights): offline it loads, through a safetensors copy."
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))
    snap = testing.hub_cache(hub_root, hub_cache, FALCON)
    assert not (snap / "model.safetensors").exists() and models.snapshot_missing(snap, allow_pickle=True) == []
    model, tok = models.load_model("falcon-rw-1b"), models.load_tokenizer("falcon-rw-1b")
    assert models.resolve_model("falcon-rw-1b") == str(tmp_path / "cache" / "models" / "falcon-rw-1b") and tok.eos_token == "<|endoftext|>"
    state = torch.load(snap / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_offline_a_missing_weights_file_is_named_with_the_fix(hub_root, hub_cache, tmp_path, monkeypatch):
    "A download cut short before pytorch_model.bin: the error names it and says how to finish, in Python and on the command line."
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))
    testing.hub_cache(hub_root, hub_cache, FALCON, files=[p.name for p in (hub_root / "models" / FALCON).iterdir() if p.suffix != ".bin"])
    fix = r"lacks model\.safetensors or pytorch_model\.bin \(weights\)\) and the hub is not reachable\. Fix: run again where the hub is reachable"
    with pytest.raises(InputError, match=fix): models.load_model("falcon-rw-1b")
    r = dt("train", "--task", "qa", "--model", "falcon-rw-1b", "--out", "falcon-run")
    assert r.returncode == 2 and "pytorch_model.bin" in r.stderr and "Traceback" not in r.stderr


def test_with_the_hub_reachable_the_hub_id_wins_over_a_partial_cache(hub_root, hub_cache, monkeypatch):
    testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased", files=["config.json"])
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    assert models.resolve_model("distilbert-base-uncased") == "distilbert/distilbert-base-uncased"


def test_hub_reachable_probes_the_endpoint_it_is_given(monkeypatch):
    "An HF_ENDPOINT on a port of its own is probed there (the course's probe used to try port 443 whatever the URL said)."
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen(1)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0"); monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        models.hub_reachable.cache_clear()
        try: assert models.hub_reachable(timeout=2)
        finally: models.hub_reachable.cache_clear()


# --- LoRA targets on a wrapped 4-bit model ---------------------------------------------------------------------------

def test_lora_targets_look_through_the_lora_layers_of_a_4bit_model(hub_root):
    "Lesson 05 checks the targets on the model it trains: 4-bit layers wrapped by LoRA, seen through their `base_layer`."
    cfg = make_config("summarize", "smoke", model=str(hub_root / "models" / "microsoft" / "phi-2"), strategy="qlora", lora_r=4)
    model, _ = qlora.load_for_training(cfg)
    assert qlora.quantized_layers(model) > 0
    names = ["q_proj", "k_proj", "v_proj", "dense"]
    assert models.lora_targets(model.get_base_model(), ",".join(names)) == names
    assert sorted(models.lora_targets(model.get_base_model())) == sorted(names)


def test_falcon_is_quantized_and_a_model_bitsandbytes_cannot_quantize_is_reported(hub_root, monkeypatch):
    "transformers 5 quantizes only layers whose type is nn.Linear; the course builds Falcon with nn.Linear, and says when a model escapes."
    cfg = make_config("qa", "smoke", model=str(testing.revision_dir(hub_root, FALCON, "refs/pr/1")), strategy="qlora", lora_r=4)
    model, _ = qlora.load_for_training(cfg)
    import bitsandbytes as bnb
    four_bit = [n for n, m in model.get_base_model().named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 4 * model.config.num_hidden_layers and qlora.quantization_gap(model, cfg) == {}, four_bit
    monkeypatch.setattr(qlora, "EQUIVALENT_LINEARS", {})  # as transformers alone would build it: FalconLinear, left in full precision
    model, _ = qlora.load_for_training(cfg)
    gap = qlora.quantization_gap(model, cfg)
    assert qlora.quantized_layers(model) == 0 and gap["quantization"]["asked"] == "nf4" and "FalconLinear" in gap["quantization"]["why"]


# --- remote code that transformers does not need ----------------------------------------------------------------------

def test_check_model_accepts_a_native_architecture_whose_config_names_remote_code(hub_root, tmp_path):
    "falcon-rw-1b's config.json still has an auto_map; transformers loads falcon natively, so no --trust-remote-code is needed."
    falcon = testing.revision_dir(hub_root, FALCON, "refs/pr/1")  # its safetensors copy: main's pickle would be refused here
    assert "auto_map" in json.loads((falcon / "config.json").read_text())
    assert cli.check_model(str(falcon)) == str(falcon)
    unknown = tmp_path / "custom"; unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "my-own-arch", "auto_map": {"AutoModel": "modeling_x.X"}}))
    (unknown / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="--trust-remote-code"): cli.check_model(str(unknown))
