"""explore.py: the render API answers like model.generate, refuses bad requests with a 400, serves
nothing else, answers only requests addressed to this machine (or --host), starts only on good input, and
the page orbits the camera in a real browser."""

import http.client
import io
import math
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

import explore
from conftest import ROOT
from dataset import rooms
from dataset.viewpoints import raw_to_viewpoint

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import explore_latency  # noqa: E402  (the browser the latency script starts is the one tested here)


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tiny_data):
    """explore.py serving the tiny checkpoint on the tiny test split, on a free port, with no --host:
    (http server, explorer)."""
    args = explore.parse_args(["--checkpoint", str(tiny_checkpoint), "--data_dir", tiny_data[1], "--port",
                               "0", "--device", "cpu"])
    srv, explorer = explore.build(args)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, explorer
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def server(served):
    """(explorer, base url) of the served explorer."""
    srv, explorer = served
    return explorer, f"http://127.0.0.1:{srv.server_address[1]}"


def get(url):
    """(status, headers, body) of a GET, for any status."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_with_host(url, host):
    """(status, body) of a GET of url (whose address is connected to) sent with the Host header `host`
    (None: without a Host header), as a browser sends for a page of another site whose name points here."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("GET", f"{parts.path}?{parts.query}", skip_host=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def png(body):
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def render_url(base, scene=0, context="0,1,2", yaw=30, pitch=-20, distance=3.333, **extra):
    query = "&".join(f"{k}={v}" for k, v in dict(scene=scene, context=context, yaw=yaw, pitch=pitch,
                                                    distance=distance, **extra).items())
    return f"{base}/api/render.png?{query}"


