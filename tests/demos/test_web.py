"""``python -m fastnn.demo --web``: the server's answers and bad requests (plain HTTP), and the
page in a real browser: Playwright drives Chromium, draws a 7 with mouse moves and reads the
prediction off the page. The browser test skips, with the reason, where Playwright or a
Chromium is missing (``.ci/run`` installs both). Set FASTNN_DEMO_SCREENSHOT=plots/demo_web.png to
keep the screenshot (that is how the README's was made)."""
from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from fastnn.demos.web import MAX_BODY, make_server

SEVEN = [[(70, 60), (130, 58), (190, 57), (215, 60)], [(215, 60), (190, 110), (165, 160), (145, 215), (135, 240)]]


@pytest.fixture(scope="module")
def server():
    srv = make_server("127.0.0.1", 0, data_dir=os.environ.get("FASTNN_DATA_DIR"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()


def call(url, data=None, method=None, headers=None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def png_of_a_one() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(image).line([(140, 40), (141, 240)], fill=255, width=22)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_page_is_self_contained(server):
    status, body = call(server + "/")
    assert status == 200
    page = body.decode()
    assert "<canvas" in page and "http://" not in page and "https://" not in page   # nothing fetched from elsewhere


def test_classify_answers_with_probabilities_and_the_input(server):
    status, body = call(server + "/classify?dataset=mnist", data=png_of_a_one(), method="POST")
    answer = json.loads(body)
    assert status == 200 and answer["prediction"] == "1"
    assert len(answer["probs"]) == 10 and abs(sum(answer["probs"]) - 1) < 1e-3 and len(answer["input"]) == 784
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("L", (280, 280), 0).save(blank, format="PNG")
    status, body = call(server + "/classify", data=blank.getvalue(), method="POST")
    assert status == 200 and json.loads(body)["blank"] is True


def multipart(fields: dict) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, as curl -F makes them."""
    boundary = "----fastnn-test-boundary"
    body = b""
    for name, value in fields.items():
        filename = f'; filename="{name}.png"' if isinstance(value, bytes) else ""
        data = value if isinstance(value, bytes) else value.encode()
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n"
                 + ("Content-Type: image/png\r\n" if filename else "") + "\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_classify_takes_a_form_upload(server):
    """curl -F file=@digit.png: the file field of a multipart/form-data body."""
    body, content_type = multipart({"note": "a one", "file": png_of_a_one()})
    status, answer = call(server + "/classify", data=body, method="POST", headers={"Content-Type": content_type})
    assert status == 200 and json.loads(answer)["prediction"] == "1"
    body, content_type = multipart({"note": "no file"})
    status, answer = call(server + "/classify", data=body, method="POST", headers={"Content-Type": content_type})
    assert status == 400 and "no file field" in json.loads(answer)["error"]


@pytest.mark.parametrize("path,kwargs,status,message", [
    ("/nope", {}, 404, "no such page"),
    ("/", {"method": "PUT", "data": b"x"}, 405, "PUT is not allowed"),
    ("/classify", {}, 405, "GET is not allowed on /classify"),
    ("/classify", {"method": "POST", "data": b"not an image"}, 400, "not an image"),
    ("/classify?dataset=cifar", {"method": "POST", "data": b"x"}, 400, "unknown dataset 'cifar'"),
    ("/classify?noise=2", {"method": "POST", "data": b"x"}, 400, "noise must be in [0, 1]"),
    ("/read?blur=abc", {"method": "POST", "data": b"x"}, 400, "blur='abc' is not a number"),
    ("/read?model=huge", {"method": "POST", "data": b"x"}, 400, "unknown model 'huge'"),
    ("/read", {}, 405, "GET is not allowed on /read"),
    ("/classify", {"method": "POST", "data": b"x" * 16, "headers": {"Content-Length": str(MAX_BODY + 1)}}, 413,
     "at most"),
])
def test_bad_requests_get_a_4xx_and_the_server_goes_on(server, path, kwargs, status, message):
    got, body = call(server + path, **kwargs)
    assert got == status and message in json.loads(body)["error"]
    assert call(server + "/")[0] == 200                      # still serving


def png_of_a_number(text="47", size=(360, 140)) -> bytes:
    """The number drawn in DejaVu Sans, white on black, as PNG."""
    import io

    import numpy as np
    from PIL import Image

    from fastnn.data.numbers import number_fonts, render_number

    gray = 1.0 - render_number(text, number_fonts()[0], size=96)
    buf = io.BytesIO()
    Image.fromarray((gray * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_read_answers_a_number_with_boxes_and_inputs(server):
    status, body = call(server + "/read", data=png_of_a_number("47"), method="POST",
                        headers={"Content-Type": "image/png"})
    answer = json.loads(body)
    assert status == 200 and answer["number"] == "47" and 0 < answer["confidence"] <= 1
    assert [d["label"] for d in answer["digits"]] == ["4", "7"]
    assert all(len(d["input"]) == 784 and len(d["box"]) == 4 for d in answer["digits"])
    left, right = answer["digits"][0]["box"][1], answer["digits"][1]["box"][1]
    assert 0 <= left < right < answer["width"]


def test_the_sliders_change_what_the_network_sees(server):
    png = png_of_a_one()
    plain = json.loads(call(server + "/classify", data=png, method="POST")[1])
    noisy = json.loads(call(server + "/classify?noise=0.4&blur=3", data=png, method="POST")[1])
    again = json.loads(call(server + "/classify?noise=0.4&blur=3", data=png, method="POST")[1])
    assert noisy["input"] != plain["input"] and noisy["input"] == again["input"]     # seeded: no flicker
    robust = json.loads(call(server + "/classify?noise=0.4&blur=3&model=robust", data=png, method="POST")[1])
    assert robust["prediction"] == "1"
    status, body = call(server + "/classify?dataset=fashion-mnist&model=robust", data=png, method="POST")
    assert status == 400 and "no robust model ships for fashion-mnist" in json.loads(body)["error"]


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_drawing_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception:  # noqa: BLE001 - no browser here: skip with the reason
            pytest.skip("no Chromium for Playwright to drive: apt-get install chromium")
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            page.goto(server + "/")
            box = page.locator("#draw").bounding_box()
            for stroke in SEVEN:
                page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
                page.mouse.up()
            page.wait_for_function("document.getElementById('prediction').dataset.label !== ''")
            page.wait_for_timeout(800)                       # the last stroke's answer
            assert page.locator("#prediction").get_attribute("data-label") == "7"
            assert page.locator("#status").inner_text() == ""
            shot = tmp_path / "demo_web.png"
            page.screenshot(path=str(shot))
            assert shot.read_bytes()[:4] == b"\x89PNG"
            if os.environ.get("FASTNN_DEMO_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["FASTNN_DEMO_SCREENSHOT"])
            page.click("#clear")
            assert page.locator("#prediction").get_attribute("data-label") == ""
            # a number: the wide canvas, two digits drawn, read with boxes; then noise from the slider
            page.select_option("#mode", "number")
            box = page.locator("#draw").bounding_box()
            assert box["width"] > 2 * box["height"]
            for dx in (40, 300):                                   # a 7, then another 7 to its right
                for stroke in SEVEN:
                    page.mouse.move(box["x"] + dx + stroke[0][0] * 0.7, box["y"] + stroke[0][1] * 0.7)
                    page.mouse.down()
                    for x, y in stroke[1:]:
                        page.mouse.move(box["x"] + dx + x * 0.7, box["y"] + y * 0.7, steps=6)
                    page.mouse.up()
            page.wait_for_timeout(800)
            page.wait_for_function("document.getElementById('prediction').dataset.label.length === 2")
            assert page.locator("#prediction").get_attribute("data-label") == "77"
            assert page.locator("#digits canvas").count() == 2
            page.locator("#noise").fill("0.3")                     # the slider: the same drawing, noisier
            page.wait_for_timeout(800)
            assert page.locator("#noise-value").inner_text() == "0.3"
            assert page.locator("#status").inner_text() == ""
            assert len(page.locator("#prediction").get_attribute("data-label")) >= 1
            if os.environ.get("FASTNN_DEMO_SCREENSHOT"):
                page.screenshot(path=os.environ["FASTNN_DEMO_SCREENSHOT"].replace(".png", "_number.png"))
        finally:
            browser.close()


# ---------------------------------------------------------------- hostile input and load
def test_only_the_listed_formats_are_decoded(server):
    """An EPS upload would make Pillow run Ghostscript on it: the demo decodes only
    fastnn.data.images.IMAGE_FORMATS, so it is a 400 that names no program."""
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 0 0 moveto 28 28 lineto stroke\n"
           b"showpage\n%%EOF\n")
    status, body = call(server + "/classify", data=eps, method="POST")
    error = json.loads(body)["error"]
    assert status == 400 and "not a readable image" in error and "gs" not in error.split()


def test_a_colour_mode_without_gray_is_a_400(server):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("LAB", (28, 28), (50, 10, 10)).save(buf, format="TIFF")
    status, body = call(server + "/classify", data=buf.getvalue(), method="POST")
    assert status == 400 and "cannot read the LAB colour mode" in json.loads(body)["error"]
    assert call(server + "/")[0] == 200


def test_a_model_the_demo_cannot_feed_is_refused_at_start(tmp_path):
    from fastnn import NeuralNetwork
    from fastnn.model.file_format import ModelFileError

    NeuralNetwork([100, 8, 10]).save(tmp_path / "small.npz")
    with pytest.raises(ModelFileError, match="takes 100 inputs; the demo sends 28 x 28 = 784"):
        make_server("127.0.0.1", 0, model_path=tmp_path / "small.npz")


def test_random_refuses_a_dataset_the_custom_model_was_not_trained_on(tmp_path):
    from fastnn import NeuralNetwork

    model = NeuralNetwork([784, 8, 10])
    model.dataset = "fashion-mnist"
    model.save(tmp_path / "fashion.npz")
    srv = make_server("127.0.0.1", 0, model_path=tmp_path / "fashion.npz")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        status, body = call(url + "/random?dataset=mnist")
        assert status == 400 and "trained on 'fashion-mnist'" in json.loads(body)["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_listening_beyond_this_machine_is_said(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "fastnn.demo", "--web", "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_client_that_stalls_loses_its_connection_and_others_are_served(monkeypatch):
    """More body declared than sent, or nothing sent at all: the connection is closed after the
    socket timeout (here 0.5 s instead of 10) and the server goes on."""
    import socket
    import time

    from fastnn.demos import web as demo_web

    monkeypatch.setattr(demo_web.Handler, "timeout", 0.5)
    srv = make_server("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        silent = socket.create_connection(("127.0.0.1", port))      # says nothing at all
        t0 = time.monotonic()
        stalled.settimeout(10)
        silent.settimeout(10)
        answer = b""
        while chunk := stalled.recv(4096):                                    # until the server closes it
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 408") and b"the body stopped arriving" in answer
        assert silent.recv(1024) == b""                                       # closed by the server
        assert time.monotonic() - t0 < 5
        assert call(f"http://127.0.0.1:{port}/")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_load_200_requests_from_50_clients_at_once(server):
    """Every request answered (socketserver's default backlog of 5 reset most of them); the
    latencies are printed (pytest -s shows them)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    image = png_of_a_one()

    def one(_):
        t0 = time.perf_counter()
        status, body = call(server + "/classify", data=image, method="POST")
        return status, json.loads(body).get("prediction"), time.perf_counter() - t0

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(200)))
    assert [s for s, _, _ in results] == [200] * 200 and {p for _, p, _ in results} == {"1"}
    times = sorted(t for _, _, t in results)
    print(f"200 requests from 50 clients: p50 {1e3 * times[99]:.1f} ms, p99 {1e3 * times[197]:.1f} ms")
