"""One command per check: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``, ``demo``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|virtualenv"

PYTHON = os.environ.get("IMAGELOADER_PYTHON")  # None: the interpreter running nox


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite (installs the Debian packages it needs when run as root)."""
    session.run("bash", ".ci/system-deps", external=True)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.17,<0.18")  # formatting changes between minor versions
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[all]", "mypy>=2.4,<3")
    session.run("mypy", "--strict", "imageloader")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite; writes benchmarks/results/."""
    session.run("bash", ".ci/system-deps", external=True)
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on the embedded default: ``imageloader demo``."""
    session.install("-e", ".[all]", "pydicom-data>=1.0")
    session.run("imageloader", "demo", *session.posargs)