def test_render_is_a_png_of_the_model_size_and_matches_model_generate_for_the_same_seed(server):
    explorer, base = server
    status, headers, body = get(render_url(base, seed=5))
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = png(body)
    assert image.shape == (64, 64, 3)
    # the same camera and seed through model.generate directly
    frames, viewpoints = explorer.dataset[(0, tuple(range(explorer.num_views)))]
    x = (frames[[0, 1, 2]].float() / 255)[None]
    v = viewpoints[[0, 1, 2]][None]
    torch.manual_seed(explore.noise_seed(0, 5))                               # --seed 0, the 5th sample
    with torch.no_grad():
        expected = explorer.model.generate(x, v, explore.viewpoint(30, -20, 3.333)[None])[0]
    expected = (expected.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
    assert 0 <= int(headers["X-Nearest-View"]) < explorer.num_views and float(headers["X-Render-Ms"]) > 0


def test_the_image_changes_with_the_camera_and_the_seed_but_not_otherwise(server):
    _, base = server
    first = png(get(render_url(base, yaw=30))[2])
    assert np.array_equal(first, png(get(render_url(base, yaw=30))[2]))          # same request, same image
    assert not np.array_equal(first, png(get(render_url(base, yaw=120, pitch=10))[2]))
    assert not np.array_equal(first, png(get(render_url(base, yaw=30, seed=1))[2]))
    mean = png(get(render_url(base, yaw=30, samples=4))[2])                     # mean of 4 samples
    assert mean.shape == (64, 64, 3) and not np.array_equal(first, mean)


class RingScenes:
    """Two scenes of 10 blank views from rooms_ring_camera's cameras, as explore.Explorer reads a split."""
    num_views = 10

    def __len__(self):
        return 2

    def __getitem__(self, key):
        index, views = key
        azimuths = np.random.default_rng(index).uniform(0, 2 * np.pi, self.num_views)
        cameras = torch.from_numpy(raw_to_viewpoint(rooms.ring_cameras(azimuths)).astype(np.float32))
        return torch.zeros(len(views), 3, 64, 64, dtype=torch.uint8), cameras[list(views)]


def test_on_rooms_the_camera_walks_the_ring_and_reaches_every_view():
    explorer = explore.Explorer(model=None, dataset=RingScenes(), device=torch.device("cpu"))
    info = explorer.scene_info(1)
    _, viewpoints, target, _ = explorer.scene(1)
    np.testing.assert_allclose(target, [0, 0, rooms.TARGET_HEIGHT], atol=1e-6)
    for j, c in enumerate(info["cameras"]):                 # each view: pitch 0, on the ring, exactly reached
        assert c["pitch"] == pytest.approx(0, abs=1e-4) and c["distance"] == pytest.approx(rooms.RING_RADIUS)
        np.testing.assert_allclose(explore.viewpoint(c["yaw"], c["pitch"], c["distance"], target).numpy(),
                                   viewpoints[j].numpy(), atol=1e-5)
    c = info["cameras"][0]
    # turning at the views' pitch and distance stays on it
    for yaw in np.linspace(0, 360, 13):
        position = explore.viewpoint(c["yaw"] + yaw, c["pitch"], c["distance"], target)[:3].numpy()
        assert np.hypot(*position[:2]) == pytest.approx(rooms.RING_RADIUS, abs=1e-5)
        assert position[2] == pytest.approx(rooms.CAMERA_HEIGHT, abs=1e-5)


def test_a_camera_at_a_views_pose_is_that_views_camera_and_the_nearest_view_is_that_view(server):
    explorer, base = server
    info = explorer.scene_info(1)
    _, viewpoints, target, _ = explorer.scene(1)
    for j, c in enumerate(info["cameras"]):
        v = explore.viewpoint(c["yaw"], c["pitch"], c["distance"], target)
        np.testing.assert_allclose(v.numpy(), viewpoints[j].numpy(), atol=1e-4)
        c = info["cameras"][j]
        headers = get(render_url(base, scene=1, yaw=c["yaw"], pitch=c["pitch"], distance=c["distance"]))[1]
        assert int(headers["X-Nearest-View"]) == j
    # the starting views are evaluate.py's: context = order[:M], then the query
    assert info["context"] == info["order"][:3] and info["query"] == info["order"][3]
    assert sorted(info["order"]) == list(range(explorer.num_views))


@pytest.mark.parametrize("query, says", [
    (dict(scene=99), "scene=99 is out of range"),
    (dict(scene="x"), "scene='x' is not a whole number"),
    (dict(yaw="north"), "yaw='north' is not a number"),
    (dict(yaw="nan"), "yaw=nan is out of range"),
    (dict(pitch=90), "pitch=90 is out of range"),
    (dict(distance=-1), "distance=-1 is out of range"),
    (dict(context="0,0"), "must name distinct views"),
    (dict(context="0,77"), "must name distinct views"),
    (dict(context="a,b"), "is not a list of view numbers"),
    (dict(samples=1000), "samples=1000 is out of range"),
    (dict(client="../etc"), "client= may hold"),
])
def test_a_bad_request_gets_a_400_that_says_what_is_wrong_and_the_server_goes_on(server, query, says):
    _, base = server
    status, _, body = get(render_url(base, **query))
    assert status == 400
    assert says in body.decode() and body.decode().count("\n") == 1
    assert get(render_url(base))[0] == 200


def test_only_the_page_and_the_api_are_served(server):
    _, base = server
    status, headers, body = get(base + "/")
    assert status == 200 and b"GQN explorer" in body and headers["Content-Type"].startswith("text/html")
    for path in ["/explore.py", "/../explore.py", "/%2e%2e/checkpoint.py", "/etc/passwd",
                 "/api/../explore.html", "/api/view.png/../../README.md"]:
        status, _, body = get(base + path)
        assert status == 404 and b"no such page" in body, path
    status, _, body = get(f"{base}/api/view.png?scene=0&view=3")
    assert status == 200 and png(body).shape == (64, 64, 3)
    request = urllib.request.Request(base + "/api/render.png", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 405


class TurnWatch:
    """Stands in for a Coalescer's turn lock and sets the event of each thread (by name) that comes to wait
    for its turn: by then run() has taken that request's ticket."""

    def __init__(self, lock, names):
        self.lock, self.waiting = lock, {name: threading.Event() for name in names}

    def __enter__(self):
        self.waiting[threading.current_thread().name].set()
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def test_waiting_requests_of_one_client_are_coalesced_to_the_newest(monkeypatch):
    coalescer = explore.Coalescer()
    inside, release, results = threading.Event(), threading.Event(), {}

    def slow():
        inside.set()
        release.wait(10)
        return "first"

    def call(client, work):
        results[threading.current_thread().name] = coalescer.run(client, work)

    names = ["first", "a0", "a1", "a2", "b"]
    turn = TurnWatch(coalescer._turn, names)
    monkeypatch.setattr(coalescer, "_turn", turn)
    threads = {"first": threading.Thread(target=call, args=("a", slow), name="first")}
    threads.update({f"a{k}": threading.Thread(target=call, args=("a", lambda k=k: f"a{k}"), name=f"a{k}")
                    for k in range(3)})
    threads["b"] = threading.Thread(target=call, args=("b", lambda: "b"), name="b")
    threads["first"].start()
    assert inside.wait(10)                            # the first render holds the turn
    # in order: a0, a1, a2, then b, each waiting before the next
    for name in names[1:]:
        threads[name].start()
        assert turn.waiting[name].wait(10), name
    release.set()
    for t in threads.values():
        t.join(10)
        assert not t.is_alive(), t.name
    assert results == {"first": "first", "a0": None, "a1": None, "a2": "a2", "b": "b"}


def test_the_explorer_binds_127_0_0_1_unless_told_otherwise(served):
    srv, _ = served
    assert explore.parse_args(["--checkpoint", "any.pt"]).host == "127.0.0.1"
    assert srv.server_address[0] == "127.0.0.1"


def test_a_request_for_another_sites_name_is_refused_with_a_403_and_one_log_line(server, capsys):
    """DNS rebinding: a page of evil.example.com whose name is made to point at 127.0.0.1 sends its requests
    here with its own name as the Host. Only this machine's names (with this port, or none) are answered."""
    _, base = server
    port = int(base.rsplit(":", 1)[1])
    url = f"{base}/api/view.png?scene=0&view=1"
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", "LocalHost"]:
        status, body = get_with_host(url, host)
        assert status == 200 and png(body).shape == (64, 64, 3), host
    assert capsys.readouterr().err == ""
    for host, code in [("evil.example.com", 403), (f"evil.example.com:{port}", 403),
                       (f"localhost:{port + 1}", 403), (f"localhost.evil.example.com:{port}", 403),
                       (f"127.0.0.1:{port}@evil.example.com", 403), (None, 400)]:
        status, body = get_with_host(url, host)
        assert status == code and body.decode().startswith("this explorer answers only requests for "), host
        what = "without a Host header" if host is None else f"for Host {host!r}"
        refused = f"explore.py: refused a request {what} from 127.0.0.1"
        assert capsys.readouterr().err.splitlines() == [refused]
    assert get_with_host(url, f"localhost:{port}")[0] == 200          # and the server goes on


def test_a_name_given_with_host_is_answered_as_well(tiny_checkpoint, tiny_data, monkeypatch, capsys):
    bound = []

    def on_loopback(address, handler):            # the name need not resolve: the server listens on 127.0.0.1
        bound.append(address[0])
        return ThreadingHTTPServer(("127.0.0.1", address[1]), handler)

    monkeypatch.setattr(explore, "ThreadingHTTPServer", on_loopback)
    args = explore.parse_args(["--checkpoint", str(tiny_checkpoint), "--data_dir", tiny_data[1], "--port",
                               "0", "--device", "cpu", "--host", "gqn-box.test"])
    srv, _ = explore.build(args)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        assert bound == ["gqn-box.test"]
        for host in [f"gqn-box.test:{port}", "GQN-Box.test", f"127.0.0.1:{port}"]:
            status, body = get_with_host(f"http://127.0.0.1:{port}/", host)
            assert status == 200 and b"GQN explorer" in body, host
        assert get_with_host(f"http://127.0.0.1:{port}/", f"other-box.test:{port}")[0] == 403
        assert capsys.readouterr().err.splitlines() == [
            f"explore.py: refused a request for Host 'other-box.test:{port}' from 127.0.0.1"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_bad_input_ends_in_one_sentence_before_the_server_starts(
        tiny_checkpoint, tiny_data, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pt"), "--data_dir", tiny_data[1]], "missing.pt"),
        (["--checkpoint", str(tiny_checkpoint), "--data_dir", str(tmp_path / "nowhere")], "nowhere"),
        (["--checkpoint", str(tiny_checkpoint), "--data_dir", tiny_data[1], "--context", "40"],
         "--context 40"),
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases.append((["--checkpoint", str(tiny_checkpoint), "--data_dir", tiny_data[1], "--port", str(port)],
                      f"port {port} on 127.0.0.1 is in use"))
        for argv, says in cases:
            with pytest.raises(SystemExit) as e:
                explore.main(argv + ["--device", "cpu"])
            message = str(e.value.code)
            assert message.startswith("error: ") and says in message and "\n" not in message, message
            assert "explore at" not in capsys.readouterr().out


def browser_missing():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if explore_latency.find_chromium() is None:
        return (f"no Chromium at {explore_latency.DEBIAN_CHROMIUM} or on PATH (Debian: apt-get install "
                f"chromium; .ci/run installs it)")
    return None


def test_in_a_real_browser_dragging_the_rendering_changes_the_image(tiny_checkpoint, tiny_data):
    missing = browser_missing()
    if missing and os.environ.get("GQN_REQUIRE_BROWSER"):    # .ci/run installs Chromium: there it must run
        pytest.fail(f"GQN_REQUIRE_BROWSER is set but {missing}")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright
    srv, url = explore_latency.start_server(str(tiny_checkpoint), tiny_data[1], device="cpu")
    try:
        with sync_playwright() as playwright:
            browser, page = explore_latency.open_page(playwright, url)
            render = page.locator("#render")
            yaw = page.evaluate("window.gqn.state.yaw")
            before = render.screenshot()
            explore_latency.drag_once(page, render.bounding_box(), 40)
            assert page.evaluate("window.gqn.state.yaw") != yaw
            assert render.screenshot() != before
            page.keyboard.press("ArrowUp")                      # arrow keys turn the camera too
            page.wait_for_function("window.gqn.renders >= 3", timeout=30_000)
            assert page.locator("#error").inner_text() == ""
            assert "sample" in page.locator("#render-caption").inner_text()
            browser.close()
    finally:
        srv.terminate()                                          # explore.py, as the user starts it
        srv.wait()


@pytest.fixture(scope="module")
def maze_split(tmp_path_factory):
    """A split folder of two built-in mazes with 12 views each (free cameras: the explorer walks)."""
    from dataset import mazes
    from dataset.shards import write_split
    folder = tmp_path_factory.mktemp("mazes") / "test"
    write_split(folder, mazes.render_scenes(0, "test", 0, 2, views=12))
    return str(folder)


def test_on_free_cameras_the_camera_walks_and_reaches_every_view_by_its_position(tiny_checkpoint, maze_split):
    import gqn_dataset
    explorer = explore.Explorer(model=None, dataset=gqn_dataset.SceneViews(maze_split),
                                device=torch.device("cpu"))
    info = explorer.scene_info(1)
    assert info["mode"] == "walk" and 0 < info["step"] < 0.5
    _, viewpoints, _, walks = explorer.scene(1)
    assert walks
    for j, c in enumerate(info["cameras"]):
        v = explore.walking_viewpoint(c["x"], c["y"], c["z"], c["yaw"], c["pitch"])
        np.testing.assert_allclose(v.numpy(), viewpoints[j].numpy(), atol=1e-5)
        assert explorer.nearest_view(1, v) == j
    ring = explore.Explorer(model=None, dataset=RingScenes(), device=torch.device("cpu"))
    assert ring.scene_info(0)["mode"] == "orbit"


def test_a_walking_camera_renders_over_http_and_bad_positions_get_a_400(tiny_checkpoint, maze_split):
    args = explore.parse_args(["--checkpoint", str(tiny_checkpoint), "--data_dir", maze_split, "--port", "0",
                               "--device", "cpu"])
    srv, explorer = explore.build(args)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        c = explorer.scene_info(0)["cameras"][5]
        walk = dict(x=c["x"], y=c["y"], z=c["z"])
        status, headers, body = get(render_url(base, yaw=c["yaw"], pitch=c["pitch"], **walk))
        assert status == 200 and png(body).shape == (64, 64, 3) and headers["X-Nearest-View"] == "5"
        ahead = dict(walk, x=c["x"] + 0.3)
        moved = get(render_url(base, yaw=c["yaw"], pitch=c["pitch"], **ahead))[2]
        assert not np.array_equal(png(body), png(moved))
        status, _, body = get(render_url(base, yaw=0, pitch=0, **dict(walk, y="far")))
        assert status == 400 and b"y='far' is not a number" in body
    finally:
        srv.shutdown()
        srv.server_close()


def test_in_a_real_browser_the_camera_walks_through_a_maze(tiny_checkpoint, maze_split):
    missing = browser_missing()
    if missing and os.environ.get("GQN_REQUIRE_BROWSER"):
        pytest.fail(f"GQN_REQUIRE_BROWSER is set but {missing}")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright
    srv, url = explore_latency.start_server(str(tiny_checkpoint), maze_split, device="cpu")
    try:
        with sync_playwright() as playwright:
            browser, page = explore_latency.open_page(playwright, url)
            assert page.evaluate("window.gqn.state.mode") == "walk"
            assert page.locator("#controls-walk").is_visible() and not page.locator("#distance").is_visible()
            render = page.locator("#render")
            start = page.evaluate("[window.gqn.state.x, window.gqn.state.y, window.gqn.state.yaw]")
            before = render.screenshot()
            for key in ("w", "w", "w", "d", "ArrowLeft"):             # three steps forward, one aside, a turn
                n = page.evaluate("window.gqn.renders")
                page.keyboard.press(key)
                page.wait_for_function(f"window.gqn.renders > {n}", timeout=30_000)
            x, y, yaw = page.evaluate("[window.gqn.state.x, window.gqn.state.y, window.gqn.state.yaw]")
            step = page.evaluate("window.gqn.state.step")
            assert math.hypot(x - start[0], y - start[1]) == pytest.approx(math.sqrt(10) * step, rel=1e-6)
            assert (yaw - start[2]) % 360 == pytest.approx(355)
            assert page.evaluate("window.gqn.state.z") == pytest.approx(
                page.evaluate("window.gqn.state.info.cameras[window.gqn.state.info.query].z"))
            assert render.screenshot() != before
            pitch = page.evaluate("window.gqn.state.pitch")
            page.keyboard.press("r")                                    # look up
            page.wait_for_function(f"window.gqn.state.pitch > {pitch}", timeout=30_000)
            assert page.locator("#error").inner_text() == ""
            browser.close()
    finally:
        srv.terminate()
        srv.wait()


def test_the_explorer_reads_a_folder_converted_by_torch_gqn(tiny_checkpoint, tmp_path, monkeypatch):
    from scene_files import make_scenes, pil_decode
    from test_legacy import Scene, save_like_torch_gqn
    monkeypatch.setattr(sys.modules["__main__"], "Scene", Scene, raising=False)
    scenes = make_scenes(3, views=6)
    for i, (frames, cameras) in enumerate(scenes):
        save_like_torch_gqn(tmp_path / f"{i}.pt.gz", frames, cameras[None], gz=True)
    args = explore.parse_args(["--checkpoint", str(tiny_checkpoint), "--data_dir", str(tmp_path), "--port",
                               "0", "--device", "cpu"])
    srv, explorer = explore.build(args)
    try:
        assert explorer.num_scenes == 3 and explorer.num_views == 6
        status, kind, body, headers = explorer.handle("/api/render.png", {
            "scene": ["2"], "context": ["0,1"], "yaw": ["10"], "pitch": ["-30"], "distance": ["3"]})
        assert status == 200 and kind == "image/png" and png(body).shape == (64, 64, 3)
        status, kind, body, _ = explorer.handle("/api/view.png", {"scene": ["1"], "view": ["5"]})
        assert status == 200 and np.array_equal(png(body), pil_decode(scenes[1][0][5]))   # that file's frame
    finally:
        srv.server_close()
