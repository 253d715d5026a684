"""vLLM's CPU thread binding, chosen from the host: every core on small hosts, vLLM's rule within this
process's affinity and quota on larger ones, and the user's own variables always win."""

from __future__ import annotations

import shlex

from rerank_export.cli import main
from rerank_export.vllm.binding import (
    BIND_ENV,
    RESERVED_ENV,
    HostCpus,
    binding,
    id_list,
    parse_id_list,
    read_host,
)


def test_a_small_host_binds_every_core_and_reserves_none():
    # Measured on a 2-core EPYC (issue 29): 0.733 pairs/s with vLLM's default, 1.347 with both cores bound.
    assert binding(HostCpus((0, 1)), {}) == {BIND_ENV: "0-1", RESERVED_ENV: "0"}


def test_smt_siblings_count_once():
    host = HostCpus((0, 1, 2, 3), siblings={0: 0, 1: 1, 2: 0, 3: 1})  # 2 cores, 2 threads each
    assert host.usable_cores == 2 and binding(host, {}) == {BIND_ENV: "0-1", RESERVED_ENV: "0"}


def test_a_large_host_follows_vllms_rule_on_the_first_node():
    node0, node1 = tuple(range(16)), tuple(range(16, 32))
    host = HostCpus(node0 + node1, numa_nodes=(node0, node1))
    assert binding(host, {}) == {BIND_ENV: "0-14", RESERVED_ENV: "1"}  # one core kept for the scheduler


def test_a_cgroup_quota_limits_the_threads():
    host = HostCpus(tuple(range(64)), quota_cores=4.0)
    assert host.usable_cores == 4 and binding(host, {}) == {BIND_ENV: "0-3", RESERVED_ENV: "0"}
    assert binding(HostCpus(tuple(range(64)), quota_cores=8.5), {}) == {BIND_ENV: "0-6", RESERVED_ENV: "1"}


def test_affinity_is_respected():
    assert binding(HostCpus((2, 5)), {}) == {BIND_ENV: "2,5", RESERVED_ENV: "0"}


def test_the_users_variables_pass_through():
    assert binding(HostCpus((0, 1)), {BIND_ENV: "auto"}) == {}
    assert binding(HostCpus((0, 1)), {RESERVED_ENV: "1"}) == {}


def test_id_lists_round_trip():
    assert id_list([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert parse_id_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_this_host_is_read(tmp_path):
    host = read_host()
    assert host.allowed and host.usable_cores >= 1
    fake = tmp_path / "sys"
    (fake / "fs/cgroup").mkdir(parents=True)
    (fake / "fs/cgroup/cpu.max").write_text("150000 100000\n")
    assert read_host(fake).quota_cores == 1.5


def test_print_command_carries_the_binding(baseline_artifacts, capsys, monkeypatch):
    monkeypatch.delenv(BIND_ENV, raising=False)
    monkeypatch.delenv(RESERVED_ENV, raising=False)
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--print-command", "--device", "cpu",
                 "--memory", "16GiB", "--allow-unverified", "--vllm-python", "/py"]) == 0
    words = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    env = dict(w.split("=", 1) for w in words if "=" in w and w.split("=", 1)[0].isupper())
    assert env == {**env, **binding(read_host(), {})} and BIND_ENV in env
    monkeypatch.setenv(BIND_ENV, "0")  # the user's binding: ours steps aside
    assert main(["serve", str(baseline_artifacts), "--engine", "vllm", "--print-command", "--device", "cpu",
                 "--memory", "16GiB", "--allow-unverified", "--vllm-python", "/py"]) == 0
    assert BIND_ENV not in capsys.readouterr().out
