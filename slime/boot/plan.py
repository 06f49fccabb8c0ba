"""What a SlimeBoot deploys, decided as data (pure): one ``Deployment`` plan per enabled module entry
(a bundle counts as one), and every problem found, each naming its field. ``slime.boot.render``
turns the plans into objects through the templates. ``component.globalSidecar`` goes into the
lazyload module's config (``general.globalSidecar``): that module deploys its global-sidecar.

As upstream's chart: an entry is deployed when ``enable`` is true and its mode is not
``BundleItem``; its objects are named after it and go into ``spec.namespace``; its ConfigMap holds
``cfg`` (the entry as JSON) and, for a bundle, ``cfg_<name>`` of every other entry. Differences, on
purpose: an unknown module kind, a ``general`` its module refuses or a bundle listing a missing
item is an error in the status (upstream's process crashed at start); ``global.slimeNamespace``
and ``global.istioNamespace`` default to where the module runs (``spec.namespace``) and to
``spec.istioNamespace``; the RBAC is the module's own, bound under a name unique in the cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from slime.boot.api import SlimeBootModule, SlimeBootSpec
from slime.boot.config import BootConfig, is_upstream_image
from slime.framework.config import ConfigError, load_module_configs
from slime.framework.module import ModuleInfo
from slime.framework.names import DNS1123_LABEL
from slime.framework.rbac import merge_rules
from slime.framework.validation import describe

CONFIG_DIR = "/etc/slime/config"
METRICS_PORT = 9090
CONFIG_HASH = "slime.io/config-hash"
LEGACY_SECTIONS = {"fence", "limiter", "plugin"}  # module sections before ``general`` (SlimeBootModule)
NOT_DEPLOYABLE = {"boot"}  # a SlimeBoot deploys modules, not another boot operator
DEFAULT_RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "200m", "memory": "200Mi"}}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


@dataclass
class Problem:
    reason: str
    message: str  # "<field>: <what is wrong>"


@dataclass
class Plan:
    modules: list[dict[str, Any]] = field(default_factory=list)  # template values per Deployment
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def cluster_name(namespace: str, name: str) -> str:
    """The name of a module's cluster-scoped objects (ClusterRole, ClusterRoleBinding, peering):
    unique in the cluster because the Deployment's namespace and name are (both DNS labels, so
    the dots cannot be confused; at most 134 characters)."""
    return f"slime.{namespace}.{name}"


def image_of(spec_image: Any, default: str) -> str:
    if spec_image is None or not spec_image.repository:
        return default
    return f"{spec_image.repository}:{spec_image.tag}" if spec_image.tag else spec_image.repository


def config_hash(data: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _dumps(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"


def _with_namespaces(entry: Mapping[str, Any], spec: SlimeBootSpec) -> dict[str, Any]:
    out = dict(entry)
    glob = dict(out.get("global") or {})
    glob.setdefault("slimeNamespace", spec.namespace)
    glob.setdefault("istioNamespace", spec.istioNamespace)
    out["global"] = glob
    return out


class Planner:
    def __init__(self, spec: SlimeBootSpec, raw: Mapping[str, Any], catalog: Mapping[str, ModuleInfo],
                 config: BootConfig) -> None:
        self.spec, self.catalog, self.config = spec, catalog, config
        self.plan = Plan()
        self.raw_entries: list[dict[str, Any]] = []
        for i, entry in enumerate(raw.get("module") or []):
            for section in LEGACY_SECTIONS & set(entry):
                self.plan.notes.append(f"spec.module[{i}].{section}: a section of upstream's old config format, "
                                       "ignored as upstream's process ignores it (its settings belong in general)")
            self.raw_entries.append({k: v for k, v in entry.items() if k not in LEGACY_SECTIONS})

    def problem(self, reason: str, message: str) -> None:
        self.plan.problems.append(Problem(reason, message))

    # --- checks

    def kind_ok(self, kind: str, where: str) -> bool:
        if kind in NOT_DEPLOYABLE or kind not in self.catalog:
            known = ", ".join(sorted(k for k in self.catalog if k not in NOT_DEPLOYABLE))
            why = "a SlimeBoot cannot deploy the boot module" if kind in NOT_DEPLOYABLE else \
                f"unknown module kind {kind!r} (known: {known})"
            self.problem("UnknownModule", f"{where}: {why}")
            return False
        return True

    def general_ok(self, kind: str, general: Mapping[str, Any], where: str) -> bool:
        model: type[BaseModel] | None = self.catalog[kind].config
        if model is None:
            return True
        try:
            model.model_validate(dict(general))
        except ValidationError as e:
            for line in describe(e, f"{where}.general"):
                self.problem("InvalidModuleConfig", line)
            return False
        return True

    # --- the plan

    def build(self) -> Plan:
        deployed: dict[str, int] = {}
        for i, entry in enumerate(self.spec.module):
            if not entry.enable or entry.mode == "BundleItem":
                continue
            where = f"spec.module[{i}]"
            name = entry.name or entry.kind
            if not name:
                self.problem("InvalidSpec", f"{where}: set name or kind")
                continue
            if not DNS1123_LABEL.fullmatch(name) or len(name) > 63 or not name[0].isalpha():
                self.problem("InvalidSpec", f"{where}.name: {name!r} must be a DNS-1035 label (it names the "
                                            "module's Deployment and Service)")
                continue
            if name in deployed:
                self.problem("InvalidSpec", f"{where}.name: {name!r} is deployed by spec.module[{deployed[name]}] "
                                            "too")
                continue
            deployed[name] = i
            self.module(i, entry, name)
        return self.plan

    def items(self, i: int, entry: SlimeBootModule) -> list[tuple[str, int]] | None:
        """(kind, entry index) of each module a deployed entry runs; None after a problem."""
        where = f"spec.module[{i}]"
        if entry.bundle is None:
            kind = entry.effective_kind
            ok = self.kind_ok(kind, f"{where}.kind") and self.general_ok(kind, entry.general, where)
            return [(kind, i)] if ok else None
        out: list[tuple[str, int]] = []
        ok = True
        for j, item in enumerate(entry.bundle.modules):
            at = f"{where}.bundle.modules[{j}]"
            if not item.name:
                self.problem("InvalidSpec", f"{at}.name: empty")
                ok = False
                continue
            k = next((k for k, e in enumerate(self.spec.module) if e.name == item.name and e.bundle is None), None)
            if k is None:
                self.problem("InvalidSpec", f"{at}.name: no entry of spec.module is named {item.name!r}")
                ok = False
                continue
            kind = item.kind or self.spec.module[k].effective_kind
            if self.kind_ok(kind, f"{at}.kind"):
                ok = self.general_ok(kind, self.spec.module[k].general, f"spec.module[{k}]") and ok
                out.append((kind, k))
            else:
                ok = False
        if ok and not out:
            self.problem("InvalidSpec", f"{where}.bundle.modules: a bundle needs at least one module")
        return out if ok and out else None

    def module(self, i: int, entry: SlimeBootModule, name: str) -> None:
        items = self.items(i, entry)
        if items is None:
            return
        kinds = [k for k, _ in items]
        main = _with_namespaces(self.raw_entries[i], self.spec)
        if "lazyload" in kinds:
            self.global_sidecar(dict(items)["lazyload"], main if entry.bundle is None else None)
        data = {"cfg": _dumps(main)}
        if entry.bundle is not None:  # as upstream: every other entry, whatever its mode
            for k, other in enumerate(self.spec.module):
                if other.bundle is None and (other.name or other.kind):
                    data[f"cfg_{other.name or other.kind}"] = _dumps(self.raw_entries[k])
        try:  # exactly what `slime run --config` will read
            docs = [json.loads(data["cfg"])] + [json.loads(data[f"cfg_{item.name}"])
                                                for item in (entry.bundle.modules if entry.bundle else [])]
            load_module_configs(docs)
        except ConfigError as e:
            self.problem("InvalidModuleConfig", f"spec.module[{i}]: {e}")
            return
        values = self.values(name, kinds, data)
        for what, ports in (("container", [p["containerPort"] for p in values["ports"]]),
                            ("Service", [p["port"] for p in values["servicePorts"]])):
            if len(set(ports)) != len(ports):
                self.problem("InvalidSpec", f"spec.service: the module's {what} ports {ports} collide (metrics is "
                                            f"{METRICS_PORT}; port, auxiliaryPort and logSourcePort must differ)")
                return
        self.plan.modules.append(values)

    def image(self, what: str, spec_image: Any, default: str) -> tuple[str, str]:
        image = image_of(spec_image, default)
        policy = (spec_image.pullPolicy if spec_image is not None else None) or self.config.pullPolicy
        if spec_image is not None and spec_image.repository and is_upstream_image(spec_image.repository) \
                and self.config.upstreamImages == "replace":
            why = "upstream's Go build, which cannot run slime's modules" if what == "spec.image" else \
                "upstream's global-sidecar image"
            self.plan.notes.append(f"{what}: {image} is {why}; deployed {default} instead (boot config "
                                   "general.upstreamImages)")
            return default, self.config.pullPolicy
        return image, policy

    def values(self, name: str, kinds: list[str], data: dict[str, str]) -> dict[str, Any]:
        spec = self.spec
        service = spec.service
        aux = service.auxiliaryPort if service is not None else (spec.auxiliaryPort or 8081)
        log_port = service.logSourcePort if service is not None else (spec.logSourcePort or 8082)
        image, policy = self.image("spec.image", spec.image, self.config.image)
        ports = [{"name": "aux-port", "containerPort": aux}, {"name": "metrics", "containerPort": METRICS_PORT}]
        service_ports = [
            {"name": "http", "port": service.port if service else 80, "targetPort": "metrics"},
            {"name": "aux-port", "port": aux, "targetPort": "aux-port"}]
        if "lazyload" in kinds:
            ports.append({"name": "log-source-port", "containerPort": log_port})
            service_ports.append({"name": "log-source-port", "port": log_port, "targetPort": "log-source-port"})
        args = ["run", "--modules", ",".join(kinds), "--config", f"{CONFIG_DIR}/cfg", "--all-namespaces",
                "--peering", cluster_name(spec.namespace, name), "--liveness", f"http://0.0.0.0:{aux}/healthz",
                "--metrics-addr", f"0.0.0.0:{METRICS_PORT}", *spec.args]
        env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
               {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
               *(spec.env or [])]
        mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
        mounts += [*(spec.volumeMounts or []), *self.container_mounts()]
        volumes = [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}},
                   *(spec.volumes or [])]
        rules = merge_rules(rule for kind in kinds for rule in self.catalog[kind].rules)
        labels = {"app": name, "app.kubernetes.io/name": "slime-module", "app.kubernetes.io/instance": name,
                  "app.kubernetes.io/part-of": "slime"}
        pod_annotations = {**spec.podAnnotations, CONFIG_HASH: config_hash(data)}
        return {
            "name": name, "namespace": spec.namespace, "kinds": kinds,
            "clusterName": cluster_name(spec.namespace, name),
            "labels": labels, "selector": {"app": name}, "replicas": spec.replicaCount, "image": image,
            "pullPolicy": policy, "args": args, "env": env, "ports": ports, "servicePorts": service_ports,
            "serviceType": service.type if service else "ClusterIP", "aux": aux, "data": data,
            "podAnnotations": pod_annotations, "resources": spec.resources or DEFAULT_RESOURCES,
            "podSecurityContext": spec.podSecurityContext or POD_SECURITY,
            "containerSecurityContext": spec.containerSecurityContext or CONTAINER_SECURITY,
            "volumes": volumes, "volumeMounts": mounts, "nodeSelector": spec.nodeSelector,
            "affinity": spec.affinity or {}, "tolerations": spec.tolerations or [],
            "imagePullSecrets": spec.imagePullSecrets or [], "rules": rules,
            "createServiceAccount": spec.serviceAccount is None or spec.serviceAccount.create,
        }

    def container_mounts(self) -> list[Any]:
        """``containers.slime.volumeMounts`` (upstream's log-rotation sample mounts its volume there)."""
        slime = (self.spec.containers or {}).get("slime")
        mounts = slime.get("volumeMounts") if isinstance(slime, Mapping) else None
        if mounts is None:
            return []
        if not isinstance(mounts, list) or not all(isinstance(m, Mapping) for m in mounts):
            self.problem("InvalidSpec", "spec.containers.slime.volumeMounts: expected a list of volume mounts")
            return []
        return list(mounts)

    # --- lazyload's global-sidecar

    def global_sidecar(self, k: int, main: dict[str, Any] | None) -> None:
        """Entry ``k`` (lazyload) with ``component.globalSidecar``: into its config's ``globalSidecar``
        section, from which the lazyload module deploys the global-sidecar and its EnvoyFilters."""
        component = self.spec.component
        gs = component.globalSidecar if component is not None else None
        if gs is None or not gs.enable:
            return
        model = self.catalog["lazyload"].config
        if model is None or "globalSidecar" not in model.model_fields:
            self.plan.notes.append("component.globalSidecar: ignored, the lazyload module's config has no "
                                   "globalSidecar section")
            return
        general = dict(self.raw_entries[k].get("general") or {})
        if "globalSidecar" in general:
            self.plan.notes.append(f"component.globalSidecar: spec.module[{k}].general.globalSidecar is set and wins")
            return
        image, _ = self.image("component.globalSidecar.image", gs.image, self.config.envoyImage)
        section: dict[str, Any] = {"enable": True, "image": image}
        for key in ("port", "probePort", "replicas"):
            if getattr(gs, key):
                section[key] = getattr(gs, key)
        if gs.resources:
            section["resources"] = gs.resources
        if gs.sidecarInject is not None:
            section["sidecarInject"] = gs.sidecarInject.model_dump(exclude_defaults=True)
        general["globalSidecar"] = section
        self.plan.notes.append(f"component.globalSidecar: passed to the lazyload module as spec.module[{k}].general."
                               "globalSidecar; the module deploys the global-sidecar")
        self.raw_entries[k] = {**self.raw_entries[k], "general": general}
        if main is not None:  # the entry is the Deployment's own cfg (not a bundle item's cfg_<name>)
            main["general"] = general
        self.general_ok("lazyload", general, f"spec.module[{k}]")


def plan(spec: SlimeBootSpec, raw: Mapping[str, Any], catalog: Mapping[str, ModuleInfo], config: BootConfig,
         ) -> Plan:
    return Planner(spec, raw, catalog, config).build()


def missing_namespaces(p: Plan, existing: Sequence[str] | None) -> list[str]:
    if existing is None:
        return []
    wanted = {m["namespace"] for m in p.modules}
    return sorted(wanted - set(existing))
