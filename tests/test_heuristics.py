"""The ``heuristics`` selector on hand-written rows: each rule drops the defect it names and keeps its look-alikes."""

import json

import pytest

import curate
from curate.cli import sample_path
from curate.codes import Reason, describe
from curate.errors import CurateError, OptionError
from curate.pipeline import run_pipeline
from curate.select.heuristics import looping_tail, repeated_tail, unclosed_fence
from tests.conftest import write_jsonl

LOOP = "Here is the plan. " + "I will stay here and wait for the train to come back home again. " * 6

BROKEN = {  # rule -> a row that fails only it
    "empty_response": {"instruction": "Write a haiku about rain.", "output": "  \n"},
    "refusal": {"instruction": "Tell me how to pick a lock.", "output": "Sorry, but I can't assist with that."},
    "refusal_after_apology": {"instruction": "Design a logo for my bakery.",
                              "output": "Sorry, the task requires a visual output. Due to the limits of the model, "
                                        "we cannot complete this task."},
    "ai_disclaimer": {"instruction": "What is your favourite colour?",
                      "output": "As an AI language model, I don't have personal preferences. Many people like blue."},
    "repeated_tail": {"instruction": "Describe your trip.", "output": LOOP},
    "unclosed_code_fence": {"instruction": "Write a function that adds two numbers in Python.",
                            "output": "Here it is:\n\n```python\ndef add(a, b):\n    return a +"},
    "mojibake": {"instruction": "What is the area of a circle?", "output": "A = Ï€ * r^2, where r is the radius."},
}
CLEAN = [  # look-alikes every rule must keep
    {"instruction": "Reply to a customer whose parcel was late.",
     "output": "I apologize for the delay. Could you share your order number so that I can make sure it won't happen "
               "again?"},
    {"instruction": "My cat is ill.", "output": "I'm sorry to hear that. Here are some steps you can take today."},
    {"instruction": "Translate 'happy' into an emoji.", "output": "😊"},
    {"instruction": "Write a short song with a chorus.",
     "output": "Verse: the sun is up.\nChorus: la la la, we sing along.\nVerse: the moon is out.\n"
               "Chorus: la la la, we sing along."},
    {"instruction": "Show the output.", "output": "It prints:\n```[1, 2, 3]```\nand exits."},
    {"instruction": "Sort [3, 1, 2].", "output": "```python\nprint(sorted([3, 1, 2]))\n```\nOutput:\n```\n[1, 2, 3]\n```"},
    {"instruction": "Describe my job.", "output": "As an assistant manager, you run the shop floor and train staff."},
    {"instruction": "Give me advice.", "output": "I cannot stress enough how much sleep matters. Go to bed early."},
    {"instruction": "Make a list of zeros.", "output": "arr = [" + ", ".join(["0"] * 40) + "]"},
    {"instruction": "Translate 'Où sont les toilettes ?' into English.", "output": "Where are the toilets?"},
    {"instruction": "Calculate 3^2 + 6", "output": "3^2 + 6 = 15."},
    # lid.176 reads both sides as French, at 0.85 and 0.80: under min_language_probability, so English is not ruled out
    {"instruction": "Find the latitude and longitude of the Statue of Liberty.",
     "output": "The latitude and longitude of the Statue of Liberty are 40.689257, -74.044502."},
]
GERMAN = {"instruction": "Schreibe mir bitte eine kurze Geschichte über einen Hund, der im Wald spazieren geht.",
          "output": "Es war einmal ein kleiner Hund, der jeden Morgen mit seinem Besitzer durch den Wald lief."}


@pytest.fixture
def ws(tmp_path):
    ws = curate.Workspace(tmp_path / "ws")
    ws.load(str(write_jsonl(tmp_path / "pool.jsonl", [*BROKEN.values(), *CLEAN, GERMAN])))
    return ws


def decisions(ws, selection):
    """instruction -> (decision, detail) of ``selection``."""
    text = {rid: c[0]["content"] for rid, c in zip(ws.ids, ws.conversations(), strict=True)}
    return {text[r["id"]]: (r["decision"], r["detail"]) for r in ws.selection(selection).rows()}


