"""The project explains itself: every relative link in the README and ``docs/`` reaches a file
in this repository, and every ``#anchor`` it names exists there (a heading, slugged the way
GitHub slugs it, or an explicit ``<a id>``)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXPLICIT = re.compile(r'<a (?:id|name)="([^"]+)"')
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept),
    each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: str) -> set[str]:
    doc = FENCE.sub("", doc)
    found: set[str] = set(EXPLICIT.findall(doc))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(doc):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif root not in dest.parents:
            problems.append(f"{path.relative_to(root)}: {target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text("utf-8")):
            problems.append(f"{path.relative_to(root)}: {target} (no such anchor)")
    return problems


def test_every_link_in_the_docs_reaches_a_file_and_anchor_in_this_repository() -> None:
    assert len(DOCS) > 5
    problems = [problem for path in DOCS for problem in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_the_slugs_match_githubs_for_our_kinds_of_heading() -> None:
    assert slug("Queues, ownership and redelivery") == "queues-ownership-and-redelivery"
    assert slug("`GET /requests/{request_id}`") == "get-requestsrequest_id"
    assert (slug("Manual override — `POST /admin/manual-override` (`system.manage_settings`)")
            == "manual-override--post-adminmanual-override-systemmanage_settings")
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_a_missing_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "outside.md").write_text("# Out\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Here\n[ok](#here) [gone](#there) [file](nope.md) [out](../outside.md)\n",
                    encoding="utf-8")
    problems = broken_links(page, root=tmp_path / "docs")
    assert [p.split(" (")[1] for p in problems] == [
        "no such anchor)", "no such file)", "outside the repository)"]
