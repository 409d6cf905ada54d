"""Walk around a scene: a local web page that renders a trained GQN from a camera you move.

    python explore.py --checkpoint assets/gqn-sm5.pt                 # built-in test scenes, port 8000
    python explore.py --checkpoint CKPT --data_dir /path/to/split --port 8080 --context 5

It prints the address (http://127.0.0.1:8000/); open it in a browser. For the chosen scene the page shows
its views (the context views marked; click a view to add or remove it), the model's rendering from the
current camera, large, and the ground-truth view whose camera is nearest. Where the scene's cameras look
at one point (Shepard-Metzler, rooms_ring_camera), drag on the rendering to orbit (yaw, pitch), scroll or
use the slider for the distance, or the arrow keys (+/- for the distance). Where they look anywhere
(rooms_free_camera, mazes: dataset/viewpoints.py looks_at_one_point, told from the cameras alone), walk:
W/S or the up and down arrows move forward and back at the camera's height, A/D step sideways, the left
and right arrows (or Q/E) turn, R/F look up and down; drag to turn and look, scroll to move.
Double-click a view to move the camera to it: the rendering from a view's own camera is the model's
guess at that view. "Sample again" draws a new z from the prior: a rendering is one sample (the noise is
seeded, so dragging keeps the same hypothesis of the scene); "mean of N" shows the mean of N samples.

Cameras follow the dataset's convention (spec section 4): raw (x, y, z, yaw, pitch), pitch negative when
the camera looks down. The camera moves on a sphere about the point the scene's own cameras look at
(dataset/viewpoints.py look_target: the origin for Shepard-Metzler, the room's centre at eye height for
rooms_ring_camera), looking at it: (yaw, pitch, distance) place it there, and each view's own
(yaw, pitch, distance) about that point put it exactly at that view's camera. On rooms_ring_camera, dragging
sideways at the views' pitch (0) and distance walks the ring the data was taken on. A walking camera is
the raw camera itself (x, y, z, yaw, pitch). The page and the API speak degrees.

The server (Python's http.server, no other dependency) binds 127.0.0.1 unless --host says otherwise and
answers only requests whose Host header names it: 127.0.0.1, localhost or [::1], the --host name or the
address it is bound to, with or without its port. Any other Host gets a 403 and one line on stderr: a web
page elsewhere cannot drive it through DNS rebinding (its name made to point at 127.0.0.1). It answers only
these paths; nothing in a request names a file:
    GET /                          the page
    GET /api/scene?scene=I         JSON: number of scenes and views, each view's camera, the view order,
                                   "mode" ("orbit" or "walk") and a walking step
    GET /api/view.png?scene=I&view=J                         a ground-truth view, as stored
    GET /api/render.png?scene=I&context=J,K,..&yaw=&pitch=&distance=[&seed=][&samples=N][&client=ID]
    GET /api/render.png?scene=I&context=J,K,..&x=&y=&z=&yaw=&pitch=[...]   (a walking camera)
        the model's rendering (PNG, the model's image size); headers X-Nearest-View (the view whose
        camera is nearest), X-Render-Ms (the time the model took)
A bad value gets a 400 with a one-sentence message. Renders run one at a time; when newer requests of
the same client arrive while one waits, only the newest is rendered, the others get 204 (the page also
keeps one request in flight and sends only the newest camera when it returns).
"""

import argparse
import errno
import io
import json
import math
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch
from PIL import Image

import checkpoint
import gqn_dataset
import held_out
from dataset.builtin import forward_from_yaw_pitch
from dataset.viewpoints import (look_target, looks_at_one_point, raw_to_viewpoint, viewpoint_around,
                                viewpoint_to_raw)
from images import to_uint8_image
from options import add_checkpoint_arguments
from runtime import UsageError, noise_seed, pick_device

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web", "explore.html")
MAX_SAMPLES = 32          # "mean of N samples": N at most this
MAX_DISTANCE = 100.0      # cameras farther than this are refused (the data's sit at 3.3)
MAX_CLIENTS = 1000        # the coalescer forgets every client past this many
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")   # the Host names of this machine itself


class BadRequest(ValueError):
    """A request value that is out of range or not a number, said in one sentence (sent as a 400)."""


