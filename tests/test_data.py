"Bad input, file layouts, splits and batching for lesson 01 (data.py, batching.py): what the lesson cannot show well."
import json

import pytest

from domaintune_course.config import InputError
from domaintune_course.data import (OUTPUT_FILES, SPLITS, bundled_path, clean_records, fingerprint, label_maps,
                                    load_task_data, prepare_data, split_records)
from domaintune_course.formats import DataError, read_records, read_source
from domaintune_course.sources import load_dialogsum, load_imdb
from domaintune_course.batching import (CompletionCollator, check_packing, ensure_pad_token, tokenize_example, tokenize_records)
from domaintune_course.data import build_example, build_prompt
from domaintune_course.testing import tiny_causal_lm, tiny_tokenizer, toy_qa_rows, toy_reviews, write_jsonl


@pytest.fixture(scope="module")
def tok(): return tiny_tokenizer()


# ---- validation: every error names file, line and field --------------------------------------------------------

def test_broken_json_on_line_3_names_line_3(tmp_path):
    rows = [json.dumps(r) for r in toy_qa_rows(5)]
    rows[2] = rows[2][:-5]
    path = tmp_path / "qa.jsonl"; path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e: read_records(path, "qa")
    assert (e.value.line, e.value.field) == (3, "(record)")
    assert str(e.value).startswith(f"{path}:3: field '(record)': invalid JSON")
    assert "Fix:" in str(e.value)
    with pytest.raises(DataError, match=r"qa\.jsonl:3:"): prepare_data("qa", path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_without_label_column_names_columns_found(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars\nA fine film.,5\nDull.,1\n", encoding="utf-8")
    with pytest.raises(DataError) as e: read_records(path, "classify")
    assert "columns found: review, stars" in str(e.value)
    assert e.value.line == 1 and isinstance(e.value, InputError)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"; path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty"): read_records(path, "qa")
    with pytest.raises(DataError, match="empty"): prepare_data("qa", path, tmp_path / "out")


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nfine film,positive\ncaf\u00e9 scene was dull,negative\n".encode("latin-1"))
    with pytest.raises(DataError) as e: read_records(path, "classify")
    assert (e.value.line, e.value.field) == (3, "(encoding)")
    assert "UTF-8" in str(e.value)


def test_unknown_label(tmp_path):
    path = tmp_path / "kaggle.csv"
    path.write_text('review,sentiment\n"Loved it, truly.",positive\nMeh at best.,neutral\n', encoding="utf-8")
    with pytest.raises(DataError, match="kaggle.csv:3: field 'sentiment': unknown label 'neutral'"): read_records(path, "classify")
    other = write_jsonl([{"text": "a b c", "label": "spam"}, {"text": "d e f", "label": "hma"}], tmp_path / "spam.jsonl")
    with pytest.raises(DataError, match="spam.jsonl:2: field 'label': unknown label 'hma'"):
        read_records(other, "classify", labels=("ham", "spam"))


def test_every_bad_record_is_listed_by_line(tmp_path):
    rows = [{"prompt": "Q1?", "completion": "A1."}, {"prompt": "Q2?"}, {"prompt": "", "completion": "A3."},
            {"prompt": "Q4?", "completion": ["A4"]}, {"prompt": "Q5?", "completion": "A5."}]
    with pytest.raises(DataError) as e: read_records(write_jsonl(rows, tmp_path / "d.jsonl"), "qa")
    assert [(x.line, x.field) for x in e.value.errors] == [(2, "completion"), (3, "prompt"), (4, "completion")]
    assert "missing" in e.value.errors[0].problem and "empty" in e.value.errors[1].problem and "wrong type" in e.value.errors[2].problem
    assert "3 bad records" in str(e.value)


def test_duplicate_ids_with_different_content_are_errors_repeats_are_cleaned(tmp_path):
    rows = [dict(r, id="same") for r in toy_qa_rows(2)]
    with pytest.raises(DataError, match="duplicate id 'same' with different content \\(first on line 1\\)"):
        read_records(write_jsonl(rows, tmp_path / "d.jsonl"), "qa")
    repeated = read_records(write_jsonl(toy_qa_rows(6) + toy_qa_rows(2), tmp_path / "r.jsonl"), "qa")
    cleaned, report = clean_records(repeated, "qa")
    assert len(repeated) == 8 and len(cleaned) == 6 and report["exact_duplicates"] == 2


def test_unsupported_type_and_folder(tmp_path):
    (tmp_path / "qa.txt").write_text("What colour is lamp 1? Red.\n", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type '.txt'.*Fix"): read_records(tmp_path / "qa.txt", "qa")
    with pytest.raises(DataError, match="is a directory"): read_records(tmp_path, "qa")
    with pytest.raises(DataError, match="file not found"): read_records(tmp_path / "nope.jsonl", "qa")


# ---- formats -----------------------------------------------------------------------------------------------------

def test_formats_normalise_to_the_same_records(tmp_path):
    chat = [{"id": "c1", "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "What is A1c?"},
                                      {"role": "assistant", "content": "A blood test."}]}]
    plain = [{"id": "c1", "prompt": "What is A1c?", "completion": "A blood test."}]
    assert read_records(write_jsonl(chat, tmp_path / "chat.jsonl"), "qa") == read_records(write_jsonl(plain, tmp_path / "p.jsonl"), "qa")
    text = read_records(write_jsonl([{"text": "Domain prose for continued pretraining."}], tmp_path / "t.jsonl"), "qa")[0]
    assert text["prompt"] == "" and build_example("qa", text) == ("", "Domain prose for continued pretraining.")


def test_dialogsum_original_release_keeps_three_references(tmp_path):
    d = "#Person1#: Hello, I'd like a room.\n#Person2#: For how many nights?"
    for name, row in (("train", {"fname": "train_1", "dialogue": d, "summary": "#Person1# books a room."}),
                      ("dev", {"fname": "dev_1", "dialogue": d, "summary": "#Person1# asks for a room."}),
                      ("test", {"fname": "test_1", "dialogue": d, "summary1": "S1.", "summary2": "S2.", "summary3": "S3."})):
        write_jsonl([row], tmp_path / f"dialogsum.{name}.jsonl")
    splits = load_dialogsum(tmp_path)
    assert splits["test"][0]["references"] == ["S1.", "S2.", "S3."] and splits["test"][0]["id"] == "test_1"
    assert splits["validation"][0]["summary"] == "#Person1# asks for a room."
    with pytest.raises(InputError, match="missing dialogsum.train.jsonl"): load_dialogsum(tmp_path / "nowhere")


def test_kaggle_imdb_csv_layout(tmp_path):
    import pandas as pd
    rows = [dict(review=f"Film {i} was {'great' if i % 2 else 'awful'}.<br /><br />Truly {i}.", sentiment="positive" if i % 2 else "negative")
            for i in range(40)]
    path = tmp_path / "IMDB Dataset.csv"; pd.DataFrame(rows).to_csv(path, index=False)
    splits = load_imdb(path, seed=3)
    assert [len(splits[k]) for k in SPLITS] == [28, 6, 6]
    assert all({r["label"] for r in splits[k]} == {"negative", "positive"} for k in SPLITS)
    recs = read_records(path, "classify")
    cleaned, _ = clean_records(recs, "classify")
    assert "<br" not in cleaned[0]["text"] and "\n\n" in cleaned[0]["text"]


def test_aclimdb_folder_layout(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            (root / split / lab).mkdir(parents=True)
            for i in range(10): (root / split / lab / f"{i}_{9 if lab == 'pos' else 1}.txt").write_text(f"{lab} review {i}", encoding="utf-8")
    (root / "train" / "unsup").mkdir()
    splits = load_imdb(root, seed=0, validation_fraction=0.2)
    assert [len(splits[k]) for k in SPLITS] == [16, 4, 20]
    assert sorted(r["label"] for r in splits["validation"]) == ["negative", "negative", "positive", "positive"]
    assert not {r["id"] for r in splits["train"]} & {r["id"] for r in splits["validation"]}
    with pytest.raises(InputError, match="missing test/pos"):
        import shutil; shutil.rmtree(root / "test" / "pos"); load_imdb(root)


def test_hub_layouts_convert_like_the_hub_serves_them():
    "The hub loaders' conversion, run on local DatasetDicts with the hub's features (no download)."
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from domaintune_course.formats import dialogsum_records, imdb_records
    feats = Features(text=Value("string"), label=ClassLabel(names=["neg", "pos"]))
    imdb = DatasetDict({s: Dataset.from_dict(dict(text=[f"Bad {s}.<br />Yes.", f"Good {s}."], label=[0, 1]), features=feats)
                        for s in ("train", "test", "unsupervised")})
    recs = imdb_records(imdb)
    assert set(recs) == {"train", "test"}
    assert recs["test"] == [dict(id="test-0", text="Bad test.\nYes.", label="negative"), dict(id="test-1", text="Good test.", label="positive")]
    d = "#Person1#: Hi.\n#Person2#: Hello."
    ds = DatasetDict({s: Dataset.from_dict(dict(id=[f"{s}_1"], dialogue=[d], summary=["They greet."], topic=["greeting"]))
                      for s in ("train", "validation", "test")})
    assert dialogsum_records(ds)["validation"] == [dict(id="validation_1", dialogue=d, summary="They greet.", references=["They greet."])]


def test_hub_sources_say_what_is_missing(monkeypatch):
    import domaintune_course.models as models
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(InputError, match="stanfordnlp/imdb.*not reachable.*aclImdb"): load_imdb()
    with pytest.raises(InputError, match="knkarthick/dialogsum.*not reachable"): load_dialogsum()


# ---- splits and prepare ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [20, 101, 347])
def test_prepare_splits_70_15_15_and_repeat(tmp_path, n):
    path = write_jsonl([dict(id=f"q{i}", prompt=f"Question number {i} about item {i * 7}?",
                             completion=f"The answer to question {i} is {i * 3} units.") for i in range(n)], tmp_path / "d.jsonl")
    first = prepare_data("qa", path, tmp_path / "a", seed=42, near_threshold=1.0)
    prepare_data("qa", path, tmp_path / "b", seed=42, near_threshold=1.0)  # the same file again, into b/
    for k, f in zip(SPLITS, (0.7, 0.15, 0.15)): assert abs(first["splits"][k] - n * f) <= 1, (k, first["splits"])
    for name in OUTPUT_FILES[:4]:
        a, b = (tmp_path / d / name for d in "ab")
        if name == "manifest.json": assert json.loads(a.read_text())["ids"] == json.loads(b.read_text())["ids"]
        else: assert a.read_bytes() == b.read_bytes()
    ids = [json.loads(l)["id"] for k in SPLITS for l in (tmp_path / "a" / f"{k}.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))
    assert prepare_data("qa", path, tmp_path / "c", seed=7)["fingerprint"] == first["fingerprint"]


def test_prepare_never_overwrites_its_input(tmp_path):
    path = write_jsonl(toy_qa_rows(10), tmp_path / "train.jsonl")
    before = path.read_bytes()
    with pytest.raises(InputError, match="overwritten"): prepare_data("qa", path, tmp_path)
    assert path.read_bytes() == before


def test_classify_split_is_stratified_and_seeded():
    recs = toy_reviews(60) + [dict(id=f"x{i}", text=f"Neutral review number {i}.", label="mixed") for i in range(20)]
    splits, manifest = split_records(recs, "classify", seed=5)
    assert [len(splits[k]) for k in SPLITS] == [56, 12, 12]
    for k in SPLITS: assert sum(r["label"] == "mixed" for r in splits[k]) == {"train": 14, "validation": 3, "test": 3}[k]
    assert manifest["label2id"] == label_maps(recs)[0] == {"mixed": 0, "negative": 1, "positive": 2}
    assert split_records(recs[::-1], "classify", seed=5)[1]["ids"] == manifest["ids"]
    assert split_records(recs, "classify", seed=6)[1]["ids"] != manifest["ids"]
    assert manifest["fingerprint"] == fingerprint(recs)


def test_qa_paraphrase_groups_stay_in_one_split():
    recs = load_task_data("qa")
    splits, _ = split_records(recs, "qa", seed=11)
    where = {}
    for k in SPLITS:
        for r in splits[k]: where.setdefault(r["group"], set()).add(k)
    assert all(len(v) == 1 for v in where.values())
    assert any(len([r for r in recs if r["group"] == g]) > 1 for g in where)


def test_bundled_sets_validate_and_are_clean():
    for task in ("qa", "classify", "summarize"):
        if not bundled_path(task).is_file(): continue
        recs = load_task_data(task)
        _, report = clean_records(recs, task)
        assert report["records_out"] == report["records_in"] >= 300, (task, report["records_out"])


# ---- tokenization: eos kept, pad distinct, packing exact ---------------------------------------------------------

def test_eos_survives_tokenization_and_is_in_the_loss():
    tok = tiny_tokenizer(); tok.pad_token = tok.eos_token                  # the common, harmful setting
    assert ensure_pad_token(tok).pad_token_id != tok.eos_token_id
    rows = [dict(id="a", prompt="What colour is lamp 1?", completion="Red."),
            dict(id="b", prompt="What colour is lamp 2 when it is switched on at night?", completion="Lamp 2 glows blue at night.")]
    feats = tokenize_records(tok, "qa", rows, max_length=512)
    batch = CompletionCollator(tok)(feats)
    for row, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["input_ids"][row, n - 1].item() == batch["labels"][row, n - 1].item() == tok.eos_token_id
        assert (batch["labels"][row, n:] == -100).all() and (batch["input_ids"][row, n:] == tok.pad_token_id).all()
    assert (batch["labels"] == tok.eos_token_id).sum().item() == 2
    assert (batch["attention_mask"].sum(1).tolist()) == [len(f["input_ids"]) for f in feats]


def test_eos_not_doubled_and_prompt_masked_with_chat_template(tok):
    rec = toy_qa_rows(1)[0]
    prompt, completion = build_example("qa", rec, tok, style="chat")
    assert prompt == build_prompt("qa", rec, tok, style="chat") and completion.endswith(tok.eos_token)
    ex = tokenize_example(tok, prompt, completion, max_length=512)
    assert ex["input_ids"][-1] == tok.eos_token_id and ex["input_ids"][-2] != tok.eos_token_id
    n_prompt = ex["labels"].count(-100)
    assert tok.decode(ex["input_ids"][:n_prompt]) == prompt and all(l != -100 for l in ex["labels"][n_prompt:])


def test_truncation_keeps_the_answer_and_eos(tok):
    ex = tokenize_example(tok, *build_example("qa", dict(id="x", prompt="lamp " * 400, completion="It is red.")), max_length=120)
    assert len(ex["input_ids"]) == 120 and ex["labels"][-1] == tok.eos_token_id
    assert tok.decode([l for l in ex["labels"] if l != -100]) == "It is red.\n\n### End</s>"


def test_packed_and_unpacked_per_example_losses_agree(tok):
    model = tiny_causal_lm(tok, seed=3)
    feats = tokenize_records(tok, "summarize", [dict(id=f"d{i}", dialogue=f"#Person1#: I want {i} lamps.\n#Person2#: They cost {i} dollars.",
                                                     summary=f"#Person1# buys {i} lamps.") for i in range(1, 5)], max_length=512)
    res = check_packing(model, feats, atol=1e-5)
    assert res["ok"], res["max_diff"]
    assert len(set(round(x, 4) for x in res["alone"])) > 1                 # distinct examples, not one repeated value
    model.config.use_cache = True
    from domaintune_course.batching import make_collator, _token_losses
    batch = make_collator(None, "packed")(feats)
    leaked, _ = _token_losses(model, batch["input_ids"], batch["labels"])  # no position ids: one long sequence
    ok, _ = _token_losses(model, batch["input_ids"], batch["labels"], position_ids=batch["position_ids"])
    assert (leaked - ok).abs().max().item() > 1e-3


@pytest.mark.parametrize("n", [37, 200])
def test_prepare_classify_csv_is_70_15_15_and_stratified(tmp_path, n):
    import pandas as pd
    rows = [dict(review=f"Review {i}: the {['plot', 'cast', 'score'][i % 3]} was {'superb' if i % 3 else 'dreadful'} in scene {i}.",
                 sentiment="positive" if i % 3 else "negative") for i in range(n)]
    path = tmp_path / "reviews.csv"; pd.DataFrame(rows).to_csv(path, index=False)
    report = prepare_data("classify", path, tmp_path / "out", near_threshold=1.0)
    for k, f in zip(SPLITS, (0.7, 0.15, 0.15)): assert abs(report["splits"][k] - n * f) <= 1, report["splits"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["label2id"] == {"negative": 0, "positive": 1}
    for k in SPLITS:
        labels = [json.loads(l)["label"] for l in (tmp_path / "out" / f"{k}.jsonl").read_text().splitlines()]
        assert abs(labels.count("negative") - len(labels) / 3) <= 1.5, (k, labels.count("negative"), len(labels))
    assert prepare_data("classify", path, tmp_path / "again", near_threshold=1.0)["splits"] == report["splits"]


def test_spreadsheet_exports_read_as_they_are_saved(tmp_path):
    "Excel's 'CSV UTF-8' (a byte-order mark, CRLF line ends, capitalised headers, trailing empty rows) reads like a plain CSV."
    rows = "".join(f'"{r["text"]}",{r["label"]}\r\n' for r in toy_reviews(6)) + ",\r\n,\r\n"
    path = tmp_path / "excel.csv"; path.write_bytes(b"\xef\xbb\xbf" + f"Text,Label\r\n{rows}".encode())
    recs, read = read_source(path, "classify")
    assert [(r["text"], r["label"]) for r in recs] == [(r["text"], r["label"]) for r in toy_reviews(6)]
    assert read["columns"] == {"Text": "text", "Label": "label"} and read["rows"] == 6 and read["format"] == "CSV"


def test_excel_separator_line_and_unreadable_file(tmp_path, monkeypatch):
    "Excel's `sep=;` first line sets the separator (line numbers still count it); a file that cannot be read is a DataError, not a traceback."
    path = tmp_path / "sep.csv"; path.write_text("sep=;\nReview;Sentiment\nA lovely film, truly.;pos\nA dull film.;neg\n", encoding="utf-8")
    recs, read = read_source(path, "classify")
    assert [(r["id"], r["label"]) for r in recs] == [("sep-3", "positive"), ("sep-4", "negative")] and read["format"] == "CSV (';'-separated)"
    def denied(self): raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(path), "read_bytes", denied)
    with pytest.raises(DataError, match="cannot be read \\(Permission denied\\).*chmod"): read_records(path, "classify")


# ---- duplicate prompts: one prompt, one split ---------------------------------------------------------------------

def _same(text: str) -> str:
    "A prompt as these tests compare it: lower-cased, punctuation removed, whitespace collapsed (written apart from the library)."
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _split_of(splits: dict, ids) -> set:
    "The splits that hold any of `ids`."
    return {k for k in SPLITS for r in splits[k] if r["id"] in ids}


def test_prompt_key_ignores_case_punctuation_and_spacing():
    from domaintune_course.data import prompt_key
    assert prompt_key("Can I drink coffee?") == prompt_key("  can i drink\n\ncoffee ") == prompt_key("CAN I DRINK COFFEE!!") == "can i drink coffee"
    assert prompt_key("#Person1#: Hi.\n#Person2#: Hello.") == "person1 hi person2 hello"
    assert prompt_key("Can I drink tea?") != prompt_key("Can I drink coffee?") and prompt_key("?!") == ""


def test_duplicate_prompts_join_paraphrase_groups_in_one_split():
    "A question repeated in another paraphrase group pulls both groups into one split, for every seed."
    recs = [dict(id=f"s{i:02d}", prompt=f"Singleton question number {i}?", completion=f"Answer {i}.", group=f"gs{i}") for i in range(40)]
    recs += [dict(id="a1", prompt="What is HbA1c?", completion="A blood test.", group="ga"),
             dict(id="a2", prompt="What does an HbA1c test measure?", completion="Average glucose.", group="ga"),
             dict(id="b1", prompt="Why measure HbA1c twice a year?", completion="To follow control.", group="gb"),
             dict(id="b2", prompt="what is  HBA1C", completion="Glycated haemoglobin.", group="gb"),
             dict(id="c1", prompt="What is HbA1c?", completion="A three-month average.")]
    for seed in range(10):
        splits, _ = split_records(recs, "qa", seed=seed)
        assert len(_split_of(splits, {"a1", "a2", "b1", "b2", "c1"})) == 1, seed
        assert sorted(r["id"] for k in SPLITS for r in splits[k]) == sorted(r["id"] for r in recs)


def test_classify_duplicate_reviews_stay_in_one_split_across_labels():
    "The same review with two labels is one unit even though the split is stratified by label (load_imdb's CSV path splits uncleaned)."
    recs = toy_reviews(60) + [dict(id="dup-1", text="An odd film, I loved it.", label="positive"),
                              dict(id="dup-2", text="an odd film; I loved it", label="negative")]
    for seed in range(10):
        splits, manifest = split_records(recs, "classify", seed=seed)
        assert len(_split_of(splits, {"dup-1", "dup-2"})) == 1, seed
        assert sum(manifest["counts"].values()) == 62


def test_conflicting_labels_are_kept_together_and_reported():
    "Identical reviews with different labels are both kept (the tool cannot know which is right) and named in the report."
    from domaintune_course.data import duplicate_prompts
    recs = toy_reviews(10) + [dict(id="x1", text="Odd film, loved it.", label="positive"), dict(id="x2", text="odd film loved it", label="negative"),
                              dict(id="x3", text="Odd film, loved it!", label="positive")]
    cleaned, report = clean_records(recs, "classify")
    assert [r["id"] for r in cleaned if r["id"].startswith("x")] == ["x1", "x2"] and report["dropped"]["exact_duplicates"] == ["x3"]
    assert (report["duplicate_prompt_groups"], report["duplicate_prompt_records"], report["conflicting_labels"]) == (1, 2, 1)
    assert report["conflicts"] == [["x1", "x2"]] == duplicate_prompts(cleaned, "classify")


@pytest.mark.parametrize("task", ["qa", "classify", "summarize"])
def test_bundled_sets_hold_no_duplicate_prompts(task):
    from domaintune_course.data import duplicate_prompts
    recs = load_task_data(task)
    assert duplicate_prompts(recs, task) == []
    assert len({_same(r[("prompt", "text", "dialogue")[("qa", "classify", "summarize").index(task)]]) for r in recs}) == len(recs)


# sha256 (first 16 hex digits) of each split's ordered ids at seed 42, computed before duplicate prompts were grouped:
# the bundled splits, and the Q&A key facts keyed by the test split's ids, must never move.
BUNDLED_SPLIT_IDS = {
    "qa": dict(train="81057f19f32bf545", validation="d0579216d60831ca", test="f002119ba1b16e31"),
    "classify": dict(train="d8deaf815054f9ee", validation="a18ec26ddd3f06d5", test="3c51d7bfbdb9da16"),
    "summarize": dict(train="fd46a8e3e6d5369d", validation="8f8710c27c624d23", test="ac8ebf8406347a1d")}


@pytest.mark.parametrize("task", ["qa", "classify", "summarize"])
def test_bundled_splits_are_unchanged(task, tmp_path):
    import hashlib
    digest = lambda ids: hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    _, manifest = split_records(load_task_data(task), task, seed=42)
    prepare_data(task, None, tmp_path, seed=42)
    prepared = json.loads((tmp_path / "manifest.json").read_text())
    assert {k: digest(manifest["ids"][k]) for k in SPLITS} == {k: digest(prepared["ids"][k]) for k in SPLITS} == BUNDLED_SPLIT_IDS[task]
    if task == "qa":
        facts = bundled_path("qa").with_name("chronic_care_key_facts.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(l)["id"] for l in facts] == manifest["ids"]["test"]


def test_dialogsum_from_the_hub_keeps_a_repeated_dialogue_in_one_split(tmp_path, monkeypatch):
    "DialogSum from the hub is split as served, without cleaning: a dialogue held twice still lands in one split, and the report counts it."
    from domaintune_course import sources
    rows = [dict(id=f"train_{i}", dialogue=f"#Person1#: I need {i} lamps.\n#Person2#: They cost {3 * i} dollars.", summary=f"#Person1# buys {i} lamps.")
            for i in range(40)]
    rows.append(dict(id="dev_9", dialogue=rows[5]["dialogue"].upper(), summary="Someone buys lamps."))
    monkeypatch.setattr(sources, "load_dialogsum", lambda: dict(train=rows[:30], validation=rows[30:], test=[]))
    reports = [sources.prepare_hub("dialogsum", tmp_path / str(seed), seed) for seed in range(8)]
    held = [[k for k in SPLITS for l in (tmp_path / str(seed) / f"{k}.jsonl").read_text().splitlines() if json.loads(l)["id"] in ("train_5", "dev_9")]
            for seed in range(8)]
    assert all(len(h) == 2 and len(set(h)) == 1 for h in held), held
    assert all((r["duplicate_prompt_groups"], r["duplicate_prompt_records"]) == (1, 2) for r in reports)
