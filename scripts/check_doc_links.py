"""Check the documentation: every relative link resolves, PROTOCOL.md is cited as docs/protocol.md,
and docs/architecture.md's module map names every module of tfseg/ (and no module that is gone).

    python scripts/check_doc_links.py                                   # README.md and docs/**/*.md
    python scripts/check_doc_links.py --allow-missing docs/reference/cli.md

A link is ``[text](target)`` outside code; ``target#anchor`` must name a heading of the target
file, as GitHub spells heading anchors. Web links (http, https, mailto) are not fetched.
``--allow-missing PATH`` accepts links to a file that another change is about to add (it is
listed as pending, not as an error). Exit status 1 when anything is wrong, each problem on a line.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
# Pages written by a program: a problem in them is mended where they come from.
GENERATED = {"docs/reference/cli.md": "the --help texts in tfseg/cli/, then "
                                      "`python -m tfseg.cli.reference --write docs/reference/cli.md`"}
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
MODULE = re.compile(r"`(tfseg/[\w/]+\.py)`")


def prose_lines(text: str):
    """(line number, line) of the lines outside fenced and indented code blocks."""
    fenced = False
    previous_blank = True
    in_indented = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        indented = line.startswith("    ") or line.startswith("\t")
        in_indented = indented and (previous_blank or in_indented)
        previous_blank = not line.strip()
        if not in_indented:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def check_links(pages: list[Path], allow_missing: set[Path]) -> tuple[list[str], list[str]]:
    problems, pending = [], []
    for page in pages:
        for number, line in prose_lines(page.read_text()):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z]+:", target):
                    continue  # http:, https:, mailto:
                where = f"{page.relative_to(ROOT)}:{number}"
                file_part, _, anchor = target.partition("#")
                resolved = (page.parent / file_part).resolve() if file_part else page
                if not resolved.exists():
                    if resolved in allow_missing:
                        pending.append(f"{where}: {target} (pending: {resolved.relative_to(ROOT)} is not written yet)")
                    else:
                        problems.append(f"{where}: {target}: no such file {resolved}")
                    continue
                if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    problems.append(f"{where}: {target}: {resolved.relative_to(ROOT)} has no heading #{anchor}")
    return problems, pending


def check_protocol_citations(pages: list[Path]) -> list[str]:
    """PROTOCOL.md is not in a clone; a page names docs/protocol.md, by a link, instead."""
    problems = []
    for page in pages:
        if page == ROOT / "docs" / "protocol.md":
            continue  # the byte-for-byte copy of the protocol itself
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            if "PROTOCOL.md" in line:
                name = page.relative_to(ROOT).as_posix()
                fix = f" (generated: mend {GENERATED[name]})" if name in GENERATED else ""
                problems.append(f"{name}:{number}: cites PROTOCOL.md; link docs/protocol.md instead{fix}")
    return problems


def check_module_map(architecture: Path) -> list[str]:
    listed = set(MODULE.findall(architecture.read_text()))
    present = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tfseg").rglob("*.py")}
    problems = [f"{architecture.relative_to(ROOT)}: module map lacks {name}" for name in sorted(present - listed)]
    problems += [f"{architecture.relative_to(ROOT)}: module map names {name}, which does not exist"
                 for name in sorted(listed - present)]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-missing", nargs="*", default=[], metavar="PATH",
                        help="files (relative to the repository) that links may name before they exist")
    args = parser.parse_args(argv)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    allow = {(ROOT / path).resolve() for path in args.allow_missing}
    problems, pending = check_links(pages, allow)
    problems += check_protocol_citations(pages)
    problems += check_module_map(ROOT / "docs" / "architecture.md")
    for line in pending:
        print(line)
    for line in problems:
        print(line)
    links = sum(len(LINK.findall(INLINE_CODE.sub("", line))) for page in pages for _, line in prose_lines(page.read_text()))
    print(f"{len(pages)} pages, {links} links: {len(problems)} problem(s), {len(pending)} pending")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
