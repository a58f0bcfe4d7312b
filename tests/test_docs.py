"""The commands in README.md and docs/ cannot rot: each `python SCRIPT.py ...`, `accelerate launch ... SCRIPT.py ...` and
`streamlit run app.py -- ...` names a script that exists, and each of its --options is one the script takes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import ROOT

COMMAND = re.compile(r"(?:python|accelerate launch|streamlit run)\s[^`\n]*?(?<![\w./-])([\w./-]+\.py)\b([^`\n]*)")
CONFIG_KEY = re.compile(r"^([a-z_][a-z0-9_]*) = ", re.M)
ALWAYS = {"config", "help"}


def options(script: Path) -> set[str]:
    """The --keys a script takes: the variables of its config block (between the two # ---- lines)."""
    source = script.read_text()
    parts = source.split("# -----------------------------------------------------------------------------")
    return set(CONFIG_KEY.findall(parts[1])) | ALWAYS if len(parts) >= 3 else set()


def problems(text: str, where: str) -> list[str]:
    """Each command in text whose script is missing or which passes an option its script does not take."""
    found = []
    for line in text.splitlines():
        for m in COMMAND.finditer(line):
            name, rest = m.group(1), m.group(2)
            script = ROOT / name
            if not script.is_file():
                found.append(f"{where}: {name} does not exist ({line.strip()[:80]})")
                continue
            takes = options(script)
            if not takes:  # .ci's helpers: argparse, not a config block
                continue
            rest = rest.split("#")[0].split(" -- ", 1)[-1] if "streamlit" in m.group(0) else rest.split("#")[0]
            try:
                words = shlex.split(rest.replace("\\", " "))
            except ValueError:
                words = rest.split()
            for word in words:
                if word.startswith("--"):
                    key = word[2:].split("=", 1)[0]
                    if key not in takes:
                        found.append(f"{where}: {name} has no --{key} ({line.strip()[:100]})")
    return found


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("assets/*/README.md"))]


def test_every_documented_command_names_a_script_and_options_it_takes():
    found = [p for page in pages() for p in problems(page.read_text(), page.name)]
    assert not found, "\n".join(found)
    commands = sum(len(COMMAND.findall(page.read_text())) for page in pages())
    assert commands > 40, commands  # the pages are read: a pattern that matched nothing would pass anything


def test_a_broken_command_is_caught():
    assert problems("    python colorize.py in.jpg out.jpg --ckpt=colorgan --nonesuch=1", "t") == \
        ["t: colorize.py has no --nonesuch (python colorize.py in.jpg out.jpg --ckpt=colorgan --nonesuch=1)"]
    assert problems("streamlit run app.py -- --baseline=eccv16 --vgg_weights=x", "t") == \
        ["t: app.py has no --vgg_weights (streamlit run app.py -- --baseline=eccv16 --vgg_weights=x)"]
    assert problems("accelerate launch --multi_gpu train_gan.py --init=x", "t") == []  # the launcher's own options
    assert problems("python nowhere.py --x=1", "t") == ["t: nowhere.py does not exist (python nowhere.py --x=1)"]


def test_the_readme_is_short_and_every_module_is_in_its_file_table():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    modules = {p.name for p in ROOT.glob("*.py")}
    table = set(re.findall(r"`([\w]+\.py)`", readme))
    assert modules <= table, sorted(modules - table)


LINK = re.compile(r"\]\(([^)\s#]*)(?:#([\w-]+))?\)")


def slugs(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(text: str, page: Path) -> list[str]:
    """Each relative link in text whose file is missing or whose #anchor is no heading of it."""
    found = []
    for target, anchor in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            found.append(f"{page.name}: {target} does not exist")
        elif anchor and anchor not in slugs(path):
            found.append(f"{page.name}: {target}#{anchor} is no heading of {path.name}")
    return found


def test_every_link_between_the_pages_reaches_a_file_and_a_heading():
    found = [p for page in pages() for p in broken_links(page.read_text(), page)]
    assert not found, "\n".join(found)
    assert broken_links("[x](docs/speed.md#films) [y](docs/speed.md#nowhere) [z](docs/none.md)", ROOT / "README.md") == \
        ["README.md: docs/speed.md#nowhere is no heading of speed.md", "README.md: docs/none.md does not exist"]


def test_the_readme_first_commands_output_is_ignored_by_git():
    first = re.search(r"```bash\n(.+)\n", (ROOT / "README.md").read_text()).group(1)
    output = first.split()[-1]  # ... && python colorize.py assets/camera.png camera-color.png
    assert output.endswith(".png") and output in (ROOT / ".gitignore").read_text().split(), output


def test_the_readmes_hang_limit_is_pytests():
    minutes = int(re.search(r"a test that hangs fails after (\d+) minutes", (ROOT / "README.md").read_text()).group(1))
    assert f"timeout = {minutes * 60}" in (ROOT / "pytest.ini").read_text()
