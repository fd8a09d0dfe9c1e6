"""Document-number templates (docs/reference.md#numbering-configs): parse, validate, render, key,
and parse back.

Everything here is a pure function: no database, no environment, no clock. Callers pass the
day (``local_date`` turns "now" into the day in ``DOCNUM_TIMEZONE``) and the config's fiscal-year
start month.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from docnum.shared.context import DIMENSION_FIELD, DIMENSIONS, NumberingContext
from docnum.shared.errors import DocnumError, FieldError, TemplateInvalid, validation_failed

RESETS = ("YEARLY", "MONTHLY", "FISCAL_YEARLY", "NONE")

MAX_TEMPLATE_LENGTH = 100
MIN_NUMBER_LENGTH = 10
MAX_NUMBER_LENGTH = 50
MAX_CODE_LENGTH = 30
LITERAL_PUNCTUATION = "-_./"
CODE_PUNCTUATION = "-_."
BUDDHIST_ERA_OFFSET = 543

# Tokens whose text is fixed; {SEQ:n} and the dimension tokens are recognised separately.
_FIXED_TOKENS: dict[str, str] = {
    "{REV}": "rev",
    "{YEAR:B.E.}": "year_be",
    "{YEAR:A.D.}": "year_ad",
    "{YYYY}": "year_ad",
    "{YY}": "yy_ad",
    "{YY:B.E.}": "yy_be",
    "{MM}": "mm",
    "{FY:B.E.}": "fy_be",
    "{FY:A.D.}": "fy_ad",
}
_DIMENSION_NAMES: tuple[str, ...] = tuple(name for name, _ in DIMENSIONS)
_FIELD_DIMENSION: dict[str, str] = {f: d for d, f in DIMENSIONS}
_KNOWN_TOKENS = (
    [f"{{{d}}}" for d in _DIMENSION_NAMES] + ["{REV}", "{SEQ:n}"] + list(_FIXED_TOKENS)[1:]
)
_CALENDAR_YEAR_KINDS = frozenset({"year_be", "year_ad", "yy_ad", "yy_be"})
_FISCAL_YEAR_KINDS = frozenset({"fy_be", "fy_ad"})
_DATE_KINDS = _CALENDAR_YEAR_KINDS | _FISCAL_YEAR_KINDS | {"mm"}
# Width in digits of every fixed-width date token (SEQ's width comes from the token).
_DATE_WIDTH = {"year_be": 4, "year_ad": 4, "yy_ad": 2, "yy_be": 2, "mm": 2, "fy_be": 4, "fy_ad": 4}
_SEQ_WIDTH_RE = re.compile(r"[1-9]")


@dataclass(frozen=True)
class Token:
    """One piece of a parsed template."""

    kind: str  # literal | dim | rev | seq | year_be | year_ad | yy_ad | yy_be | mm | fy_be | fy_ad
    text: str  # the literal text, or the raw token text such as "{SEQ:4}"
    position: int  # 0-based index in the template string
    dimension: str | None = None  # for kind "dim": PROJECT, ORIGINATOR, ...
    width: int | None = None  # for kind "seq"


@dataclass(frozen=True)
class ParsedTemplate:
    template: str
    tokens: tuple[Token, ...]
    seq_width: int
    dimensions: tuple[str, ...]  # in shared.context.DIMENSIONS order
    capacity: int  # 10**seq_width - 1

    def needed_fields(self) -> tuple[str, ...]:
        """Context fields the template renders, in DIMENSIONS order, then "revision"."""
        fields = [DIMENSION_FIELD[d] for d in self.dimensions]
        if any(t.kind == "rev" for t in self.tokens):
            fields.append("revision")
        return tuple(fields)


# --------------------------------------------------------------------------- character classes

def _is_word_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] in "LM" or category == "Nd"


def _is_literal_char(ch: str) -> bool:
    return ch in LITERAL_PUNCTUATION or _is_word_char(ch)


def _is_code_char(ch: str) -> bool:
    return ch in CODE_PUNCTUATION or _is_word_char(ch)


def code_problem(value: object) -> str | None:
    """Why ``value`` is not a valid code, or None: the one rule for catalog codes, the codes a
    request names, revisions and the codes of imported numbers
    (docs/reference.md#reference-catalog).

    1-30 letters, marks, decimal digits and ``. - _``; the first character is not a combining
    mark, which would fuse with the character before the code in a rendered number.
    """
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= MAX_CODE_LENGTH:
        return f"must be 1-{MAX_CODE_LENGTH} characters"
    for index, char in enumerate(value):
        if not _is_code_char(char):
            return (f"character {char!r} (U+{ord(char):04X}) at position {index} is not allowed; "
                    "use letters, marks, digits and . - _")
    if unicodedata.category(value[0])[0] == "M":
        return "must not start with a combining mark"
    return None


def _describe_char(ch: str) -> str:
    # repr() shows control characters as escapes ('\n'), so the message stays on one line.
    return f"character {ch!r} (U+{ord(ch):04X})"


# --------------------------------------------------------------------------- parsing

def parse_template(template: str) -> ParsedTemplate:
    """Split a template into tokens, enforcing the syntax rules of
    docs/reference.md#template-validation.

    Checks emptiness, length, literal characters, braces, unknown tokens and the single
    {SEQ:n}. The reset and counter_scope rules need the config: see ``validate_template``.
    """
    _check_shape(template)
    tokens = tuple(_scan(template))
    seq = _single_seq(tokens)
    width = seq.width or 0
    present = {t.dimension for t in tokens if t.kind == "dim"}
    dimensions = tuple(d for d in _DIMENSION_NAMES if d in present)
    return ParsedTemplate(template, tokens, width, dimensions, 10 ** width - 1)


def _check_shape(template: object) -> None:
    if template is None or template == "":
        raise TemplateInvalid("empty", None, "template is empty")
    if not isinstance(template, str):
        raise TemplateInvalid("empty", None,
                              f"template must be a string, not {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateInvalid(
            "length", MAX_TEMPLATE_LENGTH,
            f"template is {len(template)} characters long; "
            f"at most {MAX_TEMPLATE_LENGTH} are allowed")


def _scan(template: str) -> Iterator[Token]:
    """Yield literal runs and tokens left to right; the first offending character raises."""
    literal_start = 0
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "{":
            if i > literal_start:
                yield Token("literal", template[literal_start:i], literal_start)
            end = _closing_brace(template, i)
            yield _classify(template[i:end + 1], i)
            i = literal_start = end + 1
            continue
        if ch == "}":
            raise TemplateInvalid("unbalanced_brace", i,
                                  "'}' has no matching '{'; braces are only allowed around tokens")
        if not _is_literal_char(ch):
            raise TemplateInvalid(
                "literal_character", i,
                f"{_describe_char(ch)} is not allowed in literal text; "
                "use letters, marks, digits or - _ . /")
        i += 1
    if len(template) > literal_start:
        yield Token("literal", template[literal_start:], literal_start)


def _closing_brace(template: str, start: int) -> int:
    close = template.find("}", start + 1)
    reopen = template.find("{", start + 1)
    if close == -1:
        raise TemplateInvalid("unbalanced_brace", start, "'{' is never closed by '}'")
    if reopen != -1 and reopen < close:
        raise TemplateInvalid(
            "unbalanced_brace", start,
            f"'{{' is not closed before the next '{{' at position {reopen}")
    return close


def _classify(text: str, position: int) -> Token:
    if text in _FIXED_TOKENS:
        return Token(_FIXED_TOKENS[text], text, position)
    name = text[1:-1]
    if name in _DIMENSION_NAMES:
        return Token("dim", text, position, dimension=name)
    if name.startswith("SEQ:"):
        digits = name[4:]
        if not _SEQ_WIDTH_RE.fullmatch(digits):
            raise TemplateInvalid(
                "seq_width", position,
                f"{text}: the width n of {{SEQ:n}} must be a whole number from 1 to 9")
        return Token("seq", text, position, width=int(digits))
    raise TemplateInvalid("unknown_token", position, _unknown_token_message(text))


def _unknown_token_message(text: str) -> str:
    folded = text.upper().replace(" ", "")
    if folded == "{SEQ}":
        return f"unknown token {text}: the sequence token needs a width, e.g. {{SEQ:4}}"
    suggestions = [k for k in _KNOWN_TOKENS if k.upper() == folded]
    if folded.startswith("{SEQ:"):
        suggestions.append(folded)
    if suggestions:
        return (f"unknown token {text}: did you mean {suggestions[0]}? "
                "Token names are case-sensitive")
    return f"unknown token {text}; known tokens are {' '.join(_KNOWN_TOKENS)}"


def _single_seq(tokens: Sequence[Token]) -> Token:
    seqs = [t for t in tokens if t.kind == "seq"]
    if not seqs:
        raise TemplateInvalid("seq_missing", None,
                              "template has no {SEQ:n} token; exactly one is required")
    if len(seqs) > 1:
        raise TemplateInvalid(
            "seq_repeated", seqs[1].position,
            f"{seqs[1].text} repeats the sequence token ({seqs[0].text} at position "
            f"{seqs[0].position}); exactly one {{SEQ:n}} is allowed")
    return seqs[0]


# --------------------------------------------------------------------------- validation

def validate_template(template: str, reset: str,
                      counter_scope: list[str] | None = None) -> ParsedTemplate:
    """Every rule of docs/reference.md#template-validation, counter_scope's included; raises
    TemplateInvalid."""
    parsed = parse_template(template)
    _check_reset(parsed, reset)
    _check_counter_scope(parsed, counter_scope)
    return parsed


def _kinds(parsed: ParsedTemplate) -> frozenset[str]:
    return frozenset(t.kind for t in parsed.tokens)


def _check_reset_name(reset: object) -> None:
    if reset not in RESETS:
        raise TemplateInvalid("reset", None,
                              f"reset {reset!r} is not one of {', '.join(RESETS)}")


def _check_reset(parsed: ParsedTemplate, reset: str) -> None:
    """A resetting counter restarts at 1, so the number must show the period it resets on."""
    _check_reset_name(reset)
    kinds = _kinds(parsed)
    has_year = bool(kinds & _CALENDAR_YEAR_KINDS)
    year_tokens = "{YEAR:B.E.}, {YEAR:A.D.}, {YYYY}, {YY} or {YY:B.E.}"
    if reset in ("YEARLY", "MONTHLY") and not has_year:
        fiscal_only = bool(kinds & _FISCAL_YEAR_KINDS)
        hint = " ({FY:...} is a fiscal year and does not count)" if fiscal_only else ""
        raise TemplateInvalid(
            "reset_needs_year", None,
            f"reset {reset} needs a calendar-year token ({year_tokens}){hint}; "
            "otherwise the same number would repeat after a reset")
    if reset == "MONTHLY" and "mm" not in kinds:
        raise TemplateInvalid(
            "reset_needs_month", None,
            "reset MONTHLY needs the {MM} token; otherwise the same number would repeat "
            "after a reset")
    if reset == "FISCAL_YEARLY" and not kinds & _FISCAL_YEAR_KINDS:
        raise TemplateInvalid(
            "reset_needs_fiscal_year", None,
            "reset FISCAL_YEARLY needs {FY:B.E.} or {FY:A.D.}; otherwise the same number "
            "would repeat after a reset")


def _check_counter_scope(parsed: ParsedTemplate, counter_scope: object) -> None:
    """counter_scope may drop dimensions the template shows, never add hidden ones (§3.3)."""
    if counter_scope is None:
        return
    if isinstance(counter_scope, str) or not isinstance(counter_scope, Iterable):
        raise TemplateInvalid("counter_scope", None,
                              "counter_scope must be a list of dimension names")
    for name in counter_scope:
        if name not in _DIMENSION_NAMES:
            raise TemplateInvalid(
                "counter_scope", None,
                f"counter_scope names unknown dimension {name!r}; known dimensions are "
                f"{', '.join(_DIMENSION_NAMES)}")
        if name != "PROJECT" and name not in parsed.dimensions:
            raise TemplateInvalid(
                "counter_scope", None,
                f"counter_scope names {name} but the template has no {{{name}}} token; "
                "counter_scope may only drop dimensions the template shows, never add hidden ones")


# --------------------------------------------------------------------------- dates and periods

def _check_start_month(start_month: object) -> int:
    if isinstance(start_month, bool) or not isinstance(start_month, int) \
            or not 1 <= start_month <= 12:
        raise validation_failed("fiscal_year_start_month",
                                f"must be a whole number from 1 to 12, not {start_month!r}")
    return start_month


def _fiscal_year_of(year: int, month: int, start_month: int) -> int:
    # The fiscal year is named after the A.D. year in which it ends.
    return year + 1 if start_month > 1 and month >= start_month else year


def fiscal_year(day: date, start_month: int) -> int:
    """The A.D. year in which the fiscal year containing ``day`` ends."""
    return _fiscal_year_of(day.year, day.month, _check_start_month(start_month))


# Every period ``period_of`` can produce (counter keys end with one; the gaps report filters by
# one).
PERIOD_PATTERN = r"Y\d{4}|M\d{4}-(?:0[1-9]|1[0-2])|FY\d{4}|ALL"


def period_of(reset: str, day: date, fiscal_year_start_month: int = 10) -> str:
    """The period part of a counter key: Y2025, M2025-12, FY2026 or ALL."""
    _check_reset_name(reset)
    if reset == "YEARLY":
        return f"Y{day.year:04d}"
    if reset == "MONTHLY":
        return f"M{day.year:04d}-{day.month:02d}"
    if reset == "FISCAL_YEARLY":
        return f"FY{fiscal_year(day, fiscal_year_start_month):04d}"
    return "ALL"


def local_date(now_utc: datetime, timezone: str) -> date:
    """The calendar day of an instant in ``timezone``; a naive datetime is taken as UTC."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {timezone!r}") from exc
    if now_utc.tzinfo is None:
        now_utc = now_utc.replace(tzinfo=UTC)
    return now_utc.astimezone(zone).date()