def png_bytes(image):
    """(3, H, W) floats in [0, 1], or (H, W, 3) uint8 -> PNG bytes."""
    if isinstance(image, torch.Tensor):
        image = to_uint8_image(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def viewpoint(yaw_deg, pitch_deg, distance, target=(0.0, 0.0, 0.0)):
    """The dataset's camera at (yaw, pitch, distance) from `target`, looking at it -> viewpoint (7,)
    float32."""
    return viewpoint_around(target, math.radians(yaw_deg % 360.0), math.radians(pitch_deg), distance)


def walking_viewpoint(x, y, z, yaw_deg, pitch_deg):
    """The dataset's camera at (x, y, z) facing (yaw, pitch) in degrees -> viewpoint (7,) float32."""
    raw = np.array([x, y, z, math.radians(yaw_deg % 360.0), math.radians(pitch_deg)])
    return torch.from_numpy(raw_to_viewpoint(raw).astype(np.float32))


class Coalescer:
    """Runs one render at a time. A request that is still waiting for its turn when a newer request of the
    same client arrives is dropped (run returns None): only the newest camera of each client is rendered."""

    def __init__(self):
        self._turn = threading.Lock()
        self._guard = threading.Lock()
        self._latest = {}

    def run(self, client, work):
        with self._guard:
            if len(self._latest) > MAX_CLIENTS:
                self._latest.clear()
            ticket = self._latest.get(client, 0) + 1
            self._latest[client] = ticket
        with self._turn:
            with self._guard:
                if self._latest.get(client, ticket) != ticket:
                    return None
            return work()


class Explorer:
    """A checkpoint's model and a split folder: the answers of the API, without HTTP."""

    def __init__(self, model, dataset, device, seed=0, context=3):
        self.model, self.dataset, self.device = model, dataset, device
        self.num_scenes, self.num_views = len(dataset), dataset.num_views
        self.order_sampler = gqn_dataset.FixedContextSampler(self.num_scenes, self.num_views, 1,
                                                             self.num_views - 1, seed)
        self.context, self.seed = context, seed
        self.coalescer = Coalescer()
        self._cache_lock = threading.Lock()
        # scene -> (frames (S, 3, H, W) uint8, viewpoints (S, 7), target (3,), walks)
        self._cache = {}

    # -- reading ----------------------------------------------------------------------------------

    def scene(self, index):
        """(frames (S, 3, H, W) uint8, viewpoints (S, 7), the point its cameras look at (3,), whether the
        camera walks (its cameras do not look at one point)) of one scene, cached."""
        with self._cache_lock:
            if index not in self._cache:
                frames, viewpoints = self.dataset[(index, tuple(range(self.num_views)))]
                if len(self._cache) >= 8:
                    self._cache.pop(next(iter(self._cache)))
                raw = viewpoint_to_raw(viewpoints)
                self._cache[index] = (frames, viewpoints, look_target(raw), not looks_at_one_point(raw))
            return self._cache[index]

    def scene_info(self, index):
        _, viewpoints, target, walks = self.scene(index)
        order = [int(j) for j in self.order_sampler.views(index)]   # evaluate.py's views: context = order[:M]
        raw = viewpoint_to_raw(viewpoints)
        cameras = [dict(x=float(r[0]), y=float(r[1]), z=float(r[2]), yaw=math.degrees(r[3]),
                        pitch=math.degrees(r[4]), distance=float(np.linalg.norm(r[:3] - target)))
                   for r in raw]
        # a walking step: a fortieth of the cameras' extent across the floor
        step = max(float(np.ptp(raw[:, :2], axis=0).max()) / 40, 1e-3)
        return dict(scene=index, scenes=self.num_scenes, views=self.num_views, cameras=cameras, order=order,
                    context=order[:self.context], query=order[self.context],
                    mode="walk" if walks else "orbit",
                    step=step)

    def view_png(self, index, view):
        frames = self.scene(index)[0]
        return png_bytes(frames[view].permute(1, 2, 0).numpy())

    def nearest_view(self, index, v_q):
        """The view whose camera position is nearest the query camera's; for a walking camera, whose
        position and direction are (a half turn away counts as much as the cameras' mean spread)."""
        _, viewpoints, _, walks = self.scene(index)
        gap = (viewpoints[:, :3] - v_q[:3]).norm(dim=1)
        if walks:
            raw = viewpoint_to_raw(viewpoints)
            forward = torch.from_numpy(forward_from_yaw_pitch(raw[:, 3], raw[:, 4])).float()
            query = viewpoint_to_raw(v_q)
            facing = forward @ torch.from_numpy(forward_from_yaw_pitch(query[3], query[4])).float()
            spread = (viewpoints[:, :3] - viewpoints[:, :3].mean(0)).norm(dim=1).mean()
            gap = gap + spread * (1 - facing) / 2
        return int(gap.argmin())

    # -- rendering --------------------------------------------------------------------------------

    @torch.no_grad()
    def render(self, index, context, v_q, seed=0, samples=1):
        """The model's image from the camera v_q (7,) (see viewpoint) given the context views:
        (3, H, W) floats, one prior sample (samples=1) or the mean of `samples` samples. torch's generator
        is seeded with runtime.noise_seed(--seed, seed) first, so this is model.generate's image for that
        noise (seed counts the page's "Sample again")."""
        frames, viewpoints, _, _ = self.scene(index)
        x = (frames[context].float() / 255)[None].to(self.device)             # (1, M, 3, H, W)
        v = viewpoints[context][None].to(self.device)                         # (1, M, 7)
        v_q = v_q[None].to(self.device)                                       # (1, 7)
        r = self.model.encode(x, v, v_q)                                      # once, for every sample
        if samples > 1:                                                       # N samples in one batch
            r, v_q = r.expand(samples, *r.shape[1:]), v_q.expand(samples, 7)
        torch.manual_seed(noise_seed(self.seed, seed))
        images = self.model.render(r, v_q)                                    # (N, 3, H, W)
        return images.mean(dim=0).clamp(0, 1).cpu()

    # -- the API ----------------------------------------------------------------------------------

    def _int(self, query, name, low, high, default=None):
        text = query.get(name, [None])[-1]
        if text is None:
            if default is None:
                raise BadRequest(f"'{name}' is missing; pass {name}= a whole number from {low} to {high}")
            return default
        try:
            value = int(text)
        except ValueError:
            raise BadRequest(f"{name}={text[:40]!r} is not a whole number; "
                             f"pass one from {low} to {high}") from None
        if not low <= value <= high:
            raise BadRequest(f"{name}={value} is out of range; pass a whole number from {low} to {high}")
        return value

    def _float(self, query, name, low=-math.inf, high=math.inf, strict=False):
        text = query.get(name, [None])[-1]
        if text is None:
            raise BadRequest(f"'{name}' is missing; pass {name}= a number")
        try:
            value = float(text)
        except ValueError:
            raise BadRequest(f"{name}={text[:40]!r} is not a number") from None
        inside = (low < value < high) if strict else (low <= value <= high)
        if not math.isfinite(value) or not inside:
            where = f"strictly between {low:g} and {high:g}" if strict else f"from {low:g} to {high:g}"
            raise BadRequest(f"{name}={text[:40]} is out of range; pass a number {where}")
        return value

    def _scene(self, query):
        return self._int(query, "scene", 0, self.num_scenes - 1)

    def _context(self, query):
        text = query.get("context", [None])[-1]
        last = self.num_views - 1
        if not text:
            raise BadRequest(f"'context' is missing; pass context= view numbers from 0 to {last}, "
                             "comma-separated")
        try:
            views = [int(t) for t in text.split(",")]
        except ValueError:
            raise BadRequest(f"context={text[:40]!r} is not a list of view numbers; "
                             "pass e.g. context=0,4,7") from None
        if any(not 0 <= j <= last for j in views) or len(set(views)) != len(views):
            raise BadRequest(f"context={text[:40]} must name distinct views from 0 to {last}")
        return views

    def handle(self, path, query):
        """(status, content type, body bytes, extra headers) for one GET; BadRequest becomes a 400."""
        try:
            if path == "/api/scene":
                return 200, "application/json", json.dumps(self.scene_info(self._scene(query))).encode(), {}
            if path == "/api/view.png":
                index = self._scene(query)
                view = self._int(query, "view", 0, self.num_views - 1)
                return 200, "image/png", self.view_png(index, view), {}
            if path == "/api/render.png":
                index, context = self._scene(query), self._context(query)
                yaw = self._float(query, "yaw")
                pitch = self._float(query, "pitch", -90, 90, strict=True)
                if "x" in query:                                            # a walking camera
                    position = [self._float(query, k, -MAX_DISTANCE, MAX_DISTANCE) for k in "xyz"]
                else:
                    distance = self._float(query, "distance", 0, MAX_DISTANCE, strict=True)
                seed = self._int(query, "seed", 0, 2 ** 31 - 1, default=0)
                samples = self._int(query, "samples", 1, MAX_SAMPLES, default=1)
                client = query.get("client", [""])[-1]
                if not re.fullmatch(r"[A-Za-z0-9_-]{0,32}", client):
                    raise BadRequest("client= may hold up to 32 letters, digits, '-' and '_'")

                def work():
                    if "x" in query:
                        camera = walking_viewpoint(*position, yaw, pitch)
                    else:
                        camera = viewpoint(yaw, pitch, distance, self.scene(index)[2])
                    start = time.perf_counter()
                    image = self.render(index, context, camera, seed, samples)
                    ms = (time.perf_counter() - start) * 1e3
                    nearest = self.nearest_view(index, camera)
                    return png_bytes(image), {"X-Nearest-View": str(nearest), "X-Render-Ms": f"{ms:.1f}"}

                done = self.coalescer.run(client, work)
                if done is None:
                    return 204, "text/plain", b"", {}
                return 200, "image/png", done[0], done[1]
        except BadRequest as e:
            return 400, "text/plain; charset=utf-8", f"{e}\n".encode(), {}
        return (404, "text/plain; charset=utf-8",
                f"no such page: {path[:80]}; this server has / and /api/...\n".encode(), {})


def served_names(host, address):
    """The names a request's Host header may give this server (lower case, without the port): this machine's
    loopback names, the --host name and the address bound; an IPv6 address in brackets, as in a URL."""
    names = set(LOOPBACK_NAMES)
    for name in (host, address):
        if name:
            names.add(f"[{name.lower()}]" if ":" in name else name.lower())
    return names


def make_handler(explorer, page, host="127.0.0.1"):
    """The request handler class of a server of `explorer` bound on --host `host`."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "GQNExplorer"

        def parse_request(self):
            """http.server's parsing, then the Host check, so that every method passes it."""
            if not super().parse_request():
                return False
            refused = self._host_refused()
            if refused is None:
                return True
            status, what, names = refused
            # logged before the answer is sent: whoever reads the answer finds the line already written
            sys.stderr.write(f"explore.py: refused a request {what} from {self.client_address[0]}\n")
            sys.stderr.flush()
            self.close_connection = True
            port = self.server.server_address[1]
            self._send(status, "text/plain; charset=utf-8",
                       f"this explorer answers only requests for {', '.join(names[:-1])} or {names[-1]} "
                       f"(with or without :{port}); "
                       "start it with --host NAME to serve another name\n".encode(), {})
            return False

        def _host_refused(self):
            """None when the Host header names this server, else (status, what to log, the names it answers).
            Against DNS rebinding: a page of another site whose name is made to point at this machine reaches
            this server with that site's name as its Host."""
            address, port = self.server.server_address[:2]
            names = sorted(served_names(host, address))
            hosts = self.headers.get_all("Host") or []
            if len(hosts) == 1:
                value = hosts[0].strip().lower()
                if value in names or value in [f"{name}:{port}" for name in names]:
                    return None
                # 403, not 421 (Misdirected Request): 421 asks a client to try again on another connection,
                # which reaches this same server; the refusal is this server's policy, which 403 says
                return 403, f"for Host {hosts[0][:80]!r}", names
            if not hosts and self.request_version in ("HTTP/0.9", "HTTP/1.0"):
                # Host is required from HTTP/1.1 on; browsers always send it
                return None
            # RFC 9112 section 3.2: a missing Host (HTTP/1.1) or more than one is answered with a 400
            return 400, f"with {len(hosts)} Host headers" if hosts else "without a Host header", names

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                return self._send(200, "text/html; charset=utf-8", page, {})
            try:
                self._send(*explorer.handle(url.path, parse_qs(url.query)))
            except Exception as e:                      # the server answers and goes on
                self._send(500, "text/plain; charset=utf-8",
                           f"the render failed: {type(e).__name__}: {e}\n".encode(), {})

        def do_POST(self):
            self._send(405, "text/plain; charset=utf-8", b"this server answers GET only\n", {})

        def _send(self, status, content_type, body, headers):
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):   # the page went away (closed, or moved on)
                pass

        do_HEAD = do_GET

        def log_message(self, format, *args):
            # quiet: the terminal shows the address, refusals and errors only
            pass

    return Handler


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Serve a web page to move a camera around a scene and see what a "
                                            "trained GQN renders from it.")
    add_checkpoint_arguments(p, "context views a scene starts with (default 3)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address or name to bind (default 127.0.0.1: this machine only); requests must name "
                        "the server 127.0.0.1, localhost, [::1], this name or the address bound, any other "
                        "Host is refused")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.exit(2, f"error: --port {args.port} is not a port; pass one from 1 to 65535 (0: any free one)\n")
    return args


