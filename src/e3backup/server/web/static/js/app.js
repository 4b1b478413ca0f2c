// e3backup UI helpers (no build step). Loaded on every page by base.html.
//  - <time datetime="ISO" data-format="datetime|date|time|relative">: the browser's time zone
//  - <span data-bytes="N">: human size (KiB, MiB... binary units)
//  - <span data-seconds="N">: human duration
//  - <form data-confirm="message" [data-confirm-label="Delete"]>: the accessible <dialog>
//    confirmation (also hx-confirm on htmx elements) instead of window.confirm()
//  - <button data-copy="#element-id">: copy that element's text to the clipboard
//  - htmx requests carry the CSRF token (X-CSRF-Token) from <meta name="csrf-token">; a
//    refused htmx request shows the error page's message as a flash
//  - <select data-autosubmit>: submits its form on change (tenant switcher)
// Everything re-applies to content htmx swaps in (htmx.onLoad).
(function () {
  "use strict";

  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function humanBytes(n) {
    n = Number(n);
    if (!isFinite(n)) return "";
    var i = 0;
    while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + UNITS[i];
  }

  function humanDuration(s) {
    s = Math.round(Number(s));
    if (!isFinite(s)) return "";
    if (s < 60) return s + " s";
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return d + " d " + h + " h";
    if (h) return h + " h " + m + " min";
    return m + " min" + (sec ? " " + sec + " s" : "");
  }

  var relative = typeof Intl !== "undefined" && Intl.RelativeTimeFormat
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  var STEPS = [[60, "second"], [3600, "minute"], [86400, "hour"], [604800, "day"],
               [2629800, "week"], [31557600, "month"], [Infinity, "year"]];
  var SIZES = { second: 1, minute: 60, hour: 3600, day: 86400, week: 604800,
                month: 2629800, year: 31557600 };

  function humanRelative(date) {
    var diff = (date.getTime() - Date.now()) / 1000;
    if (!relative) return date.toLocaleString();
    for (var i = 0; i < STEPS.length; i++) {
      if (Math.abs(diff) < STEPS[i][0]) {
        var unit = STEPS[i][1];
        return relative.format(Math.round(diff / SIZES[unit]), unit);
      }
    }
    return date.toLocaleString();
  }

  function formatTime(el) {
    var date = new Date(el.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    var mode = el.getAttribute("data-format") || "datetime";
    el.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
    if (mode === "relative") el.textContent = humanRelative(date);
    else if (mode === "date") el.textContent = date.toLocaleDateString();
    else if (mode === "time") el.textContent = date.toLocaleTimeString();
    else el.textContent = date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function formatAll(root) {
    root.querySelectorAll("time[datetime]").forEach(formatTime);
    root.querySelectorAll("[data-bytes]").forEach(function (el) {
      el.textContent = humanBytes(el.getAttribute("data-bytes"));
    });
    root.querySelectorAll("[data-seconds]").forEach(function (el) {
      el.textContent = humanDuration(el.getAttribute("data-seconds"));
    });
  }

  // --- confirmation dialog -------------------------------------------------------------------
  function askConfirm(message, label, onConfirm) {
    var dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return;  // no dialog: refuse
    var opener = document.activeElement;
    dialog.querySelector("#confirm-message").textContent = message;
    dialog.querySelector("#confirm-ok").textContent = label || "Confirm";
    dialog.returnValue = "";
    dialog.addEventListener("close", function done() {
      dialog.removeEventListener("close", done);
      if (opener && opener.focus) opener.focus();
      if (dialog.returnValue === "confirm") onConfirm();
    });
    dialog.showModal();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
    if (form.dataset.confirmed === "1") { form.dataset.confirmed = ""; return; }
    event.preventDefault();
    askConfirm(form.getAttribute("data-confirm"), form.getAttribute("data-confirm-label"), function () {
      form.dataset.confirmed = "1";
      form.requestSubmit();
    });
  }, true);

  document.addEventListener("htmx:confirm", function (event) {
    var question = event.detail.question;
    if (!question) return;
    event.preventDefault();
    var label = event.detail.elt.getAttribute("data-confirm-label");
    askConfirm(question, label, function () { event.detail.issueRequest(true); });
  });

  // --- htmx: CSRF header on every request ----------------------------------------------------
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) event.detail.headers["X-CSRF-Token"] = meta.getAttribute("content");
  });

  // --- htmx: a refused request (4xx/5xx) shows the server's message as a flash ------------
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr, text = "The server refused the request (" + xhr.status + ").";
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var message = doc.querySelector(".error-message");
    if (message) text = message.textContent;
    var box = document.querySelector(".flashes");
    if (!box) return;
    var p = document.createElement("p");
    p.className = "flash flash-error";
    p.textContent = text;
    box.appendChild(p);
  });

  // --- copy buttons and auto-submitting selects ----------------------------------------------
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      var status = button.parentElement.querySelector(".copy-status");
      if (status) status.textContent = "Copied";
    }, function () {});
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.requestSubmit();
  });

  document.documentElement.classList.add("js");
  window.e3 = { humanBytes: humanBytes, humanDuration: humanDuration, formatAll: formatAll,
                askConfirm: askConfirm };
  if (window.htmx) window.htmx.onLoad(formatAll);  // the page, then each swapped fragment
  else document.addEventListener("DOMContentLoaded", function () { formatAll(document); });
})();
