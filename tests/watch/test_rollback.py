import threading

import pytest

from agentvigil import RunKilled
from agentvigil.rollback import (
    COMPENSATED,
    FAILED,
    NEEDS_APPROVAL,
    NO_COMPENSATION,
    NOTHING_TO_UNDO,
    RollbackRegistry,
)


def registry(approve=None):
    undone = []
    r = RollbackRegistry(approve=approve)
    r.register("search", "read")
    r.register("db_insert", "write", compensate=lambda a: undone.append(("delete", a.data["row"])))
    r.register("send_email", "irreversible", compensate=lambda a: undone.append(("apology", a.data["to"])))
    return r, undone


def test_compensations_run_in_reverse_order_on_kill():
    r, undone = registry(approve=lambda action: True)
    with pytest.raises(RunKilled), r.scope() as journal:
        r.record("search", q="x")
        r.record("db_insert", row=1)
        r.record("send_email", to="a@example.com")
        r.record("db_insert", row=2)
        raise RunKilled("watch:loop")
    assert undone == [("delete", 2), ("apology", "a@example.com"), ("delete", 1)]
    assert [c.outcome for c in journal.report] == [COMPENSATED, COMPENSATED, COMPENSATED, NOTHING_TO_UNDO]
    assert journal.reason == "watch:loop"


def test_irreversible_needs_approval():
    asked = []
    r, undone = registry(approve=lambda action: asked.append(action.type) or False)
    r.record("send_email", to="b@example.com")
    report = r.rollback("kill")
    assert asked == ["send_email"] and undone == [] and report[0].outcome == NEEDS_APPROVAL
    r2, undone2 = registry()                      # no approval callback at all: never compensated
    r2.record("send_email", to="c@example.com")
    assert r2.rollback()[0].outcome == NEEDS_APPROVAL
    r2.record("send_email", to="d@example.com")   # approval given at rollback time
    assert r2.rollback(approve=lambda a: True)[0].outcome == COMPENSATED and undone2 == [("apology", "d@example.com")]


def test_failures_are_reported_and_the_rest_still_runs():
    r, undone = registry()
    r.register("flaky", "write", compensate=lambda a: 1 / 0)
    r.register("bare_write", "write")
    r.record("db_insert", row=7)
    r.record("flaky")
    r.record("bare_write")
    report = r.rollback()
    assert [c.outcome for c in report] == [NO_COMPENSATION, FAILED, COMPENSATED]
    assert "ZeroDivisionError" in report[1].error and undone == [("delete", 7)]
    assert r.rollback() == []                      # the journal was emptied


def test_normal_exit_commits_and_other_errors_do_not_roll_back():
    r, undone = registry()
    with r.scope():
        r.record("db_insert", row=1)
    with pytest.raises(ValueError), r.scope():
        r.record("db_insert", row=2)
        raise ValueError("agent bug")
    assert undone == [] and r.pending() == []


def test_per_action_override_unknown_types_and_kinds():
    r, undone = registry()
    r.record("db_insert", compensate=lambda a: undone.append("custom"), row=3)
    r.rollback()
    assert undone == ["custom"]
    with pytest.raises(KeyError, match="register it first"):
        r.record("launch_missiles")
    with pytest.raises(ValueError, match="kind must be"):
        r.register("x", "maybe")


def test_scopes_are_per_thread_and_context():
    r, undone = registry()
    barrier = threading.Barrier(2)

    def worker(row, kill):
        try:
            with r.scope():
                r.record("db_insert", row=row)
                barrier.wait(2)
                if kill:
                    raise RunKilled("x")
        except RunKilled:
            pass

    threads = [threading.Thread(target=worker, args=(1, True)), threading.Thread(target=worker, args=(2, False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert undone == [("delete", 1)]


def test_with_a_real_monitor_kill(tmp_path):
    from prometheus_client import CollectorRegistry

    import agentvigil

    mon = agentvigil.Monitor("rb", registry=CollectorRegistry(), heartbeat=False)
    r, undone = registry()
    with pytest.raises(RunKilled), mon.run() as run, r.scope():
        with run.step():
            r.record("db_insert", row=9)
        run.kill("watch:scope")
        with run.step():                        # the next boundary raises RunKilled
            r.record("db_insert", row=10)
    assert undone == [("delete", 9)]
    mon.close()
