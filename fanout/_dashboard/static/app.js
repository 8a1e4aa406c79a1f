// fanout dashboard: live event stream, auto-refresh, confirmations. No build step.
"use strict";
(function () {
  function esc(text) { const d = document.createElement("span"); d.textContent = text; return d; }
  function iso(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.(\d+)Z$/, ".$1Z") : ""; }

  // <time data-rel>: "3 min ago", with the local time on hover.
  function rel(ms) {
    const s = Math.round((Date.now() - ms) / 1000), a = Math.abs(s);
    const span = a < 60 ? a + " s" : a < 3600 ? Math.round(a / 60) + " min" :
      a < 86400 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
    return s >= 0 ? span + " ago" : "in " + span;
  }
  document.querySelectorAll("time[data-rel]").forEach(function (el) {
    const ms = Date.parse(el.getAttribute("datetime").replace(" ", "T"));
    if (isNaN(ms)) return;
    el.title = new Date(ms).toLocaleString();
    el.textContent = rel(ms);
  });

  // The runs list: "select all", and no auto-refresh while runs are selected.
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="run_ids"]').forEach(function (b) { b.checked = all.checked; });
    });
  }
  function selecting() { return document.querySelector('input[name="run_ids"]:checked') !== null; }

  // Forms with data-confirm ask first.
  document.addEventListener("submit", function (ev) {
    const msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // Pages with data-refresh="N" reload every N seconds while the box is checked.
  const live = document.querySelector("[data-refresh]");
  if (live) {
    const box = document.getElementById("autorefresh");
    const key = "fanout.autorefresh." + location.pathname.split("/")[1];
    if (box) {
      box.checked = localStorage.getItem(key) !== "0";
      box.addEventListener("change", function () { localStorage.setItem(key, box.checked ? "1" : "0"); });
    }
    const every = parseFloat(live.getAttribute("data-refresh")) * 1000;
    setInterval(function () { if ((!box || box.checked) && !selecting()) location.reload(); }, every);
  }

  // The live event stream: poll /api/events for events newer than the newest shown.
  const stream = document.getElementById("event-stream");
  if (stream) {
    let after = parseFloat(stream.getAttribute("data-after") || "0");
    const body = stream.querySelector("tbody");
    const status = document.getElementById("stream-status");
    async function poll() {
      try {
        const url = "/api/events?limit=100&after=" + encodeURIComponent(after) +
          (stream.dataset.name ? "&name=" + encodeURIComponent(stream.dataset.name) : "");
        const res = await fetch(url, { credentials: "same-origin" });
        if (!res.ok) throw new Error("HTTP " + res.status);
        const data = await res.json();
        const items = data.events.slice().reverse();
        for (const ev of items) {
          const tr = document.createElement("tr");
          tr.className = "new";
          const a = document.createElement("a");
          a.href = "/events/" + encodeURIComponent(ev.event_id);
          a.appendChild(esc(ev.event_id));
          const cells = [a, esc(ev.name), esc(iso(ev.ts)), esc(String(ev.run_count)),
                         esc(JSON.stringify(ev.data).slice(0, 120))];
          cells.forEach(function (c, i) {
            const td = document.createElement("td");
            if (i === 0 || i === 4) td.className = "mono";
            td.appendChild(c); tr.appendChild(td);
          });
          body.insertBefore(tr, body.firstChild);
          after = Math.max(after, ev.ts || 0);
        }
        const empty = document.getElementById("no-events");
        if (items.length && empty) empty.remove();
        if (status) status.textContent = "live · updated " + new Date().toLocaleTimeString();
      } catch (err) {
        if (status) status.textContent = "stream paused: " + err.message;
      }
    }
    setInterval(poll, 1500);
  }
})();