# --------------------------------------------------------------------------- codes from the context

def _missing_message(field: str) -> str:
    if field == "revision":
        return "a revision is required by template token {REV}"
    if field == "project":
        return "a project code is required"
    return f"a code is required by template token {{{_FIELD_DIMENSION[field]}}}"


def _codes(ctx: NumberingContext, fields: Iterable[str]) -> dict[str, str]:
    """The context's value for each field; every missing or malformed one is reported at once."""
    codes: dict[str, str] = {}
    problems: list[FieldError] = []
    for field in fields:
        value = getattr(ctx, field)
        if value is None or value == "":
            problems.append(FieldError(field, _missing_message(field)))
        elif code_problem(value) is not None:
            problems.append(FieldError(
                field, f"{value!r} is not a valid code: 1-{MAX_CODE_LENGTH} letters, marks, "
                       "digits, '.', '-' or '_'"))
        else:
            codes[field] = value
    if problems:
        error = validation_failed(problems[0].field, problems[0].message)
        error.errors.extend(problems[1:])
        raise error
    return codes


# --------------------------------------------------------------------------- counter key

def _key_dimensions(parsed: ParsedTemplate, counter_scope: list[str] | None) -> list[str]:
    return [d for d in parsed.dimensions
            if d != "PROJECT" and (counter_scope is None or d in counter_scope)]


