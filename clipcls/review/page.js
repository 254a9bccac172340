// The review page: tiles lowest margin first, keys to decide, each decision sent at once.
// Every name and label goes in with textContent (never innerHTML): file names are data.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const PAGE = 120;
const view = { state: null, tiles: [], selected: -1, total: 0, loading: false, done: false, generation: 0 };
const mine = [];  // this page's decisions, by number: u takes back its own, not another page's

function $(id) { return document.getElementById(id); }

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function address(path, params) {
  const query = new URLSearchParams(params || {});
  query.set("token", TOKEN);
  return path + "?" + query.toString();
}

async function call(path, params, body) {
  const options = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Review-Token": TOKEN },
  };
  const answer = await fetch(address(path, params), options);
  const data = await answer.json();
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function note(text) { $("note").textContent = text || ""; }

function showProgress(progress) {
  const total = progress.reviewed + progress.left;
  $("bar-reviewed").style.width = (total ? 100 * progress.reviewed / total : 0) + "%";
  $("progress-text").textContent =
    `${progress.reviewed} reviewed · ${progress.changed} changed · ${progress.left} left`;
}

function keyLabels() { return view.state.labels.slice(0, 9); }

function showLegend() {
  const legend = $("legend");
  keyLabels().forEach((label, i) => {
    const key = make("button", "key", "");
    key.type = "button";
    key.append(make("kbd", "", String(i + 1)), document.createTextNode(" " + label));
    key.addEventListener("click", () => decide("set", label));
    legend.append(key);
  });
  const unknown = make("button", "key", "");
  unknown.type = "button";
  unknown.append(make("kbd", "", "x"), document.createTextNode(" " + view.state.unknown_label));
  unknown.addEventListener("click", () => decide("unknown"));
  legend.append(unknown);
  legend.append(make("span", "hint",
    "Enter accept · u undo · f full size · arrows move · margin: " + view.state.margin_source));
}

function percent(p) { return (100 * p).toFixed(1) + "%"; }

function tile(row) {
  const node = make("article", "tile");
  node.dataset.index = row.index;
  const picture = make("div", "picture");
  if (row.missing) {
    picture.append(make("div", "problem", "missing"));
  } else {
    const img = make("img");
    img.loading = "lazy";
    img.alt = "";
    img.src = address("/thumb/" + row.index, { v: view.state.session });
    img.addEventListener("click", () => { select(view.tiles.indexOf(node)); openViewer(); });
    picture.append(img);
  }
  node.append(picture, make("div", "name", row.path));
  if (row.error) node.append(make("div", "problem-text", "unreadable: " + row.error));
  const chips = make("div", "chips");
  for (const [label, probability] of row.scores) {
    const chip = make("button", "chip", label + " " + percent(probability));
    chip.type = "button";
    chip.addEventListener("click", () => { select(view.tiles.indexOf(node)); decide("set", label); });
    chips.append(chip);
  }
  node.append(chips);
  if (row.destination) node.append(make("div", "destination", "→ " + row.destination));
  node.append(make("div", "decision"));
  node.addEventListener("click", () => select(view.tiles.indexOf(node)));
  node.row = row;
  showDecision(node, row.decision);
  return node;
}

function showDecision(node, decision) {
  node.row.decision = decision;
  const line = node.querySelector(".decision");
  node.classList.toggle("reviewed", !!decision);
  node.classList.toggle("changed", !!decision && decision.label !== node.row.label);
  if (!decision) line.textContent = "label: " + node.row.label;
  else if (decision.action === "accept") line.textContent = "✓ " + decision.label;
  else line.textContent = node.row.label + " → " + decision.label;
}

function filters() {
  const params = {};
  if ($("filter-label").value) params.label = $("filter-label").value;
  if ($("filter-min").value) params.min = $("filter-min").value;
  if ($("filter-max").value) params.max = $("filter-max").value;
  return params;
}

async function loadMore() {
  if (view.loading || view.done) return;
  view.loading = true;
  const generation = view.generation;
  let stale = false;
  try {
    const data = await call("/api/rows", { ...filters(), offset: view.tiles.length, limit: PAGE });
    stale = generation !== view.generation;  // the filters changed while it was on its way
    if (stale) return;
    view.total = data.total;
    for (const row of data.rows) {
      const node = tile(row);
      view.tiles.push(node);
      $("grid").append(node);
    }
    view.done = view.tiles.length >= data.total || data.rows.length === 0;
    $("count").textContent = `${data.total} rows`;
    showProgress(data.progress);
    if (view.selected < 0 && view.tiles.length) select(0);
  } catch (error) {
    note("could not load rows: " + error.message);
  } finally {
    view.loading = false;
    if (stale) loadMore();
  }
}

