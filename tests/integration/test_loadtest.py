"""``docnum loadtest`` against the real app on a loopback server: it loads, reports and verifies
in the database (distinct numbers, contiguous counters), and refuses non-loopback targets."""
from __future__ import annotations

import json

import pytest

from docnum.cli import loadtest
from tests.conftest import serving


@pytest.fixture
def loadtest_env(monkeypatch, settings):
    for name, value in {"DOCNUM_DATABASE_URL": settings.database_url,
                        "DOCNUM_BROKER_URL": settings.broker_url,
                        "DOCNUM_RESULT_BACKEND": settings.result_backend,
                        "DOCNUM_JWT_SECRET": settings.jwt_secret}.items():
        monkeypatch.setenv(name, value)


def _run(capsys, *argv: str) -> tuple[int, dict]:
    code = loadtest.main([*argv, "--json", "--warmup", "0.2"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, report


@pytest.mark.parametrize("keys", [1, 3])
def test_closed_loop_sync_run_is_verified(live_server, loadtest_env, capsys,
                                          keys: int) -> None:
    code, report = _run(capsys, "--url", live_server, "--concurrency", "4", "--duration", "1.5",
                        "--keys", str(keys))
    assert code == 0, report
    assert report["completed"] > 10 and report["errors"] == {}
    assert report["statuses"] == {"201": report["completed"]}
    verify = report["verify"]
    assert verify["ok"] and verify["counters"] == keys and verify["contiguous"]
    assert verify["answers"] == verify["ledger_rows"]  # warm-up included, nothing unaccounted


def test_async_burst_is_accepted_and_completed(live_server, loadtest_env, capsys) -> None:
    code, report = _run(capsys, "--url", live_server, "--mode", "async", "--burst", "60")
    assert code == 0, report
    assert report["completed"] == 60 and report["accepted_in_s"] > 0
    assert report["verify"]["ok"]


def test_only_loopback_targets(loadtest_env) -> None:
    with pytest.raises(SystemExit, match="loopback"):
        loadtest.main(["--url", "http://192.0.2.10:8000", "--duration", "1"])


@pytest.mark.parametrize(("budget", "variable"), [("rate_limit_user", "DOCNUM_RATE_LIMIT_USER"),
                                                  ("rate_limit_ip", "DOCNUM_RATE_LIMIT_IP")])
def test_a_rate_limited_run_stops_early_and_names_the_variable(
        settings, celery_session_app, celery_session_worker, loadtest_env, capsys,
        budget: str, variable: str) -> None:
    """With the default budgets nearly every answer is 429: the run stops instead of measuring
    refusals, and says which budget refused and what raises it."""
    from docnum.api.app import create_app

    limits = {"rate_limit_user": "1000000/minute", "rate_limit_ip": "1000000/minute",
              budget: "5/minute"}
    app = create_app(settings.with_overrides(**limits), celery=celery_session_app)
    with serving(app) as url:
        code = loadtest.main(["--url", url, "--json", "--warmup", "0", "--concurrency", "4",
                              "--duration", "20"])
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 1, report
    assert report["elapsed_s"] < 10, report  # stopped early, long before --duration
    assert report["statuses"]["429"] > report["completed"]
    assert report["completed"] <= 5 and report["verify"]["ok"]
    other = ({"DOCNUM_RATE_LIMIT_USER", "DOCNUM_RATE_LIMIT_IP"} - {variable}).pop()
    advice = report["stopped_early"]
    assert f"raise {variable} in" in advice and f"raise {other}" not in advice, advice
    assert "429 RATE_LIMITED" in advice and "5 per 1 minute" in advice
    assert variable in err
