"""What stock Envoy 1.40 knows: its HTTP filters and their config types. Data, pure.

Read from Envoy 1.40's own registry (``/server_info``, category ``envoy.filters.http``);
``tests/integration/test_plugin_envoy.py`` checks this table against the binary both ways.
Each entry: filter name -> (filter config type, per-route config type or None). A filter
without a per-route type may still take its own type per route (fault, local_ratelimit).

Envoy finds a filter by the type in its config (a TypedStruct's ``type_url``), never by name
(the name lookup was removed in the 1.2x releases): a config without a known type is rejected,
and with it the whole listener update of every selected proxy.
"""

from __future__ import annotations

from collections.abc import Mapping

TYPE_PREFIX = "type.googleapis.com/"
UDPA_TYPED_STRUCT = "udpa.type.v1.TypedStruct"
XDS_TYPED_STRUCT = "xds.type.v3.TypedStruct"
TYPED_STRUCTS = frozenset({UDPA_TYPED_STRUCT, XDS_TYPED_STRUCT})
ROUTE_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"  # per-route wrapper {config, is_optional, disabled}

HTTP_FILTERS: dict[str, tuple[str, str | None]] = {
    "envoy.extensions.filters.http.dynamic_modules": (
        "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
    ),
    "envoy.filters.http.a2a": ("envoy.extensions.filters.http.a2a.v3.A2a", None),
    "envoy.filters.http.adaptive_concurrency": (
        "envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
        None,
    ),
    "envoy.filters.http.admission_control": (
        "envoy.extensions.filters.http.admission_control.v3.AdmissionControl",
        None,
    ),
    "envoy.filters.http.ai_protocol_manager": (
        "envoy.extensions.filters.http.ai_protocol_manager.v3.AiProtocolManager",
        "envoy.extensions.filters.http.ai_protocol_manager.v3.AiProtocolManagerPerRoute",
    ),
    "envoy.filters.http.alternate_protocols_cache": (
        "envoy.extensions.filters.http.alternate_protocols_cache.v3.FilterConfig",
        None,
    ),
    "envoy.filters.http.api_key_auth": (
        "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
        "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute",
    ),
    "envoy.filters.http.aws_eventstream_parser": (
        "envoy.extensions.filters.http.aws_eventstream_parser.v3.AwsEventstreamParser",
        None,
    ),
    "envoy.filters.http.aws_lambda": (
        "envoy.extensions.filters.http.aws_lambda.v3.Config",
        "envoy.extensions.filters.http.aws_lambda.v3.PerRouteConfig",
    ),
    "envoy.filters.http.aws_request_signing": (
        "envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
        "envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigningPerRoute",
    ),
    "envoy.filters.http.bandwidth_limit": ("envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit", None),
    "envoy.filters.http.bandwidth_share": ("envoy.extensions.filters.http.bandwidth_share.v3.BandwidthShare", None),
    "envoy.filters.http.basic_auth": (
        "envoy.extensions.filters.http.basic_auth.v3.BasicAuth",
        "envoy.extensions.filters.http.basic_auth.v3.BasicAuthPerRoute",
    ),
    "envoy.filters.http.body_size_limit": ("envoy.extensions.filters.http.body_size_limit.v3.BodySizeLimit", None),
    "envoy.filters.http.buffer": (
        "envoy.extensions.filters.http.buffer.v3.Buffer",
        "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
    ),
    "envoy.filters.http.cache": ("envoy.extensions.filters.http.cache.v3.CacheConfig", None),
    "envoy.filters.http.cache_v2": ("envoy.extensions.filters.http.cache_v2.v3.CacheV2Config", None),
    "envoy.filters.http.cdn_loop": ("envoy.extensions.filters.http.cdn_loop.v3.CdnLoopConfig", None),
    "envoy.filters.http.composite": (
        "envoy.extensions.filters.http.composite.v3.Composite",
        "envoy.extensions.filters.http.composite.v3.CompositePerRoute",
    ),
    "envoy.filters.http.compressor": (
        "envoy.extensions.filters.http.compressor.v3.Compressor",
        "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
    ),
    "envoy.filters.http.connect_grpc_bridge": (
        "envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig",
        None,
    ),
    "envoy.filters.http.cors": (
        "envoy.extensions.filters.http.cors.v3.Cors",
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
    ),
    "envoy.filters.http.credential_injector": (
        "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
        None,
    ),
    "envoy.filters.http.csrf": ("envoy.extensions.filters.http.csrf.v3.CsrfPolicy", None),
    "envoy.filters.http.custom_response": ("envoy.extensions.filters.http.custom_response.v3.CustomResponse", None),
    "envoy.filters.http.decompressor": ("envoy.extensions.filters.http.decompressor.v3.Decompressor", None),
    "envoy.filters.http.dynamic_forward_proxy": (
        "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
        "envoy.extensions.filters.http.dynamic_forward_proxy.v3.PerRouteConfig",
    ),
    "envoy.filters.http.ext_authz": (
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    ),
    "envoy.filters.http.ext_proc": (
        "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
    ),
    "envoy.filters.http.fault": ("envoy.extensions.filters.http.fault.v3.HTTPFault", None),
    "envoy.filters.http.file_server": ("envoy.extensions.filters.http.file_server.v3.FileServerConfig", None),
    "envoy.filters.http.file_system_buffer": (
        "envoy.extensions.filters.http.file_system_buffer.v3.FileSystemBufferFilterConfig",
        None,
    ),
    "envoy.filters.http.filter_chain": (
        "envoy.extensions.filters.http.filter_chain.v3.FilterChainConfig",
        "envoy.extensions.filters.http.filter_chain.v3.FilterChainConfigPerRoute",
    ),
    "envoy.filters.http.gcp_authn": ("envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig", None),
    "envoy.filters.http.geoip": ("envoy.extensions.filters.http.geoip.v3.Geoip", None),
    "envoy.filters.http.grpc_field_extraction": (
        "envoy.extensions.filters.http.grpc_field_extraction.v3.GrpcFieldExtractionConfig",
        None,
    ),
    "envoy.filters.http.grpc_http1_bridge": ("envoy.extensions.filters.http.grpc_http1_bridge.v3.Config", None),
    "envoy.filters.http.grpc_http1_reverse_bridge": (
        "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
        "envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfigPerRoute",
    ),
    "envoy.filters.http.grpc_json_reverse_transcoder": (
        "envoy.extensions.filters.http.grpc_json_reverse_transcoder.v3.GrpcJsonReverseTranscoder",
        None,
    ),
    "envoy.filters.http.grpc_json_transcoder": (
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        None,
    ),
    "envoy.filters.http.grpc_stats": ("envoy.extensions.filters.http.grpc_stats.v3.FilterConfig", None),
    "envoy.filters.http.grpc_web": ("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb", None),
    "envoy.filters.http.header_mutation": (
        "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
    ),
    "envoy.filters.http.header_to_metadata": ("envoy.extensions.filters.http.header_to_metadata.v3.Config", None),
    "envoy.filters.http.health_check": ("envoy.extensions.filters.http.health_check.v3.HealthCheck", None),
    "envoy.filters.http.ip_tagging": ("envoy.extensions.filters.http.ip_tagging.v3.IPTagging", None),
    "envoy.filters.http.json_to_metadata": ("envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata", None),
    "envoy.filters.http.jwt_authn": (
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
    ),
    "envoy.filters.http.local_ratelimit": ("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", None),
    "envoy.filters.http.lua": (
        "envoy.extensions.filters.http.lua.v3.Lua",
        "envoy.extensions.filters.http.lua.v3.LuaPerRoute",
    ),
    "envoy.filters.http.match_delegate": (
        "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
        "envoy.extensions.common.matching.v3.ExtensionWithMatcherPerRoute",
    ),
    "envoy.filters.http.mcp": (
        "envoy.extensions.filters.http.mcp.v3.Mcp",
        "envoy.extensions.filters.http.mcp.v3.McpOverride",
    ),
    "envoy.filters.http.mcp_json_rest_bridge": (
        "envoy.extensions.filters.http.mcp_json_rest_bridge.v3.McpJsonRestBridge",
        "envoy.extensions.filters.http.mcp_json_rest_bridge.v3.McpJsonRestBridgePerRoute",
    ),
    "envoy.filters.http.mcp_router": ("envoy.extensions.filters.http.mcp_router.v3.McpRouter", None),
    "envoy.filters.http.oauth2": (
        "envoy.extensions.filters.http.oauth2.v3.OAuth2",
        "envoy.extensions.filters.http.oauth2.v3.OAuth2PerRoute",
    ),
    "envoy.filters.http.on_demand": (
        "envoy.extensions.filters.http.on_demand.v3.OnDemand",
        "envoy.extensions.filters.http.on_demand.v3.PerRouteConfig",
    ),
    "envoy.filters.http.original_src": ("envoy.extensions.filters.http.original_src.v3.OriginalSrc", None),
    "envoy.filters.http.proto_api_scrubber": (
        "envoy.extensions.filters.http.proto_api_scrubber.v3.ProtoApiScrubberConfig",
        None,
    ),
    "envoy.filters.http.proto_message_extraction": (
        "envoy.extensions.filters.http.proto_message_extraction.v3.ProtoMessageExtractionConfig",
        None,
    ),
    "envoy.filters.http.rate_limit_quota": (
        "envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaFilterConfig",
        "envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaOverride",
    ),
    "envoy.filters.http.ratelimit": (
        "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
    ),
    "envoy.filters.http.rbac": (
        "envoy.extensions.filters.http.rbac.v3.RBAC",
        "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    ),
    "envoy.filters.http.router": ("envoy.extensions.filters.http.router.v3.Router", None),
    "envoy.filters.http.set_filter_state": ("envoy.extensions.filters.http.set_filter_state.v3.Config", None),
    "envoy.filters.http.set_metadata": ("envoy.extensions.filters.http.set_metadata.v3.Config", None),
    "envoy.filters.http.sse_to_metadata": ("envoy.extensions.filters.http.sse_to_metadata.v3.SseToMetadata", None),
    "envoy.filters.http.stateful_session": (
        "envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
        "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
    ),
    "envoy.filters.http.tap": ("envoy.extensions.filters.http.tap.v3.Tap", None),
    "envoy.filters.http.thrift_to_metadata": (
        "envoy.extensions.filters.http.thrift_to_metadata.v3.ThriftToMetadata",
        None,
    ),
    "envoy.filters.http.transform": ("envoy.extensions.filters.http.transform.v3.TransformConfig", None),
    "envoy.filters.http.wasm": ("envoy.extensions.filters.http.wasm.v3.Wasm", None),
}

# Filters that must be last in a chain: inserting one before the router is rejected.
TERMINAL = frozenset({"envoy.extensions.filters.http.router.v3.Router"})

KNOWN_TYPES = frozenset(t for pair in HTTP_FILTERS.values() for t in pair if t)
_FILTER_OF_TYPE: Mapping[str, str] = {t: name for name, pair in HTTP_FILTERS.items() for t in pair if t}


def type_name(type_url: str) -> str:
    """The message name of a type URL: Envoy looks only at what follows the last '/'."""
    return type_url.rpartition("/")[2]


def is_known(type_url: str, extra: frozenset[str] = frozenset()) -> bool:
    name = type_name(type_url)
    return name in KNOWN_TYPES or name in extra


def filter_of(type_url: str) -> str | None:
    return _FILTER_OF_TYPE.get(type_name(type_url))


def suggested_type(filter_name: str, per_route: bool) -> str | None:
    """The type URL to write for a stock filter name (a hint in messages)."""
    pair = HTTP_FILTERS.get(filter_name)
    if pair is None:
        return None
    chosen = (pair[1] or pair[0]) if per_route else pair[0]
    return TYPE_PREFIX + chosen
