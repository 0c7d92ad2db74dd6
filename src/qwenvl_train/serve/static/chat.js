// The chat page of `qwenvl-train serve`: talks to this server's /v1/chat/completions with stream: true,
// keeps the conversation (OpenAI messages, pictures as data URLs), and draws the boxes of each answer over
// the picture they refer to. Plain browser JavaScript, nothing fetched from elsewhere.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], pictures: [], pending: [], busy: false };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim() || localStorage.getItem("qwenvl-api-key") || "";
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function status(text) { $("status").textContent = text || ""; }

function scrollDown() { const log = $("log"); log.scrollTop = log.scrollHeight; }

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) { status(body.error ? body.error.message : "cannot list the models"); return; }
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (err) { status("the server cannot be reached: " + err); }
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attach(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    state.pending.push(await readFile(file));
  }
  showPending();
}

function showPending() {
  const box = $("attachments");
  box.replaceChildren();
  state.pending.forEach((url, i) => {
    const item = element("div", "pending");
    const img = element("img");
    img.src = url;
    const remove = element("button", "", "x");
    remove.type = "button";
    remove.title = "Remove";
    remove.onclick = () => { state.pending.splice(i, 1); showPending(); };
    item.append(img, remove);
    box.append(item);
  });
}

function userBubble(text, pictures, firstNumber) {
  const bubble = element("div", "msg user");
  if (pictures.length) {
    const thumbs = element("div", "thumbs");
    pictures.forEach((url, i) => {
      const figure = element("figure");
      const img = element("img");
      img.src = url;
      figure.append(img, element("figcaption", "", "Picture " + (firstNumber + i)));
      thumbs.append(figure);
    });
    bubble.append(thumbs);
  }
  if (text) bubble.append(document.createTextNode(text));
  $("log").append(bubble);
  scrollDown();
}

// Draw every well-formed box over its picture; one colour per ref, the ref as label.
function drawBoxes(bubble, boxes) {
  const drawable = boxes.filter((b) => b.status === "ok" && b.picture);
  const broken = boxes.filter((b) => b.status !== "ok");
  if (broken.length) {
    bubble.append(element("div", "note", broken.length + " box(es) not drawn: " +
      broken.map((b) => b.status + (b.text ? " (" + b.text + ")" : "")).join(", ")));
  }
  if (!drawable.length) return;
  const figure = element("div", "figure");
  const img = element("img");
  img.src = state.pictures[drawable[0].picture - 1];
  img.alt = "Picture " + drawable[0].picture;
  figure.append(img);
  let colour = -1;
  let lastRef = undefined;
  for (const b of drawable) {
    if (b.ref !== lastRef || b.ref === null) colour += 1;
    lastRef = b.ref;
    const [x1, y1, x2, y2] = b.box;
    const frame = element("div", "box" + (y1 < 60 ? " low" : ""));
    frame.style.setProperty("--colour", PALETTE[colour % PALETTE.length]);
    frame.style.left = x1 / 10 + "%";
    frame.style.top = y1 / 10 + "%";
    frame.style.width = Math.max(0.5, (x2 - x1) / 10) + "%";
    frame.style.height = Math.max(0.5, (y2 - y1) / 10) + "%";
    frame.dataset.ref = b.ref || "";
    if (b.ref) frame.append(element("span", "label", b.ref));
    figure.append(frame);
  }
  bubble.append(document.createElement("br"), figure);
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function send(event) {
  if (event) event.preventDefault();
  if (state.busy) return;
  const text = $("question").value.trim();
  if (!text && !state.pending.length) return;
  const pictures = state.pending.splice(0);
  const firstNumber = state.pictures.length + 1;
  const content = pictures.map((url) => ({ type: "image_url", image_url: { url } }));
  if (text) content.push({ type: "text", text });
  const message = { role: "user", content };
  $("question").value = "";
  showPending();
  userBubble(text, pictures, firstNumber);
  state.busy = true;
  $("send").disabled = true;
  status("thinking...");
  const bubble = element("div", "msg assistant");
  const answer = element("span", "answer");
  bubble.append(answer);
  let reply = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: state.model, messages: state.messages.concat([message]), stream: true }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : "HTTP " + response.status);
    }
    $("log").append(bubble);
    let boxes = [];
    for await (const data of events(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.content) { reply += choice.delta.content; answer.textContent = reply; scrollDown(); }
      if (choice.delta.boxes) boxes = choice.delta.boxes;
      if (choice.finish_reason) bubble.dataset.finish = choice.finish_reason;
    }
    state.pictures.push(...pictures);
    state.messages.push(message, { role: "assistant", content: reply || " " });
    drawBoxes(bubble, boxes);
    bubble.dataset.done = "true";
    status("");
  } catch (err) {
    bubble.remove();
    state.pending = pictures;  // the question can be sent again
    showPending();
    $("question").value = text;
    const failure = element("div", "msg error", String(err.message || err));
    failure.dataset.done = "true";
    $("log").append(failure);
    status("");
  } finally {
    state.busy = false;
    $("send").disabled = false;
    scrollDown();
  }
}

function reset() {
  state.messages = [];
  state.pictures = [];
  state.pending = [];
  showPending();
  $("log").replaceChildren();
  status("new conversation");
}

$("ask").addEventListener("submit", send);
$("reset").addEventListener("click", reset);
$("files").addEventListener("change", (e) => {
  const files = [...e.target.files];
  e.target.value = "";
  attach(files);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("question").addEventListener("paste", (e) => {
  const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
  if (files.length) { e.preventDefault(); attach(files); }
});
$("api-key").value = localStorage.getItem("qwenvl-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("qwenvl-api-key", $("api-key").value.trim());
  loadModel();
});
loadModel();
