"""Kubernetes object names: what is valid, checked without any client (renders use it too)."""

from __future__ import annotations

import re

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 253
MAX_LABEL = 63


class InvalidNameError(ValueError):
    """A name or namespace that is not a Kubernetes object name; never sent to the apiserver."""


def name_problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` is not a valid object name (DNS-1123 subdomain, at most 253 characters), or None."""
    if not isinstance(name, str) or not name:
        return f"{what} is empty"
    if len(name) > MAX_NAME:
        return f"{what} {name[:40]!r}... is {len(name)} characters long; at most {MAX_NAME} are allowed"
    if not DNS1123_SUBDOMAIN.fullmatch(name):
        return (f"{what} {name!r} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit)")
    return None


def namespace_problem(namespace: object) -> str | None:
    if not isinstance(namespace, str) or len(namespace) > MAX_LABEL or not DNS1123_LABEL.fullmatch(namespace):
        return f"namespace {namespace!r} is not a valid Kubernetes namespace name"
    return None


def check_name(name: str, what: str = "name") -> str:
    problem = name_problem(name, what)
    if problem:
        raise InvalidNameError(problem)
    return name


def check_namespace(namespace: str) -> str:
    problem = namespace_problem(namespace)
    if problem:
        raise InvalidNameError(problem)
    return namespace
