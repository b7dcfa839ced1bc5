// The chat page: pick one of the 16 personas, chat with replies streaming in.
// Plain JS against the server's own OpenAI-compatible API (/v1/models, /v1/chat/completions).
// Each persona keeps its own conversation in the page while you switch between them.
"use strict";

const KEY_STORAGE = "mbti-chat-api-key";

const els = {
  cards: document.getElementById("cards"),
  cardsStatus: document.getElementById("cards-status"),
  keyForm: document.getElementById("key-form"),
  keyInput: document.getElementById("key-input"),
  current: document.getElementById("current"),
  newChat: document.getElementById("new-chat"),
  log: document.getElementById("log"),
  composer: document.getElementById("composer"),
  input: document.getElementById("input"),
  send: document.getElementById("send"),
};

const personas = new Map();   // model id -> {id, mbti, nickname, summary}
const chats = new Map();      // model id -> {messages: [{role, content}], busy, controller}
let current = null;           // the model id shown

// -- messages people read ----------------------------------------------------------------------

const TEXT = {
  pick: "대화할 유형을 먼저 골라 주세요.",
  empty: "첫 메시지를 보내 대화를 시작해 보세요.",
  loading: "유형 목록을 불러오는 중이에요…",
  loadFailed: "유형 목록을 불러오지 못했어요. 서버가 켜져 있는지 확인한 뒤 새로고침해 주세요.",
  offline: "서버에 연결할 수 없어요. 서버가 켜져 있는지 확인한 뒤 다시 보내 주세요.",
  upstream: "모델 서버가 응답하지 않아요. 잠시 후 다시 보내 주세요.",
  busy: "지금은 요청이 많아요. 잠시 후 다시 보내 주세요.",
  needKey: "이 서버는 API 키가 필요해요. 키를 입력해 주세요.",
  tooLong: "대화가 너무 길어졌어요. '새 대화'를 눌러 다시 시작해 주세요.",
  controlText: "메시지에 모델이 제어 기호로 읽는 글자(예: <|eot_id|>)가 들어 있어요. 그 부분을 지우고 다시 보내 주세요.",
  cutOff: "답변이 중간에 끊겼어요.",
  failed: (msg) => `답변을 받지 못했어요. (${msg})`,
};

// -- the API -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function apiError(response) {
  let code = null;
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON: keep the status */ }
  return new ApiError(response.status, code, message);
}

function explain(err) {
  if (!(err instanceof ApiError)) return TEXT.offline;   // fetch itself failed: nothing answered
  if (err.status === 401) return TEXT.needKey;
  if (err.status === 502 || err.status === 504) return TEXT.upstream;
  if (err.status === 503) return TEXT.busy;
  if (err.code === "context_length_exceeded") return TEXT.tooLong;
  if (err.code === "control_text") return TEXT.controlText;
  return TEXT.failed(err.message);
}

async function loadPersonas() {
  els.cardsStatus.className = "status";
  els.cardsStatus.textContent = TEXT.loading;
  let response;
  try {
    response = await fetch("v1/models", { headers: headers() });
  } catch (_) {
    return showCardsError(TEXT.loadFailed);
  }
  if (!response.ok) {
    const err = await apiError(response);
    if (err.status === 401) {
      els.keyForm.hidden = false;
      els.keyInput.focus();
      return showCardsError(TEXT.needKey);
    }
    return showCardsError(`${TEXT.loadFailed} (${err.message})`);
  }
  const body = await response.json();
  els.keyForm.hidden = true;
  els.cardsStatus.textContent = "";
  personas.clear();
  els.cards.replaceChildren();
  for (const m of body.data) {
    const meta = m.metadata || {};
    const p = { id: m.id, mbti: meta.mbti || m.id.replace(/^mbti-/, "").toUpperCase(),
                nickname: meta.nickname || "", summary: meta.summary || "" };
    personas.set(p.id, p);
    if (!chats.has(p.id)) chats.set(p.id, { messages: [], busy: false, controller: null });
    els.cards.append(card(p));
  }
  if (current && personas.has(current)) select(current);
}

function showCardsError(message) {
  els.cardsStatus.className = "status error";
  els.cardsStatus.textContent = message;
}

// -- rendering ---------------------------------------------------------------------------------

function card(p) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "card";
  b.dataset.model = p.id;
  b.setAttribute("aria-pressed", "false");
  b.title = p.summary;
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = p.mbti;
  const nick = document.createElement("span");
  nick.className = "nick";
  nick.textContent = p.nickname;
  const head = document.createElement("span");
  head.className = "head";
  head.append(code, nick);
  const summary = document.createElement("span");
  summary.className = "summary";
  summary.textContent = p.summary;
  b.append(head, summary);
  b.addEventListener("click", () => select(p.id));
  return b;
}

