"""The HTTP servers agentvigil runs (/metrics, supervise's probes): HTTPS with a real client, basic auth,
node_exporter web-config files, and idle connections that must not pile up threads."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import agentvigil
from agentvigil import webconfig
from agentvigil.exposition import WEB_CONFIG_ENV, start_metrics_server
from agentvigil.supervise.server import ProbeServer

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def _no_web_config_env(monkeypatch):
    monkeypatch.delenv(WEB_CONFIG_ENV, raising=False)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """server.pem/server.key for 127.0.0.1 (self-signed), and client.pem/client.key signed by ca.pem."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", *EC, "-keyout", "server.key", "-out", "server.pem", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd=d)
    _openssl("req", "-x509", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=d)
    _openssl("req", *EC, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=scraper", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", "-days", "2", cwd=d)
    return d


@pytest.fixture(scope="module")
def bcrypt_hash() -> str:
    bcrypt = pytest.importorskip("bcrypt")
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    mon = agentvigil.Monitor("tls-bot", registry=registry, heartbeat=False)
    with mon.run(task_id="t"):
        pass
    mon.close()
    return registry


@pytest.fixture
def servers():
    started = []
    yield started.append
    for server in started:
        (server.close if isinstance(server, ProbeServer) else server.shutdown)()


def client_context(certs: Path, with_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "server.pem"))
    if with_client_cert:
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return context


