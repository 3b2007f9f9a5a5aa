"""A Ray cluster address curate cannot use is a setting refused (78) or a cluster not there (75), in one line saying
which form the address takes; no Ray starts."""

import socket
import sys

import pytest

from curate.errors import ConfigError, RetryLaterError
from curate.scale.cluster import check_reachable
from tests.cli_in_process import curate_in_process
from tests.conftest import write_jsonl

pytest.importorskip("ray")


def test_an_address_without_its_port_is_a_setting_refused_naming_the_forms(tmp_path):
    """`--address 127.0.0.1` (the port left out) ended with Ray's "error: Invalid address format: 127.0.0.1",
    exit 1 (any other failure), naming neither the option nor the form an address takes."""
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": f"Task {i}.", "output": f"Done {i}."} for i in range(4)])
    proc = curate_in_process("run", pool, "--budget", "2", "--out", tmp_path / "out", "--engine", "ray",
                             "--address", "127.0.0.1")
    assert proc.returncode == 78, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: Ray cluster address '127.0.0.1': not HOST:PORT (the address `ray start --head` prints, "
                      "e.g. 127.0.0.1:6379), ray://HOST:PORT (Ray Client) or auto"]
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        check_reachable("head-node")
    check_reachable("auto")  # Ray's own forms stay Ray's to read
    check_reachable("local")


def test_a_ray_client_address_with_nothing_there_names_the_client_servers_port():
    """For ray://HOST:PORT nothing listening said to start the head with `--port=PORT`: that is the GCS port, and
    the head so started still has no Ray Client server on PORT (it opens 10001)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryLaterError) as caught:
        check_reachable(f"ray://127.0.0.1:{port}")
    assert f"`ray start --head --ray-client-server-port={port}`" in str(caught.value)
    with pytest.raises(RetryLaterError, match=f"`ray start --head --port={port}`"):
        check_reachable(f"127.0.0.1:{port}")
