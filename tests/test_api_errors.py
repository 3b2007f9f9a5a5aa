"""What a notebook user of ``import curate`` is told when a call goes wrong (an audit in a real Jupyter kernel): rows
that failed in a call and records a load left out are a CurateWarning, not a silent return; a user's mistake is a
CurateError (one line in IPython, the CLI's exit codes), not a KeyError, IndexError, ValueError or TypeError from
curate's insides; ws.select defaults to the CLI's selector; a step on a workspace with no pool says so."""

import socket
import warnings

import numpy as np
import pytest

import curate
import curate.storage.apply as apply_module
from curate import CurateError, CurateWarning, Judge, OpenAIBackend
from curate.defaults import SELECT
from curate.errors import NotInWorkspaceError, OptionError
from curate.exit_codes import exit_code
from curate.session import Workspace
from curate.storage.step import StepOutput
from tests.conftest import write_jsonl

ROWS = [{"instruction": f"Add {i} and {i + 1}.", "output": f"{2 * i + 1}"} for i in range(3)]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_backend() -> OpenAIBackend:
    return OpenAIBackend(f"http://127.0.0.1:{closed_port()}/v1", "m", max_retries=0)


class Length:
    """A real step that never fails: each turn's reply length."""
    column, granularity, reducer, inputs = "reply_length", "turn", "mean", ()

    def fingerprint(self):
        return "v1"

    def describe(self):
        return {"kind": "test"}

    def run(self, rows, ctx):
        return StepOutput([[float(len(t.response or "")) for t in r.turns] for r in rows], [[] for _ in rows])


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "pool.jsonl", ROWS))
    return ws


def curate_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, CurateWarning)]


def kept_bars(monkeypatch) -> list:
    """The real bars ws.apply draws, kept to look at after the call."""
    bars, real = [], apply_module.progress_bar
    monkeypatch.setattr(apply_module, "progress_bar", lambda *a, **k: bars.append(real(*a, **k)) or bars[-1])
    return bars


def test_a_judge_failing_on_every_row_warns_once_with_its_reason_codes_and_the_bar_ends_red(ws, monkeypatch):
    """The audit's judge pointed at a closed port drew a green ``300/300 ... failed=300`` bar and returned without a
    word (the CLI exits 75)."""
    bars = kept_bars(monkeypatch)
    result, said = curate_warnings(lambda: ws.score(Judge("complexity", column="c_bad"), dead_backend()))
    assert result.failed_now == 3
    assert len(said) == 1, said
    assert said[0].startswith("c_bad: 3 of the 3 rows computed now failed (3 x transient")
    assert "'c_bad_failure'" in said[0] and "\n" not in said[0]
    assert bars[-1].colour == "red"
    # failures reused, none sent again: nothing new failed, nothing to say
    again, said = curate_warnings(lambda: ws.score(Judge("complexity", column="c_bad"), dead_backend(),
                                                   retry_failed=False))
    assert again.computed == 0 and again.failed == 3 and said == []


def test_a_step_where_every_row_succeeds_warns_nothing_and_its_bar_stays_uncoloured(ws, monkeypatch):
    bars = kept_bars(monkeypatch)
    result, said = curate_warnings(lambda: ws.apply(Length()))
    assert result.failed == 0 and said == [] and bars[-1].colour is None
    assert curate_warnings(lambda: ws.apply(Length()))[1] == []  # reused: nothing computed


def test_a_load_that_left_records_out_warns_how_many_and_where_they_are_listed(tmp_path):
    ws = Workspace(tmp_path / "ws")
    bad = write_jsonl(tmp_path / "bad.jsonl", [*ROWS, '{"instruction": "x", broken'])
    summary, said = curate_warnings(lambda: ws.load(bad, on_error="skip"))
    assert summary["rejects"] == 1
    assert said == [f"{bad}: 1 record(s) left out (on_error='skip'); each with its line and reason in "
                    f"{ws.path / 'rejects.jsonl'}"]
    clean = write_jsonl(tmp_path / "clean.jsonl", ROWS)
    assert curate_warnings(lambda: ws.load(clean, on_error="skip"))[1] == []


