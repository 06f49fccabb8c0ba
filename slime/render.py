"""``slime render``: the Istio objects the operator would write, from files, without a cluster.

Files hold Slime CRs plus cluster objects (Services, Pods, Endpoints, Namespaces,
DestinationRules, ServiceEntries, the RLS ConfigMap) as context. Each SmartLimiter's
context is built by ``limiter_context``, the helper the operator uses, and rendered by
the module's pure render. Kinds whose module has no render yet are validated only.

Decisions:

* Pod counts (``<set>.pod``) come only from the Pod objects given; ``--metrics`` may not
  set them (an error), as the operator never takes them from Prometheus.
* ``--metrics`` values are ignored (with a note) when the limiter config sets
  ``disableAdaptive``: the operator would query no Prometheus.
* Every problem is an error: bad input, and problems the render reports (missing metric,
  bad expression...). All are collected; nothing is printed when there is one.
* The RLS ConfigMap (``general.rlsConfigMap``) is output when a SmartLimiter has global
  limits or the ConfigMap is among the inputs: its ``config.yaml`` merged from the given
  one (or empty) exactly as the operator rewrites it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from slime.crds import KINDS
from slime.framework.config import ModuleConfig, default_module_config
from slime.framework.metrics import format_value
from slime.framework.validation import describe, parse_spec
from slime.modules.limiter.api import KIND as LIMITER_KIND
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import is_pod_count, limiter_context
from slime.modules.limiter.render import render_smartlimiter
from slime.modules.limiter.rls import CONFIG_KEY, merge_rls_config

SUFFIXES = (".yaml", ".yml", ".json")
CONTEXT_KINDS = ("Service", "Pod", "Endpoints", "Namespace", "DestinationRule", "ServiceEntry", "ConfigMap")
CLUSTER_SCOPED = ("Namespace",)
SLIME_KINDS = {info.kind: info for info in KINDS}


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

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def namespace(self) -> str:
        if self.kind in CLUSTER_SCOPED:
            return ""
        return str((self.obj.get("metadata") or {}).get("namespace") or "default")

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    @property
    def label(self) -> str:
        """``SmartLimiter default/reviews``: how messages name the object."""
        return f"{self.file}: {self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


# --------------------------------------------------------------------------- loading


def _files(path: Path, errors: list[str]) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if not found:
            errors.append(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
        return found
    if not path.exists():
        errors.append(f"{path}: no such file or directory")
        return []
    return [path]


def _documents(path: Path, errors: list[str]) -> list[Any]:
    try:
        return list(yaml.safe_load_all(path.read_text()))
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


def load_paths(paths: Sequence[Path]) -> tuple[list[Source], list[str]]:
    """Every object in the files (directories recursively), and the problems found."""
    errors: list[str] = []
    sources: list[Source] = []
    seen: dict[tuple[str, str, str], str] = {}
    for path in paths:
        for file in _files(path, errors):
            for i, doc in enumerate(_documents(file, errors)):
                for obj in _objects(doc, f"{file}: document {i + 1}", errors):
                    src = Source(obj, str(file))
                    key = (src.kind, src.namespace, src.name)
                    if key in seen:
                        errors.append(f"{src.label}: defined twice (also in {seen[key]})")
                        continue
                    seen[key] = src.file
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
            errors.append(f"{path}: {key!r}: key must be '<namespace>/<name>' of a SmartLimiter")
            continue
        if not isinstance(values, dict):
            errors.append(f"{path}: {key}: expected a mapping of metric name to value")
            continue
        out[key] = {}
        for metric, value in values.items():
            where = f"{path}: {key}: {metric}"
            if is_pod_count(str(metric)):
                errors.append(f"{where}: pod counts come from the Pod objects given, not from --metrics")
            elif isinstance(value, bool) or not isinstance(value, int | float | str):
                errors.append(f"{where}: expected a number, got {type(value).__name__}")
            else:
                text = format_value(value) if isinstance(value, float) else str(value)
                if text is None:
                    errors.append(f"{where}: {value} is not a finite number")
                else:
                    out[key][str(metric)] = text
    return out, errors


# --------------------------------------------------------------------------- rendering


def _module_config(configs: Sequence[ModuleConfig], kind: str) -> ModuleConfig:
    return next((c for c in configs if c.effective_kind == kind), None) or default_module_config(kind)


def _check_slime_object(src: Source) -> list[str]:
    info = SLIME_KINDS[src.kind]
    if src.obj.get("apiVersion") != info.api_version:
        got = src.obj.get("apiVersion")
        return [
            f"{src.label}: apiVersion: expected {info.api_version}, got {got!r}"
            if got
            else f"{src.label}: apiVersion: missing (expected {info.api_version})"
        ]
    _, problems = parse_spec(info.spec, src.obj.get("spec"))
    return [f"{src.label}: {_whole_spec_rule(p)}" for p in problems]


def _whole_spec_rule(line: str) -> str:
    # A rule over the whole spec already names its fields: "spec: Value error, spec.sets..." -> "spec.sets..."
    line = line.replace(": Value error, ", ": ", 1)
    return line.removeprefix("spec: ") if line.startswith("spec: spec.") else line


def _rls_configmap(
    limiters: list[tuple[Source, list[dict[str, Any]]]],
    config: LimiterConfig,
    by_kind: Mapping[str, list[Source]],
    notes: list[str],
) -> tuple[dict[str, Any] | None, list[str]]:
    """The RLS ConfigMap as the operator rewrites it, or None if it would not touch it."""
    ref = config.rlsConfigMap
    any_global = any(entries for _, entries in limiters)
    if config.disableGlobalRateLimit or not limiters:
        return None, []
    if ref is None or not ref.name or not ref.namespace:
        if any_global:
            notes.append("global limits are not written to a ConfigMap: general.rlsConfigMap is not set")
        return None, []
    existing = next(
        (s for s in by_kind.get("ConfigMap", []) if (s.namespace, s.name) == (ref.namespace, ref.name)), None
    )
    if existing is None and not any_global:
        return None, []
    data = dict((existing.obj.get("data") or {}) if existing else {})
    text = data.get(CONFIG_KEY)
    try:
        for src, entries in limiters:
            text = merge_rls_config(text, src.name, src.namespace, entries, config.rls_domain)
    except (yaml.YAMLError, ValueError) as e:
        where = existing.label if existing else f"ConfigMap {ref.namespace}/{ref.name}"
        return None, [f"{where}: data.{CONFIG_KEY}: {e}"]
    metadata: dict[str, Any] = {"name": ref.name, "namespace": ref.namespace}
    if existing and (existing.obj["metadata"].get("labels")):
        metadata["labels"] = dict(existing.obj["metadata"]["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {**data, CONFIG_KEY: text}}, []


def render_objects(
    sources: Sequence[Source],
    configs: Sequence[ModuleConfig],
    metrics: Mapping[str, Mapping[str, str]],
    notes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The objects the operator would write for ``sources``, sorted by (kind, namespace, name).

    Raises ``RenderError`` with every problem. Notes (skipped objects, ignored input) are
    appended to ``notes``.
    """
    notes = notes if notes is not None else []
    errors: list[str] = []
    by_kind: dict[str, list[Source]] = {}
    for src in sources:
        by_kind.setdefault(src.kind, []).append(src)
        if src.kind not in SLIME_KINDS and src.kind not in CONTEXT_KINDS:
            notes.append(f"{src.label}: not a Slime or context kind, ignored")

    limiter_cfg = _module_config(configs, "limiter")
    try:
        config = LimiterConfig.model_validate(limiter_cfg.general)
    except ValidationError as e:
        raise RenderError([f"module config {limiter_cfg.name!r}: {p}" for p in describe(e, "general")]) from None

    def objs(kind: str) -> list[dict[str, Any]]:
        return [s.obj for s in by_kind.get(kind, [])]

    output: list[dict[str, Any]] = []
    limiters: list[tuple[Source, list[dict[str, Any]]]] = []
    for src in sorted(by_kind.get(LIMITER_KIND, []), key=lambda s: (s.namespace, s.name)):
        problems = _check_slime_object(src)
        if problems:
            errors += problems
            continue
        given = metrics.get(f"{src.namespace}/{src.name}", {})
        if given and config.disableAdaptive:
            notes.append(f"{src.label}: --metrics ignored: disableAdaptive is set, only pod counts are used")
        ctx = limiter_context(
            src.obj,
            objs("Service"),
            objs("Pod"),
            objs("DestinationRule"),
            given,
            config,
            limiter_cfg.globals,
            objs("ServiceEntry"),
        )
        result = render_smartlimiter(src.obj, ctx)
        if not result.in_scope:
            notes.append(f"{src.label}: istio.io/rev out of this instance's scope (global.istioRev), skipped")
            continue
        errors += [f"{src.label}: {p.message} ({p.reason})" for p in result.problems]
        output += result.envoyfilters
        limiters.append((src, result.rls_descriptors))

    for info in KINDS:
        for src in by_kind.get(info.kind, []) if info.kind != LIMITER_KIND else []:
            problems = _check_slime_object(src)
            errors += problems
            if not problems:
                notes.append(f"{src.label}: no render yet, validated only")

    names = {f"{s.namespace}/{s.name}" for s in by_kind.get(LIMITER_KIND, [])}
    notes += [f"--metrics: {key}: no SmartLimiter of that name in the input" for key in metrics if key not in names]

    configmap, problems = _rls_configmap(limiters, config, by_kind, notes)
    errors += problems
    if configmap is not None:
        output.append(configmap)
    if errors:
        raise RenderError(errors)
    return sorted(output, key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def render_paths(
    paths: list[Path],
    configs: list[ModuleConfig],
    metrics_path: Path | None,
    notes: list[str] | None = None,
) -> list[dict]:
    """Load the files and render them; see ``render_objects``."""
    sources, errors = load_paths(paths)
    metrics: dict[str, dict[str, str]] = {}
    if metrics_path is not None:
        metrics, metric_errors = load_metrics(metrics_path)
        errors += metric_errors
    if errors:
        raise RenderError(errors)
    return render_objects(sources, configs, metrics, notes)


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
    return yaml.dump_all(objects, Dumper=YamlDumper, sort_keys=False, default_flow_style=False)
