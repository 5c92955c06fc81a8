"""The chat server against hostile or careless clients: floods of new clients, chosen cookies, other hosts
(DNS rebinding) and other sites, thousands of boxes, endless conversations."""

from __future__ import annotations

import http.client
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_chat_server import events, png, upload

from gpt4roi.chat import BoxGeometryModel
from gpt4roi.chat.server import COOKIE, create_app
from gpt4roi.chat.session import ConversationLimits

BASE = "http://127.0.0.1:7860"
ASK = {"message": "What is <region1>?", "boxes": [[10, 10, 60, 60]]}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(app, cookie: str | None = None) -> TestClient:
    """A browser on the server's own address, optionally holding ``cookie`` as the session cookie."""
    browser = TestClient(app, base_url=BASE)
    if cookie is not None:
        browser.cookies.set(COOKIE, cookie, domain="127.0.0.1", path="/")
    return browser


def test_a_flood_of_new_clients_does_not_push_out_a_conversation():
    app = create_app(BoxGeometryModel(), max_sessions=64)
    app.state.store.clock = Clock()
    alice = client(app)
    upload(alice, png(200, 100))
    assert events(alice.post("/api/chat", json=ASK))[-1][0] == "done"
    for _ in range(150):  # clients that only look at the page take no place
        visitor = client(app)
        assert visitor.get("/").status_code == 200 and visitor.get("/api/state").status_code == 200
    assert len(app.state.store) == 1
    answers = [upload(client(app), png(50, 50)).status_code for _ in range(150)]  # and 150 that upload
    assert answers == [200] * 63 + [503] * 87
    refused = upload(client(app), png(50, 50))
    assert refused.headers["retry-after"] == "3600"
    assert refused.json()["error"] == ("the server already holds 64 conversations, its limit; a conversation "
                                       "ends after 60 minutes without use, so try again in about 60 minute(s)")
    state = alice.get("/api/state").json()
    assert state["width"] == 200 and [r["question"] for r in state["history"]] == ["What is <region1>?"]


def test_each_conversation_ends_after_its_own_idle_time():
    app = create_app(BoxGeometryModel(), max_sessions=2, idle_minutes=10)
    clock = app.state.store.clock = Clock()
    early, late = client(app), client(app)
    upload(early, png(100, 100))
    clock.now += 300
    upload(late, png(120, 100))
    clock.now += 200  # early: 500 s without use, late: 200 s
    refused = upload(client(app), png(50, 50))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "100"
    assert refused.json()["error"].endswith("try again in about 2 minute(s)")
    clock.now += 101  # early passes 600 s without use, late is at 301 s
    assert early.get("/api/state").json()["has_image"] is False
    assert late.get("/api/state").json()["width"] == 120
    assert upload(client(app), png(50, 50)).status_code == 200


def test_use_keeps_a_conversation_alive():
    app = create_app(BoxGeometryModel(), max_sessions=1, idle_minutes=10)
    clock = app.state.store.clock = Clock()
    alice = client(app)
    upload(alice, png(100, 100))
    for _ in range(5):
        clock.now += 500
        assert alice.get("/api/state").json()["has_image"] is True
    assert upload(client(app), png(50, 50)).status_code == 503


def test_cookies_the_server_did_not_issue_get_a_fresh_session():
    app = create_app(BoxGeometryModel())
    chosen = "attacker-chosen-key-0123456789"
    victim = client(app, chosen)
    response = upload(victim, png(100, 100))
    issued = victim.cookies.get(COOKIE)
    assert issued != chosen and f"{COOKIE}={issued}" in response.headers["set-cookie"]
    attacker = client(app, chosen)
    assert attacker.get("/api/state").json()["has_image"] is False
    token, _, signature = issued.rpartition(".")
    forged = client(app, f"{token[:-1]}x.{signature}")
    assert forged.get("/api/state").json()["has_image"] is False
    assert victim.get("/api/state").json()["has_image"] is True
    restarted = create_app(BoxGeometryModel())  # another process: another secret
    assert client(restarted, issued).get("/api/state").headers["set-cookie"].startswith(COOKIE)


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:7860", True), ("localhost:7860", True), ("[::1]:7860", True), ("LOCALHOST:7860", True),
    ("attacker.example:7860", False), ("attacker.example", False), ("127.0.0.1:8080", False),
    ("127.0.0.1", False), ("127.0.0.1.nip.io:7860", False), ("", False), ("[bad:7860", False)])
