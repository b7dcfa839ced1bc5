"""serve/static/: the chat page in a real headless Chromium (Debian's package) driven by Playwright.

The server behind it is real (uvicorn on 127.0.0.1) with the scripted model, whose reply is known,
and all 16 personas of seeds/. Without Playwright or /usr/bin/chromium this test is skipped, saying
why (`.ci/run` installs both).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.app import create_app
from serve.local import LocalBackend
from serve.server import BackgroundServer
from tests.helpers import scripted_chat_model
from train.config import TrainConfig
from train.personas import seed_personas

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REPLY = "오늘 날씨가 좋네요."
ASSISTANT_DONE = ".msg.assistant:not(.streaming)"


@pytest.fixture(scope="module")
def backend():
    """The scripted model (always REPLY) in the in-process backend."""
    model, tok, tokens, _, _ = scripted_chat_model(REPLY, "당신은 ENFP 성향의 대화 상대입니다.")
    defaults = TrainConfig(model="unused", dataset="unused", optim="adamw_torch", temperature=0.0, max_new_tokens=30)
    return LocalBackend(model, tok, tokens, defaults)


@pytest.fixture(scope="module")
def server(backend):
    """A real server with all 16 personas of seeds/."""
    from datagen.schema import MBTI_TYPES

    found = seed_personas()
    with BackgroundServer(create_app(backend, {t: found[t] for t in MBTI_TYPES})) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; `make install` does): no browser test")
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM} (Debian: apt-get install -y chromium; .ci/run does): no browser test")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page (its own context: nothing kept from another test) showing the 16 cards."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(server.url + "/")
    page.wait_for_selector(".card >> nth=15")
    yield page
    context.close()


def log_texts(page) -> list[tuple[str, str]]:
    """The conversation shown: (role, text) per bubble."""
    return [(b.get_attribute("class").split()[1], b.inner_text()) for b in page.query_selector_all("#log .msg")]


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_pick_a_persona_chat_switch_and_come_back(page, server):
    cards = page.query_selector_all(".card")
    assert [c.query_selector(".code").inner_text() for c in cards][:2] == ["ISTJ", "ISFJ"] and len(cards) == 16
    enfp = seed_personas()["ENFP"]
    card = page.locator(".card[data-model='mbti-enfp']")
    assert card.locator(".nick").inner_text() == enfp.nickname
    assert "진단이 아니에요" in page.inner_text("#disclaimer")
    assert page.is_disabled("#input")  # nothing to send to yet

    card.click()
    assert card.get_attribute("aria-pressed") == "true"
    assert page.inner_text("#current") == f"ENFP{enfp.nickname}" and enfp.summary in page.inner_text("#log")
    with page.expect_request("**/v1/chat/completions") as first:
        send(page, "안녕하세요")
    assert first.value.post_data_json == {"model": "mbti-enfp", "stream": True,
                                          "messages": [{"role": "user", "content": "안녕하세요"}]}
    page.wait_for_selector(ASSISTANT_DONE)
    assert log_texts(page) == [("user", "안녕하세요"), ("assistant", REPLY)]
    assert int(page.get_attribute(ASSISTANT_DONE, "data-chunks")) >= 3  # it came in pieces, as streamed

    page.fill("#input", "첫 줄")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("둘째 줄")
    assert page.input_value("#input") == "첫 줄\n둘째 줄" and len(log_texts(page)) == 2  # a new line, not sent

    page.click(".card[data-model='mbti-istj']")
    assert page.inner_text("#current").startswith("ISTJ") and log_texts(page) == []
    send(page, "반가워요")
    page.wait_for_selector(ASSISTANT_DONE)
    assert log_texts(page) == [("user", "반가워요"), ("assistant", REPLY)]

    page.click(".card[data-model='mbti-enfp']")
    assert log_texts(page) == [("user", "안녕하세요"), ("assistant", REPLY)]  # ENFP's history, intact
    with page.expect_request("**/v1/chat/completions") as second:
        send(page, "또 왔어요")
    assert second.value.post_data_json["messages"] == [
        {"role": "user", "content": "안녕하세요"}, {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "또 왔어요"}]
    page.wait_for_selector(f"#log .msg:nth-child(4){ASSISTANT_DONE}")

    page.click("#new-chat")
    assert log_texts(page) == []
    page.click(".card[data-model='mbti-istj']")
    assert log_texts(page) == [("user", "반가워요"), ("assistant", REPLY)]


@pytest.mark.parametrize("fault, message", [
    ("busy", "지금은 요청이 많아요. 잠시 후 다시 보내 주세요."),
    ("upstream", "모델 서버가 응답하지 않아요. 잠시 후 다시 보내 주세요."),
    ("down", "서버에 연결할 수 없어요. 서버가 켜져 있는지 확인한 뒤 다시 보내 주세요."),
], ids=["busy", "upstream-down", "server-down"])
def test_a_busy_or_missing_backend_is_said_in_plain_korean(page, fault, message):
    def answer(route):
        if fault == "down":
            return route.abort("connectionrefused")
        status, code = (503, "server_busy") if fault == "busy" else (502, "upstream_unavailable")
        route.fulfill(status=status, content_type="application/json",
                      body='{"error": {"message": "x", "type": "server_error", "param": null, "code": "%s"}}' % code)

    page.route("**/v1/chat/completions", answer)
    page.click(".card[data-model='mbti-enfp']")
    send(page, "안녕하세요")
    page.wait_for_selector(".msg.notice")
    assert log_texts(page) == [("notice", message)]
    assert page.input_value("#input") == "안녕하세요"  # taken back, ready to send again
    page.unroute("**/v1/chat/completions")
    page.press("#input", "Enter")
    page.wait_for_selector(ASSISTANT_DONE)
    assert log_texts(page) == [("user", "안녕하세요"), ("assistant", REPLY)]  # and the notice is gone


def test_control_text_in_a_message_is_explained_in_korean_and_the_message_given_back(page):
    page.click(".card[data-model='mbti-enfp']")
    send(page, "안녕<|eot_id|>")  # the real server refuses it (400, code control_text)
    page.wait_for_selector(".msg.notice")
    assert log_texts(page) == [("notice", "메시지에 모델이 제어 기호로 읽는 글자(예: <|eot_id|>)가 들어 있어요. "
                                          "그 부분을 지우고 다시 보내 주세요.")]
    assert page.input_value("#input") == "안녕<|eot_id|>"


def test_the_page_fits_a_phone(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.click(".card[data-model='mbti-enfp']")
    send(page, "안녕하세요")
    page.wait_for_selector(ASSISTANT_DONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    for selector in ("#input", "#send", "#new-chat", ".card[data-model='mbti-enfp']", ASSISTANT_DONE):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector


def test_with_an_api_key_the_page_asks_for_it_once(browser, backend):
    from serve.config import ServeConfig

    personas = {"ENFP": seed_personas()["ENFP"]}
    own = LocalBackend(backend.model, backend.tokenizer, backend.tokens, backend.defaults)  # the app closes its own
    with BackgroundServer(create_app(own, personas, ServeConfig(api_key="sk-page-42"))) as keyed:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(keyed.url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.inner_text("#cards-status") == "이 서버는 API 키가 필요해요. 키를 입력해 주세요."
        page.fill("#key-input", "sk-page-42")
        page.press("#key-input", "Enter")
        page.wait_for_selector(".card[data-model='mbti-enfp']")
        assert page.is_hidden("#key-form")
        page.click(".card[data-model='mbti-enfp']")
        send(page, "안녕하세요")
        page.wait_for_selector(ASSISTANT_DONE)
        assert log_texts(page) == [("user", "안녕하세요"), ("assistant", REPLY)]
        context.close()
