"""``python -m fastnn.demo --web``: the draw-a-digit demo as a web page, classified by fastnn on
a small local server.

The server (``make_server``; Python's ``http.server``, one thread per request) serves one
self-contained page (``web.html``: HTML, CSS and JavaScript inline, nothing from a CDN,
so it works offline) and two endpoints:

- ``POST /classify?dataset=D``: the body is an image (the page sends its canvas as PNG), or a
  ``multipart/form-data`` form whose file field (named ``file``, else the first with a file
  name) is the image (``curl -F file=@digit.png``); the answer is JSON: ``probs`` (C,), ``classes``, ``prediction``,
  ``input`` (784 values in [0, 1],
  the 28x28 input after ``fastnn.predict.preprocess``, the same code as ``predict``), or
  ``{"blank": true}`` for an empty drawing;
- ``POST /read?dataset=D``: the same body, read as a multi-digit number
  (``fastnn.model.numbers.read_number``): ``number``, ``confidence`` and per digit its ``label``,
  ``probability``, ``box`` (top, left, bottom, right in the image's pixels) and ``input`` (784);
- ``GET /random?dataset=D``: a random test image with its ``label``, and the same fields.

``/classify`` and ``/read`` also take the robustness sliders: ``noise=S`` (Gaussian noise of
standard deviation S, 0-1) and ``blur=S`` (a Gaussian blur of S pixels, 0-8), applied to the
image first (``fastnn.demos.state.degrade``), and ``model=robust`` for the dataset's robust model
(``NeuralNetwork.pretrained(dataset, variant="robust")``, MNIST's) instead of ``standard``.

A bad request gets a 4xx status with a JSON ``{"error": ...}`` message and the server keeps
serving: an unknown path (404), a wrong method (405), a body that is not an image or a missing
or bad dataset (400), no Content-Length (411), a body over ``MAX_BODY`` bytes or an image over
``MAX_PIXELS`` pixels (413). The test data missing for ``/random`` is a 503 that says where to
put it. The models are the pretrained ones of each dataset, or ``--model`` for every request.

The server is Python's ``http.server`` (a thread per connection), set for a demo that may face
a network: a listen backlog of ``BACKLOG`` connections, ``TIMEOUT_S`` seconds per socket read or
write (a client that sends less body than it declares, or nothing at all, loses its connection
then), Pillow limited to ``fastnn.data.images.IMAGE_FORMATS``, and no internal detail in a 500.
``docs/threat-model.md`` says what it is exposed to; ``tests/demos/test_web.py`` loads it with 200
requests from 50 clients at once.
"""
from __future__ import annotations

import io
import ipaddress
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from fastnn.data.datasets import DATASETS
from fastnn.demos.state import MAX_BLUR, MAX_NOISE, VARIANTS, DemoState, degrade
from fastnn.model.file_format import ModelFileError

__all__ = ["make_server", "serve", "MAX_BODY", "MAX_PIXELS"]

