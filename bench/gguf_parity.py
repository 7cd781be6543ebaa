"""GGUF export parity: llama.cpp running the exported file against transformers running the merged model, per tensor type.

For each type (f32, f16, bf16, q8_0) the model is converted with llama.cpp's own converter (`gguf.to_gguf`) and both
runtimes get the same prompts as the same token ids: `exact` counts prompts whose freely generated greedy continuations
are identical, `agreement` is the share of the merged model's greedy tokens llama.cpp also ranks first given the same
preceding tokens (lesson 06c's `gguf_parity`). `domaintune_course.gguf.PARITY_THRESHOLDS` is set below what this measures.

    python bench/gguf_parity.py                        # SmolLM2-135M-Instruct, 8 bundled questions in its chat prompt, 32 tokens each
    python bench/gguf_parity.py --quick --out /tmp/b   # a tiny random Llama with SmolLM2's tokenizer: checks the script

Needs llama.cpp's converter (fetched once from the llama-cpp-python sdist) and llama-cpp-python (the gguf extra, `make gguf`).
"""
import sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

TYPES = ("f32", "f16", "bf16", "q8_0")


def model_dir(args) -> tuple[Path, str]:
    "The model folder to convert, and its name: SmolLM2 (the registry's offline copy), or a tiny stand-in with its tokenizer."
    from domaintune_course.models import load_tokenizer, resolve_model
    if not args.quick: return Path(resolve_model("smollm2-135m")), "smollm2-135m"
    from domaintune_course.batching import ensure_pad_token
    from domaintune_course.testing import tiny_causal_lm
    d, tok = benchlib.temp_dir("bench-gguf-"), ensure_pad_token(load_tokenizer("smollm2-135m"))
    model = tiny_causal_lm(tok)
    model.lm_head.weight.data.mul_(100)  # random logits are nearly flat: spread them so greedy choices are not near-ties
    model.save_pretrained(d); tok.save_pretrained(d)
    return d, "tiny random Llama with SmolLM2's tokenizer"


def prompts(folder: Path, n: int) -> list[str]:
    "Every 40th question of the bundled Q&A in the Q&A task's prompt (the chat template), the first `n`."
    from transformers import AutoTokenizer
    from domaintune_course.data import build_prompt, load_task_data
    from domaintune_course.tasks.qa import PROMPT_STYLE
    tok = AutoTokenizer.from_pretrained(folder)
    return [build_prompt("qa", r, tok, PROMPT_STYLE) for r in load_task_data("qa")[::40][:n]]


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES, help="GGUF tensor types to measure")
    p.add_argument("--prompts", type=int, default=None, help="questions (default: 8; --quick: 2)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens compared per question (default: 32; --quick: 8)")
    args = p.parse_args(argv)
    from domaintune_course.gguf import PARITY_THRESHOLDS, converter_dir, gguf_parity, to_gguf
    from domaintune_course.gguf import LlamaCrash
    n, new = args.prompts or (2 if args.quick else 8), args.max_new_tokens or (8 if args.quick else 32)
    folder, name = model_dir(args)
    ask, converter, work = prompts(folder, n), converter_dir(), benchlib.temp_dir("bench-gguf-out-")
    from importlib.metadata import version
    result, refs = dict(benchmark="gguf_parity", **benchlib.header(__file__, argv), quick=args.quick, model=name, prompts=n, max_new_tokens=new,
                        converter=converter.name, llama_cpp_python=version("llama-cpp-python"), thresholds=PARITY_THRESHOLDS, types={}), None
    for t in args.types:
        start = time.time(); f = to_gguf(folder, work / f"model-{t}.gguf", t, converter); convert = time.time() - start
        start = time.time()
        try: r = gguf_parity(folder, f, ask, new, refs)
        except LlamaCrash as e:  # a crash in llama.cpp's native code at this type, on this machine: recorded, the other types go on
            result["types"][t] = dict(size_mb=round(f.stat().st_size / 2**20, 1), convert_seconds=round(convert, 1), crashed=str(e)[:400], meets_threshold=False)
            print(f"{t}: llama.cpp crashed", flush=True); f.unlink(); continue
        refs = r["references"]
        result["types"][t] = dict(size_mb=round(f.stat().st_size / 2**20, 1), convert_seconds=round(convert, 1), parity_seconds=round(time.time() - start, 1),
                                  exact=r["exact"], agreement=r["agreement"], min_agreement=r["min_agreement"], prompt_tokens_match=r["prompt_tokens_match"],
                                  per_prompt=[x["agreement"] for x in r["rows"]], meets_threshold=r["agreement"] >= PARITY_THRESHOLDS[t])
        print(f"{t}: {result['types'][t]}", flush=True); f.unlink()
    print(benchlib.write_result(args.out, "gguf_parity.json", result))
    return result


if __name__ == "__main__": main()
