"""The text rules on the phrasings an audit of 4,000 real rows found passing them: refusals in other words, an AI
disclaimer after a greeting, and chat-template markers a generation leaked; each beside the look-alikes it keeps."""

import pytest

from curate.codes import Reason, describe
from curate.select.heuristics import Rules


def failures(reply, instruction="Answer the question.", **switches):
    """The rules ``reply`` fails (as {rule, ...}) with every rule but the language one on."""
    rules = Rules(True, True, True, 50, True, True, None, 0.9, False, **switches)
    return rules.failures([{"role": "user", "content": instruction}, {"role": "assistant", "content": reply}])


def rules_failed(reply, instruction="Answer the question."):
    return [f["rule"] for f in failures(reply, instruction)]


LEAKS = {  # reply -> the marker named in the detail (replies real models wrote, shortened)
    "The market was a hub of activity for all who visited. [/INST]": "[/INST]",
    "It also highlights the importance of follow-up questions. [/INST]\n\n[INST] Can you give me some examples of "
    "questions to ask? [/IST]\n\nSure, here are some examples:\n\n1. What is the nature of his condition?": "[/INST]",
    "Let me know if you have any other questions. [INST] Prove that the sum of two even integers is even.": "[INST]",
    "The labor rates in the area vary. [/IST]": "[/IST]",
    "Paris is the capital of France.<|im_end|>\n<|im_start|>user\nAnd of Spain?": "<|im_end|>",
    "Paris is the capital of France.<|eot_id|><|start_header_id|>user<|end_header_id|>": "<|eot_id|>",
    "Order: Purple, Yellow, Green, Blue, Red\n\n### Human: What color is the vice president's car?": "### Human:",
    "We are Spartans, and we will prevail.</s> \nWhat specific qualities should a leader have?": "</s>",
    "So the answer is 4. <eos>\nUser: And 5 + 5?": "<eos>",  # "<eos>" holds "eos", no word naming it
    "Yes, it is. [/IST] Yes, it is. [/IST] Yes, it is. [/IST]": "[/IST]",  # a reply looping on the misspelling
    "Here is the summary.\n[INST] Now make it shorter. [/INST] Shorter summary.": "[INST]",  # a turn opening its line
    "Here is the summary.\n<s>[INST] Now make it shorter. [/INST]": "[INST]",
    "Sure!<|im_end|>\n<|im_start|>user\nThanks!": "<|im_end|>",  # an end marker with a next turn after it
    # a whole invented turn inside a line (MT-bench's answers): no placeholder, and a sentence's start
    "Let me know if you have any other questions. [INST] Prove that the sum of two even integers is always even. "
    "[/INST] To prove that the sum of two even integers is always even, we can use a simple argument.": "[INST]",
    "Best regards,\n\n[Your Name] industries [INST] Can you rephrase your previous answer using only positive "
    "language? [/INST] Dear friend,": "[INST]",
    "It correctly calculates the length of the longest common subsequence of two input strings. [/INST] This "
    "function calculates the length": "[/INST]",  # "strings" names no marker: the sentence before
    # a fence line is no code: the generation ran on past the block it closed
    "```\nx = 1\n``` [/INST]\n```\ny = 2\n```": "[/INST]",
    # the invented turn's own words name no marker: a turn opening a line or a sentence is read as one (review)
    "Done.\n\n### Human: Can you format that as a table?": "### Human:",
    "Paris.\n[INST] Format this date: 2020-01-01 [/INST] 1 Jan 2020": "[INST]",
    "Paris. [INST] Reverse the string 'abc' [/INST] cba": "[INST]",
    # a short question or sentence inside a line is no placeholder
    "The capital is Paris [INST] And of Spain? [/INST] Madrid": "[INST]",
    "It is 4 [INST] What is 3+3? [/INST] 6": "[INST]",
    # a reply opening with a start-of-sequence <s>: its </s> is no HTML strikethrough's
    "<s> Paris is the capital.\n\nAnything else?</s>\n\nWhat is the capital of Spain? Madrid.": "</s>",
}


@pytest.mark.parametrize("reply", sorted(LEAKS))
def test_a_leaked_template_marker_fails_and_is_named(reply):
    found = failures(reply)
    leak = next(f for f in found if f["rule"] == "template_tokens")
    assert leak["token"] == LEAKS[reply] and leak["turn"] == 1 and LEAKS[reply] in leak["evidence"]
    assert describe(Reason.FAILS_HEURISTIC, leak).startswith("fails a text rule (template tokens, turn 1: ")
    assert not [f for f in failures(reply, template_tokens=False) if f["rule"] == "template_tokens"]  # its switch