def test_the_host_must_be_the_address_the_server_listens_on(host, allowed):
    response = client(create_app(BoxGeometryModel())).get("/api/state", headers={"host": host})
    assert (response.status_code == 200) is allowed
    if not allowed:
        assert response.status_code == 403
        assert response.json()["error"] == (
            f"refused: the request names host {host!r}, which is not this server's address (127.0.0.1:7860); "
            "to reach the chat under another name, start it with allowed_hosts=[<that name>]")


def test_other_sites_cannot_use_the_chat():
    app = create_app(BoxGeometryModel())
    browser = client(app)
    upload(browser, png(100, 100))
    for origin in ("http://attacker.example:7860", "https://attacker.example", "null", "http://127.0.0.1:9999"):
        response = browser.post("/api/chat", json=ASK, headers={"origin": origin})
        assert response.status_code == 403
        assert response.json()["error"] == f"refused: a request from another site ({origin}) cannot use this chat"
    assert browser.get("/api/state").json()["history"] == []
    same = browser.post("/api/chat", json=ASK, headers={"origin": "http://localhost:7860"})
    assert events(same)[-1][0] == "done"


def test_allowed_hosts_admit_a_reverse_proxy_name():
    app = create_app(BoxGeometryModel(), allowed_hosts=["Chat.Example.org"])
    proxy = client(app)
    assert proxy.get("/", headers={"host": "chat.example.org"}).status_code == 200
    assert proxy.get("/", headers={"host": "chat.example.org", "origin": "https://chat.example.org"}).status_code == 200
    assert proxy.get("/", headers={"host": "other.example.org"}).status_code == 403


@contextmanager
def served(app):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the chat server did not start"
        time.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_real_server_checks_the_host_against_its_socket():
    """DNS rebinding as uvicorn sees it: the connection reaches 127.0.0.1:<port>, the Host names the attacker."""
    with served(create_app(BoxGeometryModel())) as port:
        for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200),
                             (f"rebind.attacker.example:{port}", 403)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/api/state", headers={"Host": host})
            assert connection.getresponse().status == status, host
            connection.close()


def test_thousands_of_boxes_are_refused_and_the_limit_is_set_by_config():
    app = create_app(BoxGeometryModel(), conversation=ConversationLimits(max_boxes=3, max_rounds=2))
    browser = client(app)
    upload(browser, png(400, 400))
    many = browser.post("/api/chat", json={"message": "What is <region1>?",
                                           "boxes": [[i % 300, 0, i % 300 + 10, 10] for i in range(5000)]})
    assert many.status_code == 400
    assert many.json()["error"] == "5000 boxes: at most 3 boxes per image; delete some boxes"
    four = browser.post("/api/chat", json={"message": "What is <region1>?", "boxes": [[0, 0, 10, 10]] * 4})
    assert four.json()["error"] == "4 boxes: at most 3 boxes per image; delete some boxes"
    for _ in range(2):
        assert events(browser.post("/api/chat", json=ASK))[-1][0] == "done"
    third = browser.post("/api/chat", json={"message": "And now?", "boxes": [[10, 10, 60, 60]]})
    assert third.status_code == 400
    assert third.json()["error"] == ("this conversation has reached its limit of 2 questions; clear the "
                                     "conversation to start over")
    assert browser.post("/api/clear").status_code == 200
    assert events(browser.post("/api/chat", json=ASK))[-1][0] == "done"