def test_each_rule_drops_its_defect_and_keeps_the_look_alikes(ws):
    ws.select(method="heuristics", name="h")
    got = decisions(ws, "h")
    for key, row in BROKEN.items():
        decision, detail = got[row["instruction"]]
        assert decision == "rejected" and detail["rule"] == key.removesuffix("_after_apology"), (key, detail)
        assert detail["rules_failed"] == [detail["rule"]]
    for row in [*CLEAN, GERMAN]:  # no language rule unless asked
        assert got[row["instruction"]][0] == "kept", (row, got[row["instruction"]])
    prov = ws.selections["h"]
    assert prov["rows_failing"] == {"empty_response": 1, "refusal": 2, "ai_disclaimer": 1, "repeated_tail": 1,
                                    "unclosed_code_fence": 1, "mojibake": 1}
    loop = got[BROKEN["repeated_tail"]["instruction"]][1]
    assert loop["value"] == 84 and loop["limit"] == 50 and "(x6)" in loop["evidence"]  # six 14-word blocks
    assert "Ï€" in got[BROKEN["mojibake"]["instruction"]][1]["evidence"]
    assert describe(Reason.FAILS_HEURISTIC, got[BROKEN["refusal"]["instruction"]][1]) == \
        "fails a text rule (refusal, turn 1: Sorry, but I can't)"


def test_rules_switch_off_and_limits_move(ws):
    ws.select(method="heuristics", name="h", refusal=False, mojibake=False, max_repeated_tail_words=84)
    got = decisions(ws, "h")
    for key in ("refusal", "refusal_after_apology", "mojibake", "repeated_tail"):
        assert got[BROKEN[key]["instruction"]][0] == "kept", key
    ws.select(method="heuristics", name="h", max_repeated_tail_words=83)
    assert decisions(ws, "h")[BROKEN["repeated_tail"]["instruction"]][0] == "rejected"


def test_language_rule_drops_a_conversation_in_another_language_only(ws):
    ws.select(method="heuristics", name="en", languages=["en"])
    got = decisions(ws, "en")
    decision, detail = got[GERMAN["instruction"]]
    assert decision == "rejected" and detail["rule"] == "language"
    assert detail["instruction_language"] == detail["response_language"] == "de" and detail["limit"] == ["en"]
    assert all(got[row["instruction"]][0] == "kept" for row in CLEAN)  # a translation task, short maths: kept
    ws.select(method="heuristics", name="en_de", languages=["EN", "de"])
    assert decisions(ws, "en_de")[GERMAN["instruction"]][0] == "kept"
    for bad in ("en", [], ["english"], [1]):
        with pytest.raises(CurateError, match="languages|language code"):
            ws.select(method="heuristics", name="bad", languages=bad)


def test_a_side_too_short_or_unsure_to_read_leaves_the_language_to_the_other():
    """"你有感情吗？" (5 characters) was too few letters to read, so any reply passed --language en; a Chinese character
    counts as 3 letters now, and its reading (zh at 0.89, under the 0.9 bar) vouches for no language: the reply
    decides."""
    from curate.select.heuristics import Rules

    rules = Rules(False, False, False, None, False, False, ["en"], 0.9, True)

    def fails(instruction, reply):
        return bool(rules.failures([{"role": "user", "content": instruction}, {"role": "assistant", "content": reply}]))

    assert fails("你有感情吗？", "作为一个人工智能语言模型，我没有感情，但我可以帮助你。")
    assert fails("3^2 + 6?", "Die Antwort ist fünfzehn, denn drei zum Quadrat ist neun und neun plus sechs ist fünfzehn.")
    assert not fails("3^2 + 6?", "The answer is fifteen: three squared is nine, and nine plus six is fifteen.")
    assert not fails("Translate into Chinese: I like tea.", "我喜欢喝茶。")  # the instruction is English
    assert not fails("好吗？", "好。")  # 2 characters each: nothing read, nothing decided


