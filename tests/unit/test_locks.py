"""The lock files (`make lock`) still answer pyproject.toml: every dependency it names is pinned,
at a version its range accepts, and the image's pins are the constraints' pins. A dependency
added or narrowed without `make lock` fails here, not on an operator's machine."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    found = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            package, _, version = line.partition("==")
            found[canonicalize_name(package)] = version.strip()
    return found


def requirements(pyproject: Path, *extras: str) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    named = list(project["dependencies"]) + [r for extra in extras for r in project["optional-dependencies"][extra]]
    wanted = [Requirement(r) for r in named]
    return [r for r in wanted if canonicalize_name(r.name) not in ("meter", "meter-lab")]


@pytest.mark.parametrize(
    ("lock", "pyproject", "extras"),
    [
        ("image.txt", "pyproject.toml", ()),
        ("constraints.txt", "pyproject.toml", ("dev", "embedded")),
        ("constraints.txt", "lab/pyproject.toml", ()),
    ],
)
def test_every_dependency_is_pinned_within_its_range(lock: str, pyproject: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in requirements(ROOT / pyproject, *extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


def test_the_image_installs_what_make_test_installs() -> None:
    image, everything = pins("image.txt"), pins("constraints.txt")
    assert {name: everything.get(name) for name in image} == image