def counter_key(parsed: ParsedTemplate, ctx: NumberingContext, reset: str, day: date,
                fiscal_year_start_month: int = 10,
                counter_scope: list[str] | None = None) -> str:
    """Canonical counter key, e.g. ``LCBP3|CORR_TYPE=RFI|ORIGINATOR=คคง.|Y2025``
    (docs/reference.md#counter-keys-and-periods).

    The project always leads (without a ``PROJECT=`` prefix); then each dimension the template
    shows (restricted to ``counter_scope`` when given; ``[]`` keeps only the project), in
    DIMENSIONS order; then the period.
    """
    _check_counter_scope(parsed, counter_scope)
    dimensions = _key_dimensions(parsed, counter_scope)
    codes = _codes(ctx, ["project"] + [DIMENSION_FIELD[d] for d in dimensions])
    period = period_of(reset, day, fiscal_year_start_month)
    parts = [codes["project"]]
    parts += [f"{d}={codes[DIMENSION_FIELD[d]]}" for d in dimensions]
    parts.append(period)
    return "|".join(parts)


# --------------------------------------------------------------------------- rendering

def _date_parts(kinds: frozenset[str], day: date, start_month: int) -> dict[str, str]:
    be = day.year + BUDDHIST_ERA_OFFSET
    parts = {
        "year_be": f"{be:04d}",
        "year_ad": f"{day.year:04d}",
        "yy_ad": f"{day.year % 100:02d}",
        "yy_be": f"{be % 100:02d}",
        "mm": f"{day.month:02d}",
    }
    # Only validate the start month when the template actually shows a fiscal year.
    if kinds & _FISCAL_YEAR_KINDS:
        fy = fiscal_year(day, start_month)
        parts["fy_ad"] = f"{fy:04d}"
        parts["fy_be"] = f"{fy + BUDDHIST_ERA_OFFSET:04d}"
    return parts