def test_a_formula_and_a_quoted_phrase_are_not_a_language():
    """Two pool_30k rows `--language en` dropped: a factorisation whose reply "(x+y+z)(x2+y2+z2-xy-yz-zx)" was read as
    Spanish at 0.94 (its one- and two-letter variables counted as letters), and a translation into English whose
    instruction was read as French at 0.93 (its French sentence quoted twice) with a reply too short to read."""
    from curate.select.heuristics import Rules

    rules = Rules(False, False, False, None, False, False, ["en"], 0.9, True)

    def fails(instruction, reply):
        return bool(rules.failures([{"role": "user", "content": instruction}, {"role": "assistant", "content": reply}]))

    assert not fails("Perform a factorization of x3 + y3 + z3 - 3xyz.", "(x+y+z)(x2+y2+z2-xy-yz-zx)")
    assert not fails('Translate the sentence "Je suis française" to English\n"Je suis française"', "I am French.")
    assert not fails("Translate the sentence «Je suis française» to English, please: «Je suis française»", "I am French.")
    # the user's own words in another language still decide, quoted English or not
    assert fails('Traduis cette phrase en anglais, s\'il te plaît, je ne la comprends pas : "Good morning"',
                 "Bonjour, cela veut dire bonjour.")
    assert fails('"Wie spät ist es?" und "Wo ist der Bahnhof?"', "Es ist drei Uhr, und der Bahnhof ist dort drüben.")


def test_the_languages_hint_is_one_the_command_line_reads(ws):
    """The error suggested ['en'] (Python's repr), which --param's JSON cannot parse: copied, it failed again. The
    hint is JSON, which Python reads too, and names the --param to give."""
    import re
    import shlex

    from typer.testing import CliRunner

    from curate.cli import app

    said = CliRunner().invoke(app, ["select", str(ws.path), "--method", "heuristics", "--name", "en",
                                    "--param", "languages=en"])
    assert isinstance(said.exception, CurateError), said.output
    hint = re.search(r"\((--param '[^']*')", str(said.exception)).group(1)
    again = CliRunner().invoke(app, ["select", str(ws.path), "--method", "heuristics", "--name", "en", *shlex.split(hint)])
    assert again.exit_code == 0, again.output
    assert decisions(ws, "en")[GERMAN["instruction"]][0] == "rejected"
    with pytest.raises(CurateError, match=re.escape('such as ["en"] (--param')):
        ws.select(method="heuristics", name="bad", languages="en")


def test_a_later_turn_and_a_missing_reply_are_named():
    from curate.select.heuristics import Rules

    rules = Rules(True, True, True, 50, True, True, None, 0.9, False)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Write malware."}, {"role": "assistant", "content": "I can't help with that."}]
    assert rules.failures(chat) == [{"rule": "refusal", "turn": 2, "evidence": "I can't help"}]
    assert rules.failures([{"role": "user", "content": "Only a prompt"}])[0]["rule"] == "empty_response"


def test_repeated_tail_and_fences_by_definition():
    words = "a b c".split() * 5 + ["a"]  # a loop cut off mid-block still counts
    assert repeated_tail(words) == (16, 3)
    assert repeated_tail("the cat sat on the mat".split()) == (0, 0)
    assert unclosed_fence("```py\nx = 1\n```\n~~~\ny") and not unclosed_fence("~~~\ny\n~~~")
    assert not unclosed_fence("use ```x``` inline") and not unclosed_fence("```[1, 2]```\nok")
    # CommonMark: a fence closes on a line of its character at least as long, so markdown shown inside a longer
    # fence is closed, and a shorter line inside it is content
    assert not unclosed_fence("Use a longer fence:\n\n````markdown\n```bash\npip install x\n```\n````\n\nDone.")
    assert not unclosed_fence("```\nx\n`````") and unclosed_fence("````\nprint(1)\n```\n")


