"""evals/curation_session.ipynb runs top to bottom in a real Jupyter kernel, so it never rots."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "evals" / "curation_session.ipynb"


def test_curation_session_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, if any cell fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("curate workspace" in h for h in html)  # Workspace._repr_html_
    assert any("curate-rows" in h for h in html)  # ws.show(...)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # at least one plot rendered inline
    session = tmp_path / "curate-session"  # one folder by name: running the notebook again resumes in it
    assert (session / "report.html").stat().st_size > 10_000
    assert (session / "ws" / "embeddings" / "default.json").exists()
    # the selection's rows around the budget of 20, by rank: Selection.rows() ranks from 1 (the cell added 1 again)
    printed = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" and "selection.rows()"
                      in cell.source for o in cell.outputs if o.output_type == "stream")
    assert [line.split()[:2] for line in printed.splitlines()][:3] == [["19", "kept"], ["20", "kept"],
                                                                      ["21", "not_reached"]], printed