@pytest.mark.parametrize("call, kind, words", [
    (lambda ws: ws.show("deitaa"), KeyError, "show: no row with id 'deitaa'"),  # a KeyError still, as before
    (lambda ws: ws.show([100000]), IndexError, "show: row 100000 is outside the pool (0..2)"),
    (lambda ws: ws.select(), OptionError, "select needs name="),
    (lambda ws: ws.select(method="deita"), OptionError, "select needs name="),
    (lambda ws: ws.apply("quality"), OptionError, "str is not a Step"),
    (lambda ws: ws.show([0], limit=-1), ValueError, "show: limit is a number of rows >= 0"),  # a ValueError still
    (lambda ws: ws.show(2.5), TypeError, "show: rows are ids, pool positions"),  # a TypeError still
    (lambda ws: ws.show([0, 2.5]), TypeError, "show: rows are ids, pool positions or a selection name, not float"),
    (lambda ws: ws.add_column("c", [1.0], {"kind": "test"}), ValueError, "column 'c': 1 values for 3 ids"),
    (lambda ws: ws.add_embeddings("e", np.ones((1, 2), np.float32), {}), ValueError, "embeddings 'e': shape (1, 2) for 3 ids"),
])
def test_a_users_mistake_is_a_curate_error_the_cli_maps_to_an_exit_code(ws, call, kind, words):
    """They were KeyError, IndexError, ValueError and TypeError: no ``except CurateError`` caught them."""
    with pytest.raises(kind) as raised:
        call(ws)
    assert isinstance(raised.value, CurateError) and str(raised.value).startswith(words)
    assert not isinstance(raised.value, KeyError) or isinstance(raised.value, NotInWorkspaceError)
    assert exit_code(raised.value) == 78  # a setting (a name, a position) refused: the same every re-run


def test_apply_of_a_prompt_name_is_still_a_type_error_and_says_how_to_score_with_it(ws):
    with pytest.raises(TypeError, match=r"ws.score\('quality', backend\)"):
        ws.apply("quality")


def test_ipython_shows_a_curate_error_as_its_one_line_not_curates_frames(ws, capsys, monkeypatch):
    monkeypatch.delenv("CURATE_TRACEBACK", raising=False)
    with pytest.raises(NotInWorkspaceError) as raised:
        ws.show("deitaa")
    lines = raised.value._render_traceback_()
    assert lines == ["NoSuchRowError: show: no row with id 'deitaa' (and no selection of that name: [])"]
    interactive = pytest.importorskip("IPython.core.interactiveshell")
    shell = interactive.InteractiveShell()
    shell.user_ns["ws"] = ws
    capsys.readouterr()
    shell.run_cell("ws.show('deitaa')")
    shown = capsys.readouterr().out
    assert "NoSuchRowError: show: no row with id 'deitaa'" in shown
    assert "views.py" not in shown and "File " not in shown
    monkeypatch.setenv("CURATE_TRACEBACK", "1")  # who wants curate's frames asks for them, as in the CLI
    assert any("views.py" in line for line in raised.value._render_traceback_())


def test_select_without_a_method_runs_the_clis_default_selector(ws):
    assert SELECT.method == "deita"
    with pytest.raises(CurateError) as named:
        ws.select(method=SELECT.method, name="picked")
    with pytest.raises(CurateError) as defaulted:  # not "select needs method= or steps="
        ws.select(name="picked")
    assert str(defaulted.value) == str(named.value)


def test_a_step_on_a_workspace_with_no_pool_says_load_first(tmp_path):
    """``curate.Workspace("typo")`` then a judge said ``no column 'quality'; derived columns [], pool fields []``;
    then ``no pool loaded here`` after making an empty workspace at the typo. Now a step there says no workspace is
    there and makes none; in a workspace that holds no pool (a first load killed) it says load first."""
    ws = curate.Workspace(tmp_path / "typo")
    for call in (lambda: ws.score("quality", dead_backend()), lambda: ws.apply(Length())):
        with pytest.raises(NotInWorkspaceError, match=r"^no workspace at \S*typo; opening writes nothing: the first "
                                                      r"write makes it, e.g. ws.load\(SOURCE\)"):
            call()
    assert not (tmp_path / "typo").exists()
    with ws.lock():  # made, as a first load killed before its pool was written leaves it
        pass
    for call in (lambda: ws.score("quality", dead_backend()), lambda: ws.apply(Length())):
        with pytest.raises(NotInWorkspaceError, match=r"typo: no pool loaded here \(a new workspace\): "
                                                      r"ws.load\(SOURCE\) first"):
            call()


