"""The one "log on change" helper, and the refused-publish registry fed by the client's error callback."""

from __future__ import annotations

import logging

import nats.errors
import pytest

from exporter.jsapi import DeniedSubjects
from exporter.logs import StateLog

log = logging.getLogger("tests.state_log")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == log.name]


def test_a_state_is_logged_when_it_changes_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    states = StateLog(log)
    for state in ("down", "down", "up", "up", "down"):
        states.enter(state, logging.INFO, "now %s", state)
    assert lines(caplog) == ["now down", "now up", "now down"]


def test_keys_have_their_own_state_starting_at_the_initial_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stages = StateLog(log, initial="ok")
    stages.enter("ok", logging.INFO, "lag recovered", key="lag")  # never failed: nothing to say
    stages.enter("failing", logging.WARNING, "lag failed", key="lag")
    stages.enter("failing", logging.WARNING, "dlq failed", key="dlq")
    stages.enter("failing", logging.WARNING, "lag failed", key="lag")
    stages.enter("ok", logging.INFO, "lag recovered", key="lag")
    assert lines(caplog) == ["lag failed", "dlq failed", "lag recovered"]
    assert stages.state("dlq") == "failing"
    assert stages.state("never-seen") == "ok"


def test_an_unchanged_state_is_repeated_after_the_interval_with_a_tally(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    malformed = StateLog(log, repeat_after=300.0, clock=lambda: now[0])
    for moment in (0.0, 10.0, 20.0, 300.0):
        now[0] = moment
        held_back = malformed.suppressed("nak")
        malformed.enter("malformed", logging.WARNING, "bad advisory (%d held back)", held_back, key="nak")
    assert lines(caplog) == ["bad advisory (0 held back)", "bad advisory (2 held back)"]
    assert malformed.suppressed("nak") == 0


def test_denied_subjects_come_from_publish_permission_violations_only() -> None:
    denied = DeniedSubjects()
    # What nats-py hands the error callback for the server's -ERR (it lower-cases the whole line).
    assert denied.note(nats.errors.Error('nats: permissions violation for publish to "$js.api.info"'))
    assert not denied.note(nats.errors.Error('nats: permissions violation for subscription to "x.>"'))
    assert not denied.note(nats.errors.StaleConnectionError())
    assert "$JS.API.INFO" in denied
    assert "$JS.API.STREAM.LIST" not in denied
    denied.forget("$JS.API.INFO")
    assert "$JS.API.INFO" not in denied
    assert not denied
