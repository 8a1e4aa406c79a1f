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
  function relTimes(root) {
    root.querySelectorAll("time[data-rel]").forEach(function (el) {
      const ms = Date.parse(el.getAttribute("datetime").replace(" ", "T"));
      if (isNaN(ms)) return;
      el.title = new Date(ms).toLocaleString();
      el.textContent = rel(ms);
    });
  }
  relTimes(document);

  // The runs list: "select all", and no auto-refresh while runs are selected.
  document.addEventListener("change", function (ev) {
    const all = ev.target;
    if (!all || all.id !== "select-all") return;
    document.querySelectorAll('input[name="run_ids"]').forEach(function (b) { b.checked = all.checked; });
  });
  function selecting() { return document.querySelector('input[name="run_ids"]:checked') !== null; }

  // Forms with data-confirm ask first.
  document.addEventListener("submit", function (ev) {
    const msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  // Live refresh: pages with data-live="N" ask for their content again every N
  // seconds (If-None-Match: the server answers 304 when nothing changed) and swap
  // each [data-region] in place, except one being used (focus, selected runs).
  // Hidden tabs do not poll.
  let live = document.querySelector("[data-live]");
  if (live) {
    const box = document.getElementById("autorefresh");
    const status = document.getElementById("live-status");
    const key = "fanout.live." + location.pathname.split("/")[1];
    if (box) {
      box.checked = localStorage.getItem(key) !== "0";
      box.addEventListener("change", function () { localStorage.setItem(key, box.checked ? "1" : "0"); });
    }
    let etag = null, busy = false;
    const every = parseFloat(live.getAttribute("data-live")) * 1000;
    function inUse(region) {
      if (region.contains(document.activeElement) && document.activeElement !== document.body) return true;
      return region.hasAttribute("data-keep-selection") && selecting();
    }
    async function refresh() {
      if (busy || document.hidden || (box && !box.checked) || !live) return;
      busy = true;
      try {
        const headers = { "X-Fanout-Live": "1" };
        if (etag) headers["If-None-Match"] = etag;
        const res = await fetch(location.pathname + location.search,
                                { credentials: "same-origin", headers: headers, cache: "no-store" });
        if (res.status === 304) { if (status) status.textContent = "· up to date " + new Date().toLocaleTimeString(); return; }
        if (!res.ok) throw new Error("HTTP " + res.status);
        etag = res.headers.get("ETag");
        const doc = new DOMParser().parseFromString("<div>" + await res.text() + "</div>", "text/html");
        document.querySelectorAll("[data-region]").forEach(function (region) {
          const name = region.getAttribute("data-region");
          const fresh = doc.querySelector('[data-region="' + name + '"]');
          if (!fresh || inUse(region)) return;
          const node = document.importNode(fresh, true);
          region.replaceWith(node);
          relTimes(node);
        });
        live = document.querySelector("[data-live]");
        if (status) status.textContent = "· updated " + new Date().toLocaleTimeString();
      } catch (err) {
        if (status) status.textContent = "· paused: " + err.message;
      } finally {
        busy = false;
      }
    }
    const timer = setInterval(function () { if (!live) { clearInterval(timer); return; } refresh(); }, every);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
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
