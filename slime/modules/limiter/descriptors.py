"""Active descriptors: their Id, route actions, local entries and RLS descriptors.

The descriptor value ``Service[<name>.<ns>]-Id[<n>]`` must equal upstream's, so that
an existing RLS config and EnvoyFilters keep working after a switch: ``n`` is the
Adler-32 of the protobuf-go compact text of the active descriptor followed by
``<ns>/<name>`` (reference §2.5).
"""

from __future__ import annotations

import zlib
from typing import Any

from slime.modules.limiter.api import (
    GLOBAL,
    GLOBAL_INTERVALS,
    Action,
    ActiveDescriptor,
    Duration,
    Header,
    Matcher,
    SmartLimitDescriptor,
    Target,
)

HEADER, QUERY, SOURCE_IP = "HeadMatch", "QueryMatch", "SourceIpMatch"

# ----------------------------------------------------------------------------- text format

# protobuf-go separates fields with one or two spaces chosen per binary; the binaries
# that produced upstream's fixtures used two.
_SEP = "  "


def _quote(s: str) -> str:
    """A string literal as protobuf-go's text encoder writes it (UTF-8 kept, controls escaped)."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0x80 <= code <= 0x9F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _msg(name: str, fields: list[str]) -> str:
    return f"{name}:{{{_SEP.join(fields)}}}"


def _duration_text(d: Duration) -> list[str]:
    return [f for f in (d.seconds and f"seconds:{d.seconds}", d.nanos and f"nanos:{d.nanos}") if f]


def _action_text(a: Action) -> list[str]:
    out = []
    if a.quota:
        out.append(f"quota:{_quote(a.quota)}")
    out.append(_msg("fill_interval", _duration_text(a.fill_interval)))
    if a.strategy:
        out.append(f"strategy:{_quote(a.strategy)}")
    for h in a.headers_to_add:
        out.append(_msg("headers_to_add", _header_text(h)))
    return out


def _header_text(h: Header) -> list[str]:
    return [f"{k}:{_quote(v)}" for k, v in (("key", h.key), ("value", h.value)) if v]


def _matcher_text(m: Matcher) -> list[str]:
    out = [
        f"{k}:{_quote(v)}"
        for k, v in (
            ("name", m.name),
            ("regex_match", m.regex_match),
            ("exact_match", m.exact_match),
            ("prefix_match", m.prefix_match),
            ("suffix_match", m.suffix_match),
        )
        if v
    ]
    for k, b in (
        ("present_match", m.present_match),
        ("invert_match", m.invert_match),
        ("is_exact_match_empty", m.is_exact_match_empty),
        ("present_match_separate", m.present_match_separate),
        ("useQueryMatch", m.useQueryMatch),
    ):
        if b:
            out.append(f"{k}:true")
    if m.matchSource != HEADER:
        out.append(f"matchSource:{m.matchSource}")
    return out


def _target_text(t: Target) -> list[str]:
    out = []
    if t.direction:
        out.append(f"direction:{_quote(t.direction)}")
    if t.port:
        out.append(f"port:{t.port}")
    out += [f"route:{_quote(r)}" for r in t.route]
    out += [f"host:{_quote(h)}" for h in t.host]
    return out


def descriptor_text(d: ActiveDescriptor) -> str:
    """protobuf-go compact text of an active descriptor (the input of the Id)."""
    fields = [_msg("action", _action_text(d.action))]
    fields += [_msg("match", _matcher_text(m)) for m in d.match]
    if d.target is not None:
        fields.append(_msg("target", _target_text(d.target)))
    return _SEP.join(fields)


def descriptor_id(d: ActiveDescriptor, name: str, namespace: str) -> int:
    return zlib.adler32(f"{descriptor_text(d)}{namespace}/{name}".encode())


def descriptor_value(d: ActiveDescriptor, name: str, namespace: str) -> str:
    return f"Service[{name}.{namespace}]-Id[{descriptor_id(d, name, namespace)}]"


def separate_key(d: ActiveDescriptor, name: str, namespace: str) -> str:
    return f"RequestHeader[{name}.{namespace}]-Id[{descriptor_id(d, name, namespace)}]"


# ----------------------------------------------------------------------------- activation


def activate(d: SmartLimitDescriptor, quota: int) -> list[ActiveDescriptor]:
    """The descriptor as applied (quota evaluated), split into one per source IP."""
    action = Action.model_construct(
        quota=str(quota),
        fill_interval=d.action.fill_interval,
        strategy=d.action.strategy,
        headers_to_add=list(d.action.headers_to_add),
    )
    base = ActiveDescriptor.model_construct(action=action, match=list(d.match), target=d.target)
    ip_at = next((i for i, m in enumerate(d.match) if m.source == SOURCE_IP), None)
    if ip_at is None:
        return [base]
    out = []
    for ip in d.match[ip_at].ips:
        match = list(d.match)
        match[ip_at] = match[ip_at].model_copy(update={"exact_match": ip})
        out.append(base.model_copy(update={"match": match}))
    return out


def is_global(d: ActiveDescriptor) -> bool:
    return d.action.strategy == GLOBAL


def _by_source(d: ActiveDescriptor) -> tuple[list[Matcher], list[Matcher], list[Matcher]]:
    query = [m for m in d.match if m.source == QUERY]
    header = [m for m in d.match if m.source == HEADER]
    ips = [m for m in d.match if m.source == SOURCE_IP]
    return query, header, ips


def _separate(d: ActiveDescriptor) -> Matcher | None:
    return next((m for m in d.match if m.source == HEADER and m.present_match_separate), None)


# ----------------------------------------------------------------------------- route actions


def _regex(r: str) -> dict[str, Any]:
    return {"google_re2": {}, "regex": r}


def _header_matcher(m: Matcher) -> dict[str, Any]:
    h: dict[str, Any] = {"name": m.name}
    if m.invert_match:
        h["invert_match"] = True
    # upstream priority: regex > exact > prefix > suffix > exact-empty > present
    if m.regex_match:
        h["safe_regex_match"] = _regex(m.regex_match)
    elif m.exact_match:
        h["exact_match"] = m.exact_match
    elif m.prefix_match:
        h["prefix_match"] = m.prefix_match
    elif m.suffix_match:
        h["suffix_match"] = m.suffix_match
    elif m.is_exact_match_empty:
        h["exact_match"] = ""
    elif m.present_match:
        h["present_match"] = True
    return h


def _query_matcher(m: Matcher) -> dict[str, Any]:
    if m.regex_match:
        sm: dict[str, Any] = {"safe_regex": _regex(m.regex_match)}
    elif m.exact_match:
        sm = {"exact": m.exact_match}
    elif m.prefix_match:
        sm = {"prefix": m.prefix_match}
    else:
        sm = {"suffix": m.suffix_match}
    return {"name": m.name, "string_match": sm}


def route_actions(d: ActiveDescriptor, name: str, namespace: str) -> list[dict[str, Any]]:
    """The route ``rate_limits[].actions`` producing this descriptor (proto field names)."""
    value = descriptor_value(d, name, namespace)
    generic = {"generic_key": {"descriptor_value": value}}
    sep = _separate(d)
    if sep is not None:
        key = separate_key(d, name, namespace)
        return [generic, {"request_headers": {"header_name": sep.name, "descriptor_key": key}}]
    if not d.match:
        return [generic]
    query, header, ips = _by_source(d)
    actions: list[dict[str, Any]] = []
    if query:
        actions.append(
            {
                "query_parameter_value_match": {
                    "descriptor_value": value,
                    "query_parameters": [_query_matcher(m) for m in query],
                }
            }
        )
    if header:
        actions.append(
            {
                "header_value_match": {
                    "descriptor_value": value,
                    "headers": [_header_matcher(m) for m in header],
                }
            }
        )
    if ips:
        if is_global(d):
            actions.append(generic)
        actions.append({"remote_address": {}})
    return actions


# ----------------------------------------------------------------------------- local limits


def duration_string(d: Duration) -> str:
    """protojson Duration: "60s", "1.500s" (fraction in 3, 6 or 9 digits)."""
    if not d.nanos:
        return f"{d.seconds}s"
    frac = f"{d.nanos:09d}"
    while frac.endswith("000"):
        frac = frac[:-3]
    return f"{d.seconds}.{frac}s"


def local_entries(d: ActiveDescriptor, name: str, namespace: str) -> list[dict[str, str]]:
    """Descriptor entries of a local limit: they must equal what route_actions produce."""
    value = descriptor_value(d, name, namespace)
    if not d.match:
        return [{"key": "generic_key", "value": value}]
    query, header, ips = _by_source(d)
    entries = []
    if query:
        entries.append({"key": "query_match", "value": value})
    if header:
        entries.append({"key": "header_match", "value": value})
    if ips:
        entries.append({"key": "remote_address", "value": ips[0].exact_match})
    return entries


def local_descriptor(d: ActiveDescriptor, name: str, namespace: str) -> dict[str, Any]:
    quota = int(d.action.quota)
    return {
        "entries": local_entries(d, name, namespace),
        "tokenBucket": {
            "maxTokens": quota,
            "tokensPerFill": quota,
            "fillInterval": duration_string(d.action.fill_interval),
        },
    }


# ----------------------------------------------------------------------------- global (RLS)


def rls_descriptor(d: ActiveDescriptor, name: str, namespace: str) -> dict[str, Any]:
    """The envoyproxy/ratelimit config entry matching the descriptor's route actions.

    The nesting follows the action order exactly (query > header > generic_key >
    remote_address), so the request descriptor Envoy builds always finds its leaf.
    """
    value = descriptor_value(d, name, namespace)
    rate = {
        "requests_per_unit": int(d.action.quota),
        "unit": GLOBAL_INTERVALS[d.action.fill_interval.seconds],
    }
    chain: list[tuple[str, str | None]]
    if _separate(d) is not None:
        chain = [("generic_key", value), (separate_key(d, name, namespace), None)]
    elif not d.match:
        chain = [("generic_key", value)]
    else:
        query, header, ips = _by_source(d)
        chain = []
        if query:
            chain.append(("query_match", value))
        if header:
            chain.append(("header_match", value))
        if ips:
            chain += [("generic_key", value), ("remote_address", ips[0].exact_match)]
    node: dict[str, Any] = {}
    for i, (key, val) in enumerate(reversed(chain)):
        outer: dict[str, Any] = {"key": key}
        if val is not None:
            outer["value"] = val
        if i == 0:
            outer["rate_limit"] = rate
        else:
            outer["descriptors"] = [node]
        node = outer
    return node
