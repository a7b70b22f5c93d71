"""Cluster usability: hub access where the config allows it, and training against a retriever that serves
only Search-R1's ``POST /retrieve`` (no ``/health``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from s3ray.cluster import worker_env
from s3ray.config import load_config
from s3ray.train.trainer import _check_services


def test_embedded_default_is_offline_and_the_paper_preset_may_download():
    assert worker_env(load_config())["HF_HUB_OFFLINE"] == "1"
    env = worker_env(load_config("s3_8_3_3"))
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env
    assert "HF_HUB_OFFLINE" not in worker_env(load_config(None, ["cluster.hub_offline=false"]))


class RetrieveOnly(BaseHTTPRequestHandler):
    """Search-R1's retrieval server contract: POST /retrieve and nothing else (GET /health is a 404)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        if self.path != "/retrieve":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        result = [[{"document": {"id": str(i), "contents": f'"Title {i}"\n{q}'}, "score": 1.0}
                   for i in range(body["topk"])] for q in body["queries"]]
        data = json.dumps({"result": result}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def retrieve_only_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RetrieveOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/retrieve"
    server.shutdown()
    server.server_close()


def test_health_check_refuses_a_retrieve_only_server_and_says_how_to_use_it(retrieve_only_url):
    cfg = load_config(None, [f"retriever.url={retrieve_only_url}"])
    with pytest.raises(RuntimeError, match="retriever.health_check=false"):
        _check_services(cfg)


def test_without_health_check_a_retrieve_only_server_is_accepted(retrieve_only_url):
    _check_services(load_config(None, [f"retriever.url={retrieve_only_url}", "retriever.health_check=false"]))


def test_without_health_check_a_dead_retriever_is_still_refused(retrieve_only_url):
    dead = retrieve_only_url.replace("/retrieve", "/nothing")  # answers 404 to POST
    cfg = load_config(None, [f"retriever.url={dead}", "retriever.health_check=false", "retriever.retries=0"])
    with pytest.raises(RuntimeError, match="cannot retrieve"):
        _check_services(cfg)
