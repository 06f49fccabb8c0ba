"""A fence's own status write reaches the operator's copy only with its watch event: an evaluation in
between renders from the body before that write. What the write added must stay in that render, not
be written away (seen on the mesh bed under access-log load: statuses went 2,500 -> 2,050 -> 2,500
learned hosts, and hosts were lost for good)."""

from __future__ import annotations

import copy
import time
from typing import Any

from slime.framework.config import load_module_configs
from slime.framework.module import NO_METRICS, Rendered, Settings
from slime.modules.lazyload import MODULE
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.controller import LazyloadHooks
from slime.modules.lazyload.writer import FENCE
from tests.integration.test_lazyload_learning import Store, objects

KEY = ("default", "productpage")
D = '{destination_service="d.default.svc.cluster.local"}'
R = '{destination_service="r.default.svc.cluster.local"}'


class Runtime:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.cluster = store


def test_a_render_from_a_body_older_than_the_last_write_keeps_what_it_wrote() -> None:
    cfg = load_module_configs({"name": "lazyload", "kind": "lazyload", "enable": True,
                               "general": {"wormholePort": ["9080"], "learnInterval": "1s"}})[0]
    settings = Settings(name=cfg.name, general=Fence.model_validate(cfg.general), globals=cfg.globals)
    store = Store(objects())
    hooks = LazyloadHooks(Runtime(settings, store))
    before = copy.deepcopy(store.get(FENCE, *KEY))
    assert before is not None

    def evaluate(cr: dict[str, Any]) -> Rendered:
        rendered = MODULE.render(cr, MODULE.context(cr, hooks.view(cr, store, {}), settings))
        hooks.next_run(cr, rendered, NO_METRICS)
        return rendered

    now = time.time()
    hooks.buffer.observe(KEY, {D: 1}, now, {}, {})
    assert hooks.buffer.due(now) == [KEY]
    first = evaluate(copy.deepcopy(before))  # its status (with D) is written
    assert D in first.status["metricStatus"]

    # before the watch delivers that write: the next evaluation (a Sidecar event, say) sees the old body
    again = evaluate(copy.deepcopy(before))
    assert D in again.status["metricStatus"], "the learned host was written away"

    # the body with the write: the buffer lets go; later news come with the next interval as usual
    after = copy.deepcopy(before)
    after["status"] = first.status
    evaluate(after)
    assert len(hooks.buffer) == 0 and hooks.buffer.record(KEY) == ({}, {})
    hooks.buffer.observe(KEY, {R: 1}, now + 0.1, first.status["metricStatus"], first.status.get("lastSeen") or {})
    assert hooks.buffer.due(now + 1.1) == [KEY]
    assert {D, R} <= set(evaluate(after).status["metricStatus"])

    # news released by a due while an evaluation runs (between its view and its end) wait for the next one
    x = '{destination_service="x.default.svc.cluster.local"}'
    rendered = MODULE.render(after, MODULE.context(after, hooks.view(after, store, {}), settings))
    hooks.buffer.observe(KEY, {x: 1}, now + 2.2, after["status"]["metricStatus"], after["status"].get("lastSeen") or {})
    assert hooks.buffer.due(now + 2.2) == [KEY]
    hooks.next_run(after, rendered, NO_METRICS)
    assert x in hooks.buffer.record(KEY)[0], "released during the evaluation, then dropped"
    assert x in evaluate(after).status["metricStatus"]
