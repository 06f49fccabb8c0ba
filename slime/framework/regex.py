"""Regular expressions as Envoy reads them: RE2 (Google's own library, so a verdict here is
Envoy's), with the program-size limit Envoy enforces (``re2.max_program_size.error_level``:
Istio's bootstrap raises Envoy's default of 100 to 32768). A regex Envoy rejects makes it
refuse the whole route table of every selected proxy: renders check with this first."""

from __future__ import annotations

import re2

# Istio's proxy bootstrap sets re2.max_program_size.error_level to 32768 (plain Envoy: 100).
ISTIO_MAX_PROGRAM_SIZE = 32768


def regex_problem(pattern: str, max_program_size: int = ISTIO_MAX_PROGRAM_SIZE) -> str | None:
    """Why Envoy would reject ``pattern`` as a ``safe_regex``, or None."""
    try:
        compiled = re2.compile(pattern)
    except re2.error as e:
        return f"not a valid RE2 regex: {e}"
    size = int(compiled.programsize)
    if size > max_program_size:
        return f"RE2 program size {size} is over Envoy's limit of {max_program_size}"
    return None
