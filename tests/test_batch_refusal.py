"""The openai-batch backend's refusal (HTTP 401/403/404) names the model and the URL, as the online backend's does
(against the project's fault-injecting loopback server)."""

import pytest

from curate.errors import CurateError
from curate.llm.batch import OpenAIBatchBackend
from curate.llm.judges import Judge
from curate.session import Workspace
from tests.conftest import write_jsonl
from tests.fault_server import FaultServer


def test_a_refused_key_names_the_model_and_the_url(tmp_path):
    """The old line said only 'openai-batch: HTTP 401: the server refuses the API key: ...': not which model at
    which server (a user with several endpoints could not tell which one refused)."""
    ws = Workspace(tmp_path / "ws")
    ws.load(write_jsonl(tmp_path / "p.jsonl", [{"instruction": "Name a prime.", "output": "2"}]))
    with FaultServer(api_key="the-right-key") as srv:
        backend = OpenAIBatchBackend(srv.base_url, "gpt-4o-mini", workspace=ws, api_key="a-wrong-key", poll_s=0.05)
        with pytest.raises(CurateError) as refused:
            ws.apply(Judge("complexity", backend), progress=False)
    said = str(refused.value)
    assert "HTTP 401" in said and "the API key" in said, said
    assert f"model 'gpt-4o-mini' at {srv.base_url}" in said, said
