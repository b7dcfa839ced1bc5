"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

Tests drive the real `openai` SDK against it, so retries, timeouts, headers and JSON
bodies travel over a real socket. Every `POST /v1/chat/completions` takes the next
scripted `Reply` from a queue; when the queue is empty it calls `default(body, n)` (n is
the request's 0-based number), so a test can script the first few answers and let a
function answer the rest:

    with LLMServer(default=dialogue_factory(per_reply=2)) as server:
        server.push(rate_limited(retry_after=0.05), server_error(), malformed())
        ...  # point OPENAI_BASE_URL / --base-url at server.base_url
        assert server.completions == 5

A request with `"stream": true` gets the same content as server-sent events (`stream_events`).

Faults: `rate_limited` (429 + Retry-After or retry-after-ms), `server_error` (5xx),
`slow` (answers after a delay: a timeout when the client gives up first), `malformed`
(content that is not JSON), `truncated` (finish_reason "length"), `refused`,
`garbage_body` (an HTTP 200 whose body is not JSON), `reject_formats` (400 for a
`response_format` type the server "does not support"). Every request is recorded
(`server.requests`) with its parsed body, so a test can count what was sent.

Run it alone for a benchmark or a manual check:
    python tests/llm_server.py --latency 0.2 --per-reply 1
prints `http://127.0.0.1:PORT/v1` and serves until killed. With `--judge` it plays the persona judge
(`judge_factory`: valid answers to datagen/judge.py's two requests; `--guess ENFP` fixes the guessed
type, else it is picked from a hash of the judged turns) and answers any other request with one Korean
chat reply, so `python -m train eval --judge-base-url URL` (and `--reference-base-url URL`) run offline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

# --- replies ----------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer. With `body` None, a chat completion is built from `content`."""

    status: int = 200
    content: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    body: Any = None
    """A dict is sent as JSON, a str as-is (to send a broken body); None builds a completion."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (on top of the server's latency)."""
    usage: dict[str, int] | None = None
    """None: prompt_tokens = characters of the prompt, completion_tokens = characters of the content."""


def completion_body(model: str, content: str | None, finish_reason: str = "stop", refusal: str | None = None,
                    usage: dict[str, int] | None = None, n: int = 0) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-test-{n}", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": usage,
    }


