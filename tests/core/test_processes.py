"""Fork safety: a 'fork' multiprocessing pool predicts after the parent predicted, instead of hanging forever.

Runs in a subprocess with two torch threads (the hang needs the parent's OpenMP pool to have run with more than
one), under a timeout, so that a hang fails this test rather than stopping the suite.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, bbc_texts

SCRIPT = textwrap.dedent("""
    import json, multiprocessing, sys
    import torch
    from transferkit import TransferClassifier

    texts, labels = json.loads(open(sys.argv[1]).read())
    assert torch.get_num_threads() == 2, torch.get_num_threads()
    clf = TransferClassifier(model="minilm", strategy="linear-probe", epochs=2, out=sys.argv[2]).fit(texts, labels)
    expected = clf.predict(texts).tolist()  # the parent runs the model (and its thread pool) first

    def work(chunk):
        return [clf.predict(chunk).tolist(), torch.get_num_threads()]

    chunks = [texts[i:i + 4] for i in range(0, len(texts), 4)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(work, chunks)
    assert sum((r[0] for r in results), []) == expected
    assert {r[1] for r in results} == {1}, results
    assert torch.get_num_threads() == 2  # the parent keeps its threads
    print("ok")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
def test_fork_pool_predicts_after_the_parent_did(tmp_path: Path, cli_env: dict[str, str]):
    texts, labels = bbc_texts(per_class=4)
    data = tmp_path / "data.json"
    data.write_text(json.dumps([texts, labels]))
    env = {**cli_env, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its hung pool workers
        proc.communicate()
        pytest.fail("forked workers hung after the parent predicted (torch's OpenMP pool after fork)")
    assert proc.returncode == 0 and "ok" in out, err[-3000:]
