"""SmartLimiter (microservice.slime.io/v1alpha2) and the limiter module config.

Shapes follow upstream's protobuf messages; both spellings (proto name and lowerCamel)
are accepted, status is written in lowerCamel as upstream's jsonpb does. Deliberately
stricter than upstream: unknown fields, empty conditions, matchers that upstream would
silently drop and fill intervals the RLS cannot express are rejected with a message.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, StringConstraints, field_validator, model_validator

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.regex import regex_problem

GROUP = "microservice.slime.io"
VERSION = "v1alpha2"
KIND = "SmartLimiter"
PLURAL = "smartlimiters"

BASE_SET = "_base"
SET_NAME = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GLOBAL = "global"
OUTBOUND = "outbound"
GLOBAL_INTERVALS = {1: "SECOND", 60: "MINUTE", 3600: "HOUR", 86400: "DAY"}

MatchSourceName = Literal["HeadMatch", "QueryMatch", "JsonBodyMatch", "SourceIpMatch"]
MATCH_SOURCES: tuple[MatchSourceName, ...] = ("HeadMatch", "QueryMatch", "JsonBodyMatch", "SourceIpMatch")


def _both(proto: str, camel: str, default: Any = ..., **kw: Any) -> Any:
    """A field upstream accepts under two spellings; written back in lowerCamel."""
    return Field(default, validation_alias=AliasChoices(proto, camel), serialization_alias=camel, **kw)


# ----------------------------------------------------------------------------- spec


class Duration(SlimeModel):
    """Token-bucket refill interval, as upstream's {seconds, nanos} object (not a "60s" string)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.seconds) && self.seconds > 0) || (has(self.nanos) && self.nanos >= 50000000)",
                    "message": "fill interval must be at least 50ms (Envoy's minimum)",
                }
            ]
        }
    )
    seconds: int = Field(0, ge=0, le=2**31 - 1, description="Whole seconds")
    nanos: int = Field(0, ge=0, le=999_999_999, description="Nanoseconds added to seconds")

    @model_validator(mode="after")
    def _positive(self) -> Duration:
        if self.seconds == 0 and self.nanos < MIN_FILL_NANOS:
            raise ValueError("fill interval must be at least 50ms (Envoy's minimum)")
        return self


# What Envoy accepts: a header name is an RFC 7230 token (no ':' pseudo-headers, no CR/LF), and a
# header value holds no CR, LF or NUL. Envoy refuses the whole listener update otherwise.
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
NO_CRLF = r"^[^\r\n\x00]*$"
MIN_FILL_NANOS = 50_000_000