def stream_events(model: str, content: str, finish_reason: str = "stop", usage: dict[str, int] | None = None,
                  n: int = 0, piece: int = 3) -> str:
    """A `stream: true` answer as OpenAI frames it: a role chunk, `content` in pieces of `piece` characters,
    the finish chunk, a usage chunk when asked for (`stream_options.include_usage`), then `data: [DONE]`."""
    def event(delta: dict[str, str] | None, finish: str | None = None, **extra: Any) -> str:
        obj = {"id": f"chatcmpl-test-{n}", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
               "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                     "finish_reason": finish}], **extra}
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": content[i:i + piece]}) for i in range(0, len(content), piece)]
    out.append(event({}, finish_reason))
    if usage is not None:
        out.append(event(None, usage=usage))
    return "".join(out) + "data: [DONE]\n\n"


def dialogues_reply(dialogues: list[dict[str, Any]], **kw: Any) -> Reply:
    """A well-formed answer in the generate contract: {"dialogues": [...]}."""
    return Reply(content=json.dumps({"dialogues": dialogues}, ensure_ascii=False), **kw)


def rate_limited(retry_after: float = 0.05, ms: bool = False) -> Reply:
    """HTTP 429 with `retry-after` (seconds) or `retry-after-ms`."""
    header = {"retry-after-ms": str(int(retry_after * 1000))} if ms else {"retry-after": f"{retry_after:g}"}
    return Reply(status=429, headers=header,
                 body={"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})


def server_error(status: int = 500) -> Reply:
    return Reply(status=status, body={"error": {"message": "The server had an error", "type": "server_error"}})


def auth_error() -> Reply:
    return Reply(status=401, body={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                             "code": "invalid_api_key"}})


def slow(delay: float, reply: Reply | None = None) -> Reply:
    """Answer after `delay` seconds; with a client timeout below it, the client sees a timeout."""
    r = reply or Reply(content='{"dialogues": []}')
    r.delay = delay
    return r


def malformed(text: str = '{"dialogues": [{"topic": "이직 고민", "messages": [{"role": "user", "content": "음') -> Reply:
    """A completion whose content is not valid JSON."""
    return Reply(content=text)


def truncated(text: str = '{"dialogues": [{"topic": "이직 고민", "messages": [') -> Reply:
    """A completion cut off by max_tokens (finish_reason "length")."""
    return Reply(content=text, finish_reason="length")


def refused(text: str = "죄송하지만 그 요청은 도와드릴 수 없어요.") -> Reply:
    return Reply(content=None, refusal=text)


def garbage_body() -> Reply:
    """HTTP 200 whose body is not JSON (a broken proxy)."""
    return Reply(body="<html>bad gateway</html>")


# --- Korean dialogues -------------------------------------------------------------------------
# Whole hand-written lines, never slot-filled (slot filling breaks particles: "축가은").
# A dialogue draws its user and assistant lines from these banks without replacement, so two
# dialogues rarely share more than a line or two: far below the near-duplicate threshold.

USER_LINES = [
    "요즘 퇴근하고 나면 아무것도 하기 싫어서 그냥 누워만 있어요.",
    "이번 주 금요일에 팀 발표가 있는데 아직 자료를 반도 못 만들었어요.",
    "친구가 내 생일을 까먹었는데 말하기도 애매하고 좀 서운하네요.",
    "이사 갈 집을 두 군데 봤는데 하나는 역이 가깝고 하나는 방이 넓어요.",
    "동생이 자꾸 내 옷을 말도 없이 빌려 가요.",
    "다음 달부터 헬스를 다시 시작하려는데 작심삼일이 될까 봐 걱정이에요.",
    "어제 회의에서 말실수를 한 것 같아서 계속 마음에 걸려요.",
    "부모님이 명절에 언제 오냐고 벌써 세 번째 물어보셨어요.",
    "월급날만 지나면 통장이 금방 비어서 속상해요.",
    "고양이를 입양할까 고민 중인데 혼자 사는 게 괜찮을지 모르겠어요.",
    "윗집에서 밤마다 쿵쿵거리는 소리가 나서 잠을 설쳐요.",
    "중고로 산 자전거가 일주일 만에 체인이 빠졌어요.",
    "대학원에 가고 싶은데 지금 직장을 그만두기가 겁나요.",
    "소개팅 상대한테 답장이 하루째 없어요.",
    "주말에 혼자 바다 보러 갈까 하는데 좀 청승맞아 보일까요?",
    "룸메이트가 설거지를 며칠째 쌓아 두고 있어요.",
    "자격증 시험이 한 달 남았는데 기출문제를 하나도 못 풀었어요.",
    "오랜만에 동창 모임에 나갔는데 다들 너무 잘 사는 것 같아서 기분이 이상했어요.",
    "팀장님이 갑자기 제 일정을 바꾸라고 하셨어요.",
    "할머니 생신 선물로 뭘 사야 할지 모르겠어요.",
    "새벽까지 휴대폰 보다가 잠들어서 아침마다 너무 피곤해요.",
    "친구 결혼식 축사를 부탁받았는데 글솜씨가 없어서 막막해요.",
    "운전 연수를 받는데 주차만 하면 손에 땀이 나요.",
    "회사 동기가 저보다 먼저 승진했어요.",
    "다이어트 중인데 야식 생각이 자꾸 나요.",
    "여행 가려고 모아 둔 돈을 다른 데 써 버렸어요.",
    "새로 들어간 독서 모임에서 아직 아무랑도 못 친해졌어요.",
    "강아지가 나이가 들어서 요즘 산책을 힘들어해요.",
    "전세 계약이 끝나 가는데 집주인이 보증금을 올려 달래요.",
    "오늘 면접을 봤는데 대답을 제대로 못 한 것 같아요.",
    "친한 친구한테 돈을 빌려줬는데 갚을 생각을 안 하는 것 같아요.",
    "요리를 배워 보고 싶은데 뭐부터 해야 할지 모르겠어요.",
    "퇴사하고 석 달째 쉬고 있는데 슬슬 불안해지네요.",
    "엄마랑 통화만 하면 결국 잔소리로 끝나요.",
    "베란다에서 키우던 방울토마토가 다 시들었어요.",
    "연휴에 뭘 할지 계획을 하나도 안 세웠어요.",
    "후배가 실수한 걸 제가 대신 수습했는데 고맙다는 말도 없어요.",
    "요즘 들어 사람 만나는 게 좀 귀찮아졌어요.",
    "충동적으로 비싼 가방을 샀는데 벌써 후회돼요.",
    "내일 처음으로 출근하는 날이라 잠이 안 와요.",
]

# (존댓말, 반말) versions of each assistant line.
ASSISTANT_LINES = [
    ("그럴 때는 억지로 뭘 하려고 하기보다 오늘 하루 버틴 것부터 인정해 주세요.",
     "그럴 땐 억지로 뭘 하려고 하지 말고 오늘 하루 버틴 것부터 인정해 줘."),
    ("마감이 언제인지부터 같이 정리해 봐요. 제일 급한 것 하나만 오늘 끝내도 훨씬 가벼워질 거예요.",
     "마감이 언제인지부터 같이 정리해 보자. 제일 급한 거 하나만 오늘 끝내도 훨씬 가벼워질 거야."),
    ("서운한 마음은 말하지 않으면 쌓이기만 하더라고요. 가볍게 농담처럼 꺼내 보는 건 어때요?",
     "서운한 건 말 안 하면 쌓이기만 하더라. 가볍게 농담처럼 꺼내 보는 건 어때?"),
    ("매일 드는 시간을 생각해 보면 답이 조금 보일 거예요. 출퇴근에 몇 분이 더 걸리는지 재 보셨어요?",
     "매일 드는 시간을 생각해 보면 답이 좀 보일 거야. 출퇴근에 몇 분 더 걸리는지 재 봤어?"),
    ("그건 서운할 만해요. 빌려 가기 전에 한 번만 물어봐 달라고 딱 정해 두는 게 좋겠어요.",
     "그건 서운할 만하지. 빌려 가기 전에 한 번만 물어봐 달라고 딱 정해 두자."),
    ("처음부터 매일 가겠다고 하면 지치기 쉬워요. 일주일에 두 번만 목표로 잡아 보세요.",
     "처음부터 매일 가겠다고 하면 금방 지쳐. 일주일에 두 번만 목표로 잡아 봐."),
    ("생각보다 다른 사람들은 그 말을 기억 못 할 가능성이 커요. 그래도 신경 쓰이면 짧게 한마디 덧붙이면 돼요.",
     "생각보다 다른 사람들은 그 말 기억도 못 할걸. 그래도 신경 쓰이면 짧게 한마디 덧붙이면 돼."),
    ("날짜를 먼저 정해서 말씀드리면 질문이 줄어들 거예요. 부모님도 궁금하셔서 그러시는 거예요.",
     "날짜를 먼저 정해서 말씀드리면 질문이 줄어들 거야. 부모님도 궁금하셔서 그러시는 거야."),
    ("고정으로 나가는 돈부터 적어 보면 새는 곳이 금방 보여요. 이번 달만 가계부를 써 보는 건 어떨까요?",
     "고정으로 나가는 돈부터 적어 보면 새는 데가 금방 보여. 이번 달만 가계부 써 보는 건 어때?"),
    ("하루에 집을 비우는 시간이 얼마나 되는지가 제일 중요해요. 고양이는 생각보다 혼자 있는 시간을 잘 견디는 편이에요.",
     "하루에 집 비우는 시간이 얼마나 되는지가 제일 중요해. 고양이는 생각보다 혼자 있는 시간을 잘 견디는 편이야."),
    ("잠을 못 자면 정말 예민해지죠. 관리사무소에 먼저 말해 두면 직접 부딪히지 않아도 돼요.",
     "잠 못 자면 진짜 예민해지지. 관리사무소에 먼저 말해 두면 직접 안 부딪혀도 돼."),
    ("판매자한테 사진을 찍어서 보내 보세요. 체인 정도는 동네 자전거 가게에서 금방 고쳐 줄 거예요.",
     "판매자한테 사진 찍어서 보내 봐. 체인 정도는 동네 자전거 가게에서 금방 고쳐 줄 거야."),
    ("그만두기 전에 학교 설명회부터 가 보는 건 어떠세요? 병행할 수 있는 과정도 꽤 있더라고요.",
     "그만두기 전에 학교 설명회부터 가 보는 건 어때? 병행할 수 있는 과정도 꽤 있더라."),
    ("하루면 아직 바빠서 그럴 수도 있어요. 먼저 가볍게 안부 한 번 보내 보고 기다려 봐요.",
     "하루면 아직 바빠서 그럴 수도 있어. 먼저 가볍게 안부 한 번 보내 보고 기다려 보자."),
    ("전혀 안 그래요. 혼자 보는 바다가 오히려 머리를 비우기엔 제일 좋아요.",
     "전혀 안 그래. 혼자 보는 바다가 오히려 머리 비우기엔 제일 좋아."),
    ("설거지 당번을 요일별로 나눠 보면 어떨까요? 말하기 전에 바라는 걸 한 줄로 정리해 두면 덜 싸우게 돼요.",
     "설거지 당번을 요일별로 나눠 보면 어때? 말하기 전에 바라는 걸 한 줄로 정리해 두면 덜 싸우게 돼."),
    ("한 달이면 충분히 해볼 만해요. 오늘은 기출 한 회차만 풀고 틀린 것만 표시해 두세요.",
     "한 달이면 충분히 해볼 만해. 오늘은 기출 한 회차만 풀고 틀린 것만 표시해 봐."),
    ("모임에서는 다들 좋은 얘기만 꺼내니까 더 그렇게 보이는 거예요. 비교가 시작되면 잠깐 산책이라도 해 보세요.",
     "모임에서는 다들 좋은 얘기만 하니까 더 그렇게 보이는 거야. 비교가 시작되면 잠깐 산책이라도 해 봐."),
    ("바뀐 일정 때문에 밀리는 일이 뭔지 정리해서 말씀드려 보세요. 우선순위를 정해 달라고 하면 부담이 줄어요.",
     "바뀐 일정 때문에 밀리는 일이 뭔지 정리해서 말씀드려 봐. 우선순위를 정해 달라고 하면 부담이 줄어."),
    ("요즘 자주 쓰시는 물건 중에 낡은 게 있는지 떠올려 보세요. 손편지를 같이 드리면 더 좋아하실 거예요.",
     "요즘 자주 쓰시는 물건 중에 낡은 게 있는지 떠올려 봐. 손편지를 같이 드리면 더 좋아하실 거야."),
    ("자기 전 삼십 분만 휴대폰을 다른 방에 두는 걸로 시작해 봐요. 처음 며칠만 넘기면 훨씬 쉬워져요.",
     "자기 전 삼십 분만 폰을 다른 방에 두는 걸로 시작해 봐. 처음 며칠만 넘기면 훨씬 쉬워질 거야."),
    ("거창한 문장보다 두 사람과 있었던 장면 하나를 이야기하는 게 훨씬 와닿아요. 처음 만난 날 기억나는 게 있어요?",
     "거창한 문장보다 둘이랑 있었던 장면 하나를 얘기하는 게 훨씬 와닿아. 처음 만난 날 기억나는 거 있어?"),
    ("처음엔 다들 그래요. 빈 주차장에서 같은 자리만 열 번 넣어 보면 감이 확 와요.",
     "처음엔 다 그래. 빈 주차장에서 같은 자리만 열 번 넣어 보면 감이 확 올 거야."),
    ("축하하는 마음과 속상한 마음이 같이 드는 게 당연해요. 오늘은 속상한 쪽을 먼저 달래 주세요.",
     "축하하는 마음이랑 속상한 마음이 같이 드는 게 당연해. 오늘은 속상한 쪽을 먼저 달래 줘."),
    ("배가 고픈 건지 심심한 건지 먼저 구분해 보세요. 따뜻한 차 한 잔이 의외로 도움이 돼요.",
     "배고픈 건지 심심한 건지 먼저 구분해 봐. 따뜻한 차 한 잔이 의외로 도움이 돼."),
    ("이미 쓴 돈은 어쩔 수 없으니 다음 달부터 자동이체로 따로 떼어 두면 돼요. 여행 날짜를 먼저 잡으면 모으는 재미도 생겨요.",
     "이미 쓴 돈은 어쩔 수 없으니까 다음 달부터 자동이체로 따로 떼어 두면 돼. 여행 날짜를 먼저 잡으면 모으는 재미도 생길 거야."),
    ("세 번째 모임까지는 원래 어색한 게 정상이에요. 다음엔 책 얘기 말고 근황부터 물어보세요.",
     "세 번째 모임까지는 원래 어색한 게 정상이야. 다음엔 책 얘기 말고 근황부터 물어봐."),
    ("나이 든 강아지는 짧게 자주 걷는 게 더 좋대요. 관절이 아파 보이면 병원에 한 번 데려가 보세요.",
     "나이 든 강아지는 짧게 자주 걷는 게 더 좋대. 관절이 아파 보이면 병원에 한 번 데려가 봐."),
    ("주변 시세부터 확인해 보세요. 올려 달라는 금액이 적정한지 알면 협상할 때 훨씬 편해요.",
     "주변 시세부터 확인해 봐. 올려 달라는 금액이 적당한지 알면 협상할 때 훨씬 편해."),
    ("면접관은 생각보다 답의 내용보다 태도를 더 오래 기억해요. 아쉬웠던 질문은 적어 두면 다음에 꼭 도움이 돼요.",
     "면접관은 생각보다 답 내용보다 태도를 더 오래 기억해. 아쉬웠던 질문은 적어 두면 다음에 꼭 도움이 돼."),
    ("언제까지 갚을 수 있는지 날짜를 한 번 물어보는 건 전혀 실례가 아니에요.",
     "언제까지 갚을 수 있는지 날짜를 한 번 물어보는 건 전혀 실례가 아니야."),
    ("계란말이나 김치볶음밥처럼 재료가 적은 것부터 해 보세요. 한 가지를 세 번 만들면 손에 익어요.",
     "계란말이나 김치볶음밥처럼 재료 적은 것부터 해 봐. 한 가지를 세 번 만들면 손에 익어."),
    ("쉬는 동안 뭘 했는지 적어 보면 생각보다 많을 거예요. 불안할 땐 하루에 한 가지씩만 구직 활동을 정해 보세요.",
     "쉬는 동안 뭘 했는지 적어 보면 생각보다 많을걸. 불안할 땐 하루에 한 가지씩만 구직 활동을 정해 봐."),
    ("통화를 시작할 때 좋은 소식 하나를 먼저 꺼내면 분위기가 달라지더라고요.",
     "통화 시작할 때 좋은 소식 하나를 먼저 꺼내면 분위기가 달라지더라."),
    ("물을 너무 자주 줘도 시들 수 있어요. 흙이 마른 걸 확인하고 주는 걸로 바꿔 보세요.",
     "물을 너무 자주 줘도 시들 수 있어. 흙이 마른 걸 확인하고 주는 걸로 바꿔 봐."),
    ("계획 없는 연휴도 나쁘지 않아요. 하고 싶은 것 딱 하나만 정해 두면 충분해요.",
     "계획 없는 연휴도 나쁘지 않아. 하고 싶은 거 딱 하나만 정해 두면 충분해."),
    ("서운한 게 당연해요. 다음에 비슷한 일이 생기면 누가 챙길지 미리 정해 두자고 말해 보세요.",
     "서운한 게 당연하지. 다음에 비슷한 일 생기면 누가 챙길지 미리 정해 두자고 말해 봐."),
    ("그런 시기도 있어요. 에너지가 돌아올 때까지 꼭 보고 싶은 사람만 만나도 괜찮아요.",
     "그런 시기도 있어. 에너지가 돌아올 때까지 꼭 보고 싶은 사람만 만나도 괜찮아."),
    ("환불 기간이 남았는지부터 확인해 보세요. 남았다면 하루만 더 고민하고 결정해도 늦지 않아요.",
     "환불 기간이 남았는지부터 확인해 봐. 남았으면 하루만 더 고민하고 결정해도 안 늦어."),
    ("긴장되는 게 당연해요. 내일 입을 옷이랑 가방을 미리 챙겨 두면 마음이 조금 놓일 거예요.",
     "긴장되는 게 당연해. 내일 입을 옷이랑 가방을 미리 챙겨 두면 마음이 좀 놓일 거야."),
]


def korean_dialogue(i: int, topic: str = "주말 계획", polite: bool | None = None, exchanges: int = 4,
                    salt: str = "") -> dict[str, Any]:
    """The i-th test dialogue: natural Korean lines, one assistant register, `exchanges` exchanges.

    Deterministic in (i, salt); even i speak 존댓말, odd i 반말 unless `polite` says otherwise.
    """
    rng = random.Random(f"{salt}:{i}")
    polite = (i % 2 == 0) if polite is None else polite
    users = rng.sample(USER_LINES, exchanges)
    answers = [pair[0 if polite else 1] for pair in rng.sample(ASSISTANT_LINES, exchanges)]
    messages: list[dict[str, str]] = []
    for u, a in zip(users, answers):
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {"topic": topic, "messages": messages}


DISTINCT_MAX_JACCARD = 0.25
"""Dialogues from `distinct_dialogue` pairwise stay below this character 3-gram Jaccard, far enough
under the near-duplicate threshold (0.4) that a MinHash estimate (std ~0.04) never crosses it."""
_DISTINCT: dict[str, tuple[list[int], list[set[str]]]] = {}


def _shingles(d: dict[str, Any]) -> set[str]:
    s = "".join("".join(m["content"].split()) for m in d["messages"])
    return {s[i:i + 3] for i in range(len(s) - 2)}


def distinct_dialogue(k: int, topic: str = "주말 계획", salt: str = "") -> dict[str, Any]:
    """The k-th dialogue of a fixed sequence in which no two are near-duplicates.

    Skips the rare `korean_dialogue(i)` that shares too many lines with an earlier one, so a test
    can assert exact accepted counts. Deterministic; O(k^2) once per process (fine for k < 1000).
    """
    kept, shingles = _DISTINCT.setdefault(salt, ([], []))
    i = kept[-1] + 1 if kept else 0
    while len(kept) <= k:
        sh = _shingles(korean_dialogue(i, salt=salt))
        if all(len(sh & o) / len(sh | o) < DISTINCT_MAX_JACCARD for o in shingles):
            kept.append(i)
            shingles.append(sh)
        i += 1
    return korean_dialogue(kept[k], topic=topic, salt=salt)


def requested_topics(body: dict[str, Any]) -> list[str]:
    """The topics a generate prompt asks for (lines `N. 주제: ...`), so replies can echo them."""
    text = "\n".join(m.get("content") or "" for m in body.get("messages", []))
    out = []
    for line in text.splitlines():
        head, sep, rest = line.partition("주제: ")
        if sep and head.rstrip(" .").strip().isdigit():
            out.append(rest.split(" / ")[0].strip())
    return out


def dialogue_factory(per_reply: int = 2, salt: str = "", distinct: bool = True,
                     usage: dict[str, int] | None = None) -> Callable[[dict[str, Any], int], Reply]:
    """A `default` that answers request n with `per_reply` fresh dialogues (numbers n*per_reply ...).

    `distinct` draws from `distinct_dialogue` (no near-duplicates, for exact counts); without it,
    `korean_dialogue` (unbounded, cheap; a few percent near-duplicates once thousands are out).
    `usage` fixes the reported token usage (for exact cost tests).
    """

    def answer(body: dict[str, Any], n: int) -> Reply:
        topics = requested_topics(body) or ["주말 계획"]
        make = distinct_dialogue if distinct else korean_dialogue
        ds = [make(n * per_reply + j, topic=topics[j % len(topics)], salt=salt) for j in range(per_reply)]
        return dialogues_reply(ds, usage=dict(usage) if usage else None)

    return answer


# --- the persona judge and chat turns (python -m train eval) ---------------------------------

JUDGE_TYPES = ("ISTJ", "ISFJ", "INFJ", "INTJ", "ISTP", "ISFP", "INFP", "INTP",
               "ESTP", "ESFP", "ENFP", "ENTP", "ESTJ", "ESFJ", "ENFJ", "ENTJ")
JUDGE_MARK = "평가자"  # datagen/prompts/judge_system.txt: the judge's system prompt says it is an evaluator


def judge_kind(body: dict[str, Any]) -> str | None:
    """`guess` or `persona` for datagen/judge.py's requests (the persona one shows a profile), else None."""
    msgs = body.get("messages") or []
    if len(msgs) < 2 or JUDGE_MARK not in (msgs[0].get("content") or ""):
        return None
    return "persona" if "[인물 소개]" in (msgs[1].get("content") or "") else "guess"


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def chat_reply(body: dict[str, Any], n: int) -> Reply:
    """One assistant turn for a chat request: a 존댓말 line picked by the last user turn (deterministic)."""
    last = next((m.get("content") or "" for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
    return Reply(content=ASSISTANT_LINES[_digest(last) % len(ASSISTANT_LINES)][0])


def judge_factory(guess: str | None = None, persona: int = 4, naturalness: int = 4, engagement: int = 4,
                  replies: Callable[[dict[str, Any], int], Reply] | None = None) -> Callable[[dict[str, Any], int], Reply]:
    """A `default` that answers the judge's two requests with a valid form (the same answer to the same
    request), and anything else with `replies` (default `chat_reply`).

    `guess` None picks the guessed type from a hash of the judged turns (spread over the 16).
    """
    def answer(body: dict[str, Any], n: int) -> Reply:
        kind = judge_kind(body)
        if kind is None:
            return (replies or chat_reply)(body, n)
        if kind == "persona":
            form: dict[str, Any] = {"reason": "소개와 대체로 맞음", "persona": persona}
        else:
            turns = (body["messages"][1].get("content") or "").split("[평가할 말]", 1)[-1]
            form = {"reason": "말투로 추측함", "guess": guess or JUDGE_TYPES[_digest(turns) % 16],
                    "naturalness": naturalness, "engagement": engagement}
        return Reply(content=json.dumps(form, ensure_ascii=False))

    return answer


# --- the server -------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    body: Any
    time: float
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased header names (kept only with record_bodies, like the body)."""


class LLMServer:
    """OpenAI-compatible chat completions on 127.0.0.1, in a background thread (or process, see main).

    `latency` delays every answer; `reject_formats` answers 400 to a request whose
    `response_format.type` is in it (a server without structured output).
    """

    def __init__(self, default: Callable[[dict[str, Any], int], Reply] | None = None, latency: float = 0.0,
                 reject_formats: tuple[str, ...] = (), record_bodies: bool = True):
        self.default = default or dialogue_factory()
        self.latency = latency
        self.reject_formats = reject_formats
        self.record_bodies = record_bodies
        self.requests: list[Recorded] = []
        self.completions = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Most completion requests being answered at once (what a client's concurrency cap allows)."""
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # -- scripting ------------------------------------------------------------------------------
    def push(self, *replies: Reply) -> None:
        """Queue replies; each completion request takes the next one."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def completion_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/chat/completions") and isinstance(r.body, dict)]

    def _next_reply(self, body: Any) -> Reply:
        with self._lock:
            n = self.completions
            self.completions += 1
            queued = self._queue.popleft() if self._queue else None
        fmt = ((body or {}).get("response_format") or {}).get("type") if isinstance(body, dict) else None
        if fmt and fmt in self.reject_formats:
            return Reply(status=400, body={"error": {"message": f"response_format {fmt} is not supported",
                                                     "type": "invalid_request_error", "param": "response_format"}})
        if queued is not None:
            return queued
        return self.default(body if isinstance(body, dict) else {}, n)

    # -- HTTP -------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode("utf-8", "replace")
                with self._lock:
                    self.requests.append(Recorded(method, path, body if self.record_bodies else None, time.monotonic(),
                                                  headers if self.record_bodies else {}))
                status, payload, extra = await self._respond(method, path, body)
                ctype = extra.pop("content-type", "application/json")
                head = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'ERR'}",
                        f"content-type: {ctype}", f"content-length: {len(payload)}", "connection: keep-alive"]
                head += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return  # the client went away (e.g. after its own timeout)
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, json.dumps({"object": "list", "data": [{"id": "test-model", "object": "model"}]}).encode(), {}
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode(), {}
        reply = self._next_reply(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency or reply.delay:
                await asyncio.sleep(self.latency + reply.delay)
        finally:
            self.in_flight -= 1
        if reply.body is not None:
            payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body, ensure_ascii=False)
            return reply.status, payload.encode("utf-8"), reply.headers
        model = body.get("model", "test-model") if isinstance(body, dict) else "test-model"
        usage = reply.usage
        if usage is None:
            prompt = sum(len(m.get("content") or "") for m in body.get("messages", [])) if isinstance(body, dict) else 0
            out = len(reply.content or reply.refusal or "")
            usage = {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}
        if isinstance(body, dict) and body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            events = stream_events(model, reply.content or "", reply.finish_reason, usage if include else None,
                                   self.completions)
            return reply.status, events.encode("utf-8"), {**reply.headers, "content-type": "text/event-stream"}
        obj = completion_body(model, reply.content, reply.finish_reason, reply.refusal, usage, self.completions)
        return reply.status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), reply.headers

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LLMServer":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="llm-test-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            async def close() -> None:
                self._server.close()  # type: ignore[union-attr]
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> "LLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--per-reply", type=int, default=1, help="dialogues per answer")
    p.add_argument("--salt", default="", help="changes the dialogues (two servers, two data sets)")
    p.add_argument("--judge", action="store_true", help="play the persona judge; answer other requests with a chat turn")
    p.add_argument("--guess", help="with --judge: always guess this type (default: from a hash of the judged turns)")
    args = p.parse_args()
    default = (judge_factory(guess=args.guess.upper() if args.guess else None) if args.judge
               else dialogue_factory(args.per_reply, args.salt, distinct=False))
    server = LLMServer(default=default, latency=args.latency, record_bodies=False)
    server.port = args.port
    server.start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
