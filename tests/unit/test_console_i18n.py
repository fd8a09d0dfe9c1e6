"""Every word a console page shows exists in English and Thai (api/console/i18n.py)."""
from __future__ import annotations

import re
from pathlib import Path

from docnum.api.console import i18n
from docnum.shared.templates import RESETS

CONSOLE = Path(__file__).resolve().parents[2] / "api" / "console"
# A literal key: t('nav.audit') or i18n.t("login.welcome", ...); not a prefix like t('rule.' ~ x).
LITERAL_KEY = re.compile(r"""\bt\(\s*['"]([a-z0-9_.]*[a-z0-9_])['"]""")


def used_keys() -> set[str]:
    keys: set[str] = set()
    for path in list((CONSOLE / "templates" / "console").glob("*.html")) + \
            list(CONSOLE.glob("*.py")):
        keys |= set(LITERAL_KEY.findall(path.read_text(encoding="utf-8")))
    # Keys built from a prefix and a value.
    keys |= {f"reset.{r}" for r in RESETS}
    keys |= {f"state.{s}" for s in ("RESERVED", "CONFIRMED", "CANCELLED", "EXPIRED", "VOID",
                                    "MISSING")}
    keys |= {f"source.{s}" for s in ("GENERATE", "RESERVE", "MANUAL", "IMPORT", "REPLACE")}
    keys |= {f"source.RESERVE.{s}" for s in ("RESERVED", "CANCELLED", "EXPIRED")}
    keys |= {f"status.{s}" for s in ("PENDING_APPROVAL", "EXECUTED", "FAILED")}
    keys |= {f"home.card.{s}" for s in ("templates", "counters", "lookup", "admin", "resets",
                                        "audit")}
    keys |= {f"field.{f}" for f in ("correspondence_type", "originator", "recipient",
                                    "sub_type", "rfa_type", "discipline", "revision",
                                    "project", "document_date", "document_ref")}
    return keys


def test_every_key_used_has_english_and_thai() -> None:
    missing = sorted(k for k in used_keys() if k not in i18n.STRINGS)
    assert not missing, f"keys without a translation: {missing}"
    for key, (english, thai) in i18n.STRINGS.items():
        assert english.strip() and thai.strip(), key
        assert any("\u0e00" <= ch <= "\u0e7f" for ch in thai) or key.startswith("app.") \
            or thai == english, f"{key}: the Thai text has no Thai letters"


def test_every_template_rule_has_a_description() -> None:
    source = (CONSOLE.parents[1] / "shared" / "templates.py").read_text(encoding="utf-8")
    rules = set(re.findall(r'TemplateInvalid\(\s*"([a-z_]+)"', source))
    assert rules and all(f"rule.{r}" in i18n.STRINGS for r in rules), rules


def test_translation_falls_back_and_formats() -> None:
    assert i18n.t("login.welcome", "th", sub="นภา") == "เข้าสู่ระบบในชื่อ นภา แล้ว"
    assert i18n.t("login.welcome", "en", sub="ann") == "Signed in as ann."
    assert i18n.t("no.such.key", "th") == "no.such.key"
