"""The curation report, plots and notebook views, on a small synthetic workspace, checked in real headless Chromium."""

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from curate import Workspace
from curate.report.plots import (
    MissingInput,
    all_plots,
    embedding_map,
    figure_data_uri,
    source_breakdown,
    tag_coverage,
)
from curate.report.views import build_report, reason_group, selection_summary
from tests.conftest import write_jsonl

CHROMIUM = os.environ.get("CURATE_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<script>alert('x')</script> & <b>bold?</b>"


def synthetic_workspace(path: Path, n: int = 80) -> Workspace:
    """A pool of ``n`` rows (alpaca + sharegpt, two sources) with scores, failures, tags, embeddings, a selection."""
    rng = np.random.default_rng(7)
    alpaca = [{"instruction": f"Task {i}: explain topic {i % 7}." + (f" {HOSTILE}" if i == 3 else ""),
               "input": "", "output": "" if i == 5 else f"Answer {i}\n  indented line\n{'long ' * (300 if i == 1 else 3)}",
               "source": "wiki" if i % 3 else "forum"} for i in range(n // 2)]
    sharegpt = [{"conversations": [{"from": "human", "value": f"Chat {i}, first question"}, {"from": "gpt", "value": f"reply {i}"},
                                   {"from": "human", "value": "and a follow-up"}, {"from": "gpt", "value": "second reply"}],
                 "source": "chat"} for i in range(n - n // 2)]
    ws = Workspace(path)
    ws.load(write_jsonl(path.parent / "alpaca.jsonl", alpaca))
    ws.load(write_jsonl(path.parent / "sharegpt.jsonl", sharegpt))
    ids = ws.ids
    convs = ws.conversations()
    multi = [sum(t["role"] == "user" for t in c) > 1 for c in convs]
    complexity = [None if i % 11 == 4 else float(rng.uniform(1, 6)) for i in range(len(ids))]
    quality = [[float(rng.uniform(1, 6)), None if i % 9 == 0 else float(rng.uniform(1, 6))] if m else [float(rng.uniform(1, 6))]
               for i, m in enumerate(multi)]  # per-turn scores: a list for every row
    # the keys curate.llm.judges.score writes
    judge_prov = {"kind": "judge", "judge": "complexity", "prompt": "complexity", "prompt_version": 1,
                  "prompt_fingerprint": "ab12cd34ef56ab12", "model": "SmolLM2-135M-Instruct", "backend": "openai",
                  "requests": len(ids), "cached_requests": 3, "failed_rows": 7,
                  "tokens": {"prompt": 41_234, "completion": len(ids)}, "cost_usd": 0.0123}
    ws.add_column("complexity", complexity, judge_prov)
    ws.add_column("complexity_failure", [None if v is not None else
                                         ("digit mass 0.12 below floor 0.5" if i % 2 else "timeout: no answer after 60 s")
                                         for i, v in enumerate(complexity)], {"kind": "judge_failure", "judge": "complexity"})
    ws.add_column("quality", quality, {**judge_prov, "judge": "quality", "prompt": "quality", "cost_usd": 0.02,
                                       "tokens": {"prompt": 50_000, "completion": 99}})
    ws.add_column("quality_failure", [[None, {"reason": "no digit in output", "raw": HOSTILE}] if q[-1] is None else None
                                      for q in quality], {"kind": "judge_failure", "judge": "quality"})
    vocab = [f"tag{k}" for k in range(25)]
    ws.add_column("tags", [sorted({vocab[int(x)] for x in rng.integers(0, 25, rng.integers(0, 4))}) for _ in ids],
                  {"kind": "tagger", "method": "synthetic"})
    ws.add_column("length", [float(len(str(c))) for c in convs], {"kind": "scorer", "method": "chars"})
    centres = rng.normal(size=(4, 16))
    vectors = centres[rng.integers(0, 4, len(ids))] + 0.3 * rng.normal(size=(len(ids), 16))
    ws.add_embeddings("default", vectors / np.linalg.norm(vectors, axis=1, keepdims=True), {"model": "synthetic"})
    order = list(rng.permutation(len(ids)))
    decisions, reasons = [], []
    for k, pos in enumerate(order):
        if k < 20 and pos % 5:
            decisions.append("kept")
            reasons.append(f"score {k}: max cosine to kept rows 0.{k:02d} <= 0.9")
        elif k < 30:
            decisions.append("rejected")
            reasons.append(f"too close to row {ids[order[0]]} (cos 0.9{k % 10})")
        else:
            decisions.append("not_reached")
            reasons.append(None if k % 2 else "budget of 20 rows filled")
    ws.add_selection("exact_dedup", ids, ["kept"] * len(ids), [None] * len(ids),
                     {"method": "exact", "input_selection": None, "candidates": len(ids), "counts": {"kept": len(ids)}})
    ws.add_selection("deita", [ids[p] for p in order], decisions, reasons,
                     {"method": "deita", "budget": 20, "max_cosine_similarity": 0.9, "input_selection": "exact_dedup",
                      "candidates": len(ids), "counts": {"kept": 17, "rejected": 13, "not_reached": len(ids) - 30},
                      "steps": [{"method": "exact_dedup", "rows_in": len(ids), "kept": len(ids), "dropped": 0},
                                {"method": "deita", "tau": 0.9, "kept": 17, "dropped": 63}]})
    return ws


def test_reason_groups():
    assert reason_group("too close to row 3f2a9b01cc (cos 0.93)") == "too similar to a kept row"
    assert reason_group("near-duplicate of 77aa11") == "too similar to a kept row"
    assert reason_group(None, "not_reached") == "(no reason given; decision not_reached)"
    assert reason_group("budget of 6000 rows filled") == "budget filled before this row"
    # unknown phrasing: grouped by its text with ids and numbers blanked
    assert reason_group("odd rule 17 hit for 3f2a9b01") == reason_group("odd rule 4 hit for 99ab01cd")


def test_plots_and_missing_inputs(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    plots = all_plots(ws)
    assert [t for t, fig, missing in plots if fig is None] == []
    uri = figure_data_uri(source_breakdown(ws, "deita"))
    png = base64.b64decode(uri.split(",", 1)[1])
    assert uri.startswith("data:image/png;base64,") and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_data_uri(embedding_map(ws, "deita"), format="svg").startswith("data:image/svg+xml;base64,")
    # a bare workspace: every plot says what is missing, none raises
    bare = Workspace(tmp_path / "bare")
    bare.load(write_jsonl(tmp_path / "one.jsonl", [{"instruction": "hi", "output": "hello"}, {"instruction": "a", "output": "b"}]))
    missing = {t: m for t, fig, m in all_plots(bare)}
    assert "curate embed" in missing["embedding map"]
    assert "tag" in missing["tag coverage"] and "score" in missing["score histograms"]
    assert missing["rows by source"] is None  # format breakdown works on any pool
    empty = build_report(Workspace(tmp_path / "empty"), tmp_path / "empty.html").read_text()
    assert "has no pool yet" in empty and "<img" not in empty
    bare.add_embeddings("default", np.eye(2, 4), {"model": "synthetic"})
    bare.load(write_jsonl(tmp_path / "two.jsonl", [{"instruction": "new", "output": "row"}]))
    assert "embed again" in dict((t, m) for t, _, m in all_plots(bare))["embedding map"]
    with pytest.raises(MissingInput, match="no selection"):
        tag_coverage(ws, ["nope"])


def test_selection_summary_groups_reasons(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    s = selection_summary(ws.selection("deita"))
    groups = {(g["decision"], g["group"]): g["count"] for g in s["groups"]}
    assert s["kept"] + s["dropped"] == s["considered"] == len(ws)
    assert groups[("rejected", "too similar to a kept row")] == s["by_decision"]["rejected"]
    assert ("not_reached", "budget filled before this row") in groups
    assert ("not_reached", "(no reason given; decision not_reached)") in groups
    html = ws.selection("deita")._repr_html_()
    assert "too similar to a kept row" in html and "kept" in html


def test_judge_usage_reads_what_judges_write(tmp_path):
    from curate.report.views import judge_usage

    usage = {u["column"]: u for u in judge_usage(synthetic_workspace(tmp_path / "ws"))}
    assert set(usage) == {"complexity", "quality"}  # failure columns and scorer columns are not judges
    assert (usage["complexity"]["prompt_tokens"], usage["complexity"]["cached"], usage["complexity"]["failures"]) == (41_234, 3, 7)
    assert usage["quality"]["prompt_tokens"] == 50_000 and usage["quality"]["cost_usd"] == 0.02


def test_selection_chain_table_follows_input_selections(tmp_path):
    from curate.report.views import report_html

    page = report_html(synthetic_workspace(tmp_path / "ws"), selection="deita")
    chain = page[page.index("steps, in order"):]
    assert chain.index("exact_dedup") < chain.index("deita") and "<td class='n'>17</td>" in chain


def test_show_and_workspace_html(tmp_path):
    ws = synthetic_workspace(tmp_path / "ws")
    view = ws.show([3, ws.ids[5]])
    html = view._repr_html_()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "(empty)" in html  # row 5 has an empty response
    assert ws.ids[3] in repr(view) and "[user] Task 3" in repr(view)
    sel_view = ws.show("deita", limit=4)
    assert len(sel_view) == 4 and "showing the first 4" in sel_view.note
    assert sel_view.ids == ws.selection("deita").ids[:4]
    with pytest.raises(KeyError):
        ws.show("no-such-id")
    page = ws._repr_html_()
    for needle in ("complexity", "per-turn scores", "failures", "distinct", "deita"):
        assert needle in page


def _browser_required():
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: CI must install the Debian package `chromium`")
    pytest.skip(f"no Chromium at {CHROMIUM} (install the Debian package `chromium`; required when CI is set)")


async def _inspect_page(url: str, screenshot: Path, profile: str) -> dict:
    """Open ``url`` in headless Chromium over the DevTools protocol; collect errors, requests, image state."""
    import aiohttp

    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        ws_url = None
        while ws_url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            if not line:
                raise RuntimeError("Chromium exited before opening DevTools")
            if m := re.search(r"DevTools listening on (ws://\S+)", line):
                ws_url = m.group(1)
        events: list[dict] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as sock:
            counter = 0
            pending: dict[int, asyncio.Future] = {}
            load_fired = asyncio.Event()

            async def reader():
                async for msg in sock:
                    data = json.loads(msg.data)
                    if "id" in data and data["id"] in pending:
                        pending.pop(data["id"]).set_result(data)
                    else:
                        events.append(data)
                        if data.get("method") == "Page.loadEventFired":
                            load_fired.set()

            task = asyncio.create_task(reader())

            async def call(method, session=None, **params):
                nonlocal counter
                counter += 1
                fut = asyncio.get_running_loop().create_future()
                pending[counter] = fut
                msg = {"id": counter, "method": method, "params": params}
                if session:
                    msg["sessionId"] = session
                await sock.send_str(json.dumps(msg))
                reply = await asyncio.wait_for(fut, 60)
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

            target = (await call("Target.createTarget", url="about:blank"))["targetId"]
            session = (await call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                await call(f"{domain}.enable", session)
            await call("Page.navigate", session, url=url)
            await asyncio.wait_for(load_fired.wait(), 60)
            images = (await call("Runtime.evaluate", session, returnByValue=True, awaitPromise=True, expression="""
                Promise.all(Array.from(document.images).map(i => i.decode().then(() => 0, () => 0))).then(() =>
                  Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
                                                          complete: i.complete})))"""))["result"]["value"]
            headings = (await call("Runtime.evaluate", session, returnByValue=True,
                                   expression="Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"))["result"]["value"]
            scripts = (await call("Runtime.evaluate", session, returnByValue=True,
                                  expression="document.scripts.length"))["result"]["value"]
            metrics = await call("Page.getLayoutMetrics", session)
            size = metrics["cssContentSize"]
            shot = await call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1})
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            task.cancel()
        return {"events": events, "images": images, "headings": headings, "scripts": scripts, "height": size["height"]}
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def test_report_in_headless_chromium(tmp_path):
    _browser_required()
    ws = synthetic_workspace(tmp_path / "ws")
    out = build_report(ws, tmp_path / "report.html")
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert re.search(r"(src|href)=['\"]?https?:", page) is None
    screenshot = Path(os.environ.get("CURATE_SCREENSHOT", tmp_path / "report.png"))
    with tempfile.TemporaryDirectory() as profile:
        result = asyncio.run(_inspect_page(out.resolve().as_uri(), screenshot, profile))
    events = result["events"]
    errors = [e for e in events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == [], errors
    requested = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(u.startswith(("file:", "data:")) for u in requested), requested
    assert result["scripts"] == 0
    images = result["images"]
    assert len(images) == 5, images  # histograms, scatter, embedding map, tag coverage, sources
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in images), images
    assert result["headings"][0] == "pool" and any(h.startswith("sample rows") for h in result["headings"])
    assert "exact_dedup" in page and "&quot;tau&quot;: 0.9" in page
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["height"] > 2000


def test_report_cli_on_bare_workspace(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]))
    r = subprocess.run([sys.executable, "-m", "curate.cli", "report", str(tmp_path / "ws"), "--out", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert "no embeddings" in page and "no selection yet" in page and "no judge has scored" in page
    assert page.count("<img") == 1  # only the format breakdown can be drawn
    bad = subprocess.run([sys.executable, "-m", "curate.cli", "report", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not a curate workspace" in bad.stderr and "Traceback" not in bad.stderr
