// The job wizard (templates/job_wizard.html): one form, one step shown at a time, saved by a
// single POST. Alpine holds what the browsers select (paths, VMs, the disk/volume) and writes
// them into hidden inputs; htmx loads the browsers' fragments (they poll until the agent has
// answered). Moving to a step focuses its heading; a server error opens its step and field.
document.addEventListener("alpine:init", function () {
  "use strict";

  window.Alpine.data("jobWizard", function () {
    return {
      steps: [], step: "engine", furthest: 0, engine: "disk_image", agentId: "",
      destType: "local", scheduleType: "manual", paths: [], vms: [], volume: "",
      manualPath: "", loadedFor: "", summary: [],

      init: function () {
        var state = JSON.parse(this.$el.dataset.state || "{}");
        var form = this.$el;
        var checked = function (name) {
          var el = form.querySelector('[name="' + name + '"]:checked');
          return el ? el.value : "";
        };
        this.steps = Array.prototype.map.call(
          form.querySelectorAll("[data-step]"), function (el) { return el.dataset.step; });
        this.engine = checked("engine") || "disk_image";
        this.agentId = checked("agent_id");
        this.destType = checked("dest_type") || "local";
        this.scheduleType = form.querySelector('[name="schedule_type"]').value;
        this.volume = form.querySelector('[name="disk_source_volume"]').value;
        this.paths = state.paths || [];
        this.vms = state.vms || [];
        this.step = state.step || "engine";
        this.furthest = state.job_id || state.step !== "engine" ? this.steps.length - 1 : 0;
        if (this.step !== "engine") {
          var self = this;
          this.$nextTick(function () { self.enter(true); });
        }
      },

      index: function (name) { return this.steps.indexOf(name); },
      isVm: function () { return this.engine === "kvm" || this.engine === "hyperv"; },

      section: function () { return this.$root.querySelector('[data-step="' + this.step + '"]'); },

      stepValid: function () {
        var fields = this.section().querySelectorAll("input, select, textarea");
        for (var i = 0; i < fields.length; i++) {
          if (!fields[i].checkValidity()) { fields[i].reportValidity(); return false; }
        }
        return true;
      },

      next: function () {
        if (!this.stepValid()) return;
        this.go(this.steps[this.index(this.step) + 1]);
      },
      back: function () { this.go(this.steps[this.index(this.step) - 1]); },

      go: function (name) {
        if (!name || this.index(name) > this.furthest + 1) return;
        this.step = name;
        this.furthest = Math.max(this.furthest, this.index(name));
        this.enter(false);
      },

      // After a step appears: load what it shows, then move the focus into it.
      enter: function (toError) {
        var self = this;
        if (this.step === "source") this.loadSource();
        if (this.step === "review") this.buildSummary();
        this.$nextTick(function () {
          var invalid = toError ? self.section().querySelector('[aria-invalid="true"]') : null;
          var target = invalid || document.getElementById("h-" + self.step);
          if (target) target.focus();
        });
      },

      // --- browsers ------------------------------------------------------------------------
      loadSource: function () {
        var key = this.engine + ":" + this.agentId;
        if (!this.agentId || this.loadedFor === key) return;
        this.loadedFor = key;
        if (this.isVm()) {
          window.htmx.ajax("GET", "/jobs/wizard/vms?agent_id=" + encodeURIComponent(this.agentId) +
            "&hypervisor=" + encodeURIComponent(this.engine), { target: "#vm-browser", swap: "innerHTML" });
        } else {
          this.browse("");
        }
      },

      browse: function (path) {
        if (!this.agentId) return;
        window.htmx.ajax("POST", "/jobs/wizard/browse", {
          target: "#file-browser", swap: "innerHTML",
          values: { agent_id: this.agentId, path: (path || "").trim() },
        });
      },

      isPicked: function (path) {
        return this.engine === "disk_image" ? this.volume === path : this.paths.indexOf(path) >= 0;
      },
      pick: function (path) {
        if (this.engine === "disk_image") this.volume = this.volume === path ? "" : path;
        else if (this.isPicked(path)) this.unpick(path);
        else this.paths.push(path);
      },
      unpick: function (path) {
        this.paths = this.paths.filter(function (p) { return p !== path; });
      },
      addPath: function () {
        var path = this.manualPath.trim();
        if (!path) return;
        if (this.engine === "disk_image") this.volume = path;
        else if (!this.isPicked(path)) this.paths.push(path);
        this.manualPath = "";
      },
      toggleVm: function (uuid) {
        if (this.vms.indexOf(uuid) >= 0) this.vms = this.vms.filter(function (v) { return v !== uuid; });
        else this.vms.push(uuid);
      },

      // --- review --------------------------------------------------------------------------
      choiceLabel: function (name) {
        var input = this.$root.querySelector('[name="' + name + '"]:checked');
        var title = input ? input.closest("label").querySelector(".choice-title") : null;
        return title ? title.textContent.trim() : "—";
      },

      buildSummary: function () {
        var data = new FormData(this.$root);
        var get = function (name) { return (data.get(name) || "").toString().trim(); };
        var secret = function (name) {
          var input = document.getElementById("f-" + name);
          if (get(name)) return "set";
          return input && input.placeholder === "unchanged" ? "unchanged" : "not set";
        };
        var source = this.isVm() ? this.vms.join(", ") :
          this.engine === "disk_image" ? this.volume : this.paths.join(", ");
        var dest = this.destType === "s3"
          ? "s3://" + get("dest_bucket") + "/" + get("dest_prefix") + (get("dest_endpoint") ? " at " + get("dest_endpoint") : "")
          : get("dest_local_path");
        var when = { manual: "manual", hourly: "hourly at minute " + get("schedule_minute"),
          daily: "daily at " + get("schedule_time"), cron: "cron " + get("schedule_cron"),
          weekly: "weekly at " + get("schedule_time") }[this.scheduleType];
        var keep = ["last", "hourly", "daily", "weekly", "monthly", "yearly"].map(function (k) {
          return k + " " + (get("keep_" + k) || "0");
        }).join(", ");
        this.summary = [
          ["Name", get("name")], ["Engine", this.choiceLabel("engine")],
          ["Agent", this.choiceLabel("agent_id")], ["Source", source || "—"],
          ["Destination", dest || "—"], ["Repository password", secret("repository_password")],
          ["Schedule", when + (this.scheduleType === "manual" ? "" : " (" + get("timezone") + ")")],
          ["Keep", keep], ["Compression", get("compression")],
          ["Upload limit", get("bandwidth_limit_kbps") === "0" ? "unlimited" : get("bandwidth_limit_kbps") + " KiB/s"],
          ["Parallel uploads", get("parallelism")], ["Consistency", get("consistency_level")],
          ["Change tracking", data.get("enable_change_tracking") ? "on" : "off"],
        ];
      },
    };
  });
});
