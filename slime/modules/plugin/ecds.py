"""Wasm and rider plugins: code sources, pull secrets, filter configs delivered via ECDS. Pure."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from slime.modules.plugin.api import Rider, Wasm
from slime.modules.plugin.common import PluginContext, Problem

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RIDER_TYPE = "type.googleapis.com/proxy.filters.http.rider.v3alpha1.FilterConfig"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
WASM_RUNTIME = "envoy.wasm.runtime.v8"
PULL_SECRET_ENV = "ISTIO_META_WASM_IMAGE_PULL_SECRET"
RIDER_ENV = "ISTIO_RIDER_ENV"
RIDER_PACKAGE_PATH = "/usr/local/lib/rider/?/init.lua;/usr/local/lib/rider/?.lua;"
NO_SHA256 = "nil"  # upstream's placeholder for a remote source without a checksum
SCHEMES = ("oci", "http", "https", "file")
DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockerconfigjson"
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def resource_name(namespace: str, name: str, rider: bool) -> str:
    """ECDS resource (and filter) name: ``<ns>.<name>`` for wasm, ``<ns>.<name>.rider`` for rider."""
    return f"{namespace}.{name}.rider" if rider else f"{namespace}.{name}"


def _plain(value: Any) -> Any:
    """Numbers as protojson writes a Struct (doubles): 10.0 -> 10."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def configuration_string(settings: Mapping[str, Any] | None) -> str:
    """The wasm plugin's configuration: ``{}`` when absent (Envoy rejects an empty one),
    ``{"_string": s}`` as ``s`` verbatim, anything else as compact JSON with sorted keys."""
    if settings is None:
        return "{}"
    if set(settings) == {"_string"} and isinstance(settings["_string"], str):
        return settings["_string"]
    return json.dumps(_plain(settings), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def string_value(text: str) -> dict[str, Any]:
    return {"@type": STRING_VALUE, "value": text}


def data_source(url: str, sha256: str, where: str, problems: list[Problem]) -> tuple[dict[str, Any] | None, bool]:
    """(Envoy data source, is remote) for a plugin URL; a URL without a scheme is an OCI image."""
    if not url:
        problems.append(Problem("InvalidUrl", f"{where}.url: required (oci://, http(s)://, file:// or an image)"))
        return None, False
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest, url = "oci", url, "oci://" + url
    if scheme not in SCHEMES or not rest or any(c.isspace() for c in url):
        problems.append(
            Problem("InvalidUrl", f"{where}.url: {url!r} is not an oci://, http(s):// or file:// URL or an image")
        )
        return None, False
    if scheme == "file":
        return {"local": {"filename": rest}}, False
    if sha256 and not SHA256.match(sha256):
        problems.append(Problem("InvalidSha256", f"{where}.sha256: {sha256!r} is not 64 hexadecimal digits"))
        return None, True
    remote = {"httpUri": {"uri": url, "cluster": "_", "timeout": "30s"}, "sha256": sha256 or NO_SHA256}
    return {"remote": remote}, True


def pull_secret(plugin: Wasm | Rider, ctx: PluginContext, where: str, problems: list[Problem]) -> str | None:
    """The image pull credentials (docker config JSON) of a remote plugin, if it names any."""
    if plugin.image_pull_secret_content is not None:
        return plugin.image_pull_secret_content
    name = plugin.image_pull_secret_name
    if not name:
        return None
    field = f"{where}.imagePullSecretName"
    secret = ctx.secrets.get(name)
    if secret is None:
        problems.append(Problem("SecretNotFound", f"{field}: Secret {name!r} not found in the namespace"))
        return None
    if secret.get("type") != DOCKER_CONFIG_TYPE:
        problems.append(
            Problem("InvalidSecret", f"{field}: Secret {name!r} is of type {secret.get('type')!r}, "
                                     f"not {DOCKER_CONFIG_TYPE}")
        )
        return None
    string_data = secret.get("stringData") or {}
    if isinstance(string_data.get(DOCKER_CONFIG_KEY), str):
        return str(string_data[DOCKER_CONFIG_KEY])
    encoded = (secret.get("data") or {}).get(DOCKER_CONFIG_KEY)
    if not isinstance(encoded, str):
        problems.append(Problem("InvalidSecret", f"{field}: Secret {name!r} has no {DOCKER_CONFIG_KEY} key"))
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        problems.append(Problem("InvalidSecret", f"{field}: Secret {name!r}: {DOCKER_CONFIG_KEY} is not base64 text"))
        return None


def wasm_config(resource: str, wasm: Wasm, ctx: PluginContext, where: str,
                problems: list[Problem]) -> dict[str, Any] | None:
    """The Envoy ``Wasm`` filter config (protojson: lowerCamel keys)."""
    code, remote = data_source(wasm.url, wasm.sha256, f"{where}.wasm", problems)
    secret = pull_secret(wasm, ctx, f"{where}.wasm", problems) if remote else None
    if code is None:
        return None
    vm: dict[str, Any] = {"runtime": WASM_RUNTIME, "code": code}
    if secret is not None:
        vm["environmentVariables"] = {"keyValues": {PULL_SECRET_ENV: secret}}
    config: dict[str, Any] = {"name": resource}
    if wasm.plugin_name:
        config["rootId"] = wasm.plugin_name
    config["vmConfig"] = vm
    config["configuration"] = string_value(configuration_string(wasm.settings))
    return {"config": config}


def rider_config(rider: Rider, ctx: PluginContext, where: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The rider filter config (hand-built upstream: snake_case, but camelCase inside ``code``)."""
    code, remote = data_source(rider.url, rider.sha256, f"{where}.rider", problems)
    secret = pull_secret(rider, ctx, f"{where}.rider", problems) if remote else None
    if code is None:
        return None
    plugin: dict[str, Any] = {
        "name": rider.plugin_name,
        "vm_config": {"package_path": RIDER_PACKAGE_PATH},
        "code": code,
    }
    if rider.settings is not None or secret is not None:
        config = dict(rider.settings or {})
        if secret is not None:
            config[RIDER_ENV] = {**(config.get(RIDER_ENV) or {}), PULL_SECRET_ENV: secret}
        plugin["config"] = config
    return {"plugin": plugin}


def per_route_wasm(wasm: Wasm) -> dict[str, Any]:
    """An EnvoyPlugin's wasm settings: the configuration string, as upstream."""
    return {"configuration": string_value(configuration_string(wasm.settings))}


def per_route_rider(name: str, rider: Rider) -> dict[str, Any]:
    return {"plugins": [{"name": name, "config": dict(rider.settings or {})}]}
