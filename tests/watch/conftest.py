import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agentvigil.sinks.recorder import process_start_time


def line(event_type, ts=None, **fields):
    return json.dumps({"event_type": event_type, "ts": time.time() if ts is None else ts, **fields},
                      separators=(",", ":")) + "\n"


def write_meta(directory, pid=None, start=None, agent="bot", host=None, **extra):
    os.makedirs(directory, exist_ok=True)
    pid = os.getpid() if pid is None else pid
    meta = {"schema_version": 1, "session_id": os.path.basename(directory), "agent": agent, "pid": pid,
            "process_start_time": process_start_time(pid) if start is None else start,
            "host": host or socket.gethostname(), "started_at": time.time(), **extra}
    with open(os.path.join(directory, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    return meta


def append(path, text):
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()


def wait_for(predicate, timeout=5.0, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Receiver:
    """A local webhook receiver on 127.0.0.1: records bodies; ``fail_first`` answers 500 that many times."""

    def __init__(self, fail_first=0, delay=0.0):
        self.bodies = []
        self.received_at = []
        self.attempts = 0
        self.fail_first = fail_first
        self.delay = delay
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.attempts += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received_at.append(time.perf_counter())
                receiver.bodies.append(json.loads(body))
                receiver.event.set()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
