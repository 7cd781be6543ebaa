"""`domaintune serve`: the official openai client against a server started on loopback, on a tiny Q&A run.

Answers match `domaintune generate`; streams add up to the whole answer; eight concurrent requests are all answered;
malformed requests get 4xx JSON errors and the server keeps serving; it binds to loopback unless told otherwise.
"""
import json, socket
from concurrent.futures import ThreadPoolExecutor
import pytest

pytest.importorskip("fastapi", reason="domaintune serve needs the serve extra: pip install 'domaintune-course[serve]'")
openai = pytest.importorskip("openai", reason="the tests call the server with the official openai client (dev extra)")
import httpx
from domaintune_course.cli import main
from domaintune_course.config import make_config
from domaintune_course.data import END_MARKER, build_prompt
from domaintune_course.server import Answer, build_app, load_run, start_server
from domaintune_course.tasks import classify, qa
from domaintune_course.testing import tiny_model_dir, tiny_tokenizer, toy_qa_rows, toy_reviews, write_jsonl

QUESTIONS = [f"What colour is lamp number {i}?" for i in range(8)]


def finished_run(cfg, runs_dir, name, task_module):
    "Train `cfg` into a new run directory the way `domaintune train` lays it out."
    from domaintune_course import jobs
    d = jobs.create_run(cfg, name, runs_dir); jobs.save_config(d, cfg)
    with jobs.track(d): task_module.train(cfg, d)
    return d


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A tiny Q&A run (LoRA, 2 steps) in its own runs directory."
    root = tmp_path_factory.mktemp("serve")
    cfg = make_config("qa", "smoke", model=str(tiny_model_dir("causal", root / "tiny")), data=str(write_jsonl(toy_qa_rows(30), root / "lamps.jsonl")),
                      strategy="lora", max_steps=2, batch_size=4, max_length=64, eval_steps=1, eval_limit=2, lora_r=4)
    return finished_run(cfg, root / "runs", "lamps", qa)


@pytest.fixture(scope="module")
def server(run):
    "`domaintune serve --run lamps` in a child process, on a free loopback port."
    with start_server("lamps", runs_dir=run.parent) as s: yield s


@pytest.fixture(scope="module")
def client(server): return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def ask(client, question, **kw):
    return client.chat.completions.create(model="lamps", messages=[{"role": "user", "content": question}], temperature=0, **kw)


def test_it_lists_the_run_and_listens_on_loopback_only(server, client):
    import psutil
    assert [m.id for m in client.models.list()] == ["lamps"]
    listening = [c.laddr for c in psutil.Process(server.process.pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening


def test_chat_answers_match_domaintune_generate(run, client, capsys):
    for q in QUESTIONS[:3]:
        reply = ask(client, q)
        assert main(["--runs-dir", str(run.parent), "generate", "--run", "lamps", q]) == 0
        assert reply.choices[0].message.content == capsys.readouterr().out.rstrip("\n")
        assert reply.usage.completion_tokens > 0 and reply.choices[0].finish_reason in ("stop", "length")


def test_completions_on_the_runs_prompt_match_chat(run, client):
    from domaintune_course.qlora import load_finetuned
    _, tok = load_finetuned(run)
    prompt = build_prompt("qa", {"prompt": QUESTIONS[0]}, tok, qa.PROMPT_STYLE)
    done = client.completions.create(model="lamps", prompt=prompt, temperature=0)
    assert done.choices[0].text == ask(client, QUESTIONS[0]).choices[0].message.content


def test_streams_add_up_to_the_whole_answer(client):
    whole = ask(client, QUESTIONS[1])
    chunks = list(ask(client, QUESTIONS[1], stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model="lamps", prompt="Lamp 3 glows", temperature=0, max_tokens=8)
    pieces = client.completions.create(model="lamps", prompt="Lamp 3 glows", temperature=0, max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in pieces) == text.choices[0].text


def test_eight_concurrent_requests_are_all_answered(client):
    alone = [ask(client, q, max_tokens=12).choices[0].message.content for q in QUESTIONS]
    with ThreadPoolExecutor(8) as pool: together = list(pool.map(lambda q: ask(client, q, max_tokens=12).choices[0].message.content, QUESTIONS))
    assert together == alone and len(together) == 8


def test_stop_strings_and_the_token_budget(client):
    full = ask(client, QUESTIONS[2], max_tokens=16)
    short = ask(client, QUESTIONS[2], max_tokens=2)
    assert short.usage.completion_tokens == 2 and short.choices[0].finish_reason == "length"
    word = full.choices[0].message.content.split()[1] if len(full.choices[0].message.content.split()) > 1 else None
    if word:
        cut = ask(client, QUESTIONS[2], max_tokens=16, stop=[word])
        assert word not in cut.choices[0].message.content and full.choices[0].message.content.startswith(cut.choices[0].message.content)


BAD = [  # (body, status, the field or words the error must name)
    ({"model": "lamps", "messages": []}, 400, "messages"),
    ({"model": "lamps"}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "lamps", "messages": "What colour is lamp 1?"}, 400, "messages"),
    ({"model": "lamps", "messages": [{"role": "user", "content": 42}]}, 400, "content"),
    ({"model": "lamps", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}, 400, "temperature"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}, 400, "single"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "lamp " * 600}]}, 400, "context_length_exceeded"),
    ({"model": "lamps", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, 400, "context_length_exceeded"),
]


