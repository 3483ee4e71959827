"""Print the requirements of pyproject.toml's [project] dependencies and the named extras, one a line.

The images' dependency layer installs these with `-c constraints.txt` before the sources are
copied in (pip cannot install `.[extras]` from pyproject.toml alone), so editing the code does not
rebuild it:

    python docker/pyproject_requirements.py postgres h5 > /tmp/requirements.txt
    pip install -r /tmp/requirements.txt -c constraints.txt

--exclude NAME (repeatable) leaves a distribution out, e.g. tensorflow where the base image has it.
An extra that names the project itself (`mbr-bench[postgres]`) is replaced by that extra's list.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: dict, extras: list[str], exclude: set[str] = frozenset()) -> list[str]:
    """[project] dependencies, then each extra's, in order, self-references expanded, no duplicates."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    own = normalise(project["name"])
    excluded = {normalise(name) for name in exclude}
    lines: list[str] = []
    done: set[str] = set()

    def add(requirement_list: list[str]) -> None:
        for requirement in requirement_list:
            match = NAME.match(requirement)
            if match is None:
                raise SystemExit(f"pyproject.toml: cannot read the requirement {requirement!r}")
            name = normalise(match.group(1))
            if name == own:
                for extra in (match.group(2) or "").split(","):
                    add_extra(extra.strip())
            elif name not in excluded and requirement not in lines:
                lines.append(requirement)

    def add_extra(extra: str) -> None:
        if not extra or extra in done:
            return
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has {', '.join(sorted(optional))})")
        done.add(extra)
        add(optional[extra])

    add(project.get("dependencies", []))
    for extra in extras:
        add_extra(extra)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml to add (e.g. postgres h5)")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME",
                        help="leave this distribution out (repeatable)")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as file:
        pyproject = tomllib.load(file)
    sys.stdout.write("".join(f"{line}\n" for line in requirements(pyproject, args.extras, set(args.exclude))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