def _check_sequence(parsed: ParsedTemplate, sequence: int) -> None:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise ValueError(f"sequence must be a non-negative integer, not {sequence!r}")
    if sequence > parsed.capacity:
        raise DocnumError(
            "SEQUENCE_EXHAUSTED",
            f"sequence {sequence} does not fit {{SEQ:{parsed.seq_width}}}: the counter's "
            f"capacity is {parsed.capacity}",
            extra={"capacity": parsed.capacity, "sequence": sequence})


def render_number(parsed: ParsedTemplate, ctx: NumberingContext, sequence: int, day: date,
                  fiscal_year_start_month: int = 10) -> str:
    """Render every token of docs/reference.md#tokens. The 10-50 length rule is
    ``check_number_length``'s job."""
    codes = _codes(ctx, parsed.needed_fields())
    _check_sequence(parsed, sequence)
    dates = _date_parts(_kinds(parsed), day, fiscal_year_start_month)
    return "".join(_render_token(t, codes, sequence, dates) for t in parsed.tokens)


def _render_token(token: Token, codes: dict[str, str], sequence: int,
                  dates: dict[str, str]) -> str:
    if token.kind == "literal":
        return token.text
    if token.kind == "dim":
        return codes[DIMENSION_FIELD[token.dimension or ""]]
    if token.kind == "rev":
        return codes["revision"]
    if token.kind == "seq":
        return f"{sequence:0{token.width}d}"
    return dates[token.kind]