def fetch(url: str, context: ssl.SSLContext | None = None, user: str | None = None,
          password: str | None = None) -> tuple[int, Message, bytes]:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.build_opener(*handlers).open(urllib.request.Request(url, headers=headers),
                                                         timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    """True once the server closes ``sock`` (EOF or reset); False if it is still open after ``within``."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def write_web_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- HTTPS -------------------------------------------------------------------------------------------

def test_https_scrape_serves_agent_metrics(certs, registry, servers):
    server, _ = start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"),
                                     keyfile=str(certs / "server.key"))
    servers(server)
    status, _, body = fetch(f"https://127.0.0.1:{server.server_port}/metrics", client_context(certs))
    assert status == 200
    assert 'agent_runs_total{agent="tls-bot",status="ok"} 1.0' in body.decode()
    assert server.scheme == "https"


def test_plain_http_to_the_tls_port_is_refused_and_https_keeps_working(certs, registry, servers):
    server, _ = start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"),
                                     keyfile=str(certs / "server.key"))
    servers(server)
    with pytest.raises(OSError):  # reset / disconnected: no metrics in clear text
        fetch(f"http://127.0.0.1:{server.server_port}/metrics")
    assert fetch(f"https://127.0.0.1:{server.server_port}/metrics", client_context(certs))[0] == 200


def test_a_silent_client_does_not_stall_tls_scrapes(certs, registry, servers):
    # prometheus_client's own server does the TLS handshake in its accept loop: one TCP connection that
    # never says hello blocks every scrape. Ours does it in the connection's thread.
    server, _ = start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"),
                                     keyfile=str(certs / "server.key"), idle_timeout=60)
    servers(server)
    with socket.create_connection(("127.0.0.1", server.server_port)) as silent:
        status, _, _ = fetch(f"https://127.0.0.1:{server.server_port}/metrics", client_context(certs))
        assert status == 200
        assert not closed_by_server(silent, within=0.2)  # still waiting on it, and it did not matter


def test_client_cert_required_by_web_config(certs, registry, servers, tmp_path):
    path = write_web_config(tmp_path / "web.yml", f"""
tls_server_config:
  cert_file: {certs / 'server.pem'}
  key_file: {certs / 'server.key'}
  client_ca_file: {certs / 'ca.pem'}
  client_auth_type: RequireAndVerifyClientCert
""")
    server, _ = start_metrics_server(0, registry=registry, web_config_file=path)
    servers(server)
    url = f"https://127.0.0.1:{server.server_port}/metrics"
    with pytest.raises(OSError):
        fetch(url, client_context(certs, with_client_cert=False))
    assert fetch(url, client_context(certs, with_client_cert=True))[0] == 200


# -- basic auth --------------------------------------------------------------------------------------

def test_basic_auth_needs_the_right_password(certs, registry, servers, bcrypt_hash):
    server, _ = start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"),
                                     keyfile=str(certs / "server.key"), basic_auth={"prom": bcrypt_hash})
    servers(server)
    url, context = f"https://127.0.0.1:{server.server_port}/metrics", client_context(certs)
    for user, password in ((None, None), ("prom", "wrong"), ("nobody", PASSWORD), ("prom", PASSWORD + "x"),
                           ("prom", "x" * 100)):
        status, headers, body = fetch(url, context, user, password)
        assert status == 401, (user, password)
        assert headers["WWW-Authenticate"] == 'Basic realm="agentvigil"'
        assert b"agent_runs_total" not in body
    for _ in range(2):  # the second one is answered from the verified-password cache
        status, _, body = fetch(url, context, "prom", PASSWORD)
        assert status == 200 and b'agent_runs_total{agent="tls-bot"' in body
    assert fetch(url, context, "prom", "wrong")[0] == 401  # the cache does not let a wrong password in


def test_malformed_authorization_headers_get_401(registry, servers, bcrypt_hash):
    server, _ = start_metrics_server(0, registry=registry, basic_auth={"prom": bcrypt_hash})
    servers(server)
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/metrics",
                                     headers={"Authorization": header})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10)
        assert err.value.code == 401, header


def test_web_config_file_with_relative_paths_tls_and_users(certs, registry, servers, bcrypt_hash, tmp_path):
    for name in ("server.pem", "server.key"):
        shutil.copy(certs / name, tmp_path / name)
    path = write_web_config(tmp_path / "web.yml", f"""
# the node_exporter format: paths relative to this file
tls_server_config:
  cert_file: server.pem
  key_file: server.key
  min_version: TLS12
basic_auth_users:
  prom: '{bcrypt_hash}'
""")
    server, _ = start_metrics_server(0, registry=registry, web_config_file=path)
    servers(server)
    url, context = f"https://127.0.0.1:{server.server_port}/metrics", client_context(certs)
    assert fetch(url, context)[0] == 401
    assert fetch(url, context, "prom", PASSWORD)[0] == 200


def test_environment_variable_is_the_default_web_config(certs, registry, servers, bcrypt_hash, tmp_path,
                                                        monkeypatch):
    path = write_web_config(tmp_path / "web.yml", f"basic_auth_users:\n  prom: '{bcrypt_hash}'\n")
    monkeypatch.setenv(WEB_CONFIG_ENV, path)
    server, _ = start_metrics_server(0, registry=registry)
    servers(server)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    assert fetch(url)[0] == 401
    assert fetch(url, None, "prom", PASSWORD)[0] == 200
    # an explicit empty web_config_file turns the environment off
    open_server, _ = start_metrics_server(0, registry=registry, web_config_file="")
    servers(open_server)
    assert fetch(f"http://127.0.0.1:{open_server.server_port}/metrics")[0] == 200


# -- bad configs: a clear error naming the field, before anything is served ----------------------------

BAD_CONFIGS = [
    ("tls_server_config:\n  cert_file: {d}/server.pem\n", "tls_server_config.key_file"),
    ("tls_server_config:\n  cert_file: {d}/missing.pem\n  key_file: {d}/server.key\n",
     "tls_server_config.cert_file: no such file"),
    (("tls_server_config:\n  cert_file: {d}/server.pem\n  key_file: {d}/server.key\n"
      "  client_auth_type: RequireAnyClientCert\n"), "tls_server_config.client_auth_type"),
    (("tls_server_config:\n  cert_file: {d}/server.pem\n  key_file: {d}/server.key\n"
      "  client_auth_type: RequireAndVerifyClientCert\n"), "tls_server_config.client_ca_file"),
    ("tls_server_config:\n  cert_file: {d}/server.pem\n  key_file: {d}/server.key\n  min_version: TLS9\n",
     "tls_server_config.min_version"),
    ("tls_server_config:\n  cert_file: {d}/server.pem\n  key_file: {d}/server.key\n  cipher_suites: [x]\n",
     "tls_server_config.cipher_suites: unknown or unsupported key"),
    ("tls_server_config:\n  cert_file: {d}/server.key\n  key_file: {d}/server.pem\n",
     "tls_server_config.cert_file: cannot load"),
    ("basic_auth_users:\n  prom: plaintext-password\n", "basic_auth_users.prom: expected a bcrypt hash"),
    ("basic_auth_users: [prom]\n", "basic_auth_users: expected a mapping"),
    ("http_server_config:\n  http2: true\n", "http_server_config: unknown or unsupported key"),
    ("tls_server_config: [\n", "not valid YAML"),
]


@pytest.mark.parametrize("text,message", BAD_CONFIGS)
def test_bad_web_config_raises_a_value_error_naming_the_field(certs, registry, tmp_path, text, message,
                                                              monkeypatch):
    path = write_web_config(tmp_path / "web.yml", text.format(d=certs))
    with pytest.raises(ValueError) as err:
        start_metrics_server(0, registry=registry, web_config_file=path)
    assert message in str(err.value) and path in str(err.value)
    monkeypatch.setenv(WEB_CONFIG_ENV, path)  # through the environment, the message says so
    with pytest.raises(ValueError, match=WEB_CONFIG_ENV):
        start_metrics_server(0, registry=registry)


def test_bad_keyword_arguments_name_the_argument(certs, registry, tmp_path):
    with pytest.raises(ValueError, match="keyfile"):
        start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"))
    with pytest.raises(ValueError, match="basic_auth.prom: expected a bcrypt hash"):
        start_metrics_server(0, registry=registry, basic_auth={"prom": "secret"})
    with pytest.raises(ValueError, match="not both"):
        start_metrics_server(0, registry=registry, certfile=str(certs / "server.pem"),
                             keyfile=str(certs / "server.key"), web_config_file=str(tmp_path / "web.yml"))
    with pytest.raises(ValueError, match="absent.yml: cannot read web config file"):
        start_metrics_server(0, registry=registry, web_config_file=str(tmp_path / "absent.yml"))


def test_missing_optional_packages_give_an_install_hint(registry, tmp_path, monkeypatch, bcrypt_hash):
    path = write_web_config(tmp_path / "web.yml", "{}\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    with pytest.raises(ValueError, match=r"pyyaml package: pip install agentvigil\[web\]"):
        start_metrics_server(0, registry=registry, web_config_file=path)
    monkeypatch.setitem(sys.modules, "bcrypt", None)
    with pytest.raises(ValueError, match=r"basic_auth needs the bcrypt package: pip install agentvigil\[web\]"):
        start_metrics_server(0, registry=registry, basic_auth={"prom": bcrypt_hash})
    assert webconfig.parse({}, "x") == webconfig.WebConfig()  # nothing asked for, nothing needed


# -- idle connections and the thread bound ----------------------------------------------------------

def _metrics_server(registry, **kw):
    server, _ = start_metrics_server(0, registry=registry, **kw)
    return server, server.server_port, f"http://127.0.0.1:{server.server_port}/metrics"


def _probe_server(registry, **kw):
    server = ProbeServer(registry, "127.0.0.1", 0, stale_after=3600, **kw)
    return server, server.port, f"http://127.0.0.1:{server.port}/healthz"


@pytest.mark.parametrize("make", [_metrics_server, _probe_server], ids=["metrics", "supervise"])
def test_idle_connections_are_closed_and_scrapes_still_work(registry, servers, make):
    server, port, url = make(registry, idle_timeout=0.5, max_connections=100)
    servers(server)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        assert all(closed_by_server(sock) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    status, _, body = fetch(url)
    assert status == 200 and body


@pytest.mark.parametrize("make", [_metrics_server, _probe_server], ids=["metrics", "supervise"])
def test_handler_threads_are_bounded(registry, servers, make):
    before = handler_threads()
    server, port, url = make(registry, idle_timeout=60, max_connections=4)
    servers(server)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        deadline = time.monotonic() + 10
        while handler_threads() - before < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler_threads() - before == 4
        extra = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        assert all(closed_by_server(sock) for sock in extra)  # refused at once, not queued on a thread
        for sock in extra:
            sock.close()
        assert handler_threads() - before == 4
        assert not closed_by_server(held[0], within=0.2)  # the held ones were not dropped to make room
    finally:
        for sock in held:
            sock.close()
    deadline, status = time.monotonic() + 10, 0
    while status != 200 and time.monotonic() < deadline:  # slots come back as the held threads see EOF
        try:
            status = fetch(url)[0]
        except OSError:
            time.sleep(0.05)
    assert status == 200


# -- supervise's probes share the code path ---------------------------------------------------------

def test_probe_server_over_tls_with_basic_auth(certs, registry, servers, bcrypt_hash, tmp_path):
    path = write_web_config(tmp_path / "web.yml", f"""
tls_server_config:
  cert_file: {certs / 'server.pem'}
  key_file: {certs / 'server.key'}
basic_auth_users:
  prom: '{bcrypt_hash}'
""")
    server = ProbeServer(registry, "127.0.0.1", 0, stale_after=3600, web_config_file=path)
    servers(server)
    base, context = f"https://127.0.0.1:{server.port}", client_context(certs)
    assert server.scheme == "https"
    assert fetch(base + "/healthz", context)[0] == 401
    status, _, body = fetch(base + "/healthz", context, "prom", PASSWORD)
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = fetch(base + "/metrics", context, "prom", PASSWORD)
    assert status == 200 and b'agent_runs_total{agent="tls-bot"' in body
    with pytest.raises(OSError):
        fetch(f"http://127.0.0.1:{server.port}/healthz")


def test_supervise_and_watch_accept_the_flag():
    from agentvigil.supervise.policy import build_policy

    assert build_policy(None, {"web_config_file": "/etc/agentvigil/web.yml"}).web_config_file == \
        "/etc/agentvigil/web.yml"
    from agentvigil.cli import build_parser

    args = build_parser().parse_args(["watch", "--metrics-port", "0", "--web-config-file", "w.yml", "x"])
    assert args.web_config_file == "w.yml"