TEMPLATE_TALK = [  # (instruction, reply): markers a reply shows, names or is asked about, and look-alikes
    ("Build a ChatML prompt in Python.",
     "Here it is:\n\n```python\nprompt = f\"<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n\"\n```"),
    ("How do I end a Llama 2 turn?", "Close the user's message with `[/INST]` and the model answers after it."),
    ("How do I end a Llama 2 turn?", "Llama 2 wraps the user's message in [INST] and [/INST] tags."),
    ("How do I end a Llama 2 turn?", "Write \"[/INST]\" after the message; the reply follows it."),
    ("What is the chat template of Mistral?", "It is <s>[INST] {prompt} [/INST] {answer}</s> for each turn."),
    ("Why does my tokenizer add </s>?", "The tokenizer appends </s> to every sequence when add_eos_token is set."),
    ("Show a price cut in HTML.", "Use a strikethrough: <s>$20</s> $15."),
    ("Write a dialogue between a user and a chatbot booking a flight.",
     "User: Hi, I would like to book a flight.\nAssistant: Where would you like to go?\nUser: San Francisco."),
    ("Write a transcript of an interview.", "Human: Living\nCar: Non-Living\nTree: Living"),
    ("Outline a report on rights.", "### Human rights\n\nEveryone is born free.\n\n### Assistant roles\n\nThey help."),
    ("Explain Indian time.", "The call is at 10:00 [IST], which is UTC+5:30."),
    # code without a fence: a string literal of its line, a block indented four spaces
    ("Build the prompt in Python.", 'Build it with an f-string:\nprompt = f"<s>[INST] {question} [/INST]"\nThen send it.'),
    ("Build the prompt in Python.", "Build it like this:\n\n    prompt = build()\n    [INST] {question} [/INST]\n    "
                                    "<|im_start|>user\n\nThen send it."),
    # a pair inside a line of prose names the template; named by what it does, or by its model's family
    ("How is a Mistral Instruct prompt laid out?", "Each user message goes between [INST] ... [/INST] and the answer "
                                                   "follows."),
    ("When does generation stop?", "The model keeps writing until it emits <eos>. Then the loop ends."),
    ("How were the training documents split?", "GPT-2 separates documents with <|endoftext|> in its training data."),
    ("Show a price cut in HTML.", "Use a strikethrough:\n\n<s>$20\nper month</s>\n\n$15 per month."),
]


CLEAN_STOPS = [  # a reply ending with an end-of-sequence marker, as some exported pools store every reply
    "Paris is the capital of France.</s>", "Paris is the capital of France.<|endoftext|>", "Sure!<|im_end|>",
    "4. <eos>", "4<|eot_id|>", "Done.<|eot_id|>\n", "Done.</s></s>", "Done.<|im_end|>\n<|endoftext|>  \n",
    "Done.<end_of_turn>", "Done.<|end|>",
]


@pytest.mark.parametrize("reply", CLEAN_STOPS)
def test_an_end_of_sequence_marker_a_reply_stops_with_is_no_leak(reply):
    """A pool storing each reply with its EOS text lost every row to the rule (on by default in curate run)."""
    assert rules_failed(reply, "What is the capital of France?") == [], reply
    assert "template_tokens" in rules_failed(reply.rstrip() + " And the capital of Spain?")  # text after: a leak
    # a reply of the marker alone is an empty one (it failed template_tokens before a final marker was a stop)
    assert [f["rule"] for f in failures(reply[reply.index("<"):])] == ["empty_response"]


@pytest.mark.parametrize("instruction,reply", TEMPLATE_TALK)
def test_a_marker_the_reply_is_about_or_shows_as_code_is_no_leak(instruction, reply):
    assert "template_tokens" not in rules_failed(reply, instruction), (instruction, reply)


REFUSALS = {  # reply -> rule: phrasings the rules missed
    "I'm sorry, but I am not programmed to write content that promotes or glorifies harmful behavior, including "
    "suicide. As an AI language model, my purpose is to provide helpful responses.": "refusal",
    "I apologize, but I'm not designed to provide medical diagnoses.": "refusal",
    "Sorry, but writing that would go against my programming.": "refusal",
    "I'm sorry, I didn't understand the question.": "refusal",
    "I'm not sure I understand the question.  Can you explain it a little more?": "refusal",
    "I'm sorry, I don't understand what you mean by \"bug.\" Can you please explain?": "refusal",
    "Hello! As an AI language model, I don't have feelings, but I'm functioning well. How can I help you today?":
        "ai_disclaimer",
    "Hello! I'm an AI language model, so I don't have feelings in the way that humans do.": "ai_disclaimer",
    "I'm glad you asked! I'm just an AI, I don't have personal opinions or beliefs.": "ai_disclaimer",
}