def check_number_length(number: str) -> None:
    if not MIN_NUMBER_LENGTH <= len(number) <= MAX_NUMBER_LENGTH:
        raise DocnumError(
            "NUMBER_LENGTH",
            f"document number {number!r} is {len(number)} characters long; it must be "
            f"{MIN_NUMBER_LENGTH} to {MAX_NUMBER_LENGTH}",
            extra={"length": len(number), "min": MIN_NUMBER_LENGTH, "max": MAX_NUMBER_LENGTH})


# --------------------------------------------------------------------------- parsing numbers back

def parse_number(parsed: ParsedTemplate, number: str, fiscal_year_start_month: int = 10, *,
                 ctx: NumberingContext | None = None) -> dict[str, Any] | None:
    """Invert ``render_number``: the parts of ``number`` if it fits the template, else None.

    Returns ``{"sequence", "codes": {field: code}, "revision", "year", "month", "fiscal_year"}``;
    ``year`` (A.D.) only when the template shows a calendar year (two-digit years are read as
    2000-2099 A.D.), ``fiscal_year`` as the A.D. year the fiscal year ends. Codes may contain '-',
    so a number can split more than one way; the leftmost code then takes the shortest
    fit. Pass ``ctx`` to pin the codes it carries and remove that ambiguity.
    """
    if not isinstance(number, str):
        return None
    if _kinds(parsed) & _FISCAL_YEAR_KINDS:
        _check_start_month(fiscal_year_start_month)
    expected = _expected_codes(parsed, ctx)
    bound = _NumberMatcher(parsed.tokens, number, fiscal_year_start_month, expected).match()
    return None if bound is None else _parse_result(parsed, bound, fiscal_year_start_month)


