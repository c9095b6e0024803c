"""Every collective from Python, on NumPy arrays and PyTorch tensors, in several processes."""
from conftest import finish, start_workers


def test_every_collective_matches_its_reference_in_three_processes(master):
    results = finish(start_workers(3, "collectives", master.endpoint, 3))
    for code, lines in results:
        assert code == 0, lines
        assert any(line.startswith("PASS rank=") for line in lines), lines
    assert sorted(line.split()[1] for _, lines in results for line in lines if line.startswith("PASS")) == \
        ["rank=0", "rank=1", "rank=2"]


def test_shared_state_reaches_every_member_in_place(master):
    results = finish(start_workers(3, "state", master.endpoint, 3))
    synced = [line for code, lines in results for line in lines if line.startswith("SYNCED")]
    assert all(code == 0 for code, _ in results), results
    assert sorted(line.split()[1] for line in synced) == ["outdated=False", "outdated=True", "outdated=True"], synced
    assert len({line.split()[2] for line in synced}) == 1, synced


def test_peer_groups_of_one_master_keep_apart(master):
    """Three workers in peer group 0 and two in group 1 at once: each group forms its own world and
    every collective matches the reference for that world."""
    groups = [start_workers(3, "collectives", master.endpoint, 3),
              start_workers(2, "collectives", master.endpoint, 2, CHORUS_PEER_GROUP="1")]
    for workers, world in zip(groups, (3, 2)):
        results = finish(workers)
        assert all(code == 0 for code, _ in results), results
        assert sorted(line.split()[1] for _, lines in results for line in lines if line.startswith("PASS")) == \
            [f"rank={rank}" for rank in range(world)]
