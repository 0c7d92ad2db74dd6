"""The chat page: served from the package, nothing from elsewhere; and in a real headless Chromium against a
server on the demo model, a picture attached, a question asked, the answer streamed in and its box drawn.

The demo model is untrained here (training it takes minutes), so the tokens of its answer are scripted the way
a trained one answers (``<ref>the red circle</ref><box>...</box>`` at the circle's place): the page, the API, the
streaming and the box drawing are what is tested. ``QWENVL_TRAIN_SCREENSHOT=PATH`` saves the page as PNG (how
docs/serve-chat.png was made).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import httpx
import pytest

from browser_cdp import Browser, find_chromium
from serve_fixtures import running_server

STATIC = Path(__file__).resolve().parents[1] / "src" / "qwenvl_train" / "serve" / "static"

#: A picture drawn on a canvas and pasted into the question box, as a user pasting a screenshot.
PASTE_A_PICTURE = """
new Promise((resolve) => {
  const canvas = document.createElement('canvas');
  canvas.width = 120; canvas.height = 90;
  const g = canvas.getContext('2d');
  g.fillStyle = '#eeeeee'; g.fillRect(0, 0, 120, 90); g.fillStyle = '#2040e0'; g.fillRect(30, 20, 40, 40);
  canvas.toBlob((blob) => {
    const data = new DataTransfer();
    data.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
    const event = new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
    document.getElementById('question').dispatchEvent(event);
    resolve(true);
  }, 'image/png');
})
"""


def recording(submit, sent: list):
    def record(self, job) -> None:
        sent.append(job)
        submit(self, job)

    return record


def test_page_and_its_files_are_served_and_fetch_nothing_from_elsewhere(tiny_model_dir: Path) -> None:
    from qwenvl_train.inference.loading import load_for_inference

    for path in STATIC.iterdir():
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), (
            f"{path.name} links out"
        )
    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")
    with running_server(model, tokenizer) as url:
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for name in ("chat.js", "chat.css"):
            assert httpx.get(f"{url}/static/{name}", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwenvl_train.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("demo") / "model", seed=0, preset="demo")


def test_chat_page_in_chromium(demo_model: Path, tmp_path: Path, monkeypatch) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium: install Debian's `chromium` (apt-get install chromium) to run the page test"
        )
    from qwenvl_train.demo.data import BACKGROUNDS, Shape, draw_shape, grounding_answer
    from qwenvl_train.format import tokens as st
    from qwenvl_train.format.render import encode_markup
    from qwenvl_train.inference.loading import load_for_inference
    from qwenvl_train.serve import batcher

    random.seed(0)
    shape = Shape("red", "circle", 62, 118, 162, 218)
    picture = tmp_path / "demo_circle.png"
    draw_shape(shape, BACKGROUNDS[0]).save(picture)
    model, tokenizer = load_for_inference(str(demo_model), device="cpu")
    answer = grounding_answer(shape, chinese=False)
    script, _ = encode_markup(tokenizer, answer, model.config.n_queries)
    steps: dict[int, tuple[object, int]] = {}  # the sampling kept alive: its id is not reused

    def scripted(logits, sampling, seen) -> int:  # the model runs; its choices are the trained answer's
        step = steps.get(id(sampling), (sampling, 0))[1]
        steps[id(sampling)] = (sampling, step + 1)
        return script[step] if step < len(script) else st.IM_END_ID

    monkeypatch.setattr(batcher, "pick", scripted)
    browser = None
    with running_server(model, tokenizer, name="demo") as url:
        try:
            browser = Browser(binary, tmp_path / "profile")
            browser.navigate(f"{url}/")
            assert browser.wait_for("document.getElementById('model').textContent") == "demo"
            browser.set_files("#files", [str(picture)])
            browser.wait_for("document.querySelectorAll('#attachments img').length === 1")
            browser.evaluate(
                "document.getElementById('question').value = 'Where is the red circle?';"
                "document.getElementById('send').click(); true"
            )
            browser.wait_for("document.querySelector('.msg.assistant[data-done]') !== null", timeout=60)
            text = browser.evaluate("document.querySelector('.msg.assistant .answer').textContent")
            assert text == answer
            boxes = browser.evaluate(
                "[...document.querySelectorAll('.figure .box')].map(b => ({ref: b.dataset.ref, "
                "left: b.style.left, top: b.style.top, label: b.textContent}))"
            )
            x1, y1, _, _ = shape.box()
            assert boxes == [
                {
                    "ref": "the red circle",
                    "left": f"{x1 / 10:g}%",
                    "top": f"{y1 / 10:g}%",
                    "label": "the red circle",
                }
            ]
            assert browser.evaluate("document.querySelectorAll('.msg.user .thumbs img').length") == 1
            screenshot = os.environ.get("QWENVL_TRAIN_SCREENSHOT")
            if screenshot:
                browser.screenshot(Path(screenshot))
            # A second turn with a pasted picture: it is Picture 2, the history goes with the question.
            sent: list[dict] = []
            monkeypatch.setattr(batcher.Batcher, "submit", recording(batcher.Batcher.submit, sent))
            browser.evaluate(PASTE_A_PICTURE)
            browser.wait_for("document.querySelectorAll('#attachments img').length === 1")
            browser.evaluate(
                "document.getElementById('question').value = 'And now?';"
                "document.getElementById('send').click(); true"
            )
            browser.wait_for(
                "document.querySelectorAll('.msg.assistant[data-done]').length === 2", timeout=60
            )
            captions = browser.evaluate(
                "[...document.querySelectorAll('.thumbs figcaption')].map(c => c.textContent)"
            )
            assert captions == ["Picture 1", "Picture 2"]
            assert browser.evaluate("document.querySelectorAll('.figure .box').length") == 2
            (job,) = sent
            assert job.pixels is not None and job.pixels.shape[0] == 2  # both pictures: the history was sent
            browser.evaluate("document.getElementById('reset').click(); true")
            assert browser.evaluate("document.querySelectorAll('#log .msg').length") == 0
        finally:
            if browser is not None:
                browser.close()
