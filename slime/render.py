"""``slime render``: the objects the operator would write, from files, without a cluster.

Files hold Slime CRs plus cluster objects (Services, Pods, DestinationRules, ...) as context.
Each CR goes through exactly the operator's path: its module's ``context`` over a view of the
given objects, its module's ``render``, the shared checks (``slime.framework.finish``), and the
module's shared outputs (the limiter's RLS ConfigMap) built by the module's one builder.

Decisions:

* ``--metrics`` gives each CR's metric values (``<namespace>/<name>`` -> {key: value}), as
  Prometheus would in a cluster; the module decides what it uses (the limiter takes pod counts
  only from the Pods given, never from this file).
* Every problem is an error: bad input, and CRs the render reports not Ready (a missing metric,
  a bad expression...). All are collected; nothing is printed when there is one.
* Objects are printed as the render produced them (the operator adds its ownership labels).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slime import registry
from slime.framework.config import ConfigError, ModuleConfig
from slime.framework.finish import finish
from slime.framework.metrics import format_value
from slime.framework.module import Metrics, Module, ObjectsView, Rendered, Settings

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = Path("-")


class RenderError(Exception):
    """Invalid input or a problem the render reported; one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Source:
    """An object read from a file."""

    obj: dict[str, Any]
    file: str
    namespaced: bool = True

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def namespace(self) -> str:
        if not self.namespaced:
            return ""
        return str((self.obj.get("metadata") or {}).get("namespace") or "default")

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    @property
    def label(self) -> str:
        """``file: SmartLimiter default/reviews``: how messages name the object."""
        return f"{self.file}: {self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass
class Output:
    objects: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)  # each CR with its computed status
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- loading


def _files(path: Path, recursive: bool, errors: list[str]) -> list[Path]:
    if path == STDIN:
        return [path]
    if path.is_dir():
        pattern = path.rglob("*") if recursive else path.glob("*")
        found = sorted(p for p in pattern if p.suffix in SUFFIXES and p.is_file())
        if not found:
            hint = "" if recursive else " (add -R to read its subdirectories)"
            errors.append(f"{path}: no {', '.join(SUFFIXES)} files in this directory{hint}")
        return found
    if not path.exists():
        errors.append(f"{path}: no such file or directory")
        return []
    return [path]


def _read(path: Path) -> str:
    return sys.stdin.read() if path == STDIN else path.read_text()


def _documents(path: Path, errors: list[str]) -> list[Any]:
    try:
        return list(yaml.safe_load_all(_read(path)))
    except OSError as e:
        errors.append(f"{path}: {e.strerror or e}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        errors.append(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}")
    return []