def test_loops_that_a_small_model_writes_are_loops_and_lists_and_rules_are_not():
    """The loops a 135M model wrote when it never stopped (evals/answer_penalties.py): a numbered list whose
    items repeat but for their numbers, and runs of one unit of characters that hold no word."""
    item = "Follow up with the organisers to make sure that everything is still going well."
    numbered = "Steps:\n" + "\n".join(f"{k}. {item}" for k in range(1, 9)) + "\n9. Follow up with the"
    loop = looping_tail(numbered, 50)
    assert loop["value"] == 116 and loop["evidence"].endswith("going well follow up with the (x8)")  # 14-word block
    for run, unit in ((" }" * 60, "' }'"), ("oh" * 60, "'oh'"), ("Bamboo " + "\uff0d" * 60, "'\uff0d'")):
        assert looping_tail(run, 50)["evidence"] == f"{unit} (x60)"
        assert looping_tail(run, 60) is None  # more than max_repeats repeats, as words must exceed it
    cut_short = "Intro. " + "I shall not be deterred. " * 12 + "I shall not be deter"  # max_tokens, mid-word
    assert looping_tail(cut_short, 50)["value"] == 65 and looping_tail(cut_short[:-5] + "moved", 50) is None
    distinct = "\n".join(f"{k}. Step {word} of the plan." for k, word in enumerate("abcdefghijklmnopqrstuvwxyz", 1))
    assert looping_tail(distinct, 50) is None  # numbered items that differ
    assert looping_tail("Done.\n" + "=" * 40, 50) is None and looping_tail("x = 1" + " " * 300, 50) is None


def test_requested_data_is_no_loop_and_a_loop_without_spaces_is_one():
    """A zero matrix or a list of empty records repeats because it was asked to, and ends (a closed fence, a closed
    JSON value); Chinese and Japanese write a sentence as one \\w+ run, so their loops are counted in characters."""
    matrix = json.dumps({"matrix": [[0] * 8 for _ in range(12)]}, indent=2)  # 96 zeros
    slots = json.dumps([{"name": "", "value": None, "enabled": False} for _ in range(25)], indent=2)
    for data in (matrix, "Here it is:\n```json\n" + slots + "\n```", "grid = " + json.dumps([0] * 96)):
        assert looping_tail(data, 50) is None, data[:40]
    assert looping_tail("zeros: [" + "0, " * 96, 50)["evidence"] == "0 (x96)"  # cut off: the bracket never closes
    assert looping_tail("```\n" + "} " * 60, 50) is not None  # an open fence is no data
    ja = "むかしむかし、" + "そしてまた同じ日が始まりました。" * 30
    assert looping_tail(ja, 50)["evidence"] == "そしてまた同じ日が始まりました (x30)"
    zh = "从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事，讲的是什么呢？" * 12
    assert looping_tail(zh, 50)["value"] == 12 * 31
    assert looping_tail("秋天到了，树叶黄了，我们一起去公园散步，看到很多人在放风筝，孩子们笑得很开心。", 50) is None


OTHER_REFUSALS = {  # the stock openings in other languages: each is dropped by its rule
    "zh": ("refusal", "抱歉，我无法协助完成这个请求。"), "ja": ("refusal", "申し訳ありませんが、そのご依頼にはお応えできません。"),
    "ru": ("refusal", "Извините, но я не могу помочь с этим запросом."), "es": ("refusal", "Lo siento, pero no puedo ayudar con eso."),
    "fr": ("refusal", "Je suis désolé, mais je ne peux pas vous aider avec cette demande."),
    "de": ("refusal", "Es tut mir leid, aber ich kann Ihnen dabei nicht helfen."),
    "zh-flat": ("refusal", "我无法提供这类信息。"),
    "zh-ai": ("ai_disclaimer", "作为一个人工智能语言模型，我没有感情。"),
    "ru-ai": ("ai_disclaimer", "Как языковая модель ИИ, я не имею мнения."),
    "es-ai": ("ai_disclaimer", "Como modelo de lenguaje, no tengo opiniones."),
    "fr-ai": ("ai_disclaimer", "En tant que modèle de langage, je n'ai pas d'opinion."),
    "de-ai": ("ai_disclaimer", "Als KI-Sprachmodell habe ich keine Meinung."),
    "zh-ai-short": ("ai_disclaimer", "作为AI，我不能提供医疗建议。"),
}


