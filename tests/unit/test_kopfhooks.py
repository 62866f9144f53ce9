"""kopfhooks.watch_listed_namespaces: a namespace that kopf's namespace watch first sees in its
own initial listing (created while the operator started) is watched, not dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.structs.references import Insights
from kopf._core.reactor import observation

from mlops_operator.kopfhooks import watch_listed_namespaces


def listed(name: str, **meta: Any) -> dict[str, Any]:
    """A namespace as the watch's initial listing hands it over (event type None)."""
    return {"type": None, "object": {"metadata": {"name": name, **meta}}}


async def test_kopf_alone_drops_a_namespace_seen_first_in_the_watch_listing() -> None:
    """What the hook is for: if kopf ever takes this listing itself, the hook can go."""
    original = observation.process_discovered_namespace_event
    process = getattr(original, "__wrapped__", original)
    insights = Insights()
    await process(raw_event=listed("team-a"), namespaces=["team-*"], insights=insights)
    assert insights.namespaces == set()


async def test_a_namespace_first_seen_in_the_watch_listing_is_watched() -> None:
    assert watch_listed_namespaces()
    assert watch_listed_namespaces()  # installing twice keeps one wrapper
    process = observation.process_discovered_namespace_event
    insights = Insights()
    revisions = 0

    async def count() -> None:
        nonlocal revisions
        async with insights.revised:
            await insights.revised.wait()
            revisions += 1

    waiter = asyncio.create_task(count())
    await asyncio.sleep(0)  # the waiter holds the condition's wait
    await process(raw_event=listed("team-a"), namespaces=["team-*"], insights=insights)
    await asyncio.wait_for(waiter, 5)
    assert insights.namespaces == {"team-a"} and revisions == 1  # the orchestrator is woken
    await process(raw_event=listed("other"), namespaces=["team-*"], insights=insights)
    assert insights.namespaces == {"team-a"}  # not matching the pattern: not watched
    # watch events still go to kopf's own handling: a deletion drops the namespace
    await process(raw_event={"type": "DELETED", "object": {"metadata": {"name": "team-a"}}},
                  namespaces=["team-*"], insights=insights)
    assert insights.namespaces == set()