def _objects(doc: Any, where: str, errors: list[str]) -> Iterable[dict[str, Any]]:
    if doc is None:
        return
    if not isinstance(doc, dict):
        errors.append(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
        return
    if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
        items = doc.get("items") or []
        if not isinstance(items, list):
            errors.append(f"{where}: items: expected a list")
            return
        for i, item in enumerate(items):
            yield from _objects(item, f"{where}: items[{i}]", errors)
        return
    meta = doc.get("metadata")
    if not doc.get("kind") or not isinstance(doc.get("kind"), str):
        errors.append(f"{where}: kind: missing")
    elif not isinstance(meta, dict) or not meta.get("name") or not isinstance(meta.get("name"), str):
        errors.append(f"{where}: {doc['kind']}: metadata.name: missing")
    else:
        yield doc


def _namespaced(obj: Mapping[str, Any]) -> bool:
    from slime.framework import kinds

    try:
        return kinds.of(obj).namespaced
    except kinds.UnknownKindError:
        return True


def load_paths(paths: Sequence[Path], recursive: bool = False) -> tuple[list[Source], list[str]]:
    """Every object in the files (``-`` is stdin; directories recursively only with ``recursive``)."""
    registry.modules()  # registers Slime's kinds
    errors: list[str] = []
    sources: list[Source] = []
    seen: dict[tuple[str, str, str], Source] = {}
    for path in paths:
        for file in _files(path, recursive, errors):
            name = "<stdin>" if file == STDIN else str(file)
            for i, doc in enumerate(_documents(file, errors)):
                for obj in _objects(doc, f"{name}: document {i + 1}", errors):
                    src = Source(obj, name, _namespaced(obj))
                    key = (src.kind, src.namespace, src.name)
                    if key in seen:
                        if seen[key].obj != obj:  # the same object twice (a shared Namespace) is fine
                            errors.append(f"{src.label}: defined twice, differently (also in {seen[key].file})")
                        continue
                    seen[key] = src
                    sources.append(src)
    return sources, errors


def load_metrics(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``--metrics``: ``{"<namespace>/<name>": {metric: value}}``, values as strings."""
    errors: list[str] = []
    docs = [d for d in _documents(path, errors) if d is not None]
    if errors:
        return {}, errors
    if len(docs) > 1 or (docs and not isinstance(docs[0], dict)):
        return {}, [f"{path}: expected one mapping of '<namespace>/<name>' to {{metric: value}}"]
    out: dict[str, dict[str, str]] = {}
    for key, values in (docs[0] if docs else {}).items():
        if not isinstance(key, str) or key.count("/") != 1 or not all(key.split("/")):
            errors.append(f"{path}: {key!r}: key must be '<namespace>/<name>' of a Slime object")
            continue
        if not isinstance(values, dict):
            errors.append(f"{path}: {key}: expected a mapping of metric name to value")
            continue
        out[key] = {}
        for metric, value in values.items():
            where = f"{path}: {key}: {metric}"
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                errors.append(f"{where}: expected a number, got {type(value).__name__}")
                continue
            text = format_value(value) if isinstance(value, float) else str(value)
            if text is None:
                errors.append(f"{where}: {value} is not a finite number")
            else:
                out[key][str(metric)] = text
    return out, errors


# --------------------------------------------------------------------------- rendering


def _slime_groups() -> set[str]:
    return {info.group for info in registry.crd_infos()}


def _check_kind(src: Source) -> str | None:
    """Why a Slime-group object is not one of our kinds, or None."""
    group = str(src.obj.get("apiVersion", "")).rpartition("/")[0]
    infos = [info for info in registry.crd_infos() if info.kind == src.kind]
    if not infos:
        if group not in _slime_groups():
            return None
        known = [info.kind for info in registry.crd_infos() if info.group == group]
        close = difflib.get_close_matches(src.kind, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(known)})"
        return f"{src.label}: unknown kind {src.kind} in {group}{hint}"
    if all(src.obj.get("apiVersion") != info.api_version for info in infos):
        got = src.obj.get("apiVersion")
        want = infos[0].api_version
        return f"{src.label}: apiVersion: expected {want}, got {got!r}" if got else \
            f"{src.label}: apiVersion: missing (expected {want})"
    return None


def status_document(cr: Mapping[str, Any], rendered: Rendered) -> dict[str, Any]:
    """The CR with the status the operator would write (no timestamps, no observedGeneration)."""
    meta = cr.get("metadata") or {}
    status: dict[str, Any] = dict(rendered.status) if rendered.objects is not None else {}
    status["conditions"] = [{"type": c.type, "status": c.status_text, "reason": c.reason, "message": c.message}
                            for c in rendered.conditions]
    return {"apiVersion": cr.get("apiVersion"), "kind": cr.get("kind"),
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace") or "default"},
            "status": status}


def render_one(module: Module, settings: Settings, cr: dict[str, Any], view: ObjectsView,
               metrics: Mapping[str, str]) -> Rendered:
    """One CR through its module, as the operator does it."""
    given = Metrics(values=dict(metrics), source="file") if metrics else Metrics()
    ctx = module.context(cr, view, settings, given)
    return finish(module, cr, module.render(cr, ctx))


def render_sources(sources: Sequence[Source], configs: Sequence[ModuleConfig],
                   metrics: Mapping[str, Mapping[str, str]]) -> Output:
    """Render every Slime CR of ``sources``; see the module docstring."""
    out = Output()
    try:
        enabled = registry.settings_for(list(configs))
    except ConfigError as e:
        out.errors.append(f"--config: {e}")
        return out
    settings_of = {module.name: (module, settings) for module, settings, _ in enabled}
    view = ObjectsView(_with_namespace(s) for s in sources)
    read_kinds = {k.kind for m in registry.modules() for k in (*m.reads, *([m.shared.kind] if m.shared else []))}
    shared_parts: dict[str, dict[tuple[str, str], Any]] = {}
    crs: list[str] = []
    for src in sorted(sources, key=lambda s: (s.kind, s.namespace, s.name)):
        module = registry.module_of_kind(str(src.obj.get("apiVersion", "")), src.kind)
        problem = _check_kind(src)
        if problem:
            out.errors.append(problem)
            continue
        if module is None:
            if src.kind not in read_kinds and src.kind != "Namespace":
                out.notes.append(f"{src.label}: not a kind any module reads, ignored")
            continue
        if module.name not in settings_of:
            out.notes.append(f"{src.label}: module {module.name} is disabled in its config, skipped")
            continue
        _, settings = settings_of[module.name]
        cr = _with_namespace(src)
        crs.append(f"{src.namespace}/{src.name}")
        rendered = render_one(module, settings, cr, view, metrics.get(f"{src.namespace}/{src.name}", {}))
        if not rendered.in_scope:
            out.notes.append(f"{src.label}: istio.io/rev out of this instance's scope (global.istioRev), skipped")
            continue
        out.statuses.append(status_document(cr, rendered))
        ready = rendered.ready
        if ready is not None and ready.status_text != "True":
            reason = "" if ready.reason == "InvalidSpec" else f" ({ready.reason})"
            out.errors.append(f"{src.label}: {ready.message}{reason}")
        out.objects += rendered.objects or []
        if module.shared is not None:
            shared_parts.setdefault(module.name, {})[(src.namespace, src.name)] = rendered.shared
    out.notes += [f"--metrics: {key}: no Slime object of that name in the input" for key in metrics if key not in crs]
    for name, parts in shared_parts.items():
        module, settings = settings_of[name]
        _shared_output(module, settings, parts, view, out)
    out.objects.sort(key=_order)
    return out


def _shared_output(module: Module, settings: Settings, parts: Mapping[tuple[str, str], Any],
                   view: ObjectsView, out: Output) -> None:
    assert module.shared is not None
    ref = module.shared.ref(settings)
    if ref is None:
        if any(parts.values()):
            out.notes.append(f"module {module.name}: shared {module.shared.kind.kind} not written: "
                             "the module config names none")
        return
    kind, namespace, name = ref
    existing = view.get(kind, namespace, name)
    try:
        obj = module.shared.build(existing, parts, settings)
    except (yaml.YAMLError, ValueError) as e:
        out.errors.append(f"{kind.kind} {namespace}/{name}: {e}")
        return
    if obj is not None:
        out.objects.append(obj)


def _with_namespace(src: Source) -> dict[str, Any]:
    meta = dict(src.obj.get("metadata") or {})
    if src.namespaced:
        meta["namespace"] = src.namespace
    return {**src.obj, "metadata": meta}


def _order(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name"))


def render_paths(paths: Sequence[Path], configs: Sequence[ModuleConfig], metrics_path: Path | None,
                 recursive: bool = False) -> Output:
    """Load the files and render them; input errors stop before rendering."""
    sources, errors = load_paths(paths, recursive)
    metrics: dict[str, dict[str, str]] = {}
    if metrics_path is not None:
        metrics, metric_errors = load_metrics(metrics_path)
        errors += metric_errors
    if not errors and not sources:
        errors.append("no objects in the input" + ("" if recursive else " (directories are read without -R: "
                                                   "only their own files)"))
    if errors:
        return Output(errors=errors)
    return render_sources(sources, configs, metrics)


class YamlDumper(yaml.SafeDumper):
    """No anchors/aliases; multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # An embedded file (the RLS config.yaml) as a readable block, not one escaped line.
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


YamlDumper.add_representer(str, _str)


def dump_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """The objects as a YAML stream, keys in render order."""
    return yaml.dump_all(objects, Dumper=YamlDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                         width=120)
