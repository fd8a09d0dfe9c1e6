"""Every alert links to its runbook: ``runbook_url`` is ``docs/operations.md#<anchor>``, the
anchor exists there (an explicit ``<a id>``, stable whatever the heading says), and the
runbook under it names the alert. Also: the compose stack logs slow queries at the threshold
the runbook reads them with."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "monitoring" / "prometheus" / "rules").glob("*.yml"))
RUNBOOK_URL = re.compile(r"^(docs/[a-z]+\.md)#([a-z0-9-]+)$")
ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')


def alerts() -> list[dict]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found += [rule for rule in group["rules"] if "alert" in rule]
    return found


def sections(doc: str) -> dict[str, str]:
    """Anchor id -> the text from it to the next anchor or heading of its own level or up."""
    out = {}
    for match in ANCHOR.finditer(doc):
        rest = doc[match.end():]
        heading = re.match(r"\s*(#+) [^\n]*\n", rest)  # the heading the anchor stands on
        level, start = (len(heading.group(1)), heading.end()) if heading else (6, 0)
        stop = re.search(rf'<a id="|^#{{1,{level}}} ', rest[start:], re.MULTILINE)
        out[match.group(1)] = rest[:start + stop.start()] if stop else rest
    return out


def test_every_alert_links_to_an_existing_runbook_that_names_it() -> None:
    rules = alerts()
    assert {"RedisUnavailable", "DocnumDown", "DocnumErrorBudgetFastBurn",
            "HighDBConnectionPoolUsage", "HighRedisMemoryUsage"} <= {r["alert"] for r in rules}
    problems = []
    for rule in rules:
        name = rule["alert"]
        url = rule.get("annotations", {}).get("runbook_url", "")
        match = RUNBOOK_URL.match(url)
        if not match:
            problems.append(f"{name}: runbook_url {url!r} is not docs/<file>.md#<anchor>")
            continue
        doc = ROOT / match.group(1)
        runbooks = sections(doc.read_text(encoding="utf-8")) if doc.exists() else {}
        section = runbooks.get(match.group(2))
        if section is None:
            problems.append(f"{name}: no anchor #{match.group(2)} in {match.group(1)}")
        elif f"`{name}`" not in section:
            problems.append(f"{name}: the runbook at #{match.group(2)} does not name it")
    assert not problems, "\n".join(problems)


def test_no_rule_points_outside_this_repository() -> None:
    for path in RULES + sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*.yml")):
        assert "wiki.lcbp3" not in path.read_text(encoding="utf-8"), path


def test_the_anchor_parser_sees_a_missing_runbook() -> None:
    doc = ('<a id="runbook-redis"></a>\n### 5.1 Redis\n`RedisUnavailable` here\n'
           '#### step\n`Deeper`\n### 5.2 Next\n`Other`\n'
           '<a id="runbook-inline"></a>\n- **Backlog**: `QueueBacklog`\n- `Later`\n'
           '<a id="runbook-last"></a>\n- `SequenceUtilizationHigh`\n## 6. Else\n`Else`\n')
    found = sections(doc)
    assert set(found) == {"runbook-redis", "runbook-inline", "runbook-last"}
    assert "`RedisUnavailable`" in found["runbook-redis"]
    assert "`Deeper`" in found["runbook-redis"] and "`Other`" not in found["runbook-redis"]
    assert "`Later`" in found["runbook-inline"]
    assert "`SequenceUtilizationHigh`" not in found["runbook-inline"]
    assert "`Else`" not in found["runbook-last"]


def test_compose_logs_slow_queries_at_the_runbooks_threshold() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    threshold = re.search(r"long_query_time\s*=\s*([0-9.]+)", operations).group(1)
    for service in ("mariadb-primary", "mariadb-replica"):
        command = compose["services"][service]["command"]
        assert "--slow-query-log=1" in command, service
        assert f"--long-query-time={threshold}" in command, service
