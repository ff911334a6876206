"""The allocator the entry points re-execute under (allocator.py): what each choice sets, that a
user's own settings are kept, that it happens once, and that a real process comes back with it."""

import os
import subprocess
import sys

import pytest

from bigmodel_jax import allocator
from tests.conftest import ROOT

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_each_choice_sets_its_variables_and_keeps_the_users():
    assert allocator.environment({}, JE) == {"LD_PRELOAD": JE, "MALLOC_CONF": allocator.JEMALLOC_CONF,
                                             allocator.APPLIED: "jemalloc"}
    assert allocator.environment({}, None) == {"GLIBC_TUNABLES": allocator.GLIBC_TUNABLES, allocator.APPLIED: "glibc"}
    assert allocator.environment({"BIGMODEL_ALLOCATOR": "glibc"}, JE)["GLIBC_TUNABLES"] == allocator.GLIBC_TUNABLES
    user = allocator.environment({"LD_PRELOAD": "/x/libfoo.so", "MALLOC_CONF": "narenas:2"}, JE)
    assert user["LD_PRELOAD"] == f"{JE} /x/libfoo.so" and user["MALLOC_CONF"].endswith(",narenas:2")
    assert allocator.environment({"GLIBC_TUNABLES": "glibc.cpu.x86_shstk=on"}, None)["GLIBC_TUNABLES"].endswith(
        ":glibc.cpu.x86_shstk=on")
    for env in ({"BIGMODEL_ALLOCATOR": "system"}, {allocator.APPLIED: "glibc"}, {"LD_PRELOAD": JE},
                {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}):
        assert allocator.environment(env, JE if "LD_PRELOAD" in env else None) == {}, env
    with pytest.raises(ValueError, match="no libjemalloc"):
        allocator.environment({"BIGMODEL_ALLOCATOR": "jemalloc"}, None)
    with pytest.raises(ValueError, match="valid: auto, jemalloc, glibc, system"):
        allocator.environment({"BIGMODEL_ALLOCATOR": "tcmalloc"}, None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator is chosen on Linux only")
def test_a_process_reexecutes_once_with_the_allocator_and_its_arguments():
    code = ("import os, sys; from bigmodel_jax import allocator; print('start', flush=True); allocator.reexec(); "
            "print(os.environ.get('BIGMODEL_ALLOCATOR_APPLIED'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in (allocator.APPLIED, allocator.CHOICE, "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", code, "a", "--b=c"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["start", "start"] and lines[2] in ("glibc ['a', '--b=c']", "jemalloc ['a', '--b=c']")
    out = subprocess.run([sys.executable, "-m", "bigmodel_jax.train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**env, "BIGMODEL_ALLOCATOR": "bad"})
    assert out.returncode == 1
    assert out.stderr.strip() == "error: BIGMODEL_ALLOCATOR='bad'; valid: auto, jemalloc, glibc, system"