function reload() {
  view.generation += 1;
  view.tiles = [];
  view.selected = -1;
  view.done = false;
  $("grid").replaceChildren();
  loadMore();
}

function select(position) {
  if (position < 0 || position >= view.tiles.length) return;
  if (view.selected >= 0 && view.tiles[view.selected]) view.tiles[view.selected].classList.remove("selected");
  view.selected = position;
  const node = view.tiles[position];
  node.classList.add("selected");
  node.scrollIntoView({ block: "nearest" });
  if (position > view.tiles.length - 30) loadMore();
}

function columns() {
  if (!view.tiles.length) return 1;
  const top = view.tiles[0].offsetTop;
  const count = view.tiles.findIndex((node) => node.offsetTop !== top);
  return count < 0 ? view.tiles.length : count;
}

async function decide(action, label) {
  const node = view.tiles[view.selected];
  if (!node) return;
  try {
    const data = await call("/api/decide", null, { index: node.row.index, action, label });
    mine.push(data.decision.seq);
    showDecision(node, data.decision);
    showProgress(data.progress);
    note("");
    if (view.tiles[view.selected] === node) select(view.selected + 1);
  } catch (error) {
    note("not saved: " + error.message);
  }
}

async function undo() {
  const seq = mine.pop();  // none left (a reloaded page): the review's latest decision
  try {
    const data = await call("/api/undo", null, seq === undefined ? {} : { seq });
    showProgress(data.progress);
    if (data.undone === null) { note("nothing to undo"); return; }
    const position = view.tiles.findIndex((node) => node.row.index === data.undone);
    if (position >= 0) { showDecision(view.tiles[position], data.decision); select(position); }
    note("");
  } catch (error) {
    if (seq !== undefined) mine.push(seq);  // not taken back: still this page's to undo
    note("undo failed: " + error.message);
  }
}

function openViewer() {
  const node = view.tiles[view.selected];
  if (!node) return;
  $("viewer-image").src = address("/image/" + node.row.index);
  $("viewer-name").textContent = node.row.path;
  $("viewer").hidden = false;
}

function closeViewer() {
  $("viewer").hidden = true;
  $("viewer-image").removeAttribute("src");
}

function onKey(event) {
  if (event.key === "Escape") { closeViewer(); return; }
  if (event.target.closest && event.target.closest("input, select")) return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns() };
  const page = Math.max(columns() * 3, 1);
  if (event.key in step) select(Math.min(Math.max(view.selected + step[event.key], 0), view.tiles.length - 1));
  else if (event.key === "PageDown") { loadMore(); select(Math.min(view.selected + page, view.tiles.length - 1)); }
  else if (event.key === "PageUp") select(Math.max(view.selected - page, 0));
  else if (/^[1-9]$/.test(event.key) && Number(event.key) <= keyLabels().length) decide("set", keyLabels()[Number(event.key) - 1]);
  else if (event.key === "x") decide("unknown");
  else if (event.key === "Enter") decide("accept");
  else if (event.key === "u") undo();
  else if (event.key === "f") { if ($("viewer").hidden) openViewer(); else closeViewer(); }
  else return;
  event.preventDefault();
}

async function start() {
  try {
    view.state = await call("/api/state");
  } catch (error) {
    note("cannot load the review: " + error.message);
    return;
  }
  $("output").textContent = view.state.output;
  for (const label of view.state.labels) $("filter-label").append(make("option", "", label));
  showLegend();
  showProgress(view.state.progress);
  document.addEventListener("keydown", onKey);
  $("viewer").addEventListener("click", closeViewer);
  for (const id of ["filter-label", "filter-min", "filter-max"]) $(id).addEventListener("change", reload);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); reload(); });
  new IntersectionObserver((seen) => { if (seen.some((e) => e.isIntersecting)) loadMore(); },
    { rootMargin: "800px" }).observe($("sentinel"));
  await loadMore();
  document.body.dataset.ready = "1";
}

start();
