// finetune-watcher: live updates for the server-rendered page (it works without this file).
// Rebuilds the same markup as watcher/web/page.py from /api/stream, with textContent only:
// model names and errors are hostile input and never reach innerHTML.
"use strict";
(function () {
  var page = document.body.dataset.page;
  if (page !== "status" && page !== "model") return;
  var PHASES = ["queued", "running", "ready", "failed", "cancelled", "other", "unknown"];
  var SVG = "http://www.w3.org/2000/svg";
  var live = document.getElementById("live");
  var offset = 0; // server clock minus ours, from the last document
  var lastModel = null;
  var phases = {}; // provider -> status -> lifecycle word (the stream's "phases" event)

  function setLive(on, text) {
    if (!live) return;
    live.classList.toggle("on", on);
    live.querySelector(".live-text").textContent = text;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    (children || []).forEach(function (child) {
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function icon(phase) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("viewBox", "0 0 16 16");
    var use = document.createElementNS(SVG, "use");
    use.setAttribute("href", "#icon-" + phase);
    svg.append(use);
    return svg;
  }

  var UNITS = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  function duration(seconds) { // as human_duration in page.py
    var whole = Math.max(0, Math.floor(seconds));
    for (var i = 0; i < UNITS.length; i++) {
      var size = UNITS[i][1];
      if (whole >= size || i === UNITS.length - 1) {
        var text = Math.floor(whole / size) + UNITS[i][0];
        if (i + 1 < UNITS.length) {
          var amount = Math.floor((whole % size) / UNITS[i + 1][1]);
          if (amount) text += " " + amount + UNITS[i + 1][0];
        }
        return text;
      }
    }
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function relative(ms, suffix) {
    var seconds = (Date.now() + offset - ms) / 1000;
    return seconds < 1 ? "just now" : duration(seconds) + suffix;
  }

  function timeNode(value, suffix, never) {
    var ms = typeof value === "string" ? Date.parse(value) : NaN;
    if (isNaN(ms)) return el("span", { class: "none" }, [never]);
    var attrs = { datetime: value, title: utc(ms) };
    if (suffix === null) return el("time", { datetime: value }, [utc(ms)]);
    attrs["data-rel"] = suffix;
    return el("time", attrs, [relative(ms, suffix)]);
  }

  function statusView(m) {
    var status = m.status;
    if (typeof status !== "string" || !status) {
      if (!m.last_poll_at) return ["unknown", "not polled yet", null];
      if (!m.last_success_at) return ["unknown", "unknown", null];
      return ["unknown", "no events yet", null];
    }
    var phase = m.phase;
    if (phase === undefined || phase === null) {
      phase = (phases[m.provider || "cohere"] || {})[status];
    }
    if (PHASES.indexOf(phase) >= 0 && phase !== "other") {
      return [phase, phase, status !== phase ? status : null];
    }
    return ["other", status, null];
  }

  function statusNodes(m) {
    var view = statusView(m);
    var nodes = [el("span", { class: "status phase-" + view[0] }, [
      icon(view[0]), el("span", { class: "word" }, [view[1]])])];
    if (view[2]) nodes.push(" ", el("span", { class: "detail" }, [view[2]]));
    return nodes;
  }

  function modelPath(provider, id) {
    return "/models/" + encodeURIComponent(provider) + "/" + encodeURIComponent(id);
  }

  function row(m) {
    var provider = String(m.provider || "cohere"), id = String(m.id || "");
    var name = [el("a", { href: modelPath(provider, id) }, [String(m.name || id)])];
    if (m.discovered) name.push(" ", el("span", { class: "tag" }, ["discovered"]));
    else if (m.configured === false) name.push(" ", el("span", { class: "tag" }, ["not in config"]));
    if (m.name) name.push(el("span", { class: "id" }, [id]));
    var pending = Number(m.pending_notifications) || 0;
    var error = m.last_error ? el("span", { class: "error" }, [String(m.last_error)])
      : el("span", { class: "none" }, ["-"]);
    return el("tr", { "data-key": provider + "/" + id }, [
      el("th", { scope: "row", "data-label": "Name" }, name),
      el("td", { "data-label": "Provider" }, [provider]),
      el("td", { "data-label": "Status" }, statusNodes(m)),
      el("td", { "data-label": "Since" }, [timeNode(m.status_since, " ago", "-")]),
      el("td", { "data-label": "Last poll" }, [timeNode(m.last_poll_at, " ago", "never")]),
      el("td", { "data-label": "Last error" }, [error]),
      el("td", { "data-label": "Unsent", class: pending ? "num warn" : "num" }, [String(pending)]),
    ]);
  }

  function replace(id, nodes) {
    var target = document.getElementById(id);
    if (target) target.replaceChildren.apply(target, nodes);
  }

  function renderStatus(doc) {
    var models = Array.isArray(doc.models) ? doc.models : [];
    var outbox = doc.outbox || {};
    var tbody = document.querySelector("#models tbody");
    if (tbody) tbody.replaceChildren.apply(tbody, models.map(row));
    replace("model-count", ["(" + models.length + ")"]);
    var empty = document.getElementById("no-models");
    if (empty) empty.hidden = models.length > 0;
    replace("outbox", [(outbox.pending || 0) + " pending · " + (outbox.done || 0) +
      " delivered · " + (outbox.given_up || 0) + " given up"]);
    replace("updated", [timeNode(doc.generated_at, null, "-")]);
    document.title = "finetune-watcher · " + models.length + " models";
  }

  function renderDaemon(facts) {
    var phase = "ready", word = "healthy";
    if (!facts.alive) { phase = "failed"; word = "stalled"; }
    else if (!facts.ready) { phase = "queued"; word = "not ready"; }
    var nodes = [el("span", { class: "status phase-" + phase }, [
      icon(phase), el("span", { class: "word" }, [word])])];
    if (facts.reasons && facts.reasons.length) {
      nodes.push(" ", el("span", { class: "detail" }, [facts.reasons.join("; ")]));
    }
    replace("daemon-health", nodes);
    replace("daemon-summary", [String(facts.summary || "")]);
    var role = "";
    if (facts.role) {
      role = facts.leader && facts.role !== "leader"
        ? facts.role + " (leader: " + facts.leader + ")" : facts.role;
    }
    replace("daemon-role", [role]);
    var roleRow = document.getElementById("daemon-role-row");
    if (roleRow) roleRow.hidden = !role;
  }

  function renderModel(doc) {
    var m = doc.model || {};
    replace("model-name", [String(m.name || m.id || "")]);
    replace("model-status", statusNodes(m));
    replace("model-since", [timeNode(m.status_since, " ago", "-")]);
    replace("model-last-poll", [timeNode(m.last_poll_at, " ago", "never")]);
    replace("model-failures", [String(m.failures || 0)]);
    replace("model-pending", [String(m.pending_notifications || 0)]);
    replace("model-error", [m.last_error ? String(m.last_error) : "-"]);
    var stages = Array.isArray(doc.timeline) ? doc.timeline : [];
    var items = stages.map(function (stage) {
      var view = statusNodes({ status: stage.status, phase: stage.phase, provider: m.provider,
        last_poll_at: "x", last_success_at: "x" });
      var since = Date.parse(stage.since), until = Date.parse(stage.until);
      var lasted = !isNaN(until) ? duration((until - since) / 1000)
        : duration((Date.now() + offset - since) / 1000) + " so far";
      return el("li", {}, view.concat([el("span", { class: "when" }, [
        timeNode(stage.since, null, "-"), " · ",
        el("span", { class: "lasted" }, [isNaN(since) ? "" : lasted])])]));
    });
    var list = document.getElementById("timeline") || document.getElementById("no-timeline");
    if (list && items.length) list.replaceWith(el("ol", { class: "timeline", id: "timeline" }, items));
  }

  function onStatus(doc) {
    var at = Date.parse(doc.generated_at);
    if (!isNaN(at)) offset = at - Date.now();
    if (page === "status") { renderStatus(doc); return; }
    var key = document.body.dataset.key, found = null;
    (doc.models || []).forEach(function (m) {
      if ((m.provider || "cohere") + "/" + m.id === key) found = JSON.stringify(m);
    });
    if (found === null || found === lastModel) return;
    var first = lastModel === null;
    lastModel = found;
    if (first) return; // the page was rendered from this very state
    fetch(document.body.dataset.api, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (model) { if (model) renderModel(model); })
      .catch(function () { /* the next event tries again */ });
  }

  function tick() {
    document.querySelectorAll("time[data-rel]").forEach(function (node) {
      var ms = Date.parse(node.getAttribute("datetime"));
      if (!isNaN(ms)) node.textContent = relative(ms, node.getAttribute("data-rel"));
    });
  }

  function connect() {
    if (!window.EventSource) return;
    var source = new EventSource("/api/stream");
    source.addEventListener("open", function () { setLive(true, "Live"); });
    source.addEventListener("phases", function (e) { phases = JSON.parse(e.data) || {}; });
    source.addEventListener("status", function (e) { onStatus(JSON.parse(e.data)); });
    source.addEventListener("daemon", function (e) { renderDaemon(JSON.parse(e.data)); });
    source.addEventListener("error", function () {
      setLive(false, "Reconnecting…");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    });
  }

  var updated = document.querySelector("#updated time");
  if (updated) {
    var at = Date.parse(updated.getAttribute("datetime"));
    if (!isNaN(at)) offset = at - Date.now();
  }
  setLive(false, "Connecting…");
  setInterval(tick, 1000);
  connect();
})();
