"""No single workspace moves a rollout: the rule every automatic rollout decision follows.

Evidence (calls, ratings, reviewed transcripts) is kept per workspace as plain counts. The
guard's pause and a release plan's advance are taken only when the decision *holds without any
one workspace*: on the pooled evidence, and again on the pool with each workspace's evidence
left out in turn, each time with enough of it (the thresholds are counted without the workspace
that brings the most), from at least `min_workspaces` distinct workspaces.

Why this rule: whatever one workspace does with its own calls, ratings and references — good or
bad, a few or thousands — an automatic move happens only if the other workspaces' evidence alone
calls for it too. So no customer can walk a release plan to GA for everyone, nor switch the tier
off for everyone, by itself. It needs no tuning beyond `min_workspaces`, it costs one pass over
the counts per workspace, and it is easy to explain next to the figures it acted on ("47 calls
from 9 workspaces; largest share 18 %"). What it does not do: one workspace can still *hold* a
move back (a plan waits when its own calls fail; a flood of its healthy calls can dilute another
cohort's regression in a pooled figure); holding back is what a person reviews anyway.

`min_workspaces = 1` is the pooled rule of before (every call counts alike, one workspace may
decide): for a cohort of one trusted workspace, such as our own during internal alpha.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, Field

# How many workspaces an audit entry or a page names one by one; the rest are summed.
NAMED_WORKSPACES = 10


@dataclass(frozen=True)
class Counts:
    """Counts that add up across workspaces and subtract one out: a subclass lists its fields
    (all ints). `size` is what a threshold like "min calls" is counted in."""

    def __add__(self, other: Self) -> Self:
        return type(self)(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in _fields(self)}
        )

    def __sub__(self, other: Self) -> Self:
        return type(self)(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in _fields(self)}
        )

    @property
    def size(self) -> int:
        raise NotImplementedError


C = TypeVar("C", bound=Counts)


def _fields(counts: Counts) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(counts)


def total(parts: Iterable[C], zero: C) -> C:
    result = zero
    for part in parts:
        result = result + part
    return result


def holds_without_any_one(
    by_workspace: Mapping[str, C], zero: C, test: Callable[[C], bool], min_workspaces: int
) -> bool:
    """`test` holds on the pooled counts and, from `min_workspaces` of 2 on, with each
    workspace's counts left out in turn (and there are that many workspaces)."""
    pooled = total(by_workspace.values(), zero)
    if min_workspaces <= 1:
        return test(pooled)
    if len(by_workspace) < min_workspaces:
        return False
    return test(pooled) and all(test(pooled - part) for part in by_workspace.values())


class WorkspaceShare(BaseModel):
    workspace_id: str
    count: int
    share: float


class EvidenceSummary(BaseModel):
    """Who the evidence behind a figure came from: "47 calls from 9 workspaces; largest share
    18 %", with the largest contributors named."""

    count: int
    unit: str
    workspaces: int
    largest_share: float | None
    largest: list[WorkspaceShare] = Field(
        default_factory=list, description=f"The {NAMED_WORKSPACES} workspaces with the most."
    )

    def __str__(self) -> str:
        if not self.count:
            return f"no {self.unit}"
        share = f"{round((self.largest_share or 0) * 100)} %"
        return (
            f"{self.count} {self.unit} from {self.workspaces} workspace"
            f"{'' if self.workspaces == 1 else 's'}; largest share {share}"
        )


def summarize(sizes: Mapping[str, int], unit: str) -> EvidenceSummary:
    counted = {workspace: size for workspace, size in sizes.items() if size > 0}
    count = sum(counted.values())
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    return EvidenceSummary(
        count=count,
        unit=unit,
        workspaces=len(counted),
        largest_share=round(ranked[0][1] / count, 4) if ranked else None,
        largest=[
            WorkspaceShare(workspace_id=w, count=n, share=round(n / count, 4))
            for w, n in ranked[:NAMED_WORKSPACES]
        ],
    )
