"""Every `docs/<page>.md#<anchor>` cited in the code, the tests, the docs and the top-level
Markdown resolves: the page exists and has a heading with that (GitHub) anchor."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]
CITATION = re.compile(r"docs/([\w.-]+\.md)#([\w-]+)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
    heads = re.findall(r"^#+\s+(.*)$", page.read_text(), flags=re.M)
    return {_slug(h) for h in heads}


def test_every_docs_citation_resolves():
    sources = [*ROOT.joinpath("icl_jax").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py"),
               *ROOT.joinpath("benchmarks").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md"), *ROOT.glob("*.md")]
    anchors, missing = {}, []
    for path in sources:
        for page, anchor in CITATION.findall(path.read_text()):
            doc = ROOT / "docs" / page
            if page not in anchors:
                anchors[page] = _anchors(doc) if doc.is_file() else None
            if anchors[page] is None or anchor not in anchors[page]:
                missing.append(f"{path.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert not missing, "unresolved citations:\n" + "\n".join(sorted(set(missing)))
