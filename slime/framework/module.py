"""What a module is: the contract every folder under ``slime/modules/`` fulfils.

A module declares its kinds, its config model, the cluster kinds it reads and writes, and two
pure functions:

* ``context(cr, cluster, settings, metrics) -> ctx``: everything its render needs, gathered from
  a read-only view of the cluster (``ClusterView``) and the metric values read for the CR. The
  operator passes a view of its informers' in-memory copies and what Prometheus answered;
  ``slime render`` a view of the objects read from files and the ``--metrics`` file. Same
  function, same result.
* ``render(cr, ctx) -> Rendered``: the desired children (complete set), the kind's status fields
  and the conditions, ``Ready`` included. No client, clock or environment inside.

The generic reconciler (``slime.framework.reconciler``) does the rest for every module: watch,
schedule, gather, render, sync the children, write status only when it changed. What a module
needs beyond that (wake rules, caches, shared outputs, background servers) goes into optional
controller hooks (``Hooks``), imported only by the operator.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from slime.framework.conditions import ConditionUpdate
from slime.framework.crdinfo import CrdInfo
from slime.framework.kinds import Kind

if TYPE_CHECKING:
    from slime.framework.config import GlobalConfig
    from slime.framework.metrics import MetricConfig

Obj = Mapping[str, Any]
READY = "Ready"


class ClusterView(Protocol):
    """Read-only access to cluster objects of the kinds a module reads."""

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` (None: every namespace), in no particular order."""
        ...

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        ...


class ObjectsView:
    """A ``ClusterView`` over a list of objects (``slime render``, tests)."""

    def __init__(self, objects: Iterable[Obj]) -> None:
        self._by_kind: dict[str, dict[tuple[str, str], Obj]] = {}
        for obj in objects:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            self._by_kind.setdefault(str(obj.get("kind")), {})[key] = obj

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        objs = self._by_kind.get(kind.kind, {})
        if namespace is None:
            return list(objs.values())
        return [o for (ns, _), o in objs.items() if ns == namespace]

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        return self._by_kind.get(kind.kind, {}).get((namespace or "", name))


@dataclass(frozen=True)
class ModuleInfo:
    """What one module of the registry needs to run, for modules that deploy others (boot): its
    RBAC rules (``slime.framework.rbac``) and its kinds (``Kind`` in ``group``)."""

    name: str
    rules: tuple[Mapping[str, Any], ...]
    kinds: tuple[tuple[str, str], ...]  # (kind, group)
    config: type[BaseModel] | None = None  # its general config model, to validate a config it is given
    manages: tuple[Kind, ...] = ()  # kinds its hooks write for the instance (``Module.manages``)


@dataclass(frozen=True)
class Settings:
    """A module instance's configuration, validated: what ``context`` gets besides the cluster."""

    name: str  # instance name (upstream's module ``name``)
    general: Any  # an instance of the module's ``config`` model
    globals: GlobalConfig  # with upstream's defaults filled in
    metric: MetricConfig | None = None
    catalog: Mapping[str, ModuleInfo] = field(default_factory=dict)  # every module of the registry, by name


@dataclass(frozen=True)
class Metrics:
    """Metric values read for one CR (``Module.queries``), or why they could not be read.

    ``source``: "prometheus" (the operator queried it), "file" (``slime render --metrics``), or
    "" (nothing was queried: no queries, or no source configured)."""

    values: Mapping[str, str] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (CamelCase reason, message): the source failed
    source: str = ""


NO_METRICS = Metrics()


@dataclass(frozen=True)
class Rendered:
    """What a render decided for one CR.

    ``objects``: the complete desired set of children; None leaves the existing ones as they are
    (an invalid spec: nothing is written, as upstream). ``keep``: names of existing children left
    as they are although not in ``objects`` (a part that could not be evaluated now). ``status``:
    the kind's own status fields (upstream's), written together with ``conditions``, which always
    hold ``Ready``. ``shared``: this CR's part of an output several CRs share (``Module.shared``).
    ``in_scope`` False: not this instance's object (another ``istio.io/rev``): nothing is touched,
    no status written.
    """

    objects: list[dict[str, Any]] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[ConditionUpdate] = field(default_factory=list)
    keep: frozenset[str] = frozenset()
    shared: Any = None
    in_scope: bool = True

    @property
    def ready(self) -> ConditionUpdate | None:
        return next((c for c in self.conditions if c.type == READY), None)


def out_of_scope() -> Rendered:
    return Rendered(in_scope=False)


@dataclass(frozen=True)
class SharedOutput:
    """An object several CRs contribute to (the limiter's RLS ConfigMap).

    ``build(existing, parts, settings)``: the object with each CR's part replaced (``parts`` maps
    ``(namespace, name)`` of a CR to its ``Rendered.shared``; None removes it), or None when nothing
    is to be written. ``existing`` is the object as it is now (None: absent). ``ref(settings)``: the
    object's (kind, namespace, name), or None when the module config names none. ``slime render``
    calls ``build`` once with every CR's part; the operator with the parts of a batch.
    """

    kind: Kind
    ref: Callable[[Settings], tuple[Kind, str, str] | None]
    build: Callable[[Obj | None, Mapping[tuple[str, str], Any], Settings], dict[str, Any] | None]