def test_malformed_requests_get_4xx_json_errors_and_the_server_keeps_serving(server, client):
    before = ask(client, QUESTIONS[0]).choices[0].message.content
    for body, status, names in BAD:
        r = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert names in json.dumps(r.json()["error"]), (body, r.text)
    r = httpx.post(f"{server.url}/chat/completions", content=b'{"model": "lamps", "messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    assert httpx.post(f"{server.url}/completions", json={"model": "lamps", "prompt": 7}).status_code == 400
    assert httpx.get(f"{server.url}/no-such-route").status_code == 404
    with pytest.raises(openai.BadRequestError) as e: ask(client, "lamp " * 600)
    assert e.value.code == "context_length_exceeded"
    assert server.process.poll() is None and ask(client, QUESTIONS[0]).choices[0].message.content == before


# ---------------------------------------------------------------- in-process: the same app, without a socket

@pytest.fixture(scope="module")
def served(run): return load_run(run)


def test_an_api_key_is_required_when_set(served):
    from fastapi.testclient import TestClient
    http = TestClient(build_app(served, api_key="s3cret"))
    body = {"model": "lamps", "messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 4}
    assert http.post("/v1/chat/completions", json=body).status_code == 401
    assert http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"
    assert http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert http.get("/health").status_code == 200 and http.get("/v1/models").status_code == 401, "only the health check is open"


def test_sampling_with_a_seed_repeats(served):
    from fastapi.testclient import TestClient
    http = TestClient(build_app(served))
    body = {"model": "lamps", "messages": [{"role": "user", "content": QUESTIONS[3]}], "max_tokens": 12, "temperature": 1.0, "seed": 7}
    first, second = (http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] for _ in range(2))
    assert first == second


def test_a_merged_adapter_answers_as_generate_does(run):
    from fastapi.testclient import TestClient
    merged = load_run(run, merge=True)
    assert not hasattr(merged.model, "disable_adapter"), "the adapter must be merged into the weights"
    http = TestClient(build_app(merged))
    got = http.post("/v1/chat/completions", json={"model": "lamps", "messages": [{"role": "user", "content": QUESTIONS[4]}], "temperature": 0}).json()
    assert got["choices"][0]["message"]["content"] == qa.generate(run, [QUESTIONS[4]])[0]


def test_a_classify_run_answers_with_its_label(tmp_path):
    from fastapi.testclient import TestClient
    cfg = make_config("classify", "smoke", model=str(tiny_model_dir("encoder", tmp_path / "enc")), data=str(write_jsonl(toy_reviews(40), tmp_path / "r.jsonl")),
                      max_steps=2, eval_limit=4)
    run = finished_run(cfg, tmp_path / "runs", "reviews", classify)
    http = TestClient(build_app(load_run(run)))
    text = "A wonderful, moving film with a lovely score."
    got = http.post("/v1/chat/completions", json={"model": "reviews", "messages": [{"role": "user", "content": text}]}).json()
    assert got["choices"][0]["message"]["content"] == classify.generate(run, [text])[0]
    streamed = http.post("/v1/chat/completions", json={"model": "reviews", "messages": [{"role": "user", "content": text}], "stream": True}).text
    assert got["choices"][0]["message"]["content"] in streamed and streamed.rstrip().endswith("data: [DONE]")
    system = http.post("/v1/chat/completions", json={"model": "reviews", "messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": text}]})
    assert system.status_code == 400 and "classifier" in system.json()["error"]["message"]


# ---------------------------------------------------------------- the command line and the stream's hold-back

def test_serve_refuses_what_it_cannot_serve(run, tmp_path, capsys):
    assert main(["--runs-dir", str(run.parent), "serve", "--run", "no-such-run"]) == 2
    (run.parent / "unfinished").mkdir(); (run.parent / "unfinished" / "status.json").write_text('{"status": "failed"}')
    assert main(["--runs-dir", str(run.parent), "serve", "--run", "unfinished"]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0)); busy.listen()
        assert main(["--runs-dir", str(run.parent), "serve", "--run", "lamps", "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "choose another --port" in err and "no trained model" in err


def test_a_stream_never_sends_what_a_stop_string_could_take_back():
    tok = tiny_tokenizer()
    pieces = ["Lamp 3 glows", " amber", ".\n\n", "###", " En", "d", " more"]
    ids = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    a = Answer(tok, [END_MARKER, tok.eos_token], max_tokens=len(ids))
    sent = [a.add(i) for i in ids]
    assert "#" not in "".join(sent) and "".join(sent) + a.finish() == "Lamp 3 glows amber." == a.text
    assert a.finish_reason == "stop"
