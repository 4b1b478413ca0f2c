// Live progress page (templates/live.html): polls /runs/<id>/live.json every data-poll-ms,
// updates the values in place (text only when it changed; the bar's width has a CSS
// transition, so it moves smoothly without re-rendering), appends the events after the last
// one shown (after_event_id: each event once, in order) and stops polling once the run has
// reached a terminal state (#live[data-polling="stopped"]).
(function () {
  "use strict";

  var root, runId, pollMs, lastEventId = 0, timer = null, failures = 0;

  function $(id) { return document.getElementById(id); }

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  function bytes(n) { return n === null || n === undefined ? "—" : window.e3.humanBytes(n); }

  function pct(n) { return (Math.round(Number(n || 0) * 10) / 10).toFixed(1) + " %"; }

  function badge(el, cls, label) {
    if (!el) return;
    var name = "badge badge-" + cls;
    if (el.className !== name) el.className = name;
    setText(el, label);
  }

  function updateProgress(doc) {
    var value = Math.max(0, Math.min(100, Number(doc.progress_pct || 0)));
    var fill = $("progress-fill"), bar = $("progress-bar");
    var width = value + "%";
    if (fill.style.width !== width) fill.style.width = width;
    var rounded = String(Math.round(value * 10) / 10);
    if (bar.getAttribute("aria-valuenow") !== rounded) bar.setAttribute("aria-valuenow", rounded);
    setText($("progress-text"), pct(value));
    setText($("stat-processed"), bytes(doc.bytes_processed));
    setText($("stat-total"), doc.bytes_total ? "of " + bytes(doc.bytes_total) : "");
    setText($("stat-uploaded"), bytes(doc.bytes_transferred));
    var savings = doc.dedup_savings;
    var scanning = doc.bytes_processed && !doc.bytes_transferred && !doc.terminal;
    setText($("stat-dedup"), savings === null || savings === undefined ? "" :
      scanning ? "Scanning…" : pct(savings * 100) + " saved by dedup");
    setText($("stat-speed"), doc.speed_bytes_per_sec && !doc.terminal
      ? bytes(doc.speed_bytes_per_sec) + "/s" : "—");
    setText($("stat-eta"), doc.eta_seconds && !doc.terminal
      ? window.e3.humanDuration(doc.eta_seconds) : "—");
    setText($("stat-current"), doc.current_item || "—");
  }

  function updateStatus(doc) {
    badge($("live-status"), doc.status_class, doc.status_label);
    var flag = $("cancel-flag");
    flag.hidden = !(doc.cancel_requested && !doc.terminal);
    var button = $("cancel-button");
    if (button && doc.cancel_requested && !button.disabled) {
      button.disabled = true;
      button.textContent = "Cancel requested";
    }
    var form = $("cancel-form");
    if (form && doc.terminal) form.hidden = true;
    var box = $("live-error");
    box.hidden = !doc.error;
    setText($("live-error-text"), doc.error || "");
    setText($("live-error-code"), doc.error_code ? " (" + doc.error_code + ")" : "");
  }

  function updateItems(items) {
    if (!items || !items.length) return;
    $("items-card").hidden = false;
    var body = document.querySelector("#run-items tbody");
    items.forEach(function (item) {
      var row = null;
      body.querySelectorAll("tr[data-item]").forEach(function (tr) {
        if (tr.getAttribute("data-item") === item.name) row = tr;
      });
      if (!row) {
        row = document.createElement("tr");
        row.setAttribute("data-item", item.name);
        ["item-name", "item-state", "item-detail"].forEach(function (cls) {
          var td = document.createElement("td");
          td.className = cls;
          row.appendChild(td);
        });
        row.children[0].textContent = item.name;
        row.children[1].appendChild(document.createElement("span"));
        body.appendChild(row);
      }
      var state = row.querySelector(".item-state span") || row.children[1].firstElementChild;
      badge(state, item.state_class, item.state_label);
      setText(row.querySelector(".item-detail") || row.children[2], item.detail || "");
    });
  }

  function appendEvents(events) {
    var log = $("event-log");
    events.forEach(function (ev) {
      if (ev.id <= lastEventId) return;  // never twice
      lastEventId = ev.id;
      var li = document.createElement("li");
      li.className = "event event-" + ev.level;
      li.setAttribute("data-event-id", ev.id);
      var time = document.createElement("time");
      time.setAttribute("datetime", ev.ts);
      time.setAttribute("data-format", "time");
      time.textContent = ev.ts;
      var level = document.createElement("span");
      level.className = "event-level";
      level.textContent = ev.level.toUpperCase();
      var msg = document.createElement("span");
      msg.className = "event-message";
      msg.textContent = ev.message;
      li.appendChild(time);
      li.appendChild(level);
      li.appendChild(msg);
      log.appendChild(li);
      window.e3.formatAll(li);
    });
    if (lastEventId) $("events-none").hidden = true;
    var box = log.parentElement;
    if (events.length) box.scrollTop = box.scrollHeight;
  }

  function stop() {
    if (timer) { clearTimeout(timer); timer = null; }
    root.setAttribute("data-polling", "stopped");
  }

  function schedule(delay) {
    timer = setTimeout(poll, delay);
  }

  function poll() {
    timer = null;
    var url = "/runs/" + runId + "/live.json?after_event_id=" + lastEventId;
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401 || response.redirected) {
          window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (doc) {
        if (!doc) return;
        failures = 0;
        updateProgress(doc);
        updateStatus(doc);
        updateItems(doc.items);
        appendEvents(doc.events || []);
        root.setAttribute("data-terminal", doc.terminal ? "1" : "0");
        if (doc.more_events) schedule(0);
        else if (doc.terminal) stop();
        else schedule(pollMs);
      })
      .catch(function () {
        failures += 1;  // the server restarting or the network gone: back off, keep trying
        schedule(Math.min(pollMs * Math.pow(2, failures), 30000));
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = $("live");
    if (!root) return;
    runId = root.getAttribute("data-run-id");
    pollMs = Number(root.getAttribute("data-poll-ms")) || 2000;
    root.setAttribute("data-polling", "on");
    poll();  // the events so far (also once for a run that already ended), then every pollMs
  });
})();
