// The review page. Generated text is untrusted: it only ever reaches the DOM through
// textContent (never innerHTML), and the server's Content-Security-Policy forbids inline
// scripts and handlers besides. Every answer is POSTed at once; the server fsyncs it to
// review/ratings.jsonl before answering, and a failed save is retried until it succeeds.
"use strict";

const QUESTIONS = ["valid", "input_ok", "output_ok"];
const GRADES = ["A", "B", "C", "D"];
const QUESTION_TEXT = {
  valid: "valid task",
  input_ok: "appropriate input",
  output_ok: "correct output",
};

// The judge's answer to each question, as the page shows it beside the person's.
const JUDGE_QUESTIONS = [
  ["valid_task", "judge: valid task"],
  ["appropriate_input", "judge: appropriate input"],
  ["correct_output", "judge: correct output"],
];

const state = {
  items: [],
  ratings: {}, // item id -> {valid, input_ok, output_ok, grade}
  scores: {}, // item id -> {ifd: {score, scorer}, judge: {score, scorer, valid_task, ...}}
  methods: [], // the scoring methods the run has files of
  position: 0,
  dirty: new Map(), // item id -> version not yet acknowledged by the server
  versions: new Map(),
  sending: false,
};

const $ = (id) => document.getElementById(id);

// Off loopback the server wants its session token on every API call; it is in this page's
// URL after the '#' (`selfinstruct review` prints it), which the browser never sends itself.
const TOKEN = new URLSearchParams(window.location.hash.slice(1)).get("token");
const TOKEN_HEADERS = TOKEN ? { "X-Review-Token": TOKEN } : {};

function ratingOf(id) {
  if (!state.ratings[id]) {
    state.ratings[id] = { valid: null, input_ok: null, output_ok: null, grade: null };
  }
  return state.ratings[id];
}

function answeredCount(rating) {
  return QUESTIONS.filter((q) => rating[q] !== null).length + (rating.grade !== null ? 1 : 0);
}

function isRated(id) {
  const rating = state.ratings[id];
  return rating !== undefined && answeredCount(rating) > 0;
}

function setText(element, text, emptyText) {
  element.textContent = text === "" ? emptyText : text;
  element.classList.toggle("empty", text === "");
}

function render() {
  const item = state.items[state.position];
  if (!item) return;
  $("card").hidden = false;
  $("position").textContent = `Item ${state.position + 1} of ${state.items.length}`;
  setText($("instruction"), item.instruction, "(empty instruction)");
  setText($("input"), item.input, "(no input)");
  setText($("output"), item.output, "(empty output)");
  renderScores(state.scores[item.id] || {});
  const rating = ratingOf(item.id);
  for (const row of document.querySelectorAll(".question[data-question]")) {
    const value = rating[row.dataset.question];
    for (const button of row.querySelectorAll("button")) {
      const pressed = value !== null && (button.dataset.answer === "yes") === value;
      button.setAttribute("aria-pressed", String(pressed));
    }
  }
  for (const button of document.querySelectorAll("button[data-grade]")) {
    button.setAttribute("aria-pressed", String(button.dataset.grade === rating.grade));
  }
  renderStrip();
}

// The row's scores (IFD, the judge's), where the run has them. Numbers and the scorer's name
// go in through textContent like every other text.
function renderScores(scores) {
  const details = $("scores");
  details.hidden = state.methods.length === 0;
  const rows = [];
  const number = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : "—");
  if (state.methods.includes("ifd")) {
    const ifd = scores.ifd;
    rows.push(["ifd", "IFD", ifd ? number(ifd.score, 3) : "not scored", ifd ? ifd.scorer : ""]);
  }
  if (state.methods.includes("judge")) {
    const judge = scores.judge;
    rows.push(["judge", "judge: overall (1–5)", judge ? number(judge.score, 2) : "not scored", judge ? judge.scorer : ""]);
    if (judge) {
      for (const [key, label] of JUDGE_QUESTIONS) {
        const p = judge[key];
        const answer = typeof p === "number" ? `${p >= 0.5 ? "yes" : "no"} (${p.toFixed(2)})` : "—";
        rows.push([key, label, answer, ""]);
      }
    }
  }
  document.querySelector("#score-table tbody").replaceChildren(
    ...rows.map(([key, ...cells]) => {
      const tr = document.createElement("tr");
      tr.dataset.score = key;
      cells.forEach((text, index) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (index === 1) td.className = "n";
        tr.append(td);
      });
      return tr;
    }),
  );
}

function renderStrip() {
  const strip = $("strip");
  if (strip.children.length !== state.items.length) {
    strip.replaceChildren(
      ...state.items.map((item, index) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = String(index + 1);
        button.addEventListener("click", () => go(index));
        return button;
      }),
    );
  }
  state.items.forEach((item, index) => {
    const button = strip.children[index];
    const rating = state.ratings[item.id];
    const count = rating ? answeredCount(rating) : 0;
    button.className = count === 4 ? "done" : count > 0 ? "partial" : "";
    button.classList.toggle("current", index === state.position);
  });
  const rated = state.items.filter((item) => isRated(item.id)).length;
  $("progress").textContent = `${rated} of ${state.items.length} rated.`;
}

