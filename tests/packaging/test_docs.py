"""The product carries its own docs: README and docs/ link only to files in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_docs_never_point_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "../shared" not in text, doc
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), (doc.name, target)
            assert resolved.exists(), (doc.name, target)


def test_the_protocol_doc_keeps_a_place_for_extensions() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert "## 3. Extensions" in text and '"fluxify"' in text
