"""Runtime: one process by default, devices checked with one line, reductions across real gloo processes."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kdforge.engine import Runtime, resolve_device
from kdforge.errors import ConfigError


def test_single_process_defaults(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    rt = Runtime.from_env("cpu")
    assert (rt.rank, rt.world_size, rt.is_main, rt.distributed) == (0, 1, True, False)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(rt.all_reduce(t), t) and rt.all_reduce(t) is not t
    rt.barrier()


@pytest.mark.parametrize("name", ["tpu", "gpu0", "meta"])
def test_bad_devices_are_one_line(name):
    with pytest.raises(ConfigError, match=rf"^train\.device='{name}'.*'cpu'") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_one_line():
    with pytest.raises(ConfigError, match="no CUDA device; use 'auto' or 'cpu'"):
        resolve_device("cuda")


@pytest.mark.slow
def test_two_gloo_processes_reduce_and_only_rank_0_is_main(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        from kdforge.engine import Runtime
        rt = Runtime.from_env("cpu")
        total = rt.all_reduce(torch.tensor([float(rt.rank + 1)]))
        top = rt.all_reduce(torch.tensor([float(rt.rank)]), op="max")
        rt.barrier()
        line = f"rank={rt.rank} world={rt.world_size} main={rt.is_main} sum={total.item()} max={top.item()}"
        open(sys.argv[1] + f".{rt.rank}", "w").write(line)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [(tmp_path / f"out.{rank}").read_text() for rank in (0, 1)]
    assert lines == ["rank=0 world=2 main=True sum=3.0 max=1.0", "rank=1 world=2 main=False sum=3.0 max=1.0"]
