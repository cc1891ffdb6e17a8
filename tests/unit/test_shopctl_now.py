"""shopctl's --now for the retention jobs: a mistyped future clock is refused before anything runs.

The jobs archive, anonymize and purge what is old relative to --now, irreversibly; a --now of 2062
instead of 2026 made every recent order and audit record look past its retention."""

from __future__ import annotations

import datetime as dt

import pytest
import typer
from typer.testing import CliRunner

from shopctl.__main__ import app
from shopctl.common import parse_now

FUTURE = (dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 36)).isoformat()


def test_past_and_naive_times_are_accepted_as_utc() -> None:
    assert parse_now("2005-06-01T00:00:00") == dt.datetime(2005, 6, 1, tzinfo=dt.UTC)
    assert parse_now("2005-06-01T02:00:00+02:00") == dt.datetime(2005, 6, 1, tzinfo=dt.UTC)
    before = dt.datetime.now(dt.UTC)
    assert before <= parse_now("") <= dt.datetime.now(dt.UTC)


def test_a_future_now_is_refused_unless_asked_for() -> None:
    with pytest.raises(typer.Exit) as refused:
        parse_now(FUTURE)
    assert refused.value.exit_code == 2
    assert parse_now(FUTURE, allow_future=True) == dt.datetime.fromisoformat(FUTURE)
    slightly_ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)  # clock skew
    assert parse_now(slightly_ahead.isoformat()) == slightly_ahead


def test_garbage_is_refused() -> None:
    with pytest.raises(typer.Exit) as refused:
        parse_now("next tuesday")
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    "command",
    [
        ["orders", "archive"],
        ["orders", "export"],
        ["orders", "purge"],
        ["audit", "retention"],
        ["retention", "run"],
    ],
)
def test_every_retention_command_refuses_a_future_now_before_touching_anything(command, monkeypatch) -> None:
    # nothing may be reached: a database at this address would fail the command differently
    monkeypatch.setenv("SHOPMESH_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    result = CliRunner().invoke(app, [*command, "--now", FUTURE])
    assert result.exit_code == 2, result.output
    assert "--allow-future-now" in result.output
