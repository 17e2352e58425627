"""Signal handling on a real Service: the first signal asks, the second insists."""

from __future__ import annotations

import signal

import pytest

from app.config import load_settings
from app.ops import signals as signals_module
from app.service import Service


def test_first_signal_sets_the_flag_second_exits_at_once(monkeypatch):
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(signals_module.os, "_exit", fake_exit)
    service = Service(load_settings([], {}))
    service.signals.received(signal.SIGTERM)
    assert service.stopping.is_set() and exits == []
    with pytest.raises(SystemExit):
        service.signals.received(signal.SIGINT)
    assert exits == [1]
