"""The embedded evaluator's memo never keeps an answer from before a load: a kill that lands
while a decision is being evaluated must hold for every decision asked after it. (The memo
used to be taken after evaluating, so the old state's "enabled" went into the new memo and the
kill was ignored for that workspace until the next flag change: seen once in CI as an agent
created on a tier killed the request before.)"""

from typing import Any

import pytest

from control_plane.rollout.engine import EmbeddedEvaluator
from control_plane.settings import Settings

FLAG = "grok-realtime-tier"


def feature(enabled: bool) -> list[dict[str, Any]]:
    return [{"name": FLAG, "enabled": enabled, "strategies": [{"name": "default"}]}]


def evaluator_killed_mid_evaluation() -> EmbeddedEvaluator:
    """An open flag, and a kill loaded right after the first decision is evaluated (as another
    thread's load would land between the evaluation and the memo write)."""
    evaluator = EmbeddedEvaluator(Settings(_env_file=None))  # type: ignore[call-arg]
    evaluator.load(feature(True))
    evaluate = evaluator.evaluate

    def evaluate_then_kill(flag: str, context: dict[str, Any]) -> bool:
        decision = evaluate(flag, context)
        evaluator.evaluate = evaluate  # type: ignore[method-assign]
        evaluator.load(feature(False))
        return decision

    evaluator.evaluate = evaluate_then_kill  # type: ignore[method-assign]
    return evaluator


def test_a_kill_landing_mid_evaluation_holds_for_the_next_decision() -> None:
    evaluator = evaluator_killed_mid_evaluation()
    assert evaluator.is_enabled(FLAG, "acme") is True  # asked before the kill
    assert evaluator.is_enabled(FLAG, "acme") is False


def test_twin_memo_taken_after_evaluating_keeps_the_open_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def remember_late(
        self: EmbeddedEvaluator, key: tuple[str, str], flag: str, context: dict[str, Any]
    ) -> bool:
        decision = self.evaluate(flag, context)
        self._memo[key] = decision
        return decision

    monkeypatch.setattr(EmbeddedEvaluator, "_remember", remember_late)
    evaluator = evaluator_killed_mid_evaluation()
    assert evaluator.is_enabled(FLAG, "acme") is True
    assert evaluator.is_enabled(FLAG, "acme") is True  # the kill is ignored