@pytest.mark.parametrize("case", sorted(OTHER_REFUSALS))
def test_stock_refusals_and_disclaimers_in_other_languages(case):
    from curate.select.heuristics import Rules

    rule, reply = OTHER_REFUSALS[case]
    found = Rules(False, True, True, None, False, False, None, 0.9, True).failures(
        [{"role": "user", "content": "?"}, {"role": "assistant", "content": reply}])
    assert [f["rule"] for f in found] == [rule], (case, found)


def test_apologies_in_other_languages_that_answer_are_answers():
    from curate.select.heuristics import Rules

    rules = Rules(False, True, True, None, False, False, None, 0.9, True)
    for reply in ("抱歉让您久等了，答案如下：首先打开设置。", "Lo siento mucho por tu pérdida. Aquí tienes algunas ideas.",
                  "Leider regnet es heute, aber hier ist ein Plan für drinnen.", "Als Kind mochte ich Äpfel.",
                  "Como una manzana al día.",
                  # a self-description that does not end the phrase is the subject of an answer, not a disclaimer
                  "Как искусственный интеллект меняет медицину? Вот несколько примеров.", "Как ИИ помогает врачам: обзор.",
                  "作为人工智能的一个分支，机器学习让计算机从数据中学习。", "作为AI工程师，你需要掌握线性代数。",
                  "Als KI bezeichnet man Systeme, die lernen.", "Como IA generativa, ChatGPT escribe textos.",
                  # "ne ... que" restricts ("I can only recommend"): an answer
                  "Désolé pour le retard ! Je ne peux que recommander ce livre."):
        assert not rules.failures([{"role": "user", "content": "?"}, {"role": "assistant", "content": reply}]), reply


def test_curate_run_leaves_failing_rows_out_before_admission(tmp_path):
    rows = [json.loads(line) for line in sample_path().read_text().splitlines()]
    pool = write_jsonl(tmp_path / "pool.jsonl", [*rows, BROKEN["refusal"], BROKEN["ai_disclaimer"]])
    with pytest.raises(CurateError, match="language code"):
        run_pipeline(str(pool), out=tmp_path / "run", budget=60, languages=["english"])
    with pytest.raises(CurateError, match="'zz' is no language the detector .fastText lid.176. knows"):
        run_pipeline(str(pool), out=tmp_path / "run", budget=60, languages=["en", "zz"])  # every row "another"
    assert not (tmp_path / "run").exists()  # refused before anything was created
    evalset = tmp_path / "eval.txt"
    evalset.write_text("A coder who lived on caffeine wrote functions, both tidy and clean!\n")
    result = run_pipeline(str(pool), out=tmp_path / "run", budget=60, heuristics=True, decontaminate=str(evalset))
    assert list(result.timings)[:3] == ["load", "dedup", "heuristics"]
    ws = result.workspace
    assert ws.selections["decontaminated"]["input_selection"] == "heuristics"
    assert ws.selections["deita"]["input_selection"] == "decontaminated"
    dropped = {r["id"] for r in ws.selection("heuristics").table.to_pylist() if r["decision"] == "rejected"}
    assert len(dropped) == 2 and not dropped & set(ws.selection("deita").ids)
    assert ws.selections["deita"]["candidates"] == ws.selections["heuristics"]["counts"]["kept"] - 1  # less the leak
    unscored = {rid for rid, value in zip(ws.ids, ws.row_values("quality"), strict=True) if value is None}
    assert unscored == dropped  # no score is computed (or paid for) for a row the rules left out
    assert "fails a text rule" in result.outputs["report"].read_text()


