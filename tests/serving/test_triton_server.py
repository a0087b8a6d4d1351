"""A real Triton Inference Server, started on loopback by these tests and stopped by them.

The server (nvidia-pytriton's tritonserver) hosts segexport's uint8 graph in Triton's Python
backend (ONNX Runtime inside). Remote labels must equal local ones; 8 concurrent clients send
50 requests each through the dynamic batcher; a server killed mid-run gives every client a
one-line error within its timeout.
"""

import json
import os
import sys
import threading
import time

import numpy as np
import pytest
import torch

import segdeploy
from segdeploy.bench import concurrency
from segdeploy.bench.cli import main as segbench
from segdeploy.errors import EngineError, SegDeployError
from segdeploy.export.cli import main as segexport

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "runtime"))
from runtime_support import smooth_frame, tiny_model  # noqa: E402
from triton_support import TritonServer, missing_reason  # noqa: E402

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed ([serve] extra)")
REASON = missing_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

H, W = 64, 128
MODEL = "regseg_tiny"
RESULTS = os.environ.get("SEGDEPLOY_SERVING_RESULTS")  # where to keep the concurrency table


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fan-in-scaled tiny RegSeg as a uint8 graph (batch 1..8) in a Python-backend
    repository, plus a repository entry whose model cannot load."""
    root = tmp_path_factory.mktemp("serving")
    torch.save(tiny_model(seed=2).state_dict(), root / "tiny.pth")
    repo = root / "repo"
    code = segexport(
        [
            "--model",
            MODEL,
            "--checkpoint",
            str(root / "tiny.pth"),
            "--res",
            "{}x{}".format(H, W),
            "--input",
            "uint8",
            "--triton",
            str(repo),
            "--triton-backend",
            "python",
            "--queue-delay-us",
            "2000",
            "--verify-inputs",
            "1",
            "--out",
            str(root),
        ]
    )
    assert code == 0
    # A second model whose ONNX file is damaged: Triton reports it UNAVAILABLE.
    broken = repo / "broken"
    (broken / "1").mkdir(parents=True)
    config = (repo / MODEL / "config.pbtxt").read_text()
    (broken / "config.pbtxt").write_text(
        config.replace('name: "{}"'.format(MODEL), 'name: "broken"')
    )
    (broken / "1" / "model.py").write_text((repo / MODEL / "1" / "model.py").read_text())
    (broken / "1" / "model.onnx").write_bytes(b"not an ONNX file")
    return root, repo


@pytest.fixture(scope="module")
def server(exported):
    _, repo = exported
    with TritonServer(repo) as running:
        yield running


@pytest.fixture(scope="module")
def local(exported):
    root, _ = exported
    with segdeploy.Runtime(str(root / (MODEL + ".ort"))) as runtime:
        yield runtime


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_labels_equal_local_labels(server, local, scheme):
    url = (server.grpc_url if scheme == "grpc" else server.http_url) + "/" + MODEL
    frames = [smooth_frame(H, W, seed=1), smooth_frame(90, 170, seed=2)]
    with segdeploy.Runtime(url) as remote:
        assert remote.backend == "triton" and remote.input_size == (H, W)
        assert remote.card["model"]["name"] == MODEL and remote.input_dtype == "uint8"
        assert remote.max_batch == 8
        classes = set()
        for frame in frames:
            expected = local.infer(frame)
            labels = remote.infer(frame)
            np.testing.assert_array_equal(labels, expected)
            classes.update(np.unique(expected).tolist())
        assert len(classes) >= 5  # varied labels: equality means something
        many = [smooth_frame(H, W, seed=s) for s in range(11)]  # 11 > max_batch: two requests
        for frame, labels in zip(many, remote.infer_batch(many)):
            np.testing.assert_array_equal(labels, local.infer(frame))
        overlay = remote.overlay(frames[0], remote.infer(frames[0]))
        assert overlay.shape == frames[0].shape


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_shared_memory_transport_gives_the_same_labels(server, local, scheme):
    url = (server.grpc_url if scheme == "grpc" else server.http_url) + "/" + MODEL
    frames = [smooth_frame(H, W, seed=s) for s in range(3)] + [smooth_frame(100, 200, seed=9)]
    with segdeploy.Runtime(url, shared_memory=True) as remote:
        assert remote.engine.options["shared_memory"]
        regions = [
            n for n in os.listdir("/dev/shm") if n.startswith("segdeploy_{}_".format(os.getpid()))
        ]
        assert len(regions) == 2  # one for the frames, one for the label maps
        for frame in frames:
            np.testing.assert_array_equal(remote.infer(frame), local.infer(frame))
        batch = remote.infer_batch(frames * 3)  # 12 frames: a batch of 8, then 4
        for frame, labels in zip(frames * 3, batch):
            np.testing.assert_array_equal(labels, local.infer(frame))
    assert not [n for n in os.listdir("/dev/shm") if n in regions]  # unregistered and unlinked


def test_eight_clients_fifty_requests_each_through_the_batcher(server, local):
    import tritonclient.grpc as grpcclient

    url = server.grpc_url + "/" + MODEL
    frames = [smooth_frame(H, W, seed=s) for s in range(4)]
    expected = [local.infer(f) for f in frames]
    assert len(set(np.unique(np.stack(expected)).tolist())) >= 5
    stats_client = grpcclient.InferenceServerClient(server.grpc_url.split("://")[1])

    def counts():
        stats = stats_client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    before = counts()
    records = concurrency.run(
        url, [1, 8], frames, requests=50, warmup=2, expected=expected, options={"timeout": 30}
    )
    # Triton records a request's statistics after it has sent the response, so the last few
    # can still be on their way when the clients return: wait (bounded) until they land
    expected_count = 50 + 8 * 50 + 2 * 9
    deadline = time.monotonic() + 10
    after = counts()
    while after[0] - before[0] < expected_count and time.monotonic() < deadline:
        time.sleep(0.1)
        after = counts()
    stats_client.close()
    inferences = after[0] - before[0]
    executions = after[1] - before[1]
    table = concurrency.format_table(records)
    print("\n" + table)
    if RESULTS:
        with open(RESULTS, "w") as f:
            batching = {"inferences": inferences, "executions": executions}
            json.dump({"table": table, "records": records, "server": batching}, f, indent=2)
    one, eight = records
    for record in records:
        assert record["errors"] == 0, record["error_messages"]
        assert record["mismatches"] == 0 and record["hung_clients"] == 0
    assert eight["answered"] == 8 * 50 and one["answered"] == 50
    lat = eight["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] and eight["throughput"] > 0
    assert inferences == expected_count  # every request, warm-ups included, once
    assert executions < inferences  # the dynamic batcher ran requests together


def test_segbench_prints_a_row_per_concurrency(server, capsys, tmp_path):
    code = segbench(
        [
            "--engine",
            server.grpc_url + "/" + MODEL,
            "--concurrency",
            "1,2",
            "--iters",
            "5",
            "--no-progress",
            "--shared-memory",
            "--json",
            str(tmp_path / "c.json"),
            "--csv",
            str(tmp_path / "c.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "via shared memory" in out
    rows = [li.split() for li in out.splitlines() if li.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"] and [r[1] for r in rows] == ["5", "10"]
    records = json.loads((tmp_path / "c.json").read_text())
    assert [r["concurrency"] for r in records] == [1, 2]
    assert (tmp_path / "c.csv").read_text().splitlines()[0].startswith("concurrency,answered")


def _one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_wrong_model_name_lists_the_models(server):
    with pytest.raises(EngineError) as info:
        segdeploy.Runtime(server.grpc_url + "/regsegg")
    assert "has no model 'regsegg' (it has: broken, {})".format(MODEL) in _one_line(info)


def test_a_model_that_failed_to_load_is_not_ready(server):
    with pytest.raises(EngineError) as info:
        segdeploy.Runtime(server.http_url + "/broken")
    text = _one_line(info)
    assert "model 'broken'" in text and "is not ready: UNAVAILABLE" in text


def test_no_server_at_the_address(tmp_path):
    from triton_support import free_port

    port = free_port()
    for url in ("grpc://127.0.0.1:{}/m".format(port), "http://127.0.0.1:{}/m".format(port)):
        began = time.monotonic()
        with pytest.raises(EngineError) as info:
            segdeploy.Runtime(url, connect_timeout=2)
        assert "cannot be reached" in _one_line(info)
        assert time.monotonic() - began < 10


def test_bad_urls_and_options():
    with pytest.raises(EngineError, match="give the model after the address"):
        segdeploy.Runtime("grpc://127.0.0.1:8001")
    with pytest.raises(EngineError, match="starts with grpc:// or http://"):
        segdeploy.Runtime("ftp://127.0.0.1/regseg")
    with pytest.raises(EngineError, match="do not apply to a Triton server"):
        segdeploy.Runtime("grpc://127.0.0.1:8001/regseg", threads=2)


def test_a_request_over_its_timeout_fails_in_one_line(server):
    frame = smooth_frame(H, W, seed=3)
    with segdeploy.Runtime(server.grpc_url + "/" + MODEL, timeout=0.0005) as remote:
        with pytest.raises(EngineError) as info:
            remote.infer(frame)
    assert "did not answer within 0.0005 s" in _one_line(info)


def test_server_killed_mid_run(exported):
    """8 clients in a loop; the server is SIGKILLed: each gets one line, none hangs."""
    _, repo = exported
    timeout = 5.0
    frames = [smooth_frame(H, W, seed=s) for s in range(4)]
    with TritonServer(repo) as server:
        url = server.grpc_url + "/" + MODEL
        runtimes = [segdeploy.Runtime(url, timeout=timeout) for _ in range(8)]
        results = [None] * 8
        answered = [0] * 8
        started = threading.Barrier(9)

        def client(i):
            done = 0
            started.wait()
            try:
                while True:
                    runtimes[i].infer(frames[done % 4])
                    done += 1
                    answered[i] = done
            except SegDeployError as exc:
                results[i] = (done, str(exc), time.monotonic())
            except Exception as exc:  # anything else is a failure of this test
                results[i] = (done, "UNEXPECTED {!r}".format(exc), time.monotonic())

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        started.wait()
        deadline = time.monotonic() + 60
        while min(answered) < 2 and time.monotonic() < deadline:  # every client mid-run
            time.sleep(0.05)
        server.kill()
        killed = time.monotonic()
        for t in threads:
            t.join(timeout=timeout + 10)
        assert not any(t.is_alive() for t in threads), "a client hung after the server died"
        for runtime in runtimes:
            runtime.close()
    for done, message, when in results:
        assert done > 0  # the server answered before it was killed
        assert "\n" not in message and not message.startswith("UNEXPECTED"), message
        assert "cannot be reached" in message or "did not answer" in message, message
        assert when - killed < timeout + 2