MAX_BODY = 2 * 1024 * 1024        # bytes of an uploaded image
MAX_PIXELS = 4_000_000            # pixels of an uploaded image (a canvas is 280 x 280)
BACKLOG = 128                     # connections waiting to be accepted (socketserver's default: 5)
TIMEOUT_S = 10.0                  # seconds a connection may stay silent mid-request
PAGE = Path(__file__).with_name("web.html")


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    """Routes: GET / (the page), POST /classify, GET /random; everything else a 4xx."""

    server_version = "fastnn-demo"
    timeout = TIMEOUT_S                           # socket timeout (StreamRequestHandler sets it per connection)
    state: DemoState = None                       # set by make_server on a subclass

    # --- helpers
    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict, extra: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _dataset(self, query: dict) -> str:
        dataset = query.get("dataset", ["mnist"])[0]
        if dataset not in DATASETS:
            raise RequestError(400, f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
        return dataset

    def _sliders(self, query: dict) -> tuple[float, float, str]:
        """(noise, blur, variant) of the query, each checked."""
        values = []
        for name, top in (("noise", MAX_NOISE), ("blur", MAX_BLUR)):
            text = query.get(name, ["0"])[0]
            try:
                value = float(text)
            except ValueError:
                raise RequestError(400, f"{name}={text!r} is not a number") from None
            if not 0 <= value <= top:
                raise RequestError(400, f"{name} must be in [0, {top:g}], got {text}")
            values.append(value)
        variant = query.get("model", ["standard"])[0]
        if variant not in VARIANTS:
            raise RequestError(400, f"unknown model {variant!r}; use one of {', '.join(VARIANTS)}")
        return values[0], values[1], variant

    def _image_body(self):
        """The request's image (a Pillow image), read and checked."""
        from fastnn.data.images import ImageError, ImageTooLarge, read_image

        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "send the image with a Content-Length header")
        try:
            length = int(length)
        except ValueError:
            raise RequestError(400, f"Content-Length {length!r} is not a number") from None
        if length > MAX_BODY or length < 0:
            self.close_connection = True                   # the body is not read: the connection is done
            raise RequestError(413, f"the image is {length} bytes; the demo takes at most {MAX_BODY}")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise RequestError(408, f"the body stopped arriving: less than the {length} bytes declared, "
                                    f"nothing for {self.timeout:g} s") from None
        if self.headers.get_content_type() == "multipart/form-data":
            body = uploaded_file(self.headers.get("Content-Type", ""), body)
        try:
            return read_image(io.BytesIO(body), MAX_PIXELS)
        except ImageError as exc:
            raise RequestError(413 if isinstance(exc, ImageTooLarge) else 400,
                               f"the body is not an image the demo reads: {exc}") from None

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        routes = {"/": ("GET", self._page), "/index.html": ("GET", self._page),
                  "/classify": ("POST", self._classify), "/read": ("POST", self._read),
                  "/random": ("GET", self._random)}
        try:
            if url.path not in routes:
                raise RequestError(404, f"no such page {url.path!r}: the demo is at /")
            allowed, action = routes[url.path]
            if method != allowed and not (method == "HEAD" and allowed == "GET"):
                self._json(405, {"error": f"{method} is not allowed on {url.path}; use {allowed}"}, {"Allow": allowed})
                return
            action(parse_qs(url.query))
        except RequestError as exc:
            self._json(exc.status, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a request must never take the server down
            # the details go to the server's log, never to the client (they may name files or commands)
            sys.stderr.write(f"{self.address_string()} {self.command} {url.path}: {type(exc).__name__}: {exc}\n")
            self._json(500, {"error": "the server failed on this request (its log says why)"})

    def do_GET(self):  # noqa: N802 - http.server's names
        self._route("GET")

    def do_HEAD(self):  # noqa: N802
        self._route("HEAD")

    def do_POST(self):  # noqa: N802
        self._route("POST")

    def do_PUT(self):  # noqa: N802
        self._route("PUT")

    def do_DELETE(self):  # noqa: N802
        self._route("DELETE")

    def log_message(self, format, *args):  # noqa: A002 - errors only: a line per drawn stroke is noise
        if args and str(args[1] if len(args) > 1 else "").startswith(("4", "5")):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # --- the routes
    def _page(self, query) -> None:
        self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")

    def _classify(self, query) -> None:
        from PIL import Image

        from fastnn.data.images import BlankImage, ImageError, as_gray, preprocess

        dataset = self._dataset(query)
        noise, blur, variant = self._sliders(query)
        image = self._image_body()
        try:
            if noise or blur:                                                      # the robustness sliders
                image = Image.fromarray(np.rint(degrade(as_gray(image), noise, blur) * 255).astype(np.uint8))
            x = preprocess(image)                                                  # (784,) float32
        except BlankImage:
            self._json(200, {"blank": True, "dataset": dataset})
            return
        except ImageError as exc:
            raise RequestError(400, f"the image cannot be classified: {exc}") from None
        self._json(200, self._answer(dataset, x, variant))

    def _answer(self, dataset: str, x, variant: str) -> dict:
        try:
            return self.state.answer(dataset, x, variant)
        except FileNotFoundError:
            raise RequestError(400, f"no robust model ships for {dataset}; use model=standard") from None

    def _read(self, query) -> None:
        from fastnn.common.errors import UserError
        from fastnn.data.images import BlankImage, ImageError, as_gray

        dataset = self._dataset(query)
        noise, blur, variant = self._sliders(query)
        image = self._image_body()
        try:
            gray = degrade(as_gray(image), noise, blur)                              # (H, W) in [0, 1]
            self._json(200, self.state.read(dataset, gray, variant))
        except BlankImage:
            self._json(200, {"blank": True, "dataset": dataset})
        except ImageError as exc:
            raise RequestError(400, f"the image cannot be read as a number: {exc}") from None
        except FileNotFoundError:
            raise RequestError(400, f"no robust model ships for {dataset}; use model=standard") from None
        except UserError as exc:
            raise RequestError(400, str(exc)) from None

    def _random(self, query) -> None:
        from fastnn.data.datasets import DataError, DownloadError

        dataset = self._dataset(query)
        custom = self.state.model_path and self.state.model(dataset)
        if custom and custom.dataset != dataset:
            raise RequestError(400, f"this server's model was trained on {custom.dataset!r}, not {dataset}: "
                               + (f"ask /random?dataset={custom.dataset}" if custom.dataset in DATASETS
                                  else "it has no test set to draw from"))
        try:
            test = self.state.test_set(dataset)
        except (DataError, DownloadError, OSError) as exc:
            raise RequestError(503, f"no {dataset} test images here ({exc})") from None
        i = int(self.state.rng.integers(len(test)))
        x = test.images[i].reshape(-1).astype(np.float32) / 255                    # (784,)
        answer = self.state.answer(dataset, x)
        answer.update({"index": i, "label": answer["classes"][int(test.labels[i])]})
        self._json(200, answer)


def uploaded_file(content_type: str, body: bytes) -> bytes:
    """The file of a ``multipart/form-data`` body (RFC 7578): the part named ``file``, else the
    first part with a file name. Parsed by the standard library's ``email`` package.
    Raises RequestError (400) when there is no such part."""
    import email.parser
    import email.policy

    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    parts = [p for p in message.iter_parts()] if message.is_multipart() else []
    files = [p for p in parts if p.get_filename() is not None]
    named = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
    chosen = (named or files or [None])[0]
    if chosen is None:
        raise RequestError(400, "the form has no file field: send the image as -F file=@digit.png")
    return chosen.get_payload(decode=True) or b""


def make_server(host: str = "127.0.0.1", port: int = 8000, model_path=None, data_dir=None,
                seed: int = 0) -> ThreadingHTTPServer:
    """A server bound to (host, port) (port 0: any free port; ``server.server_address`` says
    which), not yet serving: call ``serve_forever()`` (a thread in tests)."""
    state = DemoState(model_path, data_dir, seed)
    if model_path:
        model = state.model("mnist")                       # a bad model file fails now, not per request
        if model.layer_sizes[0] != 28 * 28:
            raise ModelFileError(f"{model_path}: the model takes {model.layer_sizes[0]} inputs; the demo sends "
                                 f"28 x 28 = 784 pixels")
        if model.class_names is not None and len(model.class_names) != model.layer_sizes[-1]:
            raise ModelFileError(f"{model_path}: {len(model.class_names)} class names for {model.layer_sizes[-1]} "
                                 f"outputs")
        if model.class_names is None and model.layer_sizes[-1] != 10:
            raise ModelFileError(f"{model_path}: {model.layer_sizes[-1]} outputs and no class names to show")
    handler = type("DemoHandler", (Handler,), {"state": state})
    server_class = type("DemoServer", (ThreadingHTTPServer,), {"request_queue_size": BACKLOG,
                                                                "daemon_threads": True})
    return server_class((host, port), handler)


def serve(host: str, port: int, model_path=None, data_dir=None, seed: int = 0) -> None:
    """Serve until Ctrl-C (or SIGTERM)."""
    server = make_server(host, port, model_path, data_dir, seed)
    address, bound = server.server_address[:2]
    if not ipaddress.ip_address(address).is_loopback:
        print(f"warning: listening on {address}: anyone who can reach this machine on port {bound} can use the "
              f"demo (it has no login); --host 127.0.0.1 keeps it to this machine", file=sys.stderr, flush=True)
    print(f"fastnn demo on http://{address}:{bound}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