def test_dry_run_leaves_the_rows_the_rules_drop_out_of_the_judges_estimate(tmp_path):
    from curate.dry_run import dry_run_pipeline
    from curate.llm.backends import OpenAIBackend
    from tests.fault_server import FaultServer

    pool = write_jsonl(tmp_path / "pool.jsonl", [*CLEAN[:3], BROKEN["refusal"], BROKEN["ai_disclaimer"], GERMAN])
    with FaultServer() as srv:
        backend = OpenAIBackend(srv.base_url, "gpt-4o", api_key="k")
        every = dry_run_pipeline(str(pool), tmp_path / "out", backend=backend, heuristics=False)
        default = dry_run_pipeline(str(pool), tmp_path / "out", backend=backend)  # the text rules, as the run's default
        ruled = dry_run_pipeline(str(pool), tmp_path / "out", backend=backend, languages=["en"])
        assert srv.total == 0
    assert [e.rows for e in every] == [6, 6] and [e.rows for e in default] == [4, 4]  # the refusal, the disclaimer
    assert [e.rows for e in ruled] == [3, 3]  # and the German row
    assert all(r.prompt_tokens < e.prompt_tokens for r, e in zip(ruled, every, strict=True))
    assert not (tmp_path / "out").exists()


def test_a_pool_whose_every_row_fails_a_rule_is_refused_naming_the_rules_and_no_heuristics(tmp_path):
    """The text rules are on by default: a pool every row of which fails one ran on to an empty selection, exported
    empty files and exited 0 with one yellow line. It is a setting refused now (78), naming each rule's count and
    --no-heuristics; nothing is scored (no score column is written) or exported, and --no-heuristics runs it."""
    from tests.cli_in_process import curate_in_process

    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Write a short poem about the number {i}.",
                                                  "output": "I'm sorry, but I can't help with that." if i % 2 else " \n"}
                                                 for i in range(6)])
    r = curate_in_process("run", pool, "--budget", "3", "--no-report", "--out", tmp_path / "run")
    assert r.returncode == 78, r.stdout[-2000:] + r.stderr[-2000:]
    said = " ".join(r.stderr.split())  # rich wraps long lines
    assert "every one of the 6 candidate rows fails a text rule (empty_response 3, refusal 3)" in said, said
    assert "--no-heuristics" in said
    assert not (tmp_path / "run" / "selected.jsonl").exists()
    ws = curate.Workspace.open(tmp_path / "run" / "workspace")
    assert not ws.has_column("quality") and "deita" not in ws.selections
    with pytest.raises(OptionError, match=r"6 candidate rows fails a text rule .*heuristics=False"):
        run_pipeline(str(pool), out=tmp_path / "api", budget=3, report=False, progress=False)
    kept = curate_in_process("run", pool, "--budget", "3", "--no-report", "--out", tmp_path / "off", "--no-heuristics")
    assert kept.returncode == 0, kept.stdout[-2000:] + kept.stderr[-2000:]


def test_a_pool_storing_each_reply_with_its_end_of_sequence_text_keeps_its_rows(tmp_path):
    """An exported SFT pool that appends "</s>" or "<|im_end|>" to every reply lost every row to template_tokens."""
    rows = [json.loads(line) for line in sample_path().read_text().splitlines()[:6]]
    for i, row in enumerate(rows):
        row["output"] += ("</s>", "<|im_end|>\n", "<|endoftext|>")[i % 3]
    result = run_pipeline(str(write_jsonl(tmp_path / "pool.jsonl", rows)), out=tmp_path / "run", budget=3,
                          report=False, progress=False)
    heuristics = result.workspace.selection("heuristics")
    assert heuristics.decisions() == {"kept": 6}
    # kept with that text, and said: the count is data in the selection's provenance, and a line of the report
    assert heuristics.provenance["rows_kept_with_end_marker"] == 6
    from curate.report.sections import selections_section

    assert "6 kept rows have a reply ending with an end-of-sequence marker" in selections_section(result.workspace)