def test_a_missing_response_column_is_refused_before_any_bar_is_drawn(ws, capsys):
    capsys.readouterr()
    with pytest.raises(NotInWorkspaceError, match="'seed_answer'"):
        ws.score("quality", dead_backend(), response_column="seed_answer")
    assert "seed_answer_quality" not in capsys.readouterr().err


def test_the_api_an_auditor_read_in_help_has_type_hints_and_docstrings():
    import inspect

    from curate import LocalServer, Workspace
    from curate.pipeline import dedup

    for method in (OpenAIBackend.run, OpenAIBackend.close, OpenAIBackend.describe, LocalServer.command, dedup):
        assert inspect.getdoc(method), method.__qualname__
    score = inspect.signature(Workspace.score).parameters
    assert score["judge"].annotation == "Judge | Scorer | str | os.PathLike"
    assert score["backend"].annotation == "Backend | None"
    assert inspect.signature(Workspace.show).return_annotation == "RowsView"
    assert inspect.signature(Workspace.to_dataset).return_annotation == "datasets.Dataset"
    # help(ws.labels), help(curate.load), help(ws.signal), help(ws.train) said nothing of what they return
    for function, returns in ((Workspace.labels, "datasets.Dataset"), (curate.load, "datasets.Dataset"),
                              (Workspace.signal, "ApplyResult"), (Workspace.train, "TrainRun")):
        assert inspect.signature(function).return_annotation == returns, function.__qualname__


def test_the_command_line_says_rejects_in_its_own_line_not_as_a_python_warning(tmp_path):
    import os
    import subprocess
    import sys

    bad = write_jsonl(tmp_path / "bad.jsonl", [*ROWS, '{"instruction": "x", broken'])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "curate", "load", str(bad), "--workspace", str(tmp_path / "ws"),
                           "--on-error", "skip"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr
    assert "1 record(s) left out" in done.stdout + done.stderr and "CurateWarning" not in done.stdout + done.stderr


def test_a_workspace_removed_since_it_was_opened_reads_as_none_there_and_its_next_load_makes_it_anew(ws, tmp_path):
    """A notebook's ``ws`` after ``rm -rf`` of its folder: its Jupyter view raised FileNotFoundError on manifest.json,
    ``ws.row_values("quality")`` said "no column 'quality'; derived columns [], pool fields []", ``ws.show([0])``
    "row 0 is outside the pool (0..-1)" and ``ws.selection`` "make one: curate select": each now says there is no
    workspace there, as for a path that never held one, and a load makes it anew."""
    import shutil

    ws.add_column("quality", [1.0, 2.0, 3.0], {"kind": "test"})
    ws.add_selection("kept", ws.ids, ["kept"] * 3, ["selected"] * 3, [None] * 3, {"method": "test"})
    assert ws.row_values("quality") == [1.0, 2.0, 3.0] and "quality" in ws._repr_html_()
    shutil.rmtree(ws.path)
    assert not ws.exists  # it said True
    assert repr(ws).startswith(f"Workspace({str(ws.path)!r}, new:")
    assert "new: its first write" in ws._repr_html_()
    for read in (lambda: ws.row_values("quality"), lambda: ws.show([0]), lambda: ws.selection("kept"),
                 lambda: ws.select(method="exact", name="dedup"), lambda: ws.info()):
        with pytest.raises(NotInWorkspaceError, match=f"^no workspace at {ws.path}"):
            read()
    assert not ws.path.exists()  # the refused calls made nothing
    ws.load(write_jsonl(tmp_path / "again.jsonl", ROWS[:2]))
    assert len(ws) == 2 and ws.exists and ws.columns == {}
