"""Progress bars over a long run: the rate and the ETA follow the recent rate, not the average
since the start (an hour-long run that slows down must not promise the early speed)."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
import tqdm.std

from selfinstruct.llm.engine import _progress_bar
from selfinstruct.stages.bootstrap import _progress
from selfinstruct.stages.context import StageContext


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _engine_bar(total: int) -> Any:
    return _progress_bar(total, "instances", enabled=True)


def _bootstrap_bar(total: int) -> Any:
    return _progress(cast(StageContext, SimpleNamespace(progress=True)), "bootstrap", total)


@pytest.mark.parametrize("make", [_engine_bar, _bootstrap_bar], ids=["engine", "bootstrap"])
def test_the_rate_and_eta_follow_the_recent_rate(
    make: Callable[[int], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.setattr("sys.stderr", _Terminal())
    total = 100_000
    bar = make(total)
    assert not bar.disable
    for _ in range(3000):  # 50 minutes at 20 per second
        now[0] += 1.0
        bar.update(20)
    for _ in range(120):  # then two minutes at 2 per second
        now[0] += 1.0
        bar.update(2)
    meter = bar.format_dict
    rate = meter["rate"]
    bar.close()
    average = meter["n"] / meter["elapsed"]
    assert average > 19  # what a bar without smoothing would show
    assert rate == pytest.approx(2.0, rel=0.1)
    # The ETA tqdm prints is (total - n) / rate: the slow one, not the early speed's.
    assert (total - meter["n"]) / rate > 9 * (total - meter["n"]) / average