def test_a_pool_of_instructions_is_selected_by_complexity_alone(tmp_path):
    """A pool without responses selected nothing: every row failed the empty-response rule, or (without
    --heuristics) got no quality score and was never admitted, while the run exited 0. Now the run stops after
    loading and names --sort-by complexity, which scores complexity alone and lets a row without a reply pass the
    text rules (a blank reply still fails)."""
    from tests.cli_in_process import curate_in_process

    rows = [{"instruction": f"Write a short poem about the number {i} and the colour of the sea at dawn."}
            for i in range(6)]
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)

    def run(*args):
        return curate_in_process("run", pool, "--budget", "3", "--no-report", "--out", tmp_path / "run", *args)

    r = run("--heuristics")
    assert r.returncode == 78 and "Traceback" not in r.stderr
    assert "every row is an instruction without a response" in r.stderr and "--sort-by complexity" in r.stderr
    assert str(pool) in r.stderr
    r = run("--heuristics", "--sort-by", "complexity")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = " ".join(r.stdout.split())
    assert "0 of 6 fail a text rule" in out and "rows admitted (budget 3, by complexity," in out
    ws = curate.Workspace.open(tmp_path / "run" / "workspace")
    assert ws.has_column("complexity") and not ws.has_column("quality")
    assert len(ws.selection("deita")) >= 1 and ws.selection("deita").provenance["sort_by"] == "complexity"
    # A blank reply is still an empty response; only a row with no reply at all passes.
    write_jsonl(pool, rows + [{"instruction": "Name a prime number larger than one hundred.", "output": "  "}])
    r = run("--heuristics", "--sort-by", "complexity")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 of 7 fail a text rule (empty response 1)" in " ".join(r.stdout.split())
    # Replies given but empty ("output": "") are no responses either: the run stopped at nothing selected, exit 0,
    # having scored every row. Now, without the text rules, it stops after loading, as for a pool without replies
    # (here mixed with those); with them (the default) the empty-response rule drops every row before any is scored,
    # which is refused too (it ended in an empty selection, exit 0).
    blank = write_jsonl(tmp_path / "blank.jsonl", [{**row, "output": ""} for row in rows[:4]] + rows[4:])
    r = curate_in_process("run", blank, "--budget", "3", "--no-report", "--out", tmp_path / "blank", "--no-heuristics")
    assert r.returncode == 78 and "every row is an instruction without a response (4 of them with an empty one)" \
        in " ".join(r.stderr.split())
    r = curate_in_process("run", blank, "--budget", "3", "--no-report", "--out", tmp_path / "blank-ruled")
    assert r.returncode == 78 and "every one of the 6 candidate rows fails a text rule (empty_response 6)" \
        in " ".join(r.stderr.split())


def test_a_loop_before_the_data_a_reply_ends_in_is_a_loop():
    """Ending in data exempts only a loop inside that data: prose that loops up to a citation, an empty array, an
    empty fence, or fences that loop themselves are loops; a JSON value after many bracketed citations is data."""
    cited = "Paris is the capital of France. " + "It is known for the Eiffel Tower [1]. " * 30
    assert looping_tail(cited[:cited.rfind("[1]") + 3], 50) is not None  # cut right after the citation
    assert looping_tail("ok. " + "I will stop now. " * 20 + "[]", 50) is not None
    assert looping_tail("ok. " + "I will stop now. " * 20 + "\n```\n```", 50) is not None
    assert looping_tail("```\n" * 60, 50) is not None
    citations = "".join(f"See [{k}] and [{k + 1}]. " for k in range(70))  # 140 brackets, no loop of their own
    assert looping_tail(citations + "\n" + json.dumps([0] * 96), 50) is None
    assert looping_tail(citations + "\n" + json.dumps({"m": [[0] * 8 for _ in range(80)]}), 50) is None


def test_a_long_paragraph_without_spaces_that_repeats_is_a_loop():
    """A Chinese paragraph counts a word per character: a repeated paragraph of 126 characters is a loop."""
    paragraph = ("春天来了，公园里的花都开了，红的像火，粉的像霞，白的像雪。小朋友们在草地上奔跑，放风筝，捉迷藏，笑声传得很远。"
                 "老人们坐在长椅上聊天，下棋，晒太阳，脸上带着满足的微笑。湖面上有几只小船慢慢地划过，水波一圈一圈地荡漾开去，"
                 "岸边的柳树垂下长长的枝条随风摆动。")
    assert len(paragraph) == 126
    assert looping_tail(paragraph * 12, 50)["value"] > 100
