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

from fastnn.demo_web import MAX_BODY, make_server

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
    ("/classify", {"method": "POST", "data": b"x" * 16, "headers": {"Content-Length": str(MAX_BODY + 1)}}, 413,
     "at most"),
])
def test_bad_requests_get_a_4xx_and_the_server_goes_on(server, path, kwargs, status, message):
    got, body = call(server + path, **kwargs)
    assert got == status and message in json.loads(body)["error"]
    assert call(server + "/")[0] == 200                      # still serving


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
        finally:
            browser.close()
