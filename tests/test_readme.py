"""The README and docs/ stay true: links resolve, the README stays short, and the commands, files and
names it shows exist.

Nothing here starts TensorFlow: the commands are checked against the argparse parsers the CLIs build
(``exporter.cli``, ``server.settings``, ``client.cli``), which import no TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
PAGES = [README, REPO_ROOT / "bench" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_000

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_M = re.compile(r"python -m ([\w.]+)([^`\n#|;]*)")


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def code(text: str) -> list[str]:
    """Lines of fenced code blocks, and code spans, where commands are shown."""
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()[1:-1]]
    return lines + [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
        slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


def test_the_readme_is_short():
    size = len(README.read_text())
    assert size <= README_LIMIT, (
        f"README.md is {size:,} characters, over {README_LIMIT:,}: move reference material to docs/ "
        "and dated figures to bench/README.md"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_point_at_existing_files_and_headings(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(REPO_ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(REPO_ROOT)}")
    assert not broken, f"broken links in {page.relative_to(REPO_ROOT)}:\n" + "\n".join(broken)


def test_every_docs_page_is_in_the_index():
    index = (REPO_ROOT / "docs" / "README.md").read_text()
    missing = [
        p.name
        for p in (REPO_ROOT / "docs").glob("*.md")
        if p.name != "README.md" and f"({p.name})" not in index
    ]
    assert not missing, f"docs/README.md does not link {missing}"


def test_the_readme_links_every_docs_page():
    text = README.read_text()
    missing = [p.name for p in (REPO_ROOT / "docs").glob("*.md") if f"(docs/{p.name}" not in text]
    assert not missing, f"README.md does not link {missing}"


def test_the_set_up_commands_exist():
    text = README.read_text()
    for command in ("bash scripts/serve", "bash scripts/test"):
        assert command in text
    for script in ("scripts/serve", "scripts/test", "scripts/_venv.sh", ".ci/run"):
        assert (REPO_ROOT / script).is_file(), script
    assert "bash scripts/test --all" in text
    assert "exec bash scripts/test --all" in (REPO_ROOT / ".ci" / "run").read_text(), (
        ".ci/run should run the README's test command with --all (issue 27: CI runs everything)"
    )


PATH_TOKEN = re.compile(
    r"(?<![\w./-])((?:\.ci|bench|client|docs|examples|exporter|protos|scripts|server|tests)/[\w./-]*)"
)


def test_the_files_the_readme_names_exist():
    text = README.read_text()
    spans = [span.strip("`") for span in INLINE_CODE.findall(text)] + code(text)
    missing = sorted(
        {
            path
            for span in spans
            for path in PATH_TOKEN.findall(span)
            if not (REPO_ROOT / path.rstrip(".")).exists() and "<" not in path
        }
    )
    assert not missing, f"README.md names files that do not exist: {missing}"


def test_the_architecture_map_names_existing_modules():
    """In the map, ``dir/`` starts a package (indented: a sub-package) and each ``x.py`` is in it."""
    text = README.read_text()
    section = text[text.index("## Architecture") :]
    block = FENCE.search(section).group(0).splitlines()[1:-1]
    missing, top = [], REPO_ROOT
    for line in block:
        match = re.match(r"^( *)([\w]+/)(?=\s)", line)
        if match:
            base = top if match.group(1) else REPO_ROOT
            current = base / match.group(2)
            if not match.group(1):
                top = current
        for module in re.findall(r"(?<![\w/])([\w]+\.py)\b", line):
            if not (current / module).is_file():
                missing.append(str((current / module).relative_to(REPO_ROOT)))
    assert not missing, f"the README's architecture map names modules that do not exist: {missing}"


def test_the_rpc_table_covers_every_rpc_and_names_real_functions():
    text = README.read_text()
    proto = (REPO_ROOT / "protos" / "imageserve" / "v1" / "image_service.proto").read_text()
    rpcs = re.findall(r"^\s*rpc (\w+)\s*\(", proto, re.MULTILINE)
    assert rpcs
    missing = [rpc for rpc in rpcs if f"`{rpc}`" not in text]
    assert not missing, f"the README's RPC table lacks {missing}"
    sources = "\n".join(p.read_text() for p in (REPO_ROOT / "server").rglob("*.py"))
    section = text[text.index("| RPC | core function |") :].split("\n\n")[0]
    unknown = []
    # `Class.method`, optionally followed by ` / `.other``: the core functions the map names.
    for owner, first, rest in re.findall(r"`([A-Z]\w+)\.(\w+)(?:\([^`]*\))?`((?: / `\.\w+`)*)", section):
        if not re.search(rf"^class {owner}\b", sources, re.MULTILINE):
            unknown.append(owner)
        for method in [first, *re.findall(r"`\.(\w+)`", rest)]:
            if not re.search(rf"\bdef {method}\(", sources):
                unknown.append(f"{owner}.{method}")
    assert not unknown, f"the README's RPC table names functions that do not exist in server/: {unknown}"


# --- commands ---------------------------------------------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    from client.cli import build_parser as client_parser
    from exporter.cli import build_parser as exporter_parser
    from server.settings import build_parser as server_parser

    return {"exporter": exporter_parser(), "server": server_parser(), "client": client_parser()}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # NOTE: argparse has no public way to list a parser's subcommands.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def shown_commands(page: Path) -> list[tuple[str, str]]:
    """(module, arguments) of every ``python -m MODULE ...`` a page shows in code."""
    found = []
    for line in code(page.read_text()):
        for module, arguments in PYTHON_M.findall(line):
            found.append((module, arguments.strip().rstrip(";").strip()))
    return found


def test_the_modules_pages_run_exist():
    missing = set()
    for page in PAGES:
        for module, _ in shown_commands(page):
            path = REPO_ROOT.joinpath(*module.split("."))
            if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
                missing.add(f"{page.relative_to(REPO_ROOT)}: python -m {module}")
    assert not missing, f"commands run modules that do not exist: {sorted(missing)}"


def test_the_readme_commands_parse():
    """Every ``python -m exporter|server|client`` line of the README is accepted by its parser as is."""
    available = parsers()
    checked = 0
    for module, arguments in shown_commands(README):
        if module not in available or not arguments:  # a bare `python -m client` names the tool
            continue
        argv = shlex.split(arguments)
        if "--help" in argv or "-h" in argv:
            continue
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                available[module].parse_args(argv)
            except SystemExit:
                pytest.fail(
                    f"README: `python -m {module} {arguments}` is refused: {stderr.getvalue().strip()}"
                )
        checked += 1
    assert checked >= 4, "the README should show the exporter, server and client commands"


def test_the_flags_docs_show_are_accepted():
    """In docs/, commands carry placeholders (``[--version N | --label L]``): each flag must exist."""
    available = parsers()
    unknown = []
    for page in PAGES:
        for module, arguments in shown_commands(page):
            parser = available.get(module)
            if parser is None:
                continue
            tokens = re.findall(r"[\w.\-/]+", arguments)
            commands = subcommands(parser)
            command = next((t for t in tokens if t in commands), None)
            # NOTE: option strings per parser: also private argparse API, stable since 3.2.
            known = set(parser._option_string_actions)
            if command is not None:
                known |= set(commands[command]._option_string_actions)
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", arguments):
                if flag not in known:
                    unknown.append(f"{page.relative_to(REPO_ROOT)}: python -m {module} ... {flag}")
    assert not unknown, "flags that the CLIs do not accept:\n" + "\n".join(unknown)


def test_every_setting_is_in_the_settings_reference():
    from server.settings import ModelConfig, ServerSettings

    reference = (REPO_ROOT / "docs" / "server.md").read_text()
    reference = reference[reference.index("## Settings") :]
    fields = [f.name for f in dataclasses.fields(ServerSettings) if f.name != "models"]
    fields += [f.name for f in dataclasses.fields(ModelConfig)]
    missing = [name for name in fields if f"`{name}`" not in reference]
    assert not missing, f"docs/server.md's settings reference lacks {missing}"


def test_every_catalog_model_is_in_the_exporter_page():
    from exporter.catalog import CATALOG

    page = (REPO_ROOT / "docs" / "exporter.md").read_text()
    missing = [name for name in CATALOG if f"| `{name}` |" not in page]
    assert not missing, f"docs/exporter.md's catalog table lacks {missing}"


def test_the_python_versions_match_pyproject():
    import tomllib

    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.13", "update the README, scripts/_venv.sh and this test with pyproject.toml"
    assert "Python 3.11 or 3.12" in README.read_text()
    assert "(3, 11) <= sys.version_info[:2] < (3, 13)" in (REPO_ROOT / "scripts" / "_venv.sh").read_text()
    assert re.search(r"^FROM python:3\.1[12]", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)
