"""Which SmartLimiters a cluster event wakes (only those whose render can change), and the
counted-pod cache of the limiter's hooks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import yaml

from slime.framework.config import load_module_configs
from slime.framework.kinds import DESTINATION_RULE, POD, SERVICE, SERVICE_ENTRY
from slime.framework.module import Metrics, ObjectsView, Settings
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import context, counted_pods, prometheus_queries
from slime.modules.limiter.controller import LimiterHooks
from tests.golden.test_golden import HERE as GOLDEN


def hooks() -> LimiterHooks:
    cfg = load_module_configs({"name": "limiter"})[0]
    settings = Settings(name="limiter", general=LimiterConfig(), globals=cfg.globals)
    return LimiterHooks(SimpleNamespace(settings=settings, kube=None))


def pod(name: str, ns: str = "a", app: str = "reviews") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "status": {"phase": "Running"}}


def test_pod_event_wakes_only_limiters_counting_that_pod() -> None:
    crs = {
        ("a", "reviews"): {"evaluated": True, "selector": {"app": "reviews"}, "pod_namespace": "a"},
        ("a", "ratings"): {"evaluated": True, "selector": {"app": "ratings"}, "pod_namespace": "a"},
        ("a", "gateway"): {"evaluated": True, "selector": None, "pod_namespace": "a"},
        ("a", "new"): {},  # not evaluated yet: any pod of its namespace may matter
        ("b", "new"): {},
        ("root", "mesh"): {"evaluated": True, "selector": {"app": "reviews"}, "pod_namespace": None},
    }
    obj = pod("r-1")
    obj["metadata"]["labels"]["version"] = "v1"
    woken = set(hooks().dependents(POD, "a", "r-1", obj, crs))
    assert woken == {("a", "reviews"), ("a", "new"), ("root", "mesh")}


def test_service_wakes_the_limiter_of_its_name_and_a_destination_rule_its_namespace() -> None:
    crs: dict[tuple[str, str], dict[str, Any]] = {("a", "reviews"): {}, ("a", "ratings"): {}, ("b", "reviews"): {}}
    h = hooks()
    assert set(h.dependents(SERVICE, "a", "reviews", {}, crs)) == {("a", "reviews")}
    assert set(h.dependents(DESTINATION_RULE, "b", "x", {}, crs)) == {("b", "reviews")}
    assert set(h.dependents(SERVICE_ENTRY, "b", "x", {}, crs)) == set()


def test_counted_pods_are_reused_until_a_pod_or_service_event() -> None:
    h = hooks()
    pods = [pod("r-1")]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "a"},
               "spec": {"selector": {"app": "reviews"}}}

    def counted(cr: dict[str, Any], state: dict[str, Any]) -> int:
        return len(h.view(cr, ObjectsView([service, *pods]), state).list(POD, "a"))

    cr = {"metadata": {"name": "reviews", "namespace": "a", "generation": 1}, "spec": {}}
    state: dict[str, Any] = {}
    assert counted(cr, state) == 1 and state["selector"] == {"app": "reviews"}
    pods.append(pod("r-2"))  # the cluster changed, but no event yet: the kept list is used
    assert counted(cr, state) == 1
    h.dependents(POD, "b", "x", pod("x", "b"), {})  # an event in another namespace changes nothing here
    assert counted(cr, state) == 1
    h.dependents(POD, "a", "r-2", pods[1], {})
    assert counted(cr, state) == 2
    pods.append(pod("r-3"))
    h.dependents(SERVICE, "a", "reviews", service, {})
    assert counted(cr, state) == 3
    pods.append(pod("r-4"))
    assert counted({**cr, "metadata": {**cr["metadata"], "generation": 2}}, state) == 4  # a spec change


def test_counted_pods_give_the_same_context_and_queries() -> None:
    """Narrowing a namespace's pods to ``counted_pods`` (the hooks' cache) changes neither the
    context nor the Prometheus queries, for every golden case."""
    from slime.framework.metrics import Handler

    handlers = {"cpu.sum": Handler(query='sum(cpu{namespace="$namespace",pod=~"$pod_name"})')}
    for path in sorted((GOLDEN / "limiter").glob("*.in.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        cr = next(d for d in docs if d["kind"] == "SmartLimiter")
        cr["metadata"].setdefault("namespace", "default")
        objects = [d for d in docs if d is not cr]
        config = path.with_name(path.name.replace(".in.", ".config."))
        cfg = load_module_configs(config.read_text())[0]
        settings = Settings(name="limiter", general=LimiterConfig.model_validate(cfg.general), globals=cfg.globals)
        view = ObjectsView(objects)
        narrowed = counted_pods(cr, view.list(SERVICE), view.list(POD), settings.globals, view.list(SERVICE_ENTRY))
        narrowed_view = ObjectsView([o for o in objects if o["kind"] != "Pod"] + narrowed)
        metrics = Metrics(values={"_base.cpu.sum": "120"})
        assert context(cr, view, settings, metrics) == context(cr, narrowed_view, settings, metrics), path.name
        args = dict(services=view.list(SERVICE), destination_rules=view.list(DESTINATION_RULE),
                    config=settings.general, globals_=settings.globals, handlers=handlers)
        assert prometheus_queries(cr, pods=view.list(POD), **args) == \
            prometheus_queries(cr, pods=narrowed, **args), path.name
