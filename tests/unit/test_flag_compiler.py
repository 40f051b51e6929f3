"""The rollout plan → Unleash feature compiler."""

from control_plane.rollout.compiler import compile_feature

COHORTS = {"internal": ["acme"], "beta-1": ["globex", "initech"], "empty": []}


def feature(**overrides: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "name": "f",
        "description": "",
        "stage": "internal",
        "killed": False,
        "internal_cohorts": ["internal"],
        "beta_cohorts": ["beta-1"],
        "beta_percentage": 0,
        "cohorts": COHORTS,
    }
    return compile_feature(**(plan | overrides))  # type: ignore[arg-type]


def constraint_values(compiled: dict[str, object]) -> list[list[str]]:
    return [s["constraints"][0]["values"] for s in compiled["strategies"] if s["constraints"]]  # type: ignore[attr-defined, index]


def test_internal_targets_internal_cohort_only() -> None:
    compiled = feature()
    assert compiled["enabled"] is True
    assert constraint_values(compiled) == [["acme"]]
    assert compiled["strategies"][0]["parameters"]["stickiness"] == "workspaceId"  # type: ignore[index]


def test_beta_adds_beta_cohorts_and_percentage() -> None:
    compiled = feature(stage="beta", beta_percentage=25)
    assert constraint_values(compiled) == [["acme"], ["globex", "initech"]]
    gradual = compiled["strategies"][-1]  # type: ignore[index]
    assert gradual["parameters"] == {"rollout": "25", "stickiness": "workspaceId", "groupId": "f"}
    assert gradual["constraints"] == []


def test_ga_is_the_default_strategy() -> None:
    assert feature(stage="ga")["strategies"] == [
        {"name": "default", "parameters": {}, "constraints": [], "variants": []}
    ]


def test_off_and_empty_plans_are_disabled_never_open() -> None:
    assert feature(stage="off")["enabled"] is False
    assert feature(stage="off")["strategies"] == []
    # An enabled feature without strategies is on for everyone in Unleash: must not happen.
    empty = feature(internal_cohorts=["empty"])
    assert empty["strategies"] == [] and empty["enabled"] is False


def test_killed_keeps_strategies_but_disables() -> None:
    killed = feature(stage="beta", killed=True)
    assert killed["enabled"] is False
    assert constraint_values(killed) == constraint_values(feature(stage="beta"))
