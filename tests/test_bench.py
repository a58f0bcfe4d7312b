"""bench.py as a user runs it: its photos found whatever their suffix's case, a fallback said aloud, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from conftest import ROOT, synthetic_rgb


def test_bench_finds_upper_case_jpegs_says_when_it_has_none_and_leaves_no_temp_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.fromarray(synthetic_rgb(0)).save(tmp_path / "photos" / "A.JPG")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    for photos, said in ((tmp_path / "photos", False), (tmp_path / "none", True)):
        p = subprocess.run([sys.executable, str(ROOT / "bench.py"), f"--photos={photos}", "--sections=nothing"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and "unknown section 'nothing'" in p.stderr, p.stderr
        assert ("no JPEGs in --photos" in p.stderr) == said, p.stderr
        assert not list((tmp_path / "tmp").iterdir())  # the run's temp folder is gone
