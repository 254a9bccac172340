// The review page: tiles lowest margin first, keys to decide, each decision sent at once.
// Every name and label goes in with textContent (never innerHTML): file names are data.
// actions.js holds the marked tiles, the label picker and the finish actions.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const PAGE = 120;
const view = { state: null, tiles: [], selected: -1, total: 0, loading: false, done: false, generation: 0,
  marked: new Set() };
// This page's decisions by number, in groups (one key on marked tiles is one group): u takes
// back its own latest group, never another page's decisions.
const mine = [];

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
  legend.replaceChildren();
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
  const any = make("button", "key", "");
  any.type = "button";
  any.id = "open-picker";
  any.append(make("kbd", "", "/"),
    document.createTextNode(` any of the ${view.state.labels.length} labels, or a new one`));
  any.addEventListener("click", openPicker);
  legend.append(any);
  legend.append(make("span", "hint",
    "Enter accept · u undo · space or Ctrl/Shift-click mark · f full size · arrows move"));
}

function showOrder() {
  $("order").textContent = view.state.margin_source === "top-2"
    ? "Least sure first: sorted by the margin between the model's top two labels " +
      "(top-1 minus top-2 probability), smallest first; unreadable rows last."
    : "Least sure first: sorted by the model's top probability (this output holds only the " +
      "top label: margin 2 × top − 1), smallest first; unreadable rows last.";
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
    img.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return;  // marking: the tile's
      event.stopPropagation();
      select(view.tiles.indexOf(node));
      openViewer();
    });
    picture.append(img);
  }
  node.append(picture, make("div", "name", row.path));
  if (row.error) node.append(make("div", "problem-text", "unreadable: " + row.error));
  const chips = make("div", "chips");
  for (const [label, probability] of row.scores) {
    const chip = make("button", "chip", label + " " + percent(probability));
    chip.type = "button";
    chip.addEventListener("click", (event) => {
      event.stopPropagation();
      select(view.tiles.indexOf(node));
      decide("set", label, [node]);
    });
    chips.append(chip);
  }
  node.append(chips);
  if (row.destination) node.append(make("div", "destination", "→ " + row.destination));
  node.append(make("div", "decision"));
  node.addEventListener("click", (event) => clickTile(node, event));
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
  if ($("filter-status").value) params.status = $("filter-status").value;
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
    // After the last row shown, by rank: deciding rows under a filter shifts no offset.
    const last = view.tiles[view.tiles.length - 1];
    const after = last ? last.row.rank : -1;
    const data = await call("/api/rows", { ...filters(), after, limit: PAGE });
    stale = generation !== view.generation;  // the filters changed while it was on its way
    if (stale) return;
    view.total = data.total;
    for (const row of data.rows) {
      const node = tile(row);
      view.tiles.push(node);
      $("grid").append(node);
    }
    view.done = data.rows.length < PAGE;
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
  clearMarks();
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

// One decision or undo at a time, in the order of the keys: a key pressed before the last
// decision was saved acts on the tile selected after it, as it would have a moment later.
let queue = Promise.resolve();
function serially(step) { queue = queue.then(step, step); return queue; }

function decide(action, label, nodes) { return serially(() => decideNow(action, label, nodes)); }

function undo() { return serially(undoNow); }

// Decide the given tiles, else the marked ones (readable ones), else the selected tile.
async function decideNow(action, label, nodes) {
  const marked = !nodes && view.marked.size > 0;
  const targets = (nodes || chosenTiles()).filter((node) => !marked || !node.row.error);
  const group = [];
  let failure = null;
  for (const node of targets) {
    try {
      const data = await call("/api/decide", null, { index: node.row.index, action, label });
      group.push(data.decision.seq);
      showDecision(node, data.decision);
      showProgress(data.progress);
    } catch (error) {
      failure = error;
      break;
    }
  }
  if (group.length) mine.push(group);
  if (failure) { note("not saved: " + failure.message); return; }
  note(marked ? `${group.length} tiles decided (u takes them back)` : "");
  if (marked) clearMarks();
  else if (targets.length === 1 && view.tiles[view.selected] === targets[0]) select(view.selected + 1);
}

async function undoNow() {
  const group = mine.pop();  // none left (a reloaded page): the review's latest decision
  const numbers = group ? [...group].reverse() : [undefined];
  for (const [i, seq] of numbers.entries()) {
    try {
      const data = await call("/api/undo", null, seq === undefined ? {} : { seq });
      showProgress(data.progress);
      if (data.undone === null) { if (!group) { note("nothing to undo"); return; } continue; }
      const position = view.tiles.findIndex((node) => node.row.index === data.undone);
      if (position >= 0) { showDecision(view.tiles[position], data.decision); select(position); }
    } catch (error) {
      if (group) mine.push(numbers.slice(i).reverse());  // not taken back: still this page's
      note("undo failed: " + error.message);
      return;
    }
  }
  note("");
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
  if (document.querySelector("dialog[open]")) return;  // the picker and confirmations have theirs
  if (event.key === "Escape") { closeViewer(); clearMarks(); return; }
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
  else if (event.key === " ") { if (view.tiles[view.selected]) toggleMark(view.tiles[view.selected]); }
  else if (event.key === "/" || event.key === "l") openPicker();
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
  showOrder();
  setupPicker();
  setupFinish();
  showProgress(view.state.progress);
  document.addEventListener("keydown", onKey);
  $("viewer").addEventListener("click", closeViewer);
  for (const id of ["filter-status", "filter-label", "filter-min", "filter-max"]) $(id).addEventListener("change", reload);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); reload(); });
  new IntersectionObserver((seen) => { if (seen.some((e) => e.isIntersecting)) loadMore(); },
    { rootMargin: "800px" }).observe($("sentinel"));
  await loadMore();
  document.body.dataset.ready = "1";
}

start();