def _expected_codes(parsed: ParsedTemplate, ctx: NumberingContext | None) -> dict[str, str]:
    if ctx is None:
        return {}
    values = {f: getattr(ctx, f) for f in parsed.needed_fields()}
    return {f: v for f, v in values.items() if isinstance(v, str) and v}


def _binding_key(token: Token) -> str | None:
    """Name under which a token's captured value is kept; repeated tokens must agree."""
    if token.kind == "dim":
        return DIMENSION_FIELD[token.dimension or ""]
    if token.kind == "rev":
        return "revision"
    if token.kind == "seq":
        return "sequence"
    if token.kind in _DATE_KINDS:
        return token.kind
    return None


def _token_width_range(token: Token) -> tuple[int, int]:
    if token.kind == "literal":
        return len(token.text), len(token.text)
    if token.kind in ("dim", "rev"):
        return 1, MAX_CODE_LENGTH
    if token.kind == "seq":
        return token.width or 0, token.width or 0
    return _DATE_WIDTH[token.kind], _DATE_WIDTH[token.kind]


class _NumberMatcher:
    """Backtracking match of one number against one template's tokens.

    Codes have variable length and may contain '-', so a regex's first match could settle on a
    split that a later repeated token or date check rejects; this tries every split (shortest
    code first) and remembers dead ends, so it stays polynomial even for adjacent codes.
    """

    def __init__(self, tokens: Sequence[Token], number: str, start_month: int,
                 expected: dict[str, str]) -> None:
        self.tokens = tokens
        self.number = number
        self.start_month = start_month
        self.expected = expected
        self.code_run = self._code_runs(number)
        self.min_rest, self.max_rest = self._rest_widths(tokens)
        self.relevant = self._relevant_keys(tokens)
        self.dead: set[tuple[Any, ...]] = set()

    @staticmethod
    def _code_runs(number: str) -> list[int]:
        """run[i] = how many code characters start at i (bounds a code token's length)."""
        runs = [0] * (len(number) + 1)
        for i in range(len(number) - 1, -1, -1):
            runs[i] = runs[i + 1] + 1 if _is_code_char(number[i]) else 0
        return runs

    @staticmethod
    def _rest_widths(tokens: Sequence[Token]) -> tuple[list[int], list[int]]:
        low, high = [0] * (len(tokens) + 1), [0] * (len(tokens) + 1)
        for i in range(len(tokens) - 1, -1, -1):
            lo, hi = _token_width_range(tokens[i])
            low[i], high[i] = low[i + 1] + lo, high[i + 1] + hi
        return low, high

    @staticmethod
    def _relevant_keys(tokens: Sequence[Token]) -> list[frozenset[str]]:
        """Bindings that can still change the outcome from token i on (the memo key)."""
        out: list[frozenset[str]] = [frozenset()] * (len(tokens) + 1)
        for i in range(len(tokens) - 1, -1, -1):
            key = _binding_key(tokens[i])
            extra = _DATE_KINDS if tokens[i].kind in _DATE_KINDS else {key} if key else set()
            out[i] = out[i + 1] | frozenset(extra)
        return out

    def match(self) -> dict[str, Any] | None:
        return self._walk(0, 0, {})

    def _walk(self, index: int, pos: int, bound: dict[str, Any]) -> dict[str, Any] | None:
        if index == len(self.tokens):
            return bound if pos == len(self.number) else None
        if not self.min_rest[index] <= len(self.number) - pos <= self.max_rest[index]:
            return None
        state = (index, pos, tuple(sorted(
            (k, v) for k, v in bound.items() if k in self.relevant[index])))
        if state in self.dead:
            return None
        token = self.tokens[index]
        key = _binding_key(token)
        for width, value in self._candidates(token, key, pos, bound):
            new = bound if key is None else {**bound, key: value}
            if token.kind in _DATE_KINDS and not _date_solutions(new, self.start_month):
                continue
            found = self._walk(index + 1, pos + width, new)
            if found is not None:
                return found
        self.dead.add(state)
        return None

    def _candidates(self, token: Token, key: str | None, pos: int,
                    bound: dict[str, Any]) -> Iterator[tuple[int, Any]]:
        if token.kind == "literal":
            if self.number.startswith(token.text, pos):
                yield len(token.text), None
        elif token.kind in ("dim", "rev"):
            yield from self._code_candidates(key or "", pos, bound)
        else:
            yield from self._digit_candidates(token, key or "", pos, bound)

    def _code_candidates(self, key: str, pos: int,
                         bound: dict[str, Any]) -> Iterator[tuple[int, str]]:
        fixed = bound.get(key, self.expected.get(key))
        if fixed is not None:
            if self.number.startswith(fixed, pos):
                yield len(fixed), fixed
            return
        for width in range(1, min(MAX_CODE_LENGTH, self.code_run[pos]) + 1):
            yield width, self.number[pos:pos + width]

    def _digit_candidates(self, token: Token, key: str, pos: int,
                          bound: dict[str, Any]) -> Iterator[tuple[int, int]]:
        width = token.width if token.kind == "seq" else _DATE_WIDTH[token.kind]
        text = self.number[pos:pos + (width or 0)]
        # ASCII digits only: render never writes Thai or other digits.
        if len(text) != width or not all("0" <= ch <= "9" for ch in text):
            return
        value = int(text)
        if token.kind == "mm" and not 1 <= value <= 12:
            return
        if key in bound and bound[key] != value:
            return
        yield width, value


