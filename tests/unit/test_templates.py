"""Template engine (SPEC §3): vectors for every token and rule, plus hypothesis properties."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docnum.shared.context import NumberingContext
from docnum.shared.errors import DocnumError, TemplateInvalid
from docnum.shared.issuing import parse_context
from docnum.shared.templates import (
    RESETS,
    check_number_length,
    code_problem,
    counter_key,
    fiscal_year,
    local_date,
    parse_number,
    parse_template,
    period_of,
    render_number,
    validate_template,
)

DAY = date(2025, 12, 31)
LETTER = "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}"
RFI = "{PROJECT}-{ORIGINATOR}-{RECIPIENT}-{CORR_TYPE}-{SEQ:4}-{YY:B.E.}"
RFA = "{PROJECT}-{CORR_TYPE}-{DISCIPLINE}-{RFA_TYPE}-{SEQ:4}-{REV}"
TRANSMITTAL = "{ORIGINATOR}-{RECIPIENT}-{SUB_TYPE}-{SEQ:4}-{YEAR:B.E.}"


def ctx(**overrides: str | None) -> NumberingContext:
    base: dict[str, str | None] = {
        "project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
        "recipient": "สคฉ.3", "sub_type": "21", "rfa_type": "RPT", "discipline": "TER",
        "revision": "A",
    }
    base.update(overrides)
    return NumberingContext(**base)  # type: ignore[arg-type]


def render(template: str, context: NumberingContext, seq: int = 1, day: date = DAY,
           start_month: int = 10) -> str:
    return render_number(parse_template(template), context, seq, day, start_month)


# --------------------------------------------------------------------------- SPEC vectors

def test_letter_vector() -> None:
    assert render(LETTER, ctx()) == "คคง.-สคฉ.3-0001-2568"


def test_rfi_vector_and_counter_key() -> None:
    parsed = validate_template(RFI, "YEARLY")
    rfi = ctx(correspondence_type="RFI")
    assert render_number(parsed, rfi, 1, DAY) == "LCBP3-คคง.-สคฉ.3-RFI-0001-68"
    assert counter_key(parsed, rfi, "YEARLY", DAY) == \
        "LCBP3|CORR_TYPE=RFI|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"


def test_rfa_vector_never_resets() -> None:
    parsed = validate_template(RFA, "NONE")
    rfa = ctx(correspondence_type="RFA")
    assert render_number(parsed, rfa, 1, DAY) == "LCBP3-RFA-TER-RPT-0001-A"
    key = counter_key(parsed, rfa, "NONE", DAY)
    assert key == "LCBP3|CORR_TYPE=RFA|RFA_TYPE=RPT|DISCIPLINE=TER|ALL"
    assert counter_key(parsed, rfa, "NONE", date(2026, 6, 1)) == key


def test_transmittal_vector() -> None:
    assert render(TRANSMITTAL, ctx(correspondence_type="TRANSMITTAL")) == "คคง.-สคฉ.3-21-0001-2568"


def test_letter_and_memo_share_one_counter() -> None:
    parsed = validate_template(LETTER, "YEARLY")
    letter = counter_key(parsed, ctx(correspondence_type="LETTER"), "YEARLY", DAY)
    memo = counter_key(parsed, ctx(correspondence_type="MEMO"), "YEARLY", DAY)
    assert letter == memo == "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"


def test_counter_scope_drops_dimensions_but_keeps_project() -> None:
    parsed = validate_template(RFI, "YEARLY", ["ORIGINATOR"])
    assert counter_key(parsed, ctx(), "YEARLY", DAY, counter_scope=["ORIGINATOR"]) == \
        "LCBP3|ORIGINATOR=คคง.|Y2025"
    assert counter_key(parsed, ctx(), "YEARLY", DAY, counter_scope=[]) == "LCBP3|Y2025"


def test_bangkok_new_year() -> None:
    day = local_date(datetime(2025, 12, 31, 17, 30, tzinfo=UTC), "Asia/Bangkok")
    assert day == date(2026, 1, 1)
    assert local_date(datetime(2025, 12, 31, 16, 59), "Asia/Bangkok") == DAY  # naive = UTC
    assert render(LETTER, ctx(), day=day) == "คคง.-สคฉ.3-0001-2569"


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        local_date(datetime(2025, 1, 1, tzinfo=UTC), "Mars/Olympus")


@pytest.mark.parametrize(("token", "start_month", "expected"), [
    ("{MM}", 10, "12"),
    ("{YYYY}", 10, "2025"),
    ("{YEAR:A.D.}", 10, "2025"),
    ("{YEAR:B.E.}", 10, "2568"),
    ("{YY}", 10, "25"),
    ("{YY:B.E.}", 10, "68"),
    ("{FY:B.E.}", 10, "2569"),
    ("{FY:A.D.}", 10, "2026"),
    ("{FY:A.D.}", 1, "2025"),
    ("{FY:B.E.}", 1, "2568"),
    ("{REV}", 10, "A"),
    ("{PROJECT}", 10, "LCBP3"),
    ("{DISCIPLINE}", 10, "TER"),
])
def test_each_token(token: str, start_month: int, expected: str) -> None:
    assert render(f"X{token}/{{SEQ:2}}", ctx(), 7, DAY, start_month) == f"X{expected}/07"


def test_fiscal_year_boundaries() -> None:
    assert fiscal_year(date(2025, 9, 30), 10) == 2025
    assert fiscal_year(date(2025, 10, 1), 10) == 2026
    assert fiscal_year(date(2026, 9, 30), 10) == 2026
    assert fiscal_year(date(2025, 12, 31), 1) == 2025
    with pytest.raises(DocnumError) as err:
        fiscal_year(DAY, 13)
    assert err.value.code == "VALIDATION_FAILED"


@pytest.mark.parametrize(("reset", "expected"), [
    ("YEARLY", "Y2025"), ("MONTHLY", "M2025-12"), ("FISCAL_YEARLY", "FY2026"), ("NONE", "ALL"),
])
def test_period_of(reset: str, expected: str) -> None:
    assert period_of(reset, DAY) == expected


def test_period_of_fiscal_start_month_one_is_calendar_year() -> None:
    assert period_of("FISCAL_YEARLY", DAY, 1) == "FY2025"
    assert period_of("MONTHLY", date(2026, 1, 5)) == "M2026-01"


def test_period_of_rejects_unknown_reset() -> None:
    with pytest.raises(TemplateInvalid) as err:
        period_of("DAILY", DAY)
    assert err.value.rule == "reset"


def test_sequence_exhausted() -> None:
    parsed = parse_template(LETTER)
    assert parsed.capacity == 9999
    assert render_number(parsed, ctx(), 9999, DAY).endswith("-9999-2568")
    with pytest.raises(DocnumError) as err:
        render_number(parsed, ctx(), 10000, DAY)
    assert err.value.code == "SEQUENCE_EXHAUSTED"
    assert err.value.status == 409


def test_missing_code_names_the_field() -> None:
    with pytest.raises(DocnumError) as err:
        render(LETTER, ctx(recipient=None))
    assert err.value.code == "VALIDATION_FAILED"
    assert [e.field for e in err.value.errors] == ["recipient"]
    assert "required by template" in err.value.errors[0].message
    assert "{RECIPIENT}" in err.value.errors[0].message


def test_every_missing_code_is_reported() -> None:
    with pytest.raises(DocnumError) as err:
        render(RFA, ctx(discipline=None, revision=""))
    assert [e.field for e in err.value.errors] == ["discipline", "revision"]


def test_counter_key_needs_codes() -> None:
    parsed = parse_template(LETTER)
    with pytest.raises(DocnumError) as err:
        counter_key(parsed, ctx(originator=None), "YEARLY", DAY)
    assert err.value.errors[0].field == "originator"
    with pytest.raises(DocnumError) as err:
        counter_key(parsed, ctx(project=""), "YEARLY", DAY)
    assert err.value.errors[0].field == "project"


def test_malformed_code_is_refused() -> None:
    with pytest.raises(DocnumError) as err:
        render(LETTER, ctx(originator="a b"))
    assert err.value.code == "VALIDATION_FAILED"
    assert err.value.errors[0].field == "originator"


@pytest.mark.parametrize(("code", "problem"), [
    ("\u0e31AB", "must not start with a combining mark"),
    ("", "must be 1-30 characters"),
    ("x" * 31, "must be 1-30 characters"),
    ("a/b", "character '/' (U+002F) at position 1 is not allowed; use letters, marks, digits "
            "and . - _"),
])
def test_one_code_rule_for_the_catalog_the_request_and_the_number(code: str,
                                                                  problem: str) -> None:
    assert code_problem(code) == problem
    with pytest.raises(DocnumError) as rendering:
        render(LETTER, ctx(originator=code))
    assert rendering.value.errors[0].field == "originator"
    with pytest.raises(DocnumError) as parsing:
        parse_context({"project": "LCBP3", "correspondence_type": "LETTER", "originator": code})
    assert parsing.value.errors[0].message == problem


def test_valid_codes_pass_the_code_rule() -> None:
    for code in ("คคง.", "สคฉ.3", "LCBP3", "TEAM-A", "r_1", "๒๑"):
        assert code_problem(code) is None


def test_parsed_template_shape() -> None:
    parsed = parse_template(RFA)
    assert parsed.seq_width == 4
    assert parsed.dimensions == ("PROJECT", "CORR_TYPE", "RFA_TYPE", "DISCIPLINE")
    assert parsed.needed_fields() == (
        "project", "correspondence_type", "rfa_type", "discipline", "revision")
    assert [t.kind for t in parsed.tokens] == [
        "dim", "literal", "dim", "literal", "dim", "literal", "dim", "literal", "seq",
        "literal", "rev"]
    seq = parsed.tokens[8]
    assert (seq.text, seq.position, seq.width) == ("{SEQ:4}", RFA.index("{SEQ:4}"), 4)


# --------------------------------------------------------------------------- §3.2 rules

RULES = [
    # template, reset, counter_scope, rule, position
    ("A B-{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A\n{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A\t{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A\x07{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A#{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A@{SEQ:4}", "NONE", None, "literal_character", 1),
    ("A+{SEQ:4}", "NONE", None, "literal_character", 1),
    ("{SEQ:4}\u200b", "NONE", None, "literal_character", 7),  # zero-width space (Cf)
    ("{", "NONE", None, "unbalanced_brace", 0),
    ("}", "NONE", None, "unbalanced_brace", 0),
    ("a}b{SEQ:4}", "NONE", None, "unbalanced_brace", 1),
    ("{SEQ:4}-{ORIGINATOR", "NONE", None, "unbalanced_brace", 8),
    ("{{SEQ:4}", "NONE", None, "unbalanced_brace", 0),
    ("{SEQ:4}-{FOO}", "NONE", None, "unknown_token", 8),
    ("{SEQ}", "NONE", None, "unknown_token", 0),
    ("{seq:4}", "NONE", None, "unknown_token", 0),
    ("{SEQ:4}-{}", "NONE", None, "unknown_token", 8),
    ("{SEQ:4}-{Project}", "NONE", None, "unknown_token", 8),
    ("{SEQ:0}", "NONE", None, "seq_width", 0),
    ("{SEQ:10}", "NONE", None, "seq_width", 0),
    ("{SEQ:4}{SEQ:3}", "NONE", None, "seq_repeated", 7),
    ("{ORIGINATOR}-0001", "NONE", None, "seq_missing", None),
    ("A" * 94 + "{SEQ:4}", "NONE", None, "length", 100),
    ("", "NONE", None, "empty", None),
    ("{ORIGINATOR}-{SEQ:4}", "YEARLY", None, "reset_needs_year", None),
    ("{ORIGINATOR}-{SEQ:4}-{FY:B.E.}", "YEARLY", None, "reset_needs_year", None),
    ("{ORIGINATOR}-{SEQ:4}-{MM}", "MONTHLY", None, "reset_needs_year", None),
    ("{ORIGINATOR}-{SEQ:4}-{YYYY}", "MONTHLY", None, "reset_needs_month", None),
    ("{ORIGINATOR}-{SEQ:4}-{YYYY}", "FISCAL_YEARLY", None, "reset_needs_fiscal_year", None),
    ("{ORIGINATOR}-{SEQ:4}", "DAILY", None, "reset", None),
    ("{ORIGINATOR}-{SEQ:4}", "NONE", ["RECIPIENT"], "counter_scope", None),
    ("{ORIGINATOR}-{SEQ:4}", "NONE", ["WHATEVER"], "counter_scope", None),
]


@pytest.mark.parametrize(("template", "reset", "scope", "rule", "position"), RULES)
def test_rule_refused(template: str, reset: str, scope: list[str] | None, rule: str,
                      position: int | None) -> None:
    with pytest.raises(TemplateInvalid) as err:
        validate_template(template, reset, scope)
    assert err.value.code == "TEMPLATE_INVALID"
    assert (err.value.rule, err.value.position) == (rule, position)
    assert err.value.extra == {"rule": rule, "position": position}
    assert err.value.errors[0].field == "template"


def test_literal_character_message_is_precise() -> None:
    with pytest.raises(TemplateInvalid) as err:
        parse_template("A B-{SEQ:4}")
    assert "character ' ' (U+0020) is not allowed in literal text" in err.value.detail


@pytest.mark.parametrize(("template", "reset", "scope"), [
    (LETTER, "YEARLY", None),
    (RFI, "YEARLY", ["ORIGINATOR", "PROJECT"]),
    (RFA, "NONE", []),
    ("{YY}{MM}-{SEQ:3}", "MONTHLY", None),
    ("{YY:B.E.}/{SEQ:3}", "YEARLY", None),
    ("ที่.{FY:A.D.}/{SEQ:3}", "FISCAL_YEARLY", None),
    ("{SEQ:9}", "NONE", None),
    ("A" * 93 + "{SEQ:4}", "NONE", None),
])
def test_valid_templates_accepted(template: str, reset: str, scope: list[str] | None) -> None:
    assert validate_template(template, reset, scope).template == template


# --------------------------------------------------------------------------- number length

@pytest.mark.parametrize("length", [9, 51])
def test_number_length_refused(length: int) -> None:
    with pytest.raises(DocnumError) as err:
        check_number_length("1" * length)
    assert err.value.code == "NUMBER_LENGTH"


@pytest.mark.parametrize("length", [10, 50])
def test_number_length_accepted(length: int) -> None:
    check_number_length("1" * length)


# --------------------------------------------------------------------------- parse_number

@pytest.mark.parametrize(("template", "context", "codes"), [
    (LETTER, ctx(), {"originator": "คคง.", "recipient": "สคฉ.3"}),
    (RFI, ctx(correspondence_type="RFI"),
     {"project": "LCBP3", "correspondence_type": "RFI", "originator": "คคง.",
      "recipient": "สคฉ.3"}),
    (TRANSMITTAL, ctx(), {"originator": "คคง.", "recipient": "สคฉ.3", "sub_type": "21"}),
])
def test_parse_number_round_trips_thai_vectors(template: str, context: NumberingContext,
                                               codes: dict[str, str]) -> None:
    parsed = parse_template(template)
    number = render_number(parsed, context, 42, DAY)
    result = parse_number(parsed, number)
    assert result == {"sequence": 42, "codes": codes, "revision": None, "year": 2025,
                      "month": None, "fiscal_year": None}


def test_parse_number_revision_and_fiscal_year() -> None:
    parsed = parse_template("{PROJECT}-{SEQ:4}-{REV}-{FY:B.E.}-{MM}")
    number = render_number(parsed, ctx(revision="B2"), 5, DAY)
    assert number == "LCBP3-0005-B2-2569-12"
    assert parse_number(parsed, number) == {
        "sequence": 5, "codes": {"project": "LCBP3"}, "revision": "B2", "year": None,
        "month": 12, "fiscal_year": 2026}


@pytest.mark.parametrize("number", [
    "คคง.-สคฉ.3-001-2568",     # SEQ has 3 digits, not 4
    "คคง.-สคฉ.3-0001-2568-X",  # trailing text
    "คคง. สคฉ.3-0001-2568",    # space is not a separator of this template
    "คคง.-สคฉ.3-00๐1-2568",    # Thai digit
    "",
])
def test_parse_number_rejects_non_matching(number: str) -> None:
    assert parse_number(parse_template(LETTER), number) is None


def test_parse_number_checks_dates_agree() -> None:
    parsed = parse_template("{YYYY}-{SEQ:4}-{YEAR:B.E.}-{MM}")
    assert parse_number(parsed, "2025-0001-2568-12") is not None
    assert parse_number(parsed, "2025-0001-2569-12") is None
    assert parse_number(parsed, "2025-0001-2568-13") is None
    fy = parse_template("{FY:A.D.}-{MM}-{YYYY}-{SEQ:2}")
    assert parse_number(fy, "2026-12-2025-01") is not None
    assert parse_number(fy, "2025-12-2025-01") is None  # December is already FY2026


def test_parse_number_repeated_token_must_agree() -> None:
    parsed = parse_template("{ORIGINATOR}-{SEQ:2}-{ORIGINATOR}")
    result = parse_number(parsed, "A-B-01-A-B")
    assert result is not None and result["codes"] == {"originator": "A-B"}
    assert parse_number(parsed, "A-B-01-A-C") is None


def test_parse_number_with_context_resolves_hyphenated_codes() -> None:
    parsed = parse_template("{ORIGINATOR}-{RECIPIENT}-{SEQ:4}")
    number = render_number(parsed, ctx(originator="A", recipient="B-1"), 3, DAY)
    assert parse_number(parsed, number)["codes"] == {  # type: ignore[index]
        "originator": "A", "recipient": "B-1"}
    pinned = parse_number(parsed, number, ctx=ctx(originator="A", recipient="B-1"))
    assert pinned is not None and pinned["sequence"] == 3
    assert parse_number(parsed, number, ctx=ctx(originator="Z")) is None


def test_parse_number_adjacent_codes_stay_fast() -> None:
    parsed = parse_template("{PROJECT}{CORR_TYPE}{ORIGINATOR}{RECIPIENT}{SUB_TYPE}{SEQ:4}")
    assert parse_number(parsed, "A" * 45 + "X") is None


# --------------------------------------------------------------------------- properties

THAI_LETTERS = "".join(chr(c) for c in range(0x0E01, 0x0E2F))
THAI_MARKS = "\u0e31" + "".join(chr(c) for c in range(0x0E34, 0x0E3B)) \
    + "".join(chr(c) for c in range(0x0E47, 0x0E4F))
LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
CODE_ALPHABET = THAI_LETTERS + THAI_MARKS + LATIN + DIGITS + ".-_"
LITERAL_ALPHABET = THAI_LETTERS + THAI_MARKS + LATIN + DIGITS + "-_./"
# Separators made only of characters a hyphen-free code cannot contain.
SEPARATOR_ALPHABET = "-/"

DIMENSION_TOKENS = ["{PROJECT}", "{ORIGINATOR}", "{RECIPIENT}", "{CORR_TYPE}", "{SUB_TYPE}",
                    "{RFA_TYPE}", "{DISCIPLINE}", "{REV}"]
DATE_TOKENS = ["{YEAR:B.E.}", "{YEAR:A.D.}", "{YYYY}", "{YY}", "{YY:B.E.}", "{MM}", "{FY:B.E.}",
               "{FY:A.D.}"]
CALENDAR_YEAR_TOKENS = {"{YEAR:B.E.}", "{YEAR:A.D.}", "{YYYY}", "{YY}", "{YY:B.E.}"}
BAD_CHARS = st.characters(exclude_categories=("L", "M", "Nd", "Cs")).filter(
    lambda ch: ch not in "-_./")
PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def codes(alphabet: str = CODE_ALPHABET) -> st.SearchStrategy[str]:
    """Valid codes: a code does not start with a combining mark (docs/reference.md)."""
    first = "".join(ch for ch in alphabet if ch not in THAI_MARKS)
    return st.builds(str.__add__, st.sampled_from(first), st.text(alphabet, max_size=29))


@st.composite
def contexts(draw: st.DrawFn, alphabet: str = CODE_ALPHABET) -> NumberingContext:
    fields = ["project", "correspondence_type", "originator", "recipient", "sub_type",
              "rfa_type", "discipline", "revision"]
    return NumberingContext(**{f: draw(codes(alphabet)) for f in fields})


@st.composite
def template_parts(draw: st.DrawFn, separated: bool) -> list[str]:
    """Tokens and literals, alternating; literal parts are the even indexes."""
    others = draw(st.lists(st.sampled_from(DIMENSION_TOKENS + DATE_TOKENS), max_size=6))
    at = draw(st.integers(0, len(others)))
    tokens = others[:at] + [f"{{SEQ:{draw(st.integers(1, 9))}}}"] + others[at:]
    edge = st.text(LITERAL_ALPHABET, max_size=3)
    between = st.text(SEPARATOR_ALPHABET, min_size=1, max_size=3) if separated else edge
    parts = [draw(edge)]
    for i, token in enumerate(tokens):
        parts += [token, draw(edge if i == len(tokens) - 1 else between)]
    return parts


def fitting_resets(template: str) -> list[str]:
    has_year = any(t in template for t in CALENDAR_YEAR_TOKENS)
    allowed = ["NONE"]
    allowed += ["YEARLY"] if has_year else []
    allowed += ["MONTHLY"] if has_year and "{MM}" in template else []
    allowed += ["FISCAL_YEARLY"] if "{FY:" in template else []
    return allowed


def templates(separated: bool) -> st.SearchStrategy[str]:
    return template_parts(separated).map("".join).filter(lambda t: len(t) <= 100)


def seq_width(template: str) -> int:
    return int(template.split("{SEQ:")[1][0])


days = st.dates(date(1958, 1, 1), date(2500, 12, 31))


@PROPERTY
@given(templates(separated=False), contexts(), days, st.data())
def test_prop_valid_templates_render_the_padded_sequence(
        template: str, context: NumberingContext, day: date, data: st.DataObject) -> None:
    reset = data.draw(st.sampled_from(fitting_resets(template)))
    parsed = validate_template(template, reset)
    seq = data.draw(st.integers(0, parsed.capacity))
    assert f"{seq:0{seq_width(template)}d}" in render_number(parsed, context, seq, day)
    assert counter_key(parsed, context, reset, day).startswith(context.project)


@PROPERTY
@given(templates(separated=True), contexts(CODE_ALPHABET.replace("-", "")), days, st.data())
def test_prop_parse_recovers_sequence_when_tokens_are_separated(
        template: str, context: NumberingContext, day: date, data: st.DataObject) -> None:
    parsed = parse_template(template)
    seq = data.draw(st.integers(0, parsed.capacity))
    result = parse_number(parsed, render_number(parsed, context, seq, day))
    assert result is not None
    assert result["sequence"] == seq
    assert result["codes"] == {f: getattr(context, f) for f in parsed.needed_fields()
                               if f != "revision"}


@PROPERTY
@given(templates(separated=False), contexts(), st.dates(date(2000, 1, 1), date(2099, 12, 31)),
       st.integers(1, 12), st.data())
def test_prop_parse_with_context_recovers_everything(
        template: str, context: NumberingContext, day: date, start_month: int,
        data: st.DataObject) -> None:
    parsed = parse_template(template)
    seq = data.draw(st.integers(0, parsed.capacity))
    number = render_number(parsed, context, seq, day, start_month)
    result = parse_number(parsed, number, start_month, ctx=context)
    assert result is not None
    assert result["sequence"] == seq
    if any(t in template for t in CALENDAR_YEAR_TOKENS):
        assert result["year"] == day.year
    if "{MM}" in template:
        assert result["month"] == day.month
    if "{FY:" in template:
        assert result["fiscal_year"] == fiscal_year(day, start_month)


@PROPERTY
@given(templates(separated=False), contexts(), days, st.data())
def test_prop_render_is_injective_in_sequence(
        template: str, context: NumberingContext, day: date, data: st.DataObject) -> None:
    parsed = parse_template(template)
    first = data.draw(st.integers(0, parsed.capacity))
    second = data.draw(st.integers(0, parsed.capacity).filter(lambda s: s != first))
    assert render_number(parsed, context, first, day) != render_number(parsed, context, second, day)


@PROPERTY
@given(template_parts(separated=False), BAD_CHARS, st.data())
def test_prop_disallowed_literal_character_is_refused(
        parts: list[str], bad: str, data: st.DataObject) -> None:
    literal_index = data.draw(st.sampled_from(range(0, len(parts), 2)))
    literal = parts[literal_index]
    cut = data.draw(st.integers(0, len(literal)))
    parts[literal_index] = literal[:cut] + bad + literal[cut:]
    template = "".join(parts)
    with pytest.raises(TemplateInvalid) as err:
        parse_template(template)
    assert err.value.code == "TEMPLATE_INVALID"
    if len(template) <= 100:
        assert err.value.rule in {"literal_character", "unbalanced_brace"}
        assert err.value.position == len("".join(parts[:literal_index])) + cut


def brute_force_fiscal_year(day: date, start_month: int) -> int:
    """The year Y whose fiscal year [start of FY Y, start of FY Y+1) contains the day."""
    def starts(year: int) -> date:  # first day of the fiscal year that ends in `year`
        return date(year, 1, 1) if start_month == 1 else date(year - 1, start_month, 1)
    return next(y for y in (day.year, day.year + 1) if starts(y) <= day < starts(y + 1))


@PROPERTY
@given(st.dates(date(1900, 1, 1), date(2999, 12, 31)), st.integers(1, 12))
def test_prop_fiscal_year_and_period_match_brute_force(day: date, start_month: int) -> None:
    fy = brute_force_fiscal_year(day, start_month)
    assert fiscal_year(day, start_month) == fy
    assert period_of("FISCAL_YEARLY", day, start_month) == f"FY{fy}"
    assert period_of("YEARLY", day, start_month) == f"Y{day.year}"
    assert period_of("MONTHLY", day, start_month) == f"M{day.year}-{day.month:02d}"
    assert period_of("NONE", day, start_month) == "ALL"
    # Consecutive days in one fiscal year differ by at most one fiscal year.
    assert fiscal_year(day + timedelta(days=1), start_month) - fy in (0, 1)
    assert set(RESETS) == {"YEARLY", "MONTHLY", "FISCAL_YEARLY", "NONE"}