class Header(SlimeModel):
    """A response header added to limited responses."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.key.lowerAscii() != 'host'", "message": "host cannot be added as a response header"}]})
    key: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME,
                     description="Header name: a token (no ':' pseudo-headers, no spaces, CR or LF)")
    value: str = Field("", max_length=4096, pattern=NO_CRLF, description="Header value (no CR, LF or NUL)")

    @field_validator("key")
    @classmethod
    def _not_host(cls, v: str) -> str:
        if v.lower() == "host":
            raise ValueError("host cannot be added as a response header")
        return v


_CEL_GLOBAL_INTERVAL = " || ".join(
    f"(has(self.{k}) && has(self.{k}.seconds) && self.{k}.seconds in [1, 60, 3600, 86400]"
    f" && !(has(self.{k}.nanos) && self.{k}.nanos != 0))"
    for k in ("fill_interval", "fillInterval")
)


class Action(SlimeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!has(self.strategy) || self.strategy != 'global' || {_CEL_GLOBAL_INTERVAL}",
                    "message": "strategy global needs fill_interval.seconds of 1, 60, 3600 or 86400",
                }
            ]
        }
    )
    quota: str = Field(
        min_length=1,
        max_length=1024,
        description='Token count: an integer expression, may use metrics such as "100/{{._base.pod}}"',
    )
    fill_interval: Duration = _both("fill_interval", "fillInterval", description="Token refill interval")
    strategy: str = Field(
        "",
        max_length=64,
        description='"global" uses the rate limit service; anything else ("single", "average") is local',
    )
    headers_to_add: list[Header] = _both(
        "headers_to_add",
        "headersToAdd",
        default=[],
        max_length=16,
        description="Response headers added to rate-limited responses (local limits only)",
    )

    @model_validator(mode="after")
    def _global_interval(self) -> Action:
        fi = self.fill_interval
        if self.strategy == GLOBAL and (fi.seconds not in GLOBAL_INTERVALS or fi.nanos):
            raise ValueError("strategy global needs fill_interval.seconds of 1, 60, 3600 or 86400 (no nanos)")
        return self




class Matcher(SlimeModel):
    """One request matcher: a header (default), query parameter or source IP."""

    name: str = Field("", max_length=256, pattern=r"^[^\s\x00]*$",
                      description="Header or query parameter name (no whitespace)")
    regex_match: str = _both("regex_match", "regexMatch", "", max_length=1024, description="RE2 regex")
    exact_match: str = _both(
        "exact_match",
        "exactMatch",
        "",
        max_length=4096,
        description="Exact value; comma-separated IPs for SourceIpMatch",
    )
    prefix_match: str = _both("prefix_match", "prefixMatch", "", max_length=1024, description="Value starts with this")
    suffix_match: str = _both("suffix_match", "suffixMatch", "", max_length=1024, description="Value ends with this")
    present_match: bool = _both("present_match", "presentMatch", False, description="The header is present")
    invert_match: bool = _both("invert_match", "invertMatch", False, description="Match when the rule does not")
    is_exact_match_empty: bool = _both("is_exact_match_empty", "isExactMatchEmpty", False,
                                       description="Match the empty value exactly")
    present_match_separate: bool = _both(
        "present_match_separate",
        "presentMatchSeparate",
        False,
        description="Global only: one bucket per distinct value of the header",
    )
    useQueryMatch: bool = Field(
        False, description="Deprecated: with HeadMatch, treat the matcher as a query match"
    )
    matchSource: MatchSourceName | Literal[0, 1, 2, 3] = Field(
        "HeadMatch", description="HeadMatch, QueryMatch, JsonBodyMatch or SourceIpMatch (name or number)"
    )

    @field_validator("matchSource", mode="before")
    @classmethod
    def _enum_number(cls, v: Any) -> Any:
        if isinstance(v, bool):  # a bool is an int to Python and to Literal[0, 1]
            raise ValueError("matchSource must be a name or a number, not a boolean")
        if isinstance(v, int) and 0 <= v < len(MATCH_SOURCES):
            return MATCH_SOURCES[v]
        return v

    @property
    def source(self) -> str:
        """The effective source, with the deprecated useQueryMatch folded in."""
        if self.matchSource == "HeadMatch" and self.useQueryMatch:
            return "QueryMatch"
        return str(self.matchSource)

    @property
    def ips(self) -> list[str]:
        return self.exact_match.split(",")

    @model_validator(mode="after")
    def _usable(self) -> Matcher:
        source = self.source
        if source == "JsonBodyMatch":
            raise ValueError("JsonBodyMatch needs a patched Envoy (body_value_match) and is not supported")
        if source == "SourceIpMatch":
            for ip in self.ips:
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    raise ValueError(
                        f"SourceIpMatch exact_match must be IPs separated by ',' (no spaces); got {ip!r}"
                    ) from None
            return self
        if not self.name:
            raise ValueError(f"{source} matcher needs a name")
        if self.regex_match:
            problem = regex_problem(self.regex_match)
            if problem:
                raise ValueError(f"regex_match: {problem}")
        string_kinds = (self.regex_match, self.exact_match, self.prefix_match, self.suffix_match)
        if source == "QueryMatch":
            if (
                self.present_match
                or self.invert_match
                or self.is_exact_match_empty
                or self.present_match_separate
            ):
                raise ValueError(
                    "query matchers support only regex_match, exact_match, prefix_match, suffix_match"
                )
            if not any(string_kinds):
                raise ValueError(
                    f"query matcher {self.name!r} needs regex_match, exact_match, prefix_match"
                    " or suffix_match"
                )
        elif not (
            any(string_kinds)
            or self.is_exact_match_empty
            or self.present_match
            or self.present_match_separate
        ):
            raise ValueError(
                f"header matcher {self.name!r} sets no match (regex/exact/prefix/suffix/present...)"
            )
        return self


_ROUTE = r"^[^/]*/[^/]+$"


class Target(SlimeModel):
    """Where the limit applies. Inbound by default; outbound/gateway use route or host."""

    direction: Literal["", "inbound", "outbound"] = Field(
        "", description='"outbound" selects route/host targets'
    )
    port: int = Field(
        0, ge=0, le=65535, description="Inbound: vhost inbound|http|<port> (0 = any); outbound: :port"
    )
    route: list[Annotated[str, StringConstraints(pattern=_ROUTE, max_length=512)]] = Field(
        default=[], max_length=64, description='Outbound: "<vhost>/<route name>" entries, vhost may be empty'
    )
    host: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] = Field(
        default=[], max_length=64, description="Outbound, when route is empty: virtual host names"
    )

    @model_validator(mode="after")
    def _outbound_only(self) -> Target:
        if (self.route or self.host) and self.direction != OUTBOUND:
            raise ValueError("target route/host need direction: outbound")
        return self


class SmartLimitDescriptor(SlimeModel):
    condition: str = Field(
        min_length=1,
        max_length=1024,
        description='"true", "false" or an expression that enables the limit when it evaluates to 1',
    )
    action: Action = Field(description="The limit: quota, fill interval, strategy")
    match: list[Matcher] = Field(default=[], max_length=16, description="Requests the limit applies to (all match)")
    target: Target | None = Field(None, description="Defaults to spec.target; one of the two is required")
    custom_key: str = _both(
        "custom_key", "customKey", "", max_length=256, description="Unused (upstream: dead)"
    )
    custom_value: str = _both(
        "custom_value", "customValue", "", max_length=256, description="Unused (upstream: dead)"
    )

    @model_validator(mode="after")
    def _separate_is_global(self) -> SmartLimitDescriptor:
        if self.action.strategy != GLOBAL and any(m.present_match_separate for m in self.match):
            raise ValueError("present_match_separate is supported only with strategy global")
        if sum(m.source == "SourceIpMatch" for m in self.match) > 1:
            raise ValueError(
                "use one SourceIpMatch matcher per descriptor (list several IPs comma-separated)"
            )
        return self


class SmartLimitDescriptors(SlimeModel):
    """The limits of one set (``_base`` or a DestinationRule subset)."""

    descriptor: list[SmartLimitDescriptor] = Field(default=[], max_length=64,
                                                   description="The set's limits, each with its condition")


_CEL_OUTBOUND = (
    "(has(d.target) ? (has(d.target.direction) && d.target.direction == 'outbound')"
    " : (has(self.target) && has(self.target.direction) && self.target.direction == 'outbound'))"
)
_CEL_EACH = "self.sets.all(k, !has(self.sets[k].descriptor) || self.sets[k].descriptor.all(d, {}))"


class SmartLimiterSpec(SlimeModel):
    """Rate limits for the Service with the same name and namespace (or a workloadSelector/host)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.target) || " + _CEL_EACH.format("has(d.target)"),
                    "message": "every descriptor needs a target, or set spec.target",
                },
                {
                    "rule": _CEL_EACH.format(
                        f"d.condition == 'true' || !((has(self.gateway) && self.gateway) || {_CEL_OUTBOUND})"
                    ),
                    "message": 'gateway and outbound descriptors need condition: "true"',
                },
            ]
        }
    )
    sets: dict[str, SmartLimitDescriptors] = Field(
        max_length=64, description='Descriptors per set: "_base" is the whole service, other keys are subsets',
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.all(k, k == '_base' || (size(k) <= 63 && k.matches('" + SET_NAME + "')))",
            "message": "a set is _base or a DestinationRule subset name (lower-case letters, digits and '-', "
                       "at most 63): it becomes part of an EnvoyFilter's name"}]},
    )
    rls: str = Field("", description="Deprecated and ignored: the RLS is set in the module config")
    workloadSelector: dict[str, str] = Field(
        default={}, description="Pods to limit; defaults to the Service's selector"
    )
    gateway: bool = Field(False, description="Apply to gateways (match context GATEWAY)")
    host: str = Field("", max_length=512, description="A ServiceEntry host to limit instead of the Service")
    target: Target | None = Field(None, description="Default target of descriptors that have none")

    @model_validator(mode="after")
    def _upstream_rules(self) -> SmartLimiterSpec:
        errors = []
        for set_name in self.sets:
            if set_name != BASE_SET and (len(set_name) > 63 or not re.fullmatch(SET_NAME, set_name)):
                errors.append(f"spec.sets.{set_name[:70]}: a set is _base or a DestinationRule subset name "
                              "(lower-case letters, digits and '-', at most 63)")
        for set_name, item in self.sets.items():
            for i, d in enumerate(item.descriptor):
                where = f"spec.sets.{set_name}.descriptor[{i}]"
                target = d.target or self.target
                if target is None:
                    errors.append(f"{where}: no target (set descriptor.target or spec.target)")
                elif (self.gateway or target.direction == OUTBOUND) and d.condition != "true":
                    errors.append(f'{where}: gateway and outbound descriptors need condition: "true"')
        if errors:
            raise ValueError("; ".join(errors))
        return self


