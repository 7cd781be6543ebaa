"""The hallucination checks of lesson 05b on hand-made cases: what they flag, what they let pass, and their errors."""
import json
import pytest
from domaintune_course.config import InputError
from domaintune_course.data import load_task_data
from domaintune_course.hallucination import (check_fact, content_words, fact_rates, faithfulness, load_key_facts, names, numbers,
                                             remedy_table, unsupported)

DIALOGUE = ("#Person1#: Hello, I'd like to book a table for two at seven on Friday.\n"
            "#Person2#: Certainly, Mr. Smith. Two people at 7 pm on Friday. That's a $25 deposit, 1,500 points on your card.")


def test_numbers_reads_digits_and_number_words_but_not_speaker_tags():
    assert numbers("#Person1# pays $1,500 for two tickets and 3.5 hours.") == {"1500", "2", "3.5"}
    assert numbers("one of them, twice a dozen") == {"2", "12"}  # "one" is mostly a pronoun: not read as a number
    assert numbers("#Person2# agrees.") == set()


def test_names_are_tags_and_capitalised_words_that_do_not_start_a_sentence():
    assert names("Tom's sister visits Paris. She likes it.") == {"paris"}  # sentence-initial words are not names
    assert names("#Person1# tells #Person3# that Anna's car is red.") == {"#person1#", "#person3#", "anna"}
    assert names("#Person1# says I'm fine, OK?") == {"#person1#"}


def test_a_faithful_summary_has_no_findings():
    found = unsupported("#Person1# books a table for two at seven on Friday, with a deposit.", DIALOGUE)
    assert found == dict(numbers=[], names=[], words=[], word_share=0.0)


def test_invented_numbers_names_and_words_are_each_flagged():
    found = unsupported("#Person1# and Anna book a table for four on Saturday with #Person3#, paying 30 dollars by cheque.", DIALOGUE)
    assert found["numbers"] == ["30", "4"]
    assert found["names"] == ["#person3#", "anna", "saturday"]
    assert "chequ" in found["words"] and 0 < found["word_share"] <= 1


def test_a_name_is_supported_whatever_its_case_in_the_dialogue():
    assert unsupported("#Person2# greets smith.", DIALOGUE)["names"] == []
    assert unsupported("Then #Person2# greets Smith.", DIALOGUE)["names"] == []


def test_content_words_leave_out_stop_words_reporting_words_and_numbers():
    assert content_words("#Person1# asks #Person2# about the 3 tickets.") == {"ticket"}


def test_faithfulness_rates_with_intervals():
    summaries = ["#Person1# books a table for two.", "#Person1# books a table for nine.", "#Person3# books a table."]
    r = faithfulness(summaries, [DIALOGUE] * 3, seed=0)
    assert r["n"] == 3 and r["number"]["rate"] == pytest.approx(1 / 3, abs=1e-4) and r["name"]["rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["unfaithful"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["unfaithful"]["low"] <= r["unfaithful"]["rate"] <= r["unfaithful"]["high"]
    assert [bool(f["numbers"]) for f in r["found"]] == [False, True, False]


def test_faithfulness_refuses_mismatched_lists():
    with pytest.raises(InputError, match="2 summaries for 1 dialogues"): faithfulness(["a", "b"], [DIALOGUE])


def test_every_bundled_reference_answer_states_its_key_fact():
    facts, by_id = load_key_facts(), {r["id"]: r for r in load_task_data("qa")}
    assert len(facts) == 52 and set(facts) <= set(by_id)
    assert {check_fact(by_id[i]["completion"], f) for i, f in facts.items()} == {"supported"}


def test_a_contradiction_outranks_a_match():
    fact = load_key_facts()["cc-0211"]  # Can kidney disease be slowed down? Yes.
    assert check_fact("No. Kidney disease cannot be slowed, whatever you do with blood pressure.", fact) == "contradicted"
    assert check_fact("YES, often considerably.", fact) == "supported"
    assert check_fact("Ask your doctor.", fact) == "missing"


def test_fact_rates_skip_records_without_a_fact_and_refuse_when_none_has_one():
    facts = load_key_facts()
    recs = [dict(id="cc-0211"), dict(id="not-labelled"), dict(id="cc-0186")]
    r = fact_rates(["Yes, it can be slowed.", "anything", "It is caused by too much sugar."], recs, facts, seed=0)
    assert r["n"] == 2 and r["verdicts"] == ["supported", "missing"] and r["supported"] == 0.5 and r["contradicted"] == 0.0
    with pytest.raises(InputError, match="key fact"): fact_rates(["x"], [dict(id="nope")], facts)


@pytest.mark.parametrize("line, field", [("{not json", "JSONDecodeError"), ('{"id": "a", "fact": "f", "supports": ["("], "contradicts": []}', "error"),
                                         ('{"id": "a", "fact": "f"}', "KeyError")])
def test_a_bad_key_fact_line_names_the_file_the_line_and_the_fix(tmp_path, line, field):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(dict(id="ok", fact="f", supports=["x"], contradicts=[])) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"facts.jsonl:2: \w*{field}.*Fix: each line"): load_key_facts(path)


def test_remedy_table_marks_what_does_not_apply():
    qa_rates = {"base + retrieval": dict(supported=0.5, contradicted=0.1), "fine-tuned": dict(supported=0.6, contradicted=0.0)}
    sums = {"fine-tuned": dict(unfaithful=dict(rate=0.2), word_share=dict(rate=0.3))}
    t = remedy_table(qa_rates, sums)
    assert t.loc["fine-tuned", "remedy"] == "fine-tuning" and t.loc["base + retrieval", "summaries: unsupported number or name"] == "-"
    assert t.loc["fine-tuned", "summaries: unsupported number or name"] == 0.2
