"""Safe integer expression language for SmartLimiter ``condition`` and ``quota``.

Evaluation has two stages, like upstream (``framework/util/calculator.go``):

1. Template: ``{{._base.cpu.sum}}`` placeholders (a Go text/template field chain:
   leading dot, dotted keys of letters, digits, ``_`` and ``-``, spaces allowed inside
   the braces) are replaced from a flat map of dotted metric keys to value strings.
   Nothing else is allowed inside ``{{ }}`` (no functions, pipelines or comments).
   A missing key raises ``MissingMetricError``; upstream silently renders "" (= 0).
   Values must be finite decimal numbers; like upstream's ``int(ParseFloat(v))``
   they are truncated toward zero ("563.9" -> 563, "-2.5" -> -2). A negative value
   is rendered in parentheses so that ``10-{{.x}}`` stays well formed.

2. Calculator: a tokenizer plus a precedence-climbing parser over Python ints that
   evaluates as it parses (no AST, no eval). Precedence, loosest first:
   ``|| |`` < ``&& &`` < ``> < >= <= == !=`` < ``+ -`` < ``* / %`` < unary ``- !``.
   All six comparisons share one level (upstream has only ``>`` and ``<``, and no
   ``!``). Every binary operator is left associative (upstream is right associative, so
   there ``10-2-3`` gives 11 and ``100/2/5`` gives 100; here 5 and 10).
   Comparisons and logic give 1 or 0. ``&&``/``||`` treat non-zero as true; ``&`` and
   ``|`` keep upstream's exact meaning: ``a&b`` is 1 iff a+b == 2, ``a|b`` is 1 iff
   a+b > 0 (the same as and/or for 0/1 operands). Upstream gives ``|`` and ``&`` one
   precedence level; here ``&`` binds tighter, as in C. There is no short-circuit:
   every operand is evaluated, so an error anywhere is reported.
   ``/`` rounds up (toward +infinity): 100/3 = 34, -5/2 = -2, 5/(0-2) = -2. For
   non-negative operands this equals upstream; upstream's Go-remainder rule gives
   -1 for 5/(0-2), and its ``-5/2`` means ``0-(5/2)`` = -3. ``%`` is the Go/C
   truncated remainder (sign of the dividend). Division or remainder by zero is an
   error (upstream gives 0). Number literals may have a fraction, which is
   truncated ("12.7" -> 12) as upstream. Whitespace is allowed (upstream rejects it).

Conditions: the literal "true"/"false" (surrounding spaces ignored) are shortcuts;
otherwise a condition holds only when it evaluates to exactly 1 (2 is false), as upstream.

Bounds: input length ``MAX_LENGTH``, parenthesis nesting ``MAX_DEPTH``, and every
literal and intermediate result must satisfy ``|x| <= MAX_INT``.

Errors all derive from ``ExpressionError``; positions are 0-based character offsets
into the text quoted in the message (the substituted text for calculator errors).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal

MAX_LENGTH = 1024
MAX_DEPTH = 32
MAX_INT = 2**63 - 1
_SHOWN = 120  # longest text quoted in an error message


class ExpressionError(ValueError):
    """Base of every error raised by this module."""

    def __init__(
        self, what: str, text: str | None = None, position: int | None = None, token: str | None = None
    ):
        self.what, self.text, self.position, self.token = what, text or "", position, token
        where = f" at position {position}" if position is not None else ""
        shown = "" if text is None else f" in {text if len(text) <= _SHOWN else text[:_SHOWN] + '...'!r}"
        super().__init__(f"{what}{where}{shown}")


class ExpressionSyntaxError(ExpressionError):
    """Malformed template or expression."""


class ExpressionLimitError(ExpressionError):
    """Input too long or nested too deeply."""


class ExpressionArithmeticError(ExpressionError):
    """Division or remainder by zero, or a number out of range."""


class MetricValueError(ExpressionError):
    """A metric value is not a finite decimal number."""


class MissingMetricError(ExpressionError):
    """Placeholders refer to metric keys that have no value."""

    def __init__(self, missing: list[str], text: str):
        self.missing = missing
        super().__init__("missing metric " + ", ".join(repr(k) for k in missing), text)


# ---------------------------------------------------------------- stage 1: template

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_FIELD = re.compile(r"\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# Prometheus values are printed with Go's 'f' format; also accept an exponent (bounded
# so Decimal never overflows) since values may come from Python floats too.
# ASCII digits only: Python's \d would read other scripts' digits ("١٠٠") as numbers.
_VALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def _check_length(text: str, limit: int) -> None:
    if len(text) > limit:
        raise ExpressionLimitError(f"expression longer than {limit} characters ({len(text)})", text[:_SHOWN])


def _scan(text: str) -> list[tuple[re.Match[str], str]]:
    """Every ``{{ }}`` action of ``text`` with the metric key it names."""
    _check_length(text, MAX_LENGTH)
    found = []
    for m in _ACTION.finditer(text):
        body = m.group(1).strip()
        if not _FIELD.fullmatch(body):
            action = m.group(0)
            raise ExpressionSyntaxError(f"not a metric placeholder {action!r}", text, m.start(), action)
        found.append((m, body[1:]))
    start = found[-1][0].end() if found else 0
    stray = text.find("{{", start)
    if stray >= 0:
        raise ExpressionSyntaxError("unclosed '{{'", text, stray, "{{")
    return found


def placeholders(text: str) -> set[str]:
    """The metric keys a template refers to, e.g. ``{"_base.pod"}``."""
    return {key for _, key in _scan(text)}


def _render_value(key: str, value: str | int | float, text: str) -> str:
    raw = str(value).strip()
    if not _VALUE.fullmatch(raw):
        raise MetricValueError(f"metric {key!r} has value {raw!r}, not a finite number", text)
    number = Decimal(raw)
    if not -MAX_INT <= number <= MAX_INT:
        raise ExpressionArithmeticError(f"metric {key!r} value {raw} out of range", text)
    n = int(number)  # truncates toward zero
    return str(n) if n >= 0 else f"({n})"


def substitute(text: str, values: Mapping[str, str | int | float]) -> str:
    """Replace every placeholder by its metric value, truncated to an integer."""
    return _substitute(text, values)[0]


# (start, end) in the substituted text -> (start, end) of the placeholder in the template
_Spans = list[tuple[int, int, int, int]]


def _substitute(text: str, values: Mapping[str, str | int | float]) -> tuple[str, _Spans]:
    found = _scan(text)
    missing = sorted({key for _, key in found if key not in values})
    if missing:
        raise MissingMetricError(missing, text)
    out: list[str] = []
    spans: _Spans = []
    last, length = 0, 0
    for m, key in found:
        value = _render_value(key, values[key], text)
        length += m.start() - last
        spans.append((length, length + len(value), m.start(), m.end()))
        out += [text[last : m.start()], value]
        length += len(value)
        last = m.end()
    out.append(text[last:])
    return "".join(out), spans


def _template_position(position: int, spans: _Spans) -> int:
    """Where a position of the substituted text is in the template the user wrote."""
    shift = 0
    for start, end, t_start, t_end in spans:
        if position < start:
            break
        if position < end:
            return t_start  # inside a substituted value: its placeholder
        shift = t_end - end
    return position + shift


# ---------------------------------------------------------------- stage 2: calculator

_TOKEN = re.compile(r"[ \t\r\n]*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)|(>=|<=|==|!=|&&|\|\||[-+*/%()<>!&|]))")


def _div(a: int, b: int) -> int:
    return -(-a // b)  # ceiling division


def _mod(a: int, b: int) -> int:
    r = abs(a) % abs(b)
    return r if a >= 0 else -r


_Op = Callable[[int, int], int]
_BINARY: dict[str, tuple[int, _Op]] = {
    "||": (1, lambda a, b: int(a != 0 or b != 0)),
    "|": (1, lambda a, b: int(a + b > 0)),
    "&&": (2, lambda a, b: int(a != 0 and b != 0)),
    "&": (2, lambda a, b: int(a + b == 2)),
    ">": (3, lambda a, b: int(a > b)),
    "<": (3, lambda a, b: int(a < b)),
    ">=": (3, lambda a, b: int(a >= b)),
    "<=": (3, lambda a, b: int(a <= b)),
    "==": (3, lambda a, b: int(a == b)),
    "!=": (3, lambda a, b: int(a != b)),
    "+": (4, lambda a, b: a + b),
    "-": (4, lambda a, b: a - b),
    "*": (5, lambda a, b: a * b),
    "/": (5, _div),
    "%": (5, _mod),
}


def _tokenize(text: str) -> list[tuple[str, int]]:
    """(token, position) pairs; the last one is ("", len(text)) for the end."""
    tokens: list[tuple[str, int]] = []
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            rest = text[pos:].lstrip()
            if not rest:
                return tokens + [("", len(text))]
            at = len(text) - len(rest)
            raise ExpressionSyntaxError(f"unexpected character {rest[0]!r}", text, at, rest[0])
        tokens.append((m.group(m.lastindex or 0), m.start(m.lastindex or 0)))
        pos = m.end()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def _peek(self) -> tuple[str, int]:
        return self.tokens[self.i]

    def _unexpected(self) -> ExpressionSyntaxError:
        tok, pos = self._peek()
        if not tok:
            return ExpressionSyntaxError("unexpected end of expression", self.text, pos)
        return ExpressionSyntaxError(f"unexpected {tok!r}", self.text, pos, tok)

    def _check(self, value: int, pos: int, tok: str) -> int:
        if abs(value) > MAX_INT:
            raise ExpressionArithmeticError(f"integer overflow (|x| > {MAX_INT})", self.text, pos, tok)
        return value

    def parse(self) -> int:
        if not self.tokens[0][0]:
            raise ExpressionSyntaxError("empty expression", self.text, 0)
        value = self._binary(0)
        if self._peek()[0]:
            raise self._unexpected()
        return value

    def _binary(self, min_prec: int) -> int:
        left = self._unary()
        while (op := self._peek()[0]) in _BINARY and _BINARY[op][0] >= min_prec:
            prec, fn = _BINARY[op]
            pos = self._peek()[1]
            self.i += 1
            right = self._binary(prec + 1)  # prec + 1: left associative
            if op in ("/", "%") and right == 0:
                raise ExpressionArithmeticError("division by zero", self.text, pos, op)
            left = self._check(fn(left, right), pos, op)
        return left

    def _unary(self) -> int:
        prefix = []  # collected in a loop, not by recursion, so '!!!!…' cannot blow the stack
        while self._peek()[0] in ("-", "!"):
            prefix.append(self._peek()[0])
            self.i += 1
        value = self._primary()
        for op in reversed(prefix):
            value = -value if op == "-" else int(value == 0)
        return value

    def _primary(self) -> int:
        tok, pos = self._peek()
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionLimitError(f"parentheses nested deeper than {MAX_DEPTH}", self.text, pos, tok)
            self.i += 1
            value = self._binary(0)
            if self._peek()[0] != ")":
                raise self._unexpected()
            self.i += 1
            self.depth -= 1
            return value
        if tok[:1].isdigit() or tok[:1] == ".":
            self.i += 1
            return self._check(int(tok.split(".")[0] or "0"), pos, tok)  # truncate a fraction
        raise self._unexpected()


def calculate(expr: str, *, max_length: int = MAX_LENGTH) -> int:
    """Evaluate an integer expression without placeholders."""
    _check_length(expr, max_length)
    return _Parser(expr).parse()


# A placeholder is at least 6 characters ("{{.a}}") and renders to at most 22
# ("(-9223372036854775807)"), so substituted text is at most 4x the template.
def _evaluate(text: str, values: Mapping[str, str | int | float]) -> int:
    substituted, spans = _substitute(text, values)
    try:
        return calculate(substituted, max_length=4 * MAX_LENGTH)
    except ExpressionError as e:
        # Report the position in what the user wrote, not in the substituted text.
        position = None if e.position is None else _template_position(e.position, spans)
        raise type(e)(e.what, text, position, e.token) from None


def check_quota(text: str) -> None:
    """Raise the ExpressionError a quota template would give whatever its metric values are:
    syntax and limits (a division by zero depends on the values, so it is not reported)."""
    try:
        _evaluate(text, {key: "1" for key in placeholders(text)})
    except ExpressionArithmeticError:
        pass


def evaluate_quota(text: str, values: Mapping[str, str | int | float]) -> int:
    """The integer a ``quota`` template evaluates to (may be 0 or negative)."""
    return _evaluate(text, values)


def evaluate_condition(text: str, values: Mapping[str, str | int | float]) -> bool:
    """True for the literal "true", or when the expression evaluates to exactly 1 (as upstream)."""
    literal = text.strip()
    if literal in ("true", "false"):
        return literal == "true"
    return _evaluate(text, values) == 1
