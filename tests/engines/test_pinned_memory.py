"""Which devices read engine outputs out of pinned memory in place, from the device table
(issue 22, item 10: pinned memory is CPU-uncached on a Jetson without I/O coherency)."""

import pytest

from segdeploy.engines import devices


@pytest.mark.parametrize(
    "key, copy",
    [
        ("jetson-tx2", True),  # sm_62, no I/O coherency: uncached for the CPU
        ("jetson-xavier", False),  # sm_72, I/O coherent
        ("jetson-orin", False),  # sm_87, I/O coherent
        ("t4", False),  # discrete GPUs: pinned memory is ordinary cached host memory
        ("gtx1080ti", False),
        ("h100", False),
        ("cpu", False),
    ],
)
def test_copy_out_choice_follows_the_device_table(key, copy):
    record = devices.get(key)
    choice, reason = devices.copy_outputs_from_pinned(record)
    assert choice is copy
    assert devices.pinned_memory_cached(record) is (not copy)
    assert record.name in reason
    assert ("I/O coherency" in reason) is copy


def test_every_jetson_in_the_table_has_a_coherency_entry():
    jetsons = {k for k, r in devices.TABLE.items() if r.jetson}
    assert jetsons and jetsons <= set(devices.IO_COHERENT)
    # and the flag matches the architecture: I/O coherency arrived with sm_72 (Xavier)
    for key in jetsons:
        assert devices.IO_COHERENT[key] is (devices.get(key).compute_capability >= (7, 2))


def test_a_jetson_the_table_does_not_know_is_treated_as_uncached():
    nano = devices.get("jetson-tx2")._replace(key="jetson-nano", name="Jetson Nano")
    assert devices.copy_outputs_from_pinned(nano)[0] is True
    assert devices.copy_outputs_from_pinned(None)[0] is False