def build(args):
    """Load the checkpoint and the data and bind the port: (server, explorer). Raises the project's
    one-sentence errors (checkpoint, data, usage) before anything is served."""
    device = pick_device(args.device)
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise gqn_dataset.DatasetError(f"--data_dir {args.data_dir} is not a folder; "
                                       "pass a split folder such as data/.../test")
    opened = held_out.open_with_test_data(args.checkpoint, args.data_dir, args.context, device)
    data_dir = opened.data_dir
    explorer = Explorer(opened.model, opened.dataset, device, seed=args.seed, context=args.context)
    with open(PAGE, "rb") as f:
        page = f.read()
    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(explorer, page, args.host))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {args.port} on {args.host} is in use; pass another --port "
                                      f"(or --port 0 for any free one)") from None
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); pass another "
                                  f"--host or --port") from None
    server.daemon_threads = True
    explorer.data_dir = data_dir
    return server, explorer


def main(argv=None):
    args = parse_args(argv)
    try:
        server, explorer = build(args)
    except (checkpoint.CheckpointError, gqn_dataset.DatasetError, UsageError) as e:
        sys.exit(f"error: {e}")
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{args.checkpoint}: {explorer.num_scenes} scenes of {explorer.data_dir}, "
          f"{explorer.num_views} views each")
    print(f"explore at http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