def _fiscal_from(bound: dict[str, Any]) -> int | None:
    if "fy_ad" in bound:
        return int(bound["fy_ad"])
    if "fy_be" in bound:
        return int(bound["fy_be"]) - BUDDHIST_ERA_OFFSET
    return None


def _candidate_years(bound: dict[str, Any]) -> list[int | None]:
    """A.D. years worth testing; two-digit years alone are read as 2000-2099 A.D."""
    if "year_ad" in bound:
        return [bound["year_ad"]]
    if "year_be" in bound:
        return [bound["year_be"] - BUDDHIST_ERA_OFFSET]
    fy = _fiscal_from(bound)
    if fy is not None:
        return [fy - 1, fy]
    if "yy_ad" in bound:
        return [2000 + bound["yy_ad"]]
    if "yy_be" in bound:
        return [2000 + (bound["yy_be"] - BUDDHIST_ERA_OFFSET) % 100]
    return [None]


def _date_fits(bound: dict[str, Any], year: int | None, month: int | None,
               start_month: int) -> bool:
    if year is None:
        return True  # no year was captured; {MM} alone was range-checked already
    be = year + BUDDHIST_ERA_OFFSET
    expected = {"year_ad": year, "year_be": be, "yy_ad": year % 100, "yy_be": be % 100}
    if month is not None:
        fy = _fiscal_year_of(year, month, start_month)
        expected.update(fy_ad=fy, fy_be=fy + BUDDHIST_ERA_OFFSET)
    return all(bound[k] == v for k, v in expected.items() if k in bound)


def _date_solutions(bound: dict[str, Any], start_month: int) -> list[tuple[int | None, int | None]]:
    """Every (A.D. year, month) the captured date tokens allow; empty when they contradict."""
    months: list[int | None]
    if "mm" in bound:
        months = [bound["mm"]]
    elif _fiscal_from(bound) is not None:
        months = list(range(1, 13))
    else:
        months = [None]
    return [(y, m) for y in _candidate_years(bound) for m in months
            if _date_fits(bound, y, m, start_month)]


def _parse_result(parsed: ParsedTemplate, bound: dict[str, Any],
                  start_month: int) -> dict[str, Any]:
    kinds = _kinds(parsed)
    solutions = _date_solutions(bound, start_month)
    year = solutions[0][0] if kinds & _CALENDAR_YEAR_KINDS else None
    return {
        "sequence": bound["sequence"],
        "codes": {f: bound[f] for f in parsed.needed_fields() if f != "revision"},
        "revision": bound.get("revision"),
        "year": year,
        "month": bound.get("mm"),
        "fiscal_year": _fiscal_from(bound),
    }