def test_a_disclaimer_after_a_greeting_is_read_against_the_user_turns_only():
    """A system turn "You are an AI assistant" (OpenOrca's style) read as the user asking about AI let the disclaimer
    pass; so did any question with AI as its topic."""
    reply = "Hello! As an AI language model, I think 2+2 is 4."
    system = {"role": "system", "content": "You are an AI assistant. You will be given a task."}
    rules = Rules(True, True, True, 50, True, True, None, 0.9, False)
    found = rules.failures([system, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": reply}])
    assert [f["rule"] for f in found] == ["ai_disclaimer"]
    assert rules_failed("Sure! As an AI language model, I can write it. AI in healthcare reads scans.",
                        "Write an essay on AI in healthcare.") == ["ai_disclaimer"]
    for question in ("Do you have feelings?", "Are you a chatbot?", "As an AI, what do you think of art?",
                     "Are you as capable as ChatGPT?", "This AI is channeling pure love. Talk with me."):
        assert rules_failed("Hello! As an AI language model, I don't have feelings the way people do.", question) == []


@pytest.mark.parametrize("instruction,reply", [
    ("Translate: 'No entiendo la pregunta.'", "I don't understand the question."),
    ("Repeat after me: I didn't understand the question.", "I didn't understand the question."),
    ("Rephrase politely: what do you even want", "I'm sorry, I don't understand what you mean."),
    ('Which is a non-answer: "The answer is 4." or "I don\'t understand the question."?',
     "I don't understand the question."),  # the user's turn quotes the reply's words
])
def test_a_reply_saying_it_did_not_understand_answers_a_request_for_those_words(instruction, reply):
    assert rules_failed(reply, instruction) == [], (instruction, reply)
    assert rules_failed(reply, "What is the capital of France?") == ["refusal"]
    # a prompt flattening a conversation (MT-bench's second turns) holds the same non-answer, unquoted: still one
    flattened = f"### User:\nWhat is the capital of France?\n\n### Assistant:\n{reply}\n\n### User:\nAnd now?"
    assert rules_failed(reply, flattened) == ["refusal"]


@pytest.mark.parametrize("reply", sorted(REFUSALS))
def test_refusals_and_disclaimers_in_other_words_fail(reply):
    found = failures(reply, "How are you today?")
    assert found and found[0]["rule"] == REFUSALS[reply], (reply, found)
    assert found[0]["evidence"] and found[0]["evidence"] in reply


ANSWER = ("The loop runs once per element, so the whole pass is linear in the length of the list. Each step "
          "compares the two heads and moves the smaller one to the output, which keeps the merged list sorted. When "
          "one list runs out, the rest of the other is appended as it is: it is sorted already, and no element of it "
          "is smaller than the last one written. ")
ANSWERS = [  # (instruction, reply): near misses that answer
    ("Why is my virtual call not inlined?",
     "I'm sorry for the confusion earlier: the compiler is not programmed to inline virtual calls, because the "
     "target is only known at run time. Mark the method final and it will be."),
    ("Why did the heating not start?", "Unfortunately, the thermostat is not designed to restart after a power cut."),
    ("Merge two sorted lists.", "I'm sorry, I didn't understand your question correctly before. " + ANSWER),
    ("What is 6 times 7?", "I didn't understand the question at first, but the answer is 42."),
    ("Are you an AI?", "Yes! I'm an AI language model, here to help with your questions."),
    ("Write a song about yourself, the LLM.", "Here is a song about me:\nI am a language model, trained on text."),
    ("Describe my job.", "Great question. I am an AI engineer's assistant: I schedule the meetings."),
    ("Why do people dislike some replies?",
     "Many chatbots open with a disclaimer. \"As an AI language model, I cannot...\" is the phrase users find grating."),
    ("Merge two sorted lists.", ANSWER + "As an AI language model, I cannot run the code, but it is correct."),
]


@pytest.mark.parametrize("instruction,reply", ANSWERS)
def test_answers_that_mention_programming_or_ai_are_kept(instruction, reply):
    assert rules_failed(reply, instruction) == [], (instruction, reply)


@pytest.mark.parametrize("instruction", [
    "What would you say is the meaning of blorf?",  # an opinion asked for, no words to repeat
    "Would you say blorf is a real word?",
    "What does the Bible say about blorf?",
    "I repeat the word blorf every day. What is blorf?",
])
def test_a_say_that_asks_for_an_answer_excuses_no_did_not_understand_reply(instruction):
    """The exception read "say", "repeat", "translate" anywhere in a user turn: "What would you say is the meaning
    of blorf?" excused "I didn't understand the question." (review)."""
    assert rules_failed("I didn't understand the question.", instruction) == ["refusal"], instruction


@pytest.mark.parametrize("instruction", [
    "Can you repeat this back to me: I didn't understand the question.",
    "Please translate into English: No entiendo la pregunta.",
    "You need to translate the sentence into English.\n\nNo entiendo la pregunta.",
    "Take the following sentence and rephrase it without the contraction: I didn't understand the question.",
    "How do you say 'No entiendo la pregunta' in English?",
])
def test_a_request_for_the_words_in_other_forms_still_excuses_them(instruction):
    assert rules_failed("I didn't understand the question.", instruction) == [], instruction


DISCLAIMER_AFTER_GREETING = "Great question! As an AI language model, I think the best start is an online course."


@pytest.mark.parametrize("instruction", ["How do I teach myself/yourself Python?", "Do it yourself tips for shelves.",
                                         "Imagine yourself as a doctor: what would you prescribe for a cold?"])
def test_a_yourself_that_is_the_users_does_not_excuse_a_disclaimer(instruction):
    """Any "yourself" in the user's turn read as asking about the assistant, and excused its disclaimer (review)."""
    assert rules_failed(DISCLAIMER_AFTER_GREETING, instruction) == ["ai_disclaimer"], instruction


@pytest.mark.parametrize("instruction", ["Tell me about yourself.", "Describe yourself in three words.",
                                         "Write a personal slogan for yourself.", "Who are you?"])
def test_a_question_about_the_assistant_itself_still_excuses_its_disclaimer(instruction):
    assert rules_failed(DISCLAIMER_AFTER_GREETING, instruction) == [], instruction


LIST_LEAKS = [  # a leak inside a list item's indented continuation: prose, not an indented code block
    "Steps:\n\n1. Preheat the oven.\n\n    Let it reach 200 C first. [/INST] Thanks! Now a dessert?\n\n2. Bake.",
    "- Buy flour\n\n    and sugar.<|im_end|>\n    <|im_start|>user\n    And eggs?",
    "- Outer\n\n    - Inner item\n\n        more about it [/INST] Sure, here is more.",
]


@pytest.mark.parametrize("reply", LIST_LEAKS)
def test_a_marker_in_a_list_items_indented_continuation_is_a_leak(reply):
    """A line indented under "- item" / "1. item" read as an indented code block, so the marker in it passed."""
    assert "template_tokens" in rules_failed(reply), reply


def test_code_indented_four_past_a_list_items_content_is_still_code():
    from curate.select.fences import indented_code_blocks

    reply = "1. Build the prompt:\n\n       prompt = f'[INST] {q} [/INST]'\n       [INST] {q} [/INST]\n\nThen send it."
    assert "template_tokens" not in rules_failed(reply, "Build a prompt in Python.")
    assert [reply[a:b].strip().split("\n")[0] for a, b in indented_code_blocks(reply)] == ["prompt = f'[INST] {q} [/INST]'"]
    assert indented_code_blocks("- item\n\n  continued\n\nDone.\n\n    code") == [(len("- item\n\n  continued\n\nDone.\n\n"),
                                                                                  len("- item\n\n  continued\n\nDone.\n\n    code"))]


@pytest.mark.parametrize("reply", ["<s>", " <s> ", "[/INST]", "<s></s>", "<|im_start|>assistant\n<|im_end|>",
                                   "### Assistant:", "<start_of_turn>model\n<end_of_turn>"])
def test_a_reply_of_template_markers_alone_is_an_empty_response(reply):
    """A reply of "<s>" alone passed every rule: it holds no content."""
    found = failures(reply, "Write a haiku about rain.")
    assert found[0]["rule"] == "empty_response", (reply, found)
    assert describe(Reason.FAILS_HEURISTIC, found[0]).startswith(
        "fails a text rule (empty response, turn 1: only chat-template markers: ")
    for content in ("Rain on the roof.<s>", "<s> Rain.", "<|im_start|>assistant\nRain falls.<|im_end|>"):
        assert "empty_response" not in rules_failed(content)
