"""Writes curate/data/sample.jsonl: ~50 hand-written rows in the five shapes curate reads.

Written by the curate developers for demos and tests; varied on purpose: easy and hard
instructions, good and poor responses, multi-turn chats, and a few near-duplicates.
"""
import json
from pathlib import Path

A = lambda i, o, inp="": {"instruction": i, "input": inp, "output": o}  # noqa: E731
rows = [
    A("Give three tips for staying healthy.", "1. Eat plenty of vegetables and fruit.\n2. Sleep seven to nine hours a night.\n3. Move for at least thirty minutes a day, even if it is only walking."),
    A("Give three tips for staying healthy", "Eat vegetables, sleep well, and exercise every day."),
    A("What is the capital of France?", "Paris."),
    A("What is the capital city of France?", "The capital of France is Paris."),
    A("Translate the sentence into Spanish.", "Me gusta leer libros por la noche.", "I like to read books at night."),
    A("Write a haiku about autumn rain.", "Cold rain on red leaves\nthe gutter hums a low song\nsummer washes out"),
    A("Explain the difference between a list and a tuple in Python.", "A list is mutable: you can append, remove or change items after creating it. A tuple is immutable: once created its items cannot change. Tuples can be dictionary keys and are slightly faster; lists suit collections that grow."),
    A("Write a Python function that returns the n-th Fibonacci number iteratively.", "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    A("Classify the following animal as mammal, bird, reptile or fish.", "Mammal.", "Dolphin"),
    A("Summarize the paragraph in one sentence.", "Bees pollinate most flowering crops, so their decline threatens food supply.", "Honeybees and wild bees pollinate about three quarters of the crops people eat. Over the past decades colonies have shrunk because of pesticides, parasites and habitat loss, which worries farmers and scientists alike."),
    A("Generate a list of five creative names for a coffee shop.", "1. The Daily Grind\n2. Bean There\n3. Brew Haven\n4. Steam & Story\n5. The Roasted Page"),
    A("Solve for x: 3x + 7 = 22.", "Subtract 7 from both sides: 3x = 15. Divide by 3: x = 5."),
    A("Prove that the square root of 2 is irrational, and explain each step so that a high-school student could follow it.", "Assume sqrt(2) = p/q in lowest terms. Then p^2 = 2q^2, so p^2 is even and therefore p is even; write p = 2k. Then 4k^2 = 2q^2, so q^2 = 2k^2 and q is even too. Both even contradicts lowest terms, so sqrt(2) is irrational."),
    A("Name a color.", "Blue."),
    A("Write a short story.", "Once upon a time there was a cat. The end."),
    A("Describe how a bill becomes a law in the United States, including the roles of committees, both chambers of Congress, and the President's veto.", "A bill is introduced in the House or Senate and sent to a committee, which may hold hearings, amend it and vote. If reported out, the full chamber debates and votes. The other chamber repeats the process; differences are reconciled in a conference committee or by amendment exchange. The final text goes to the President, who can sign it or veto it. Congress can override a veto with two-thirds majorities in both chambers."),
    A("Design a database schema for a library that tracks books, members, loans and late fees; state the primary and foreign keys and one index you would add for performance.", "books(book_id PK, isbn UNIQUE, title, author)\nmembers(member_id PK, name, email UNIQUE)\nloans(loan_id PK, book_id FK->books, member_id FK->members, loaned_at, due_at, returned_at)\nfees(fee_id PK, loan_id FK->loans, amount_cents, paid_at)\nIndex: loans(member_id, returned_at) to list a member's open loans quickly."),
    A("Rewrite the sentence in the passive voice.", "The cake was eaten by the children.", "The children ate the cake."),
    A("What is 17 multiplied by 23?", "391"),
    A("What is 17 times 23?", "17 x 23 = 391."),
    A("List the planets of the solar system in order from the sun.", "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune."),
    A("Explain recursion.", "Recursion is when a function calls itself."),
    A("Compare the economic policies of Keynesian and monetarist schools, giving one historical episode where each was applied and what happened.", "Keynesians stress demand management through fiscal policy; monetarists stress steady money-supply growth. The New Deal and post-war spending illustrate Keynesian policy, with recovery and low unemployment. The Volcker Fed (1979-82) applied monetarist ideas, tightening money to end high inflation at the cost of a deep recession."),
    A("Write a SQL query that returns the ten customers with the highest total order value in 2024.", "SELECT c.customer_id, c.name, SUM(o.total) AS value\nFROM customers c JOIN orders o ON o.customer_id = c.customer_id\nWHERE o.ordered_at >= '2024-01-01' AND o.ordered_at < '2025-01-01'\nGROUP BY c.customer_id, c.name\nORDER BY value DESC\nLIMIT 10;"),
    A("Tell me a joke.", "Why did the scarecrow win an award? Because he was outstanding in his field."),
]
S = lambda *turns: {"conversations": [{"from": w, "value": v} for w, v in turns]}  # noqa: E731
rows += [
    S(("human", "I want to learn to bake bread. Where do I start?"), ("gpt", "Start with a simple no-knead loaf: flour, water, salt and yeast, left to rise overnight. It teaches you how dough should feel without special tools."), ("human", "How do I know when it is baked?"), ("gpt", "Tap the bottom: it sounds hollow. An instant-read thermometer should show about 96 C in the centre.")),
    S(("system", "You are a concise assistant."), ("human", "Convert 5 miles to kilometres."), ("gpt", "About 8.05 km.")),
    S(("human", "Can you help me write a cover letter for a junior data analyst job?"), ("gpt", "Sure. Open with the role and where you saw it, give two concrete examples of analysis you did (tools, data size, result), connect them to the company's needs, and close by asking for an interview. Want me to draft one from your CV?"), ("human", "Yes, I used SQL and Python to analyse sales data at my internship."), ("gpt", "Dear Hiring Manager,\nI am applying for the Junior Data Analyst role. During my internship at a retailer I used SQL and Python to analyse two years of sales data and found that weekend promotions lifted basket size by 12%, which changed how the team planned campaigns. I would like to bring the same care to your analytics team.\nKind regards")),
    S(("human", "what's up"), ("gpt", "Not much! How can I help you today?")),
    S(("human", "Explain how public-key cryptography lets two strangers agree on a secret over an open channel, and why an eavesdropper cannot compute it."), ("gpt", "In Diffie-Hellman, both agree on a prime p and generator g. Alice picks secret a and sends g^a mod p; Bob picks b and sends g^b mod p. Each raises the other's value to their own secret, reaching g^(ab) mod p. An eavesdropper sees g^a and g^b but recovering a or b is the discrete logarithm problem, believed infeasible for large p.")),
    S(("human", "Write a limerick about a programmer."), ("gpt", "A coder who lived on caffeine\nwrote functions both tidy and clean;\nbut one Friday at three\nshe pushed to main, free,\nand the pager went off on the screen.")),
    S(("human", "How many legs does a spider have?"), ("gpt", "Eight.")),
    S(("human", "Give me a 3-day itinerary for Rome on a budget."), ("gpt", "Day 1: Colosseum, Forum and Palatine (one ticket), picnic lunch, evening in Trastevere. Day 2: Vatican Museums early (book online), St Peter's (free), walk to Castel Sant'Angelo. Day 3: Pantheon (small fee), Piazza Navona, Trevi Fountain, Spanish Steps, Villa Borghese park. Eat pizza al taglio and drink from the free fountains.")),
]
M = lambda *turns: {"messages": [{"role": r, "content": c} for r, c in turns]}  # noqa: E731
rows += [
    M(("user", "What does HTTP status 429 mean, and how should a client react?"), ("assistant", "429 Too Many Requests: the client exceeded a rate limit. It should slow down, honour the Retry-After header if present, and retry with exponential backoff and jitter.")),
    M(("system", "Answer as a friendly tutor."), ("user", "Why is the sky blue?"), ("assistant", "Sunlight scatters off air molecules, and shorter (blue) wavelengths scatter much more than red ones (Rayleigh scattering), so blue light reaches your eyes from every direction of the sky.")),
    M(("user", "Write a regular expression that matches an ISO date like 2024-03-15."), ("assistant", "^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$")),
    M(("user", "Plan a week of vegetarian dinners that reuse ingredients to limit waste, with a shopping list."), ("assistant", "Mon: chickpea curry with spinach. Tue: spinach and feta omelette. Wed: roasted vegetable pasta. Thu: leftover roast veg frittata. Fri: bean chilli. Sat: chilli-stuffed peppers. Sun: vegetable soup from the week's ends.\nShopping: chickpeas, kidney beans, spinach, feta, eggs, pasta, courgettes, peppers, onions, tomatoes (tinned), carrots, rice, spices.")),
    M(("user", "hi"), ("assistant", "Hello!")),
    M(("user", "Is it safe to eat raw cookie dough?"), ("assistant", "Not really: raw flour can carry E. coli and raw eggs can carry Salmonella. Heat-treated flour and pasteurised eggs make it safer.")),
    M(("user", "Explain gradient descent to a ten-year-old."), ("assistant", "Imagine you're on a foggy hill and want to reach the bottom. You feel which way the ground slopes down and take a small step that way, again and again, until every direction goes up. A computer does the same to find the settings with the smallest mistake.")),
    M(("user", "Give me the time complexity of binary search and explain why."), ("assistant", "O(log n): each comparison halves the remaining range, so after k steps n/2^k elements remain, and the search ends when that reaches 1, i.e. after log2 n steps.")),
]
P = lambda p, c: {"prompt": p, "completion": c}  # noqa: E731
rows += [
    P("Write a product description for a reusable water bottle.", "Keep cold drinks cold for 24 hours and hot drinks hot for 12 with this double-walled steel bottle. Leak-proof lid, fits car cup holders, and replaces hundreds of plastic bottles a year."),
    P("Suggest a name for a pet goldfish.", "Bubbles."),
    P("Explain what a mutex is and when a program needs one.", "A mutex (mutual-exclusion lock) lets only one thread at a time enter a critical section. A program needs one when several threads read and write shared state, to prevent races that corrupt data."),
    P("Draft a polite email declining a meeting invitation.", "Hi Sam,\nThank you for the invitation. I can't join on Thursday because of a prior commitment, but I'd be glad to read the notes and follow up with any questions.\nBest,\nAlex"),
]
Q = lambda q, a: {"question": q, "answer": a}  # noqa: E731
rows += [
    Q("Who wrote Pride and Prejudice?", "Jane Austen, published in 1813."),
    Q("What is the boiling point of water at sea level in Fahrenheit?", "212 F."),
    Q("Why do we have leap years?", "A solar year is about 365.2422 days. Adding a day every four years (skipping most century years) keeps the calendar aligned with the seasons."),
    Q("How does a vaccine train the immune system?", "It shows the immune system a harmless piece or copy of a pathogen, so B and T cells learn to recognise it and memory cells can respond fast if the real pathogen appears."),
    Q("What is the derivative of x^3 * sin(x)?", "By the product rule: 3x^2 sin(x) + x^3 cos(x)."),
    Q("Name the largest ocean.", "The Pacific Ocean."),
]
out = Path(__file__).resolve().parents[1] / "curate" / "data" / "sample.jsonl"
out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
print(f"wrote {len(rows)} rows to {out}")
