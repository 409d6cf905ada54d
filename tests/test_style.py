"""The project's line limit: no line of its Python files runs past 110 characters."""

import os
import subprocess

import pytest

from conftest import ROOT

LIMIT = 110


def python_files():
    """The project's *.py files, relative to ROOT: git's tracked ones, or outside a git checkout every one
    under ROOT but in hidden folders and virtual environments."""
    try:
        listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                                check=True)
        return [p for p in listed.stdout.splitlines() if os.path.isfile(os.path.join(ROOT, p))]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for folder, subfolders, files in os.walk(ROOT):
            subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__pycache__"
                             and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))]
            found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith(".py")]
        return sorted(found)


def test_no_line_runs_past_110_characters():
    files = python_files()
    assert len(files) > 30                        # the project's files, not an empty listing
    long = []
    for path in files:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if len(line.rstrip("\n")) > LIMIT:
                    long.append(f"{path}:{number}: {len(line.rstrip())} characters")
    assert not long, f"{len(long)} lines run past {LIMIT} characters:\n" + "\n".join(long)
