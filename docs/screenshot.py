"""Take the README's screenshots of the chat page: docs/serve-page.png (desktop) and docs/serve-page-phone.png.

    python docs/screenshot.py

The page is served by the real app; the persona cards are the 16 of seeds/; the reply comes from the
scripted OpenAI-compatible test server (tests/llm_server.py) behind `--upstream`, so the picture shows
a sensible Korean answer without a trained model. Needs playwright and Debian's /usr/bin/chromium (and
a Korean font, e.g. `apt-get install fonts-nanum`, or the text shows as boxes).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datagen.schema import MBTI_TYPES  # noqa: E402
from serve.app import create_app  # noqa: E402
from serve.server import BackgroundServer  # noqa: E402
from serve.upstream import UpstreamBackend  # noqa: E402
from tests.llm_server import LLMServer, Reply  # noqa: E402
from train.personas import seed_personas  # noqa: E402

QUESTION = "요즘 일이 너무 많아서 지쳤어요. 이번 주말에는 어떻게 쉬면 좋을까요?"
ANSWER = ("헉, 한 주 내내 달리느라 진짜 고생 많았어요! 이번 주말은 아무 계획 없이 쉬는 날로 정해 보는 건 어때요? "
          "늦잠 푹 자고, 끌리는 동네 카페 하나만 골라서 슬렁슬렁 걸어가 보는 거예요. 생각만 해도 벌써 좀 가벼워지지 않아요?")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    found = seed_personas()
    personas = {t: found[t] for t in MBTI_TYPES if t in found}
    with LLMServer(default=lambda body, n: Reply(content=ANSWER)) as upstream:
        app = create_app(UpstreamBackend(upstream.base_url, "scripted"), personas)
        with BackgroundServer(app) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for name, viewport in (("serve-page.png", {"width": 1280, "height": 800}),
                                   ("serve-page-phone.png", {"width": 390, "height": 844})):
                page = browser.new_page(viewport=viewport, device_scale_factor=1 if viewport["width"] > 800 else 2)
                page.goto(server.url + "/")
                page.click(".card[data-model='mbti-enfp']")
                page.fill("#input", QUESTION)
                page.press("#input", "Enter")
                page.wait_for_selector(".msg.assistant:not(.streaming)")
                page.fill("#input", "카페 추천도 해 줄 수 있어요?")
                page.screenshot(path=str(ROOT / "docs" / name))
                print(f"wrote docs/{name}")
            browser.close()


if __name__ == "__main__":
    main()
