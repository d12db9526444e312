// meshcache's status page, live (admin/status.rs renders the page; this keeps it current).
// Every 2 s it reads /status.json and writes the figures into the elements the server gave
// ids to; it draws the bytes served per second, by source, from the samples it collected
// (the last 5 minutes; nothing is kept on the server, so the chart starts with the page).
// A passenger's answer is the public summary: each admin section is updated only when the
// answer has its figures and the page has the section.
"use strict";
(() => {
  const POLL_MS = 2000;
  const WINDOW_MS = 5 * 60 * 1000;
  const SOURCES = ["cache", "peers", "origin"];
  const $ = (id) => document.getElementById(id);
  const set = (id, text) => {
    const e = $(id);
    if (e && e.textContent !== String(text)) e.textContent = text;
  };
  // Rewrites the rows of a table (after its header row) or the content of an element
  // when they changed since the last time.
  const written = new Map();
  const html = (e, markup, keepFirstRow) => {
    if (!e || written.get(e) === markup) return;
    written.set(e, markup);
    e.innerHTML = (keepFirstRow && e.rows.length ? e.rows[0].outerHTML : "") + markup;
  };
  const esc = (v) => String(v).replace(/[&<>"]/g, (c) => "&#" + c.charCodeAt(0) + ";");
  // As status.rs writes them: 512 B, 1.5 KiB; 75%; 12 min 5 s.
  const size = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return u ? n.toFixed(1) + " " + units[u] : Math.round(n) + " B";
  };
  const percent = (part, whole) => (whole ? Math.round((100 * part) / whole) + "%" : "–");
  const duration = (secs) => {
    const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
    const m = Math.floor(secs / 60) % 60, s = secs % 60;
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
  };

  function figures(s) {
    const without = s.answered_from_cache + s.answered_from_peers;
    const answered = without + s.answered_from_origin;
    set("ratio", percent(without, answered));
    set("f-ratio", percent(without, answered));
    set("answered", without);
    set("proxied", answered);
    set("saved", size(s.bytes_saved));
    set("internet", size(s.bytes_from_origin));
    set("stored", size(s.stored_bytes));
    set("limit", size(s.max_bytes));
    set("urls", s.stored_urls);
    $("meter").style.width = (s.max_bytes ? (100 * s.stored_bytes) / s.max_bytes : 0).toFixed(1) + "%";
    set("nearby", s.mesh ? s.mesh_peers_connected : "off");
    set("nearby-note", s.mesh ? `connected · ${s.peer_hits} bodies from them` : "the mesh is off");
    const total = s.bytes_from_cache + s.bytes_from_peers + s.bytes_from_origin;
    for (const k of SOURCES) {
      const n = s["bytes_from_" + k];
      set("from-" + k, size(n));
      set("pct-" + k, percent(n, total));
      $("bar-" + k).style.width = (total ? (100 * n) / total : 0).toFixed(1) + "%";
    }
    set("f-requests", s.requests);
    set("f-by-source", `${s.answered_from_cache} / ${s.answered_from_peers} / ${s.answered_from_origin}`);
    set("f-hits", s.hits);
    set("f-misses", s.misses);
    set("f-errors", s.errors);
    set("f-sent", size(s.bytes_to_clients));
    set("f-variants", `${s.stored_urls} / ${s.stored_variants}`);
    set("f-stored", `${size(s.stored_bytes)} / ${size(s.max_bytes)}`);
    set("f-fills", s.fills_in_progress);
    set("f-partial", `${s.partial_objects} / ${size(s.partial_bytes)}`);
    set("f-evictions", s.evictions);
    set("f-uptime", duration(s.uptime_secs));
    const full = $("pass-through");
    full.hidden = !s.pass_through;
    set("pass-through", s.pass_through ? "The disk is full: caching is suspended, requests pass through." : "");
    // Admin figures.
    if ("connections_open" in s) set("connections", s.connections_open);
    if (s.mesh_peer_table) peers(s.mesh_peer_table);
    if (s.mesh_ban_list) bans(s.mesh_ban_list);
    if (s.sync_feeds) feeds(s);
  }

  // The rows of the peer table (admin/mesh.rs renders its header and first rows).
  function peers(list) {
    const t = $("peers");
    const rows = list.map((p) => {
      const ban = p.ban_reason != null ? `${p.bans} (banned ${p.banned_secs}s more: ${p.ban_reason})` : p.bans;
      return `<tr><td><code>${esc(p.peer)}</code></td><td>[${esc(p.addrs.join(", "))}]</td>` +
        `<td>${esc(p.found_by)}</td><td>${esc(p.state)}</td><td>${esc(p.groups.join(", "))}</td>` +
        `<td>${size(p.given)}</td><td>${size(p.taken)}</td><td>${esc(ban)}</td></tr>`;
    });
    html(t, rows.join(""), true);
  }

  function bans(list) {
    html($("bans"), list.length
      ? "<p>Banned (peers and strangers):</p><ul>" + list.map((b) =>
        `<li><code>${esc(b.peer)}</code> for ${b.secs_left}s more: ${esc(b.reason)}</li>`).join("") + "</ul>"
      : "");
  }

  function feeds(s) {
    set("sync-budget", `budget today: ${size(s.sync_used_today)} of ${size(s.sync_budget)} used · ` +
      `${s.sync_fetched} objects prefetched · ${s.sync_failed} failed`);
    const rows = s.sync_feeds.map((f) => {
      const when = f.synced_at_unix_ms != null ? new Date(f.synced_at_unix_ms).toUTCString() : "never";
      const state = f.up_to_date ? "up to date from nearby"
        : f.last_error != null ? "error: " + f.last_error : "waiting for a neighbour that has it";
      return `<tr><td><code>${esc(f.url)}</code></td><td>${f.items_newest}</td>` +
        `<td>${f.media_held} / ${f.media_wanted}</td><td>${size(f.bytes)}</td>` +
        `<td>${esc(f.peers.map((p) => p.slice(0, 10)).join(", "))}</td><td>${when}</td><td>${esc(state)}</td></tr>`;
    });
    html($("feeds"), rows.join(""), true);
  }

  // Samples of the byte counters; the first is what the server rendered.
  const chart = $("chart");
  const samples = [{ t: Date.now() }];
  for (const k of SOURCES) samples[0][k] = Number(chart.dataset[k]) || 0;

  // Stacked steps: over each interval between two samples, the bytes per second each
  // source served (cache at the bottom, then nearby devices, then the internet).
  function draw() {
    const now = samples[samples.length - 1].t;
    while (samples.length > 2 && samples[1].t <= now - WINDOW_MS) samples.shift();
    const t0 = Math.max(samples[0].t, now - WINDOW_MS);
    const steps = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1], b = samples[i], secs = (b.t - a.t) / 1000;
      if (secs <= 0) continue;
      const rate = {};
      // A counter that went down: the proxy restarted; nothing is known of that interval.
      for (const k of SOURCES) rate[k] = Math.max(0, b[k] - a[k]) / secs;
      steps.push({ from: Math.max(a.t, t0), to: b.t, rate });
    }
    const totals = steps.map((s) => s.rate.cache + s.rate.peers + s.rate.origin);
    const peak = Math.max(1, ...totals);
    const W = 600, H = 150, span = Math.max(now - t0, 1);
    const x = (t) => (((t - t0) / span) * W).toFixed(1);
    const y = (v) => (H - (v / peak) * (H - 4)).toFixed(1);
    const below = steps.map(() => 0);
    for (const k of SOURCES) {
      let top = "", bottom = "", any = false;
      steps.forEach((s, i) => {
        const lo = below[i], hi = lo + s.rate[k];
        top += `L${x(s.from)} ${y(hi)}L${x(s.to)} ${y(hi)}`;
        bottom = `L${x(s.to)} ${y(lo)}L${x(s.from)} ${y(lo)}` + bottom;
        below[i] = hi;
        any = any || s.rate[k] > 0;
      });
      $("area-" + k).setAttribute("d", any ? "M" + top.slice(1) + bottom + "Z" : "");
    }
    if (steps.length) {
      const ago = Math.round((now - t0) / 1000);
      set("chart-from", ago >= WINDOW_MS / 1000 ? "5 min ago" : duration(ago) + " ago");
      set("chart-peak", totals.some((t) => t > 0) ? "peak " + size(peak) + "/s" : "nothing served");
    }
  }

  const live = $("live");
  let polls = 0;
  function poll() {
    fetch("/status.json", { cache: "no-store" })
      .then((r) => {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then((s) => {
        figures(s);
        const sample = { t: Date.now() };
        for (const k of SOURCES) sample[k] = s["bytes_from_" + k];
        samples.push(sample);
        draw();
        polls++;
        live.className = "ok";
        live.textContent = "live · updated " + new Date().toLocaleTimeString();
        live.dataset.polls = polls;
      })
      .catch((e) => {
        live.className = "err";
        live.textContent = "not updating (" + e.message + "): the proxy does not answer; trying again";
      })
      .finally(() => setTimeout(poll, POLL_MS));
  }
  setTimeout(poll, POLL_MS);
})();
