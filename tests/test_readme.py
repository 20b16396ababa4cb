"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jailhouse.testing import fuse_unavailable

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_python_examples() -> None:
    """The README shows Python code, so the test below has something to run."""
    assert len(_python_blocks()) >= 2


def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of the README runs, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    no_fuse = fuse_unavailable()
    for number, block in enumerate(_python_blocks(), 1):
        if "mount_fuse_device" in block and no_fuse:
            pytest.skip(f"README block {number} needs FUSE: {no_fuse}")
        code = compile(block, f"README.md python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own README is the point