# The Prometheus queries a CR needs (result key -> slime.framework.metrics.Query), pure.
MetricQueries = Callable[[Obj, ClusterView, Settings], Mapping[str, Any]]
Context = Callable[[Obj, ClusterView, Settings, Metrics], Any]


@dataclass(frozen=True)
class Module:
    """One module: a folder under ``slime/modules/`` exports ``MODULE = Module(...)``."""

    name: str  # the key for --modules, the config kind, samples/<name>, tests/golden/<name>
    kinds: Sequence[CrdInfo]
    config: type[BaseModel]  # validates the config's ``general`` when it is loaded
    context: Context  # pure
    render: Callable[[Obj, Any], Rendered]  # pure
    reads: Sequence[Kind] = ()  # cluster kinds the context reads (informers, render inputs, RBAC read)
    writes: Sequence[Kind] = ()  # kinds of the children (sync, RBAC write)
    # Kinds the module's hooks write themselves, outside any one CR's children (lazyload's fallback
    # route and the fences auto-fence creates): RBAC write only.
    manages: Sequence[Kind] = ()
    queries: MetricQueries | None = None  # run before ``context``, which gets their results
    shared: SharedOutput | None = None
    hooks: str = ""  # "package.module:Class" of the operator-only Hooks, imported lazily
    description: str = ""

    def kind(self, name: str) -> CrdInfo | None:
        return next((k for k in self.kinds if k.kind == name), None)

    def load_hooks(self) -> type[Hooks]:
        if not self.hooks:
            return Hooks
        mod, _, attr = self.hooks.partition(":")
        hooks: type[Hooks] = getattr(importlib.import_module(mod), attr)
        return hooks


class Hooks:
    """Operator-only behaviour of a module, beyond gather -> render -> sync -> status.

    The reconciler creates one instance per module instance (``Hooks(runtime)``) and calls these
    on the event loop unless said otherwise. The defaults fit a module whose CRs depend on the
    objects of their own namespace.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def dependents(self, kind: Kind, namespace: str, name: str, obj: Obj,
                   crs: Mapping[tuple[str, str], dict[str, Any]]) -> Iterable[tuple[str, str]]:
        """Which CRs (namespace, name) to re-evaluate after ``obj`` of a read kind changed.
        ``crs`` maps each CR to its scratch space (see ``view``)."""
        return [key for key in crs if key[0] == namespace]

    def view(self, cr: Obj, cluster: ClusterView, state: dict[str, Any]) -> ClusterView:
        """The view the CR's context is built from; ``state`` is the CR's own scratch space
        (a place for caches, forgotten with the CR)."""
        return cluster

    def applied(self, cr: Obj, rendered: Rendered, state: dict[str, Any]) -> None:
        """Blocking, in a worker thread: after the children were synced (shared outputs)."""

    def deleted(self, cr: Obj) -> None:
        """Blocking: a CR carrying one of ``finalizers`` is being deleted; clean up."""

    finalizers: frozenset[str] = frozenset()

    def next_run(self, cr: Obj, rendered: Rendered, metrics: Metrics) -> float | None:
        """Seconds until the CR is evaluated again without an event (None: only on events). The
        default re-renders every 5 minutes, which also repairs children others changed."""
        return 300.0

    async def start(self) -> None:
        """Background work of the module (servers, extra watches), started with the operator."""

    async def stop(self) -> None:
        pass


class NoConfig(BaseModel):
    """The ``general`` config of a module that has none: any field is a typo."""

    model_config = {"extra": "forbid"}


def validating_module(name: str, kinds: Sequence[CrdInfo], description: str = "",
                      config: type[BaseModel] = NoConfig) -> Module:
    """A module whose kinds are validated and reported but render nothing (yet): each CR gets
    ``Ready`` with the verdict of its model's checks."""
    from slime.framework.validation import parse_spec

    by_kind = {info.kind: info for info in kinds}

    def context(cr: Obj, cluster: ClusterView, settings: Settings, metrics: Metrics) -> CrdInfo:
        return by_kind[str(cr.get("kind"))]

    def render(cr: Obj, info: CrdInfo) -> Rendered:
        _, problems = parse_spec(info.spec, cr.get("spec"))
        if problems:
            return Rendered(conditions=[ConditionUpdate(READY, False, "InvalidSpec", "; ".join(problems))])
        return Rendered(objects=[], conditions=[
            ConditionUpdate(READY, True, "Validated", f"valid; the {name} module writes nothing for it yet")])

    return Module(name=name, kinds=tuple(kinds), config=config, context=context, render=render,
                  description=description)
