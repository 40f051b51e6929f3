"""Compile a flag's rollout plan (stage, cohorts, percentage, kill) into an Unleash feature.

Stages:
  off       nobody
  internal  workspaces in the internal cohorts
  beta      internal cohorts + beta cohorts + optionally a percentage of every other workspace
            (flexibleRollout, sticky on workspaceId, so a workspace stays in as the % grows)
  ga        everyone (Unleash's default strategy): the gate is gone
A killed flag keeps its strategies but is disabled, so resuming restores exactly what was there.
"""

from collections.abc import Mapping, Sequence
from typing import Any

WORKSPACE_FIELD = "workspaceId"


def _cohort_members(names: Sequence[str], cohorts: Mapping[str, Sequence[str]]) -> list[str]:
    members: set[str] = set()
    for name in names:
        members.update(cohorts.get(name, ()))
    return sorted(members)


def _workspaces_in(flag_name: str, workspaces: list[str]) -> dict[str, Any]:
    return {
        "name": "flexibleRollout",
        "parameters": {"rollout": "100", "stickiness": WORKSPACE_FIELD, "groupId": flag_name},
        "constraints": [
            {
                "contextName": WORKSPACE_FIELD,
                "operator": "IN",
                "values": workspaces,
                "inverted": False,
                "caseInsensitive": False,
            }
        ],
        "variants": [],
    }


def compile_strategies(
    flag_name: str,
    stage: str,
    internal_cohorts: Sequence[str],
    beta_cohorts: Sequence[str],
    beta_percentage: int,
    cohorts: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    if stage == "ga":
        return [{"name": "default", "parameters": {}, "constraints": [], "variants": []}]
    strategies: list[dict[str, Any]] = []
    if stage in ("internal", "beta"):
        internal = _cohort_members(internal_cohorts, cohorts)
        if internal:
            strategies.append(_workspaces_in(flag_name, internal))
    if stage == "beta":
        beta = _cohort_members(beta_cohorts, cohorts)
        if beta:
            strategies.append(_workspaces_in(flag_name, beta))
        if beta_percentage > 0:
            strategies.append(
                {
                    "name": "flexibleRollout",
                    "parameters": {
                        "rollout": str(beta_percentage),
                        "stickiness": WORKSPACE_FIELD,
                        "groupId": flag_name,
                    },
                    "constraints": [],
                    "variants": [],
                }
            )
    return strategies


def compile_feature(
    *,
    name: str,
    description: str,
    stage: str,
    killed: bool,
    internal_cohorts: Sequence[str],
    beta_cohorts: Sequence[str],
    beta_percentage: int,
    cohorts: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    strategies = compile_strategies(
        name, stage, internal_cohorts, beta_cohorts, beta_percentage, cohorts
    )
    # Unleash treats an enabled feature with no strategies as on for everyone, so an empty
    # plan (say, internal with an empty cohort) must compile to disabled, never to enabled.
    return {
        "name": name,
        "description": description,
        "type": "release",
        "project": "default",
        "enabled": bool(strategies) and not killed and stage != "off",
        "stale": False,
        "impressionData": False,
        "strategies": strategies,
        "variants": [],
    }
