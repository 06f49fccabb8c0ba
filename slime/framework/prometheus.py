"""PrometheusSource: the blocking Prometheus client (call it off the event loop).

Kept apart from ``slime.framework.metrics`` so pure code (renders, ``slime render``)
can use the metric models and conversions without importing a client.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from slime.framework.metrics import MetricsUnavailableError, Query, convert_group, convert_value


class PrometheusSource:
    """Blocking instant queries against one Prometheus. Thread-safe enough for ``asyncio.to_thread``
    (one requests session, no shared mutable state of ours)."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        if "://" not in address:
            address = "http://" + address
        self.address = address.rstrip("/")
        self.timeout = timeout
        # No client-side retries: a down Prometheus must fail fast; the caller paces retries (Backoff).
        # read=False re-raises a read timeout as such, instead of as a generic connection error.
        self._client = PrometheusConnect(url=self.address, disable_ssl=True, retry=Retry(total=0, read=False))
        # requests re-reads the proxy environment (all of os.environ) on every request; with a query
        # per limiter per refresh that was a good part of the operator's CPU. Read it once instead.
        session = self._client._session
        session.proxies.update(requests.utils.get_environ_proxies(self.address))
        session.trust_env = False

    def close(self) -> None:
        self._client._session.close()

    def _raw(self, key: str, promql: str) -> Any:

        try:
            # `timeout` also bounds the evaluation on the server side.
            return self._client.custom_query(
                promql, params={"timeout": f"{self.timeout:g}s"}, timeout=self.timeout
            )
        except requests.exceptions.InvalidURL as e:
            raise MetricsUnavailableError("PrometheusUnreachable", f"invalid address {self.address!r}") from e
        except (ValueError, KeyError, TypeError) as e:
            # Not Prometheus JSON (requests' JSONDecodeError is a ValueError too): wrong address.
            raise MetricsUnavailableError("BadResult", f"{key}: response is not a Prometheus answer") from e
        except requests.exceptions.ConnectTimeout as e:
            raise MetricsUnavailableError("PrometheusUnreachable", f"{self.address}: connect timeout") from e
        except requests.exceptions.Timeout as e:
            raise MetricsUnavailableError(
                "PrometheusTimeout", f"{key}: no answer from {self.address} within {self.timeout:g}s"
            ) from e
        except requests.exceptions.RequestException as e:
            raise MetricsUnavailableError("PrometheusUnreachable", f"{self.address}: {_short(e)}") from e
        except PrometheusApiClientException as e:
            raise MetricsUnavailableError("QueryFailed", f"{key}: {_prom_error(str(e))}") from e

    def query_value(self, key: str, promql: str) -> str | None:
        return convert_value(key, self._raw(key, promql))

    def query_group(self, key: str, promql: str) -> dict[str, str]:
        return convert_group(key, self._raw(key, promql))

    def query(self, queries: Mapping[str, Query | str]) -> dict[str, str]:
        """Run every query (a plain string is a Value query). Returns ``{key: value}`` for Value
        queries that have data (a key with no data, or NaN, is absent) and, for Group queries, their
        label-set entries merged in as upstream does. The first failure raises
        ``MetricsUnavailableError``: a partial set of numbers could flip a condition wrongly."""
        out: dict[str, str] = {}
        for key, q in queries.items():
            if isinstance(q, str):
                q = Query(q)
            if q.group:
                out.update(self.query_group(key, q.promql))
            else:
                v = self.query_value(key, q.promql)
                if v is not None:
                    out[key] = v
        return out


def _short(e: Exception) -> str:
    # requests nests urllib3 errors several levels deep; the last line-ish part is the useful one.
    text = str(e)
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return m.group(0) if m else text[:200]


def _prom_error(text: str) -> str:
    # prometheus-api-client puts the raw body in the message as a bytes repr:
    # HTTP Status Code 400 (b'{"status":"error",...,"error":"..."}'). Pick Prometheus' own "error".
    m = re.search(r"\(b'(.*)'\)\s*$", text, re.DOTALL)
    if m:
        try:
            body = json.loads(codecs.escape_decode(m.group(1))[0].decode("utf-8", "replace"))
            return str(body["error"])[:300]
        except (ValueError, KeyError, TypeError):
            pass
    return text[:300]
