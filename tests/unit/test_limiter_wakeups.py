"""Which SmartLimiters a cluster event wakes: only those whose render can change."""

from __future__ import annotations

from slime.framework.runtime import ModuleRuntime
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.controller import Limiter, LimiterState


def limiter_with(**states: LimiterState) -> Limiter:
    limiter = Limiter(runtime=ModuleRuntime(name="limiter", kind="limiter", config=None), config=LimiterConfig())
    for key, state in states.items():
        ns, name = key.split("__")
        limiter.states[(ns, name)] = state
    return limiter


def woken(limiter: Limiter) -> set[str]:
    return {f"{ns}/{name}" for ns, name in limiter.scheduler.scheduled}


def test_pod_event_wakes_only_limiters_counting_that_pod() -> None:
    limiter = limiter_with(
        a__reviews=LimiterState(cr={}, evaluated=True, selector={"app": "reviews"}, pod_namespace="a"),
        a__ratings=LimiterState(cr={}, evaluated=True, selector={"app": "ratings"}, pod_namespace="a"),
        a__gateway=LimiterState(cr={}, evaluated=True, selector=None, pod_namespace="a"),
        a__new=LimiterState(cr={}),  # not evaluated yet: any pod of its namespace may matter
        b__new=LimiterState(cr={}),
        root__mesh=LimiterState(cr={}, evaluated=True, selector={"app": "reviews"}, pod_namespace=None),
    )
    limiter.poke_pod("a", {"app": "reviews", "version": "v1"})
    assert woken(limiter) == {"a/reviews", "a/new", "root/mesh"}


def test_service_and_spec_events_wake_the_limiter_of_that_name() -> None:
    limiter = limiter_with(a__reviews=LimiterState(cr={}), a__ratings=LimiterState(cr={}),
                           b__reviews=LimiterState(cr={}))
    limiter.poke_name("a", "reviews")
    assert woken(limiter) == {"a/reviews"}
    limiter.poke_namespace("b")
    assert woken(limiter) == {"a/reviews", "b/reviews"}


def test_counted_pods_are_reused_until_a_pod_or_service_event() -> None:
    from slime.framework.config import load_module_configs
    from slime.modules.limiter.controller import _counted_pods

    def pod(name: str) -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": "a", "labels": {"app": "reviews"}},
                "status": {"phase": "Running"}}

    limiter = limiter_with()
    limiter.globals_ = load_module_configs({"name": "limiter"})[0].globals
    pods = [pod("r-1")]
    limiter.indexes = {"pods": {"a": pods}, "serviceentries": {}}
    cr = {"metadata": {"name": "reviews", "namespace": "a", "generation": 1}, "spec": {}}
    service = {"metadata": {"name": "reviews", "namespace": "a"}, "spec": {"selector": {"app": "reviews"}}}
    state = LimiterState(cr=cr)
    assert [p["metadata"]["name"] for p in _counted_pods(limiter, state, [service])] == ["r-1"]
    pods.append(pod("r-2"))  # the index changed, but no event yet: the kept list is used
    assert len(_counted_pods(limiter, state, [service])) == 1
    limiter.poke_pod("b", {"app": "reviews"})  # an event in another namespace changes nothing here
    assert len(_counted_pods(limiter, state, [service])) == 1
    limiter.poke_pod("a", {"app": "reviews"})
    assert len(_counted_pods(limiter, state, [service])) == 2
    pods.append(pod("r-3"))
    limiter.object_epoch += 1  # what a Service or ServiceEntry event does
    assert len(_counted_pods(limiter, state, [service])) == 3
    pods.append(pod("r-4"))
    state.cr = {**cr, "metadata": {**cr["metadata"], "generation": 2}}  # a spec change
    assert len(_counted_pods(limiter, state, [service])) == 4
