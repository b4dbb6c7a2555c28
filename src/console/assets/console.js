// Cordon console: live updates (server-sent events), list keys, confirmations, timeline zoom.
// Everything here is an addition: every page reads and every form posts without it.
"use strict";

// Forms that ask before they post (`data-confirm`).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});

// Live parts: on each change the page is read again and its `data-live-part` parts replaced.
(function live() {
  const scope = document.body.getAttribute("data-live");
  if (!scope || !window.EventSource) return;
  let url = "/events";
  if (scope.startsWith("incident:")) url += "?incident=" + encodeURIComponent(scope.slice(9));
  else if (scope.startsWith("run:")) url += "?run=" + encodeURIComponent(scope.slice(4));
  let timer = null;
  const refresh = async () => {
    timer = null;
    try {
      const answer = await fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (!answer.ok) return;
      const doc = new DOMParser().parseFromString(await answer.text(), "text/html");
      document.querySelectorAll("[data-live-part]").forEach((part) => {
        const fresh = doc.getElementById(part.id);
        if (fresh && fresh.innerHTML !== part.innerHTML) {
          part.innerHTML = fresh.innerHTML;
          part.dispatchEvent(new CustomEvent("cordon:updated", { bubbles: true }));
        }
      });
      markSelected();
      applyZoom();
    } catch (_) { /* the next change or a reload shows it */ }
  };
  const source = new EventSource(url);
  const soon = () => { if (!timer) timer = setTimeout(refresh, 150); };
  source.addEventListener("change", soon);
  // What changed between rendering this page and subscribing (a run moving on right after the
  // decision that loaded it) is read once the stream is open.
  source.addEventListener("ready", soon);
})();

// List keys: j/k move, Enter opens, `a` approves the selected row's pending approval (confirmed).
let selected = -1;
function rows() { return Array.from(document.querySelectorAll("#incidents tbody tr.row")); }
function markSelected() {
  rows().forEach((row, i) => row.classList.toggle("selected", i === selected));
}
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const list = rows();
  if (!list.length) return;
  if (event.key === "j" || event.key === "k") {
    selected = Math.max(0, Math.min(list.length - 1, selected + (event.key === "j" ? 1 : -1)));
    markSelected();
    list[selected].focus();
    list[selected].scrollIntoView({ block: "nearest" });
    event.preventDefault();
  } else if (event.key === "Enter" && selected >= 0 && target === list[selected]) {
    window.location.href = list[selected].getAttribute("data-href");
    event.preventDefault();
  } else if (event.key === "a" && selected >= 0) {
    const form = list[selected].querySelector("form.approve");
    if (form && window.confirm(form.getAttribute("data-confirm") || "Approve?")) form.submit();
    event.preventDefault();
  }
});

// Timeline zoom: buttons and the wheel narrow or widen the plotted span; the lane names stay.
let zoom = { scale: 1, centre: 0.5 };
function applyZoom() {
  const svg = document.getElementById("timeline-svg");
  if (!svg) return;
  const left = Number(svg.getAttribute("data-left")), right = Number(svg.getAttribute("data-right"));
  const plot = svg.querySelector("g.plot"), axis = svg.querySelector("g.axis");
  const width = right - left;
  const visible = width / zoom.scale;
  let start = left + zoom.centre * width - visible / 2;
  start = Math.max(left, Math.min(right - visible, start));
  const transform = "translate(" + left + " 0) scale(" + zoom.scale + " 1) translate(" + (-start) + " 0)";
  [plot, axis].forEach((g) => { if (g) g.setAttribute("transform", transform); });
  svg.setAttribute("data-scale", String(zoom.scale));
}
document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("[data-zoom]");
  if (!button) return;
  const how = button.getAttribute("data-zoom");
  if (how === "in") zoom.scale = Math.min(64, zoom.scale * 2);
  else if (how === "out") zoom.scale = Math.max(1, zoom.scale / 2);
  else zoom = { scale: 1, centre: 0.5 };
  applyZoom();
});
document.addEventListener("wheel", (event) => {
  const svg = event.target.closest && event.target.closest("#timeline-svg");
  if (!svg || !event.shiftKey) return;
  const box = svg.getBoundingClientRect();
  zoom.centre = (event.clientX - box.left) / box.width;
  zoom.scale = event.deltaY < 0 ? Math.min(64, zoom.scale * 1.5) : Math.max(1, zoom.scale / 1.5);
  applyZoom();
  event.preventDefault();
}, { passive: false });