function renderSummary(summary) {
  const body = document.querySelector("#summary tbody");
  const pct = (share) => (share === null ? "—" : `${(100 * share).toFixed(1)}%`);
  const rows = QUESTIONS.map((q) => [QUESTION_TEXT[q], summary.questions[q]]);
  rows.push(["all fields valid", summary.all_valid]);
  body.replaceChildren(
    ...rows.map(([label, s]) => {
      const tr = document.createElement("tr");
      tr.dataset.row = label;
      for (const [value, numeric] of [
        [label, false],
        [String(s.yes), true],
        [String(s.answered), true],
        [pct(s.share), true],
        [pct(s.paper), true],
      ]) {
        const td = document.createElement("td");
        td.textContent = value;
        if (numeric) td.className = "n";
        tr.append(td);
      }
      return tr;
    }),
  );
  const grades = document.createElement("tr");
  const head = document.createElement("td");
  head.textContent = `${summary.graded} graded`;
  grades.append(head);
  for (const g of GRADES) {
    const td = document.createElement("td");
    td.className = "n";
    td.dataset.grade = g;
    td.textContent = `${summary.grades[g].count} (${pct(summary.grades[g].share)})`;
    grades.append(td);
  }
  document.querySelector("#grade-summary tbody").replaceChildren(grades);
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = kind;
  document.body.dataset.pending = String(state.dirty.size);
}

// -- saving: one request at a time, always the item's newest answers --------------------------
function changed(id) {
  const version = (state.versions.get(id) || 0) + 1;
  state.versions.set(id, version);
  state.dirty.set(id, version);
  setStatus("saving…", "saving");
  render();
  flush();
}

async function flush() {
  if (state.sending || state.dirty.size === 0) return;
  const [id, version] = state.dirty.entries().next().value;
  state.sending = true;
  try {
    const response = await fetch("/api/ratings", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...TOKEN_HEADERS },
      body: JSON.stringify({ item: id, ...ratingOf(id) }),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const answer = await response.json();
    if (state.dirty.get(id) === version) state.dirty.delete(id);
    renderSummary(answer.summary);
    state.sending = false;
    if (state.dirty.size === 0) setStatus("saved ✓", "saved");
    flush();
  } catch (error) {
    state.sending = false;
    setStatus(`not saved (${error.message}); retrying…`, "error");
    setTimeout(flush, 1000);
  }
}

// -- answering ----------------------------------------------------------------------------
function current() {
  return state.items[state.position];
}

function answer(question, value) {
  const item = current();
  if (!item) return;
  const rating = ratingOf(item.id);
  rating[question] = rating[question] === value ? null : value; // clicking the chosen answer clears it
  changed(item.id);
}

function toggle(question) {
  const item = current();
  if (!item) return;
  const rating = ratingOf(item.id);
  rating[question] = rating[question] === null ? true : !rating[question];
  changed(item.id);
}

function grade(letter) {
  const item = current();
  if (!item) return;
  const rating = ratingOf(item.id);
  rating.grade = rating.grade === letter ? null : letter;
  changed(item.id);
}

function go(index) {
  if (index < 0 || index >= state.items.length) return;
  state.position = index;
  render();
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const number = ["1", "2", "3"].indexOf(key);
  if (number >= 0) toggle(QUESTIONS[number]);
  else if (["a", "b", "c", "d"].includes(key)) grade(key.toUpperCase());
  else if (key === "n" || key === "ArrowRight") go(state.position + 1);
  else if (key === "p" || key === "ArrowLeft") go(state.position - 1);
  else return;
  event.preventDefault();
}

async function start() {
  for (const row of document.querySelectorAll(".question[data-question]")) {
    for (const button of row.querySelectorAll("button[data-answer]")) {
      button.addEventListener("click", () => answer(row.dataset.question, button.dataset.answer === "yes"));
    }
  }
  for (const button of document.querySelectorAll("button[data-grade]")) {
    button.addEventListener("click", () => grade(button.dataset.grade));
  }
  $("prev").addEventListener("click", () => go(state.position - 1));
  $("next").addEventListener("click", () => go(state.position + 1));
  document.addEventListener("keydown", onKey);
  try {
    const response = await fetch("/api/items", { headers: TOKEN_HEADERS });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    state.items = data.items;
    state.ratings = data.ratings;
    state.scores = data.scores || {};
    state.methods = data.methods || [];
    // Continue where the last session stopped: the first item not rated yet.
    const next = state.items.findIndex((item) => !isRated(item.id));
    state.position = next >= 0 ? next : 0;
    render();
    renderSummary(data.summary);
    setStatus("ready", "ready");
  } catch (error) {
    setStatus(`could not load the items (${error.message})`, "error");
  }
}

document.addEventListener("DOMContentLoaded", start);
