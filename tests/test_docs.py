"""The documentation stays true to the tree: links resolve, the protocol is cited where it lives, and
docs/protocol.md is the protocol."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_link_of_readme_and_docs_resolves_and_the_module_map_is_complete():
    done = subprocess.run([sys.executable, "scripts/check_doc_links.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_is_short_enough_to_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_docs_protocol_is_the_shared_protocol_word_for_word():
    import os

    import pytest

    shared = Path(os.environ.get("TFSEG_SHARED", ROOT.parent / "shared")) / "PROTOCOL.md"
    if not shared.is_file():
        pytest.skip(f"no shared protocol at {shared} (set TFSEG_SHARED to the shared folder)")
    assert (ROOT / "docs" / "protocol.md").read_text() == shared.read_text(), \
        f"docs/protocol.md differs from {shared}: the shared file stands; copy it again"
