// The review page beyond one key per tile: tiles marked to be decided together, the label
// picker (every label of the run, and new ones), and the finish actions, each confirmed in a
// dialog. Loaded before page.js, whose helpers (view, call, make, decide...) it uses.
"use strict";

function chosenTiles() {
  if (view.marked.size) return view.tiles.filter((node) => view.marked.has(node));
  const node = view.tiles[view.selected];
  return node ? [node] : [];
}

function showMarks() {
  $("marks").textContent = view.marked.size
    ? `${view.marked.size} marked: the next decision takes them all · Escape unmarks` : "";
}

function toggleMark(node) {
  if (view.marked.has(node)) view.marked.delete(node);
  else view.marked.add(node);
  node.classList.toggle("marked", view.marked.has(node));
  showMarks();
}

function clearMarks() {
  for (const node of view.marked) node.classList.remove("marked");
  view.marked.clear();
  showMarks();
}

// A click selects; Ctrl (or Cmd) marks or unmarks the tile too, Shift marks every tile from
// the selected one to it.
function clickTile(node, event) {
  const position = view.tiles.indexOf(node);
  if (event.shiftKey && view.selected >= 0) {
    const [from, to] = [Math.min(view.selected, position), Math.max(view.selected, position)];
    for (const tile of view.tiles.slice(from, to + 1)) if (!view.marked.has(tile)) toggleMark(tile);
  } else if (event.ctrlKey || event.metaKey) {
    toggleMark(node);
  }
  select(position);
}

const picker = { matches: [], at: 0 };

function pickerEntries(text) {
  const typed = text.trim();
  const key = typed.toLocaleLowerCase();
  const labels = view.state.labels;
  const lower = (label) => label.toLocaleLowerCase();
  const starting = labels.filter((label) => lower(label).startsWith(key));
  const inside = labels.filter((label) => !lower(label).startsWith(key) && lower(label).includes(key));
  const entries = [...starting, ...inside].map((label) => ({ label, added: false }));
  const known = [...labels, view.state.unknown_label].some((label) => lower(label) === key);
  if (typed && !known) entries.push({ label: typed, added: true });
  return entries;
}

function showMatches() {
  picker.matches = pickerEntries($("picker-input").value);
  picker.at = Math.max(Math.min(picker.at, picker.matches.length - 1), 0);
  const items = picker.matches.map((entry, i) => {
    const item = make("li", i === picker.at ? "active" : "",
      entry.added ? "+ new label: " + entry.label : entry.label);
    item.setAttribute("role", "option");
    item.addEventListener("click", () => { picker.at = i; choose(); });
    return item;
  });
  $("picker-list").replaceChildren(...items);
  if (items.length) items[picker.at].scrollIntoView({ block: "nearest" });
}

function openPicker() {
  if (!chosenTiles().length) return;
  $("picker-input").value = "";
  $("picker-note").textContent = "";
  picker.at = 0;
  showMatches();
  $("picker").showModal();
  $("picker-input").focus();
}

async function choose() {
  const entry = picker.matches[picker.at];
  if (!entry) return;
  let label = entry.label;
  if (entry.added) {  // recorded in the review file before any tile takes it
    try {
      const data = await call("/api/label", null, { label });
      label = data.label;
      view.state.labels = data.labels;
      showLegend();
    } catch (error) {
      $("picker-note").textContent = "not added: " + error.message;
      return;
    }
  }
  $("picker").close();
  decide("set", label);
}

function onPickerKey(event) {
  if (event.key === "ArrowDown") picker.at = Math.min(picker.at + 1, picker.matches.length - 1);
  else if (event.key === "ArrowUp") picker.at = Math.max(picker.at - 1, 0);
  else if (event.key === "Enter") choose();
  else return;
  event.preventDefault();
  if (event.key !== "Enter") showMatches();
}

function setupPicker() {
  $("picker-input").addEventListener("input", () => { picker.at = 0; showMatches(); });
  $("picker-input").addEventListener("keydown", onPickerKey);
  $("picker").addEventListener("close", () => $("grid").focus({ preventScroll: true }));
}

const FINISH = {
  export: {
    text: "Write every row, with the labels you corrected and a reviewed column, to",
    more: "An earlier export there is replaced; any other file is left alone and nothing is written.",
    ok: "Export",
  },
  support: {
    text: "Link each reviewed image (not those given the unknown label) into a folder per label, for clipcls label --support, in",
    more: "Links already there are kept; nothing is replaced.",
    ok: "Link",
  },
  apply: {
    text: "Move the sorted file of each row whose label you changed into its corrected label folder, in",
    more: "Nothing is overwritten (a taken name gets a new one); each move is recorded beside the output.",
    ok: "Apply",
  },
};
let pendingFinish = null;

function askFinish(action) {
  const what = FINISH[action];
  pendingFinish = action;
  $("confirm-text").textContent = what.text + ":";
  $("confirm-path").textContent = view.state.finish[action];
  $("confirm-more").textContent = what.more;
  $("confirm-ok").textContent = what.ok;
  $("confirm").showModal();
  $(action === "apply" ? "confirm-cancel" : "confirm-ok").focus();  // moving files: not on Enter
}

async function finish(action) {
  const result = $("finish-result");
  result.replaceChildren(make("span", "", "working…"));
  try {
    const data = await call("/api/finish", null, { action });
    const parts = [make("span", data.failed ? "failed" : "done", data.line)];
    if (data.problems.length) {
      parts.push(make("span", "hint", ` · ${data.problems.length} left alone: ${data.problems.slice(0, 3).join("; ")}`));
    }
    result.replaceChildren(...parts);
    showProgress(data.progress);
    if (action === "apply") reload();  // the tiles say where the files went
  } catch (error) {
    result.replaceChildren(make("span", "failed", `${action}: nothing done: ${error.message}`));
  }
}

function setupFinish() {
  for (const action of Object.keys(FINISH)) {
    $("finish-" + action).addEventListener("click", () => askFinish(action));
  }
  $("finish-apply").hidden = !view.state.finish.apply;
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  $("confirm-ok").addEventListener("click", () => { $("confirm").close(); finish(pendingFinish); });
  $("confirm").addEventListener("close", () => $("grid").focus({ preventScroll: true }));
}
