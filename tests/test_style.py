"""The C core is formatted as the checked-in .clang-format says (clang-format is a test extra)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_c_sources_follow_clang_format():
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.skip("clang-format not installed (pip install '.[test]')")
    files = sorted(str(p) for p in (ROOT / "csrc").glob("*.[ch]"))
    assert files
    run = subprocess.run([exe, "--dry-run", "--Werror", f"--style=file:{ROOT / '.clang-format'}", *files],
                         capture_output=True, text=True)
    assert run.returncode == 0, "run clang-format -i csrc/*.c csrc/*.h:\n" + run.stderr[:3000]