# ----------------------------------------------------------------------------- status


class ActiveDescriptor(SlimeModel):
    """A descriptor as applied: quota evaluated, no condition (upstream's "warped" form)."""

    action: Action = Field(description="The limit in force, its quota evaluated")
    match: list[Matcher] = Field(default=[], description="Requests the limit applies to")
    target: Target | None = Field(None, description="Where the limit applies")


class ActiveDescriptors(SlimeModel):
    """The limits of one set in force."""

    descriptor: list[ActiveDescriptor] = Field(default=[], description="The limits in force")


class SmartLimiterStatus(StatusBase):
    ratelimitStatus: dict[str, ActiveDescriptors] = Field(
        default={}, description="Per set, the descriptors in force (quota evaluated)"
    )
    metricStatus: dict[str, str] = Field(default={}, description="Metric values used for the last render")


# ----------------------------------------------------------------------------- module config


class RlsConfigMap(SlimeModel):
    name: str = ""
    namespace: str = ""


class RateLimitService(SlimeModel):
    service: str = Field("", description="RLS host, e.g. rate-limit.istio-system.svc.cluster.local")
    port: int = Field(0, ge=0, le=65535)

    @property
    def cluster(self) -> str | None:
        """Istio's cluster name for the RLS, or None if not configured."""
        if not self.service or not self.port:
            return None
        return f"outbound|{self.port}||{self.service}"


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$")


