"""Scaling out: the same training function under `accelerate launch` with 2 CPU processes (DDP over gloo) matches one
process at the same global batch size, and every shipped accelerate configuration parses."""
import json, os, subprocess
import pytest

from domaintune_course import jobs, runs
from domaintune_course.testing import tiny_model_dir, toy_qa_rows

SCRIPT = """import json, os, sys
from domaintune_course.jobs import fit_lm
from domaintune_course.testing import toy_qa_rows
r = fit_lm(sys.argv[1], toy_qa_rows(16), sys.argv[2], max_steps=4, batch_size=2, save_steps=100)
if os.environ.get("RANK", "0") == "0": print("RESULT", json.dumps(r))
"""


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    model = tiny_model_dir("causal", tmp_path / "causal")
    single = jobs.fit_lm(model, toy_qa_rows(16), tmp_path / "single", max_steps=4, batch_size=4, save_steps=100)
    script = tmp_path / "fit.py"; script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(jobs.launch_command(script, 2, None, model, tmp_path / "ddp"), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    ddp = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:])
    assert (ddp["world_size"], ddp["backend"], ddp["global_step"]) == (2, "gloo", 4)
    assert single["world_size"] == 1
    assert ddp["losses"] == pytest.approx(single["losses"], abs=1e-4)


@pytest.mark.parametrize("name,kind,stage", [("ddp", "MULTI_GPU", None), ("fsdp", "FSDP", None), ("zero2", "DEEPSPEED", 2), ("zero3", "DEEPSPEED", 3)])
def test_shipped_accelerate_configs_parse(name, kind, stage):
    "accelerate reads each shipped config, and `accelerate launch` accepts it and picks the intended launcher."
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser, _validate_launch_command
    path = jobs.accelerate_config(name)
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.value == kind and cfg.num_processes >= 2
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "train.py"]))
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (kind == "MULTI_GPU", kind == "FSDP", kind == "DEEPSPEED")
    if stage: assert args.zero_stage == stage


def test_unknown_accelerate_config_is_an_input_error():
    with pytest.raises(jobs.InputError, match="ddp, fsdp, zero2 or zero3"): jobs.accelerate_config("tpu")


def test_sharding_arithmetic():
    "ZeRO-3 on 8 GPUs holds an eighth of what plain data parallel holds per GPU; ZeRO-1 shards only the optimizer."
    full = runs.sharded_memory_gb(1e9, 8, 0)
    assert full == 16.0
    assert runs.sharded_memory_gb(1e9, 8, 3) == 2.0
    assert runs.sharded_memory_gb(1e9, 8, 1) == pytest.approx(4 + 12 / 8, abs=0.01)