function bubble(m) {
  const div = document.createElement("div");
  div.className = `msg ${m.role}`;
  if (m.streaming) div.classList.add("streaming");
  div.dataset.chunks = String(m.chunks || 0);
  div.textContent = m.content;
  return div;
}

function render() {
  const p = personas.get(current);
  for (const b of els.cards.children) b.setAttribute("aria-pressed", String(b.dataset.model === current));
  if (!p) {
    els.current.textContent = TEXT.pick;
    els.log.replaceChildren();
    return;
  }
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = p.mbti;
  els.current.replaceChildren(code, document.createTextNode(p.nickname));
  const chat = chats.get(current);
  if (chat.messages.length === 0) {
    const empty = document.createElement("div");
    empty.className = "empty";
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = p.summary;
    const start = document.createElement("p");
    start.textContent = TEXT.empty;
    empty.append(who, start);
    els.log.replaceChildren(empty);
  } else {
    els.log.replaceChildren(...chat.messages.map(bubble));
  }
  els.log.scrollTop = els.log.scrollHeight;
  els.input.disabled = false;
  els.newChat.disabled = false;
  els.send.disabled = chat.busy;
}

function select(id) {
  current = id;
  render();
  els.input.focus();
}

// The last bubble of the persona shown, if `chat` is that persona's: streamed text goes straight into it.
function updateLast(chat, m) {
  if (chats.get(current) !== chat) return;
  const last = els.log.lastElementChild;
  if (!last || !last.classList.contains(m.role)) return render();
  last.textContent = m.content;
  last.dataset.chunks = String(m.chunks || 0);
  last.classList.toggle("streaming", Boolean(m.streaming));
  els.log.scrollTop = els.log.scrollHeight;
}

// -- sending -----------------------------------------------------------------------------------

async function send() {
  const text = els.input.value.trim();
  const id = current;
  const chat = chats.get(id);
  if (!text || !chat || chat.busy) return;
  els.input.value = "";
  // Notices are for the reader only; the model sees the conversation.
  const history = chat.messages.filter((m) => m.role === "user" || m.role === "assistant")
    .map(({ role, content }) => ({ role, content }));
  chat.messages = chat.messages.filter((m) => m.role !== "notice");
  const userMsg = { role: "user", content: text };
  const reply = { role: "assistant", content: "", streaming: true, chunks: 0 };
  chat.messages.push(userMsg, reply);
  chat.busy = true;
  const controller = new AbortController();
  chat.controller = controller;
  render();
  try {
    await stream(id, [...history, { role: "user", content: text }], reply, chat, controller.signal);
  } catch (err) {
    if (err.name === "AbortError") return;   // "새 대화" cleared this conversation
    if (!reply.content) {
      // Nothing came back: take the message back into the box so it can be sent again.
      chat.messages.splice(chat.messages.indexOf(userMsg), 2);
      if (chats.get(current) === chat && !els.input.value) els.input.value = text;
    }
    chat.messages.push({ role: "notice", content: explain(err) });
    if (err instanceof ApiError && err.status === 401) els.keyForm.hidden = false;
  } finally {
    reply.streaming = false;
    if (chat.controller === controller) {   // not cleared by "새 대화" (which may have started another)
      chat.busy = false;
      chat.controller = null;
    }
    if (chats.get(current) === chat) render();
  }
}

async function stream(id, messages, reply, chat, signal) {
  const response = await fetch("v1/chat/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ model: id, messages, stream: true }),
    signal,
  });
  if (!response.ok) throw await apiError(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  while (!done) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") { done = true; break; }
        const obj = JSON.parse(data);
        if (obj.error) throw new ApiError(obj.error.code === "upstream_unavailable" ? 502 : 500, obj.error.code,
                                          obj.error.message);
        const piece = obj.choices && obj.choices[0] && obj.choices[0].delta && obj.choices[0].delta.content;
        if (piece) {
          reply.content += piece;
          reply.chunks += 1;
          updateLast(chat, reply);
        }
      }
    }
  }
  if (!done) throw new ApiError(0, null, TEXT.cutOff);
}

// -- wiring ------------------------------------------------------------------------------------

els.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});

els.input.addEventListener("keydown", (e) => {
  // Enter sends, Shift+Enter breaks the line; never while a Korean syllable is still being composed.
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});

els.newChat.addEventListener("click", () => {
  const chat = chats.get(current);
  if (!chat) return;
  if (chat.controller) chat.controller.abort();
  chat.controller = null;
  chat.busy = false;
  chat.messages = [];
  els.input.value = "";
  render();
  els.input.focus();
});

els.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = els.keyInput.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  els.keyInput.value = "";
  loadPersonas();
});

render();
loadPersonas();