class LimiterConfig(SlimeModel):
    """The limiter module's ``general`` config (upstream proto slime.microservice.limiter.config.Limiter)."""

    backend: Literal["netEaseLocalFlowControl", "envoyLocalRateLimit"] | Literal[0, 1] = Field(
        0, description="Unused (upstream too)"
    )
    refresh: str = Field(
        "5s",
        pattern=_DURATION.pattern,
        description='How often limits are re-evaluated, e.g. "5s", "500ms", "1m" (upstream: fixed 30s)',
    )
    disableGlobalRateLimit: bool = Field(False, description="No ratelimit filter and no RLS ConfigMap writes")
    disableAdaptive: bool = Field(False, description="No Prometheus: only pod counts are available")
    enableServiceEntry: bool = Field(False, description="Unused (upstream too)")
    disableInsertLocalRateLimit: bool = Field(
        False, description="Do not insert the local_ratelimit HTTP filter"
    )
    disableInsertGlobalRateLimit: bool = Field(False, description="Do not insert the ratelimit HTTP filter")
    rlsConfigMap: RlsConfigMap | None = Field(None, description="RLS ConfigMap (key config.yaml) to rewrite")
    domain: str = Field("slime", description="RLS domain")
    rls: RateLimitService | None = Field(None, description="The rate limit service")
    proxyVersion: str = Field("", description="RE2 regex put in match.proxy.proxyVersion of every patch")
    enableRatelimitPlaceholderInRoute: bool = Field(
        False, description="Add an optional ratelimit per-route placeholder to global routes"
    )

    @property
    def refresh_seconds(self) -> float:
        m = _DURATION.match(self.refresh)
        if m is None:  # the pattern already rejected it
            raise ValueError(f"bad refresh {self.refresh!r}")
        n = float(m.group(1))
        return {"ms": n / 1000, "s": n, "m": n * 60}[m.group(2)]

    @field_validator("refresh")
    @classmethod
    def _refresh_positive(cls, v: str) -> str:
        m = _DURATION.match(v)
        if m and float(m.group(1)) <= 0:
            raise ValueError("refresh must be positive")
        return v

    @property
    def rls_domain(self) -> str:
        return self.domain or "slime"
